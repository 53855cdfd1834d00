//! One inbound SMTP session: the I/O loop around the codec and the state machine.
//!
//! The loop reads into a bounded input buffer, lets [`tern_proto::CommandFramer`] cut
//! command lines out of it, answers each command, and flushes the collected replies only
//! when the buffer holds no further complete command (RFC 2920 pipelining: one write per
//! batch). DATA and BDAT content is streamed from the same buffer into a
//! [`tern_spool::MessageDraft`] (see `message.rs`).
//!
//! Invariants:
//! - Every read has a timeout and a size bound; the input buffer never holds more than one
//!   command line's limit plus one read, except during DATA, where it is drained as it is
//!   decoded.
//! - `250 … queued as` is sent only after `MessageWriter::commit` returned Ok, i.e. the
//!   message and envelope are fsynced.
//! - After STARTTLS the input buffer is discarded and the phase reset, so nothing the client
//!   sent in plaintext is executed inside TLS.
//! - A session task owns everything it holds (connection slot, spool writer); a panic or
//!   cancellation drops them, which releases the slot and removes any unfinished spool
//!   file.
//! - A lock is never held here; the relay policy is read from an `ArcSwap` snapshot.
//! - A recipient in a local domain is expanded at RCPT time through the local directory
//!   the relay policy carries: the envelope lists final recipients only (aliases
//!   expanded, duplicates in any case removed, ORCPT set to what the client wrote), and
//!   an unknown user, an alias loop or an expansion over the limits is refused there and
//!   then, never bounced later.

mod conn;
mod message;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tern_events::{catalog, fields};
use tern_local::Resolution;
use tern_local::address::key_of;
use tern_metrics::Reject;
use tern_proto::{Command, CommandError, CommandFramer, Frame, Reply};
use tern_spool::{BodyType, DsnRet, MailParams, Notify, Recipient, RecipientStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::ListenerContext;
use crate::rdns::ClientName;
use crate::relay;
pub use conn::{Conn, LocalStream};
use state::{Greeting, Phase};

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Replies are flushed early once this much output is pending (a client that pipelines
/// thousands of commands without reading).
const MAX_PENDING_OUTPUT: usize = 16 * 1024;

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The client sent QUIT.
    Quit,
    /// The client closed the connection.
    ClientClosed,
    /// The client was silent too long.
    Timeout,
    /// Too many erroneous commands.
    TooManyErrors,
    /// Tern is shutting down.
    Shutdown,
    /// TLS handshake failed.
    TlsFailed(String),
    /// A socket error.
    Io(String),
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndReason::Quit => f.write_str("quit"),
            EndReason::ClientClosed => f.write_str("client closed"),
            EndReason::Timeout => f.write_str("timeout"),
            EndReason::TooManyErrors => f.write_str("too many errors"),
            EndReason::Shutdown => f.write_str("shutdown"),
            EndReason::TlsFailed(e) => write!(f, "tls failed: {e}"),
            EndReason::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

type Flow = Result<(), EndReason>;

/// One session's state.
pub struct Session {
    ctx: Arc<ListenerContext>,
    conn: Conn,
    peer: SocketAddr,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    framer: CommandFramer,
    phase: Phase,
    bdat: Option<message::BdatTransfer>,
    client_name: ClientName,
    client_may_relay: bool,
    errors: u32,
    queued: u32,
    shutdown: watch::Receiver<bool>,
}

impl Session {
    /// Runs a session on an accepted connection until it ends.
    pub async fn run(
        ctx: Arc<ListenerContext>,
        tcp: TcpStream,
        peer: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) {
        let _ = tcp.set_nodelay(true);
        let client_may_relay = ctx.shared.relay.load().client_may_relay(peer.ip());
        Session::run_on(ctx, Conn::Plain(tcp), peer, client_may_relay, shutdown).await;
    }

    /// Runs a session over a local byte stream until it ends: `tern sendmail -bs`, SMTP
    /// on stdin and stdout. The client is a local program: it appears as `127.0.0.1` in
    /// the Received header and events, and may send to any domain (as through sendmail).
    pub async fn run_local(
        ctx: Arc<ListenerContext>,
        stream: Box<dyn LocalStream>,
        shutdown: watch::Receiver<bool>,
    ) {
        let peer = SocketAddr::from(([127, 0, 0, 1], 0));
        Session::run_on(ctx, Conn::Local(stream), peer, true, shutdown).await;
    }

    async fn run_on(
        ctx: Arc<ListenerContext>,
        conn: Conn,
        peer: SocketAddr,
        client_may_relay: bool,
        shutdown: watch::Receiver<bool>,
    ) {
        let shared = &ctx.shared;
        let client_name = ClientName::start(
            shared.resolver.clone(),
            peer.ip(),
            shared.rdns_timeout,
            shared.rdns_lookup_loopback,
        );
        shared.events.emit(
            &catalog::SMTP_SESSION_STARTED,
            fields!("client" => peer, "listener" => ctx.config.name, "relay_client" => client_may_relay),
        );
        let mut s = Session {
            framer: CommandFramer::new(ctx.config.max_command_line),
            conn,
            ctx,
            peer,
            inbuf: Vec::with_capacity(READ_CHUNK),
            out: Vec::with_capacity(1024),
            phase: Phase::Connected,
            bdat: None,
            client_name,
            client_may_relay,
            errors: 0,
            queued: 0,
            shutdown,
        };
        let reason = match s.serve().await {
            Ok(()) => EndReason::Quit,
            Err(r) => r,
        };
        let name = s.client_name.get().await;
        let events = &s.ctx.shared.events;
        match &reason {
            EndReason::Timeout => events.emit(&catalog::SMTP_TIMEOUT, fields!("client" => s.peer)),
            EndReason::TooManyErrors => {
                events.emit(&catalog::SMTP_TOO_MANY_ERRORS, fields!("client" => s.peer))
            }
            EndReason::TlsFailed(e) => events.emit(
                &catalog::SMTP_TLS_FAILED,
                fields!("client" => s.peer, "error" => e),
            ),
            EndReason::ClientClosed | EndReason::Io(_) => events.emit(
                &catalog::SMTP_CONNECTION_LOST,
                fields!("client" => s.peer, "reason" => reason),
            ),
            _ => {}
        }
        events.emit(
            &catalog::SMTP_SESSION_ENDED,
            fields!(
                "client" => s.peer,
                "client_name" => name.as_deref().unwrap_or("unknown"),
                "queued" => s.queued,
                "reason" => reason,
            ),
        );
        // TLS needs its close_notify and a local stream its flush. Plain TCP does not:
        // every reply was written in full, and dropping the socket sends the same FIN
        // (a shutdown there mostly failed with ENOTCONN once the client had gone: one
        // wasted system call per connection).
        if !matches!(s.conn, Conn::Plain(_)) {
            let _ = tokio::time::timeout(Duration::from_secs(5), s.conn.shutdown()).await;
        }
    }

    async fn serve(&mut self) -> Flow {
        if self.ctx.config.tls == crate::config::TlsMode::Implicit {
            self.start_tls().await?;
        }
        let greeting = Reply::plain(
            220,
            vec![format!("{} ESMTP Tern", self.ctx.shared.hostname)],
        );
        greeting.write_to(&mut self.out);
        loop {
            self.process_buffered().await?;
            self.flush().await?;
            // Between BDAT chunks a message is in progress: shutdown waits for it.
            let in_message = self.bdat.is_some();
            self.read_more(self.ctx.config.timeouts.command, in_message)
                .await?;
        }
    }

    /// Answers every complete command in the input buffer.
    async fn process_buffered(&mut self) -> Flow {
        loop {
            let (frame, used) = self.framer.next_frame(&self.inbuf);
            let cmd = match frame {
                Frame::NeedMore => return Ok(()),
                Frame::Skipped => {
                    self.inbuf.drain(..used);
                    continue;
                }
                Frame::TooLong => {
                    self.inbuf.drain(..used);
                    self.reply(Reply::new(500, "5.5.2", "Line too long"))
                        .await?;
                    continue;
                }
                Frame::Line(line) => tern_proto::command::parse(line),
            };
            self.inbuf.drain(..used);
            self.command(cmd).await?;
            if self.out.len() > MAX_PENDING_OUTPUT {
                self.flush().await?;
            }
        }
    }

    async fn command(&mut self, cmd: Result<Command, CommandError>) -> Flow {
        let reply = match cmd {
            Err(e) => e.reply(),
            Ok(Command::Ehlo(name)) => self.helo(name, true),
            Ok(Command::Helo(name)) => self.helo(name, false),
            Ok(Command::Mail(m)) => self.mail(m),
            Ok(Command::Rcpt(r)) => self.rcpt(r),
            Ok(Command::Data) => return self.data().await,
            Ok(Command::Bdat { size, last }) => return self.bdat(size, last).await,
            Ok(Command::Rset) => {
                self.bdat = None;
                self.phase = std::mem::replace(&mut self.phase, Phase::Connected).reset();
                Reply::new(250, "2.0.0", "Ok")
            }
            Ok(Command::Noop) => Reply::new(250, "2.0.0", "Ok"),
            Ok(Command::Quit) => {
                Reply::new(221, "2.0.0", "Bye").write_to(&mut self.out);
                self.flush().await?;
                return Err(EndReason::Quit);
            }
            Ok(Command::Help) => {
                let tls = if self.starttls_offered() {
                    " STARTTLS"
                } else {
                    ""
                };
                Reply::new(
                    214,
                    "2.0.0",
                    format!(
                        "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY{tls}"
                    ),
                )
            }
            Ok(Command::Vrfy) => Reply::new(
                252,
                "2.5.0",
                "Cannot VRFY user, but will accept message and attempt delivery",
            ),
            Ok(Command::Expn) => Reply::new(502, "5.5.1", "EXPN not available"),
            Ok(Command::StartTls) => return self.starttls().await,
            Ok(Command::NotOffered(name)) => {
                Reply::new(502, "5.5.1", format!("{name} not available"))
            }
            Ok(_) => Reply::new(502, "5.5.1", "Command not implemented"),
        };
        self.reply(reply).await
    }

    /// Queues a reply; counts errors and ends the session past the limit.
    async fn reply(&mut self, reply: Reply) -> Flow {
        reply.write_to(&mut self.out);
        if reply.is_error() {
            self.errors = self.errors.saturating_add(1);
            if self.errors >= self.ctx.config.max_errors {
                Reply::new(
                    421,
                    "4.7.0",
                    format!(
                        "{} Too many errors, closing connection",
                        self.ctx.shared.hostname
                    ),
                )
                .write_to(&mut self.out);
                tern_metrics::get().reject(Reject::Limits);
                self.flush().await?;
                return Err(EndReason::TooManyErrors);
            }
        }
        Ok(())
    }

    fn helo(&mut self, name: String, esmtp: bool) -> Reply {
        self.bdat = None;
        self.phase =
            std::mem::replace(&mut self.phase, Phase::Connected).greet(Greeting { name, esmtp });
        let host = self.ctx.shared.hostname.clone();
        if !esmtp {
            return Reply::plain(250, vec![host]);
        }
        let mut lines = vec![
            host,
            "PIPELINING".to_string(),
            format!("SIZE {}", self.ctx.config.max_message_size),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "CHUNKING".into(),
            "DSN".into(),
        ];
        if self.starttls_offered() {
            lines.push("STARTTLS".into());
        }
        lines.push("HELP".into());
        Reply::plain(250, lines)
    }

    fn starttls_offered(&self) -> bool {
        self.ctx.tls.is_some() && matches!(self.conn, Conn::Plain(_))
    }

    fn mail(&mut self, m: tern_proto::MailCommand) -> Reply {
        if let Err(r) = self.phase.may_start_mail() {
            return r;
        }
        if let Some(reason) = self.ctx.shared.back_pressure.refusing() {
            self.ctx.shared.events.emit(
                &catalog::SMTP_BACK_PRESSURE,
                fields!("client" => self.peer, "reason" => reason),
            );
            tern_metrics::get().reject(Reject::BackPressure);
            return Reply::new(452, "4.3.1", "Insufficient system storage, try again later");
        }
        if let Some(size) = m.size
            && size > self.ctx.config.max_message_size
        {
            tern_metrics::get().reject(Reject::Size);
            return Reply::new(
                552,
                "5.3.4",
                format!(
                    "Message size exceeds fixed limit of {} octets",
                    self.ctx.config.max_message_size
                ),
            );
        }
        let sender = match relay::check_sender(&m.address, m.smtputf8) {
            Ok(s) => s,
            Err(r) => {
                tern_metrics::get().reject(Reject::Syntax);
                return r;
            }
        };
        let params = MailParams {
            declared_size: m.size,
            body: match m.body {
                tern_proto::command::Body::SevenBit => BodyType::SevenBit,
                tern_proto::command::Body::EightBitMime => BodyType::EightBitMime,
            },
            smtputf8: m.smtputf8,
            dsn_ret: m.ret.map(|r| match r {
                tern_proto::command::Ret::Full => DsnRet::Full,
                tern_proto::command::Ret::Hdrs => DsnRet::Hdrs,
            }),
            dsn_envid: m.envid,
        };
        self.phase =
            std::mem::replace(&mut self.phase, Phase::Connected).start_mail(sender, params);
        Reply::new(250, "2.1.0", "Ok")
    }

    fn rcpt(&mut self, r: tern_proto::RcptCommand) -> Reply {
        let max = self.ctx.config.max_recipients;
        let relay = self.ctx.shared.relay.load();
        let may_relay = self.client_may_relay;
        let txn = match self.phase.transaction_mut() {
            Ok(t) => t,
            Err(reply) => return reply,
        };
        if txn.recipients.len() >= max {
            tern_metrics::get().reject(Reject::Limits);
            return Reply::new(452, "4.5.3", "Too many recipients");
        }
        let address = match relay.check_recipient(&r.address, may_relay, txn.params.smtputf8) {
            Ok(a) => a,
            Err(reply) => {
                txn.refused += 1;
                // check_recipient refuses with 554 for relaying, else for the syntax.
                let reason = if reply.code == 554 {
                    Reject::RelayDenied
                } else {
                    Reject::Syntax
                };
                tern_metrics::get().reject(reason);
                if reply.code == 554 {
                    self.ctx.shared.events.emit(
                        &catalog::SMTP_RELAY_DENIED,
                        fields!("client" => self.peer.ip(), "recipient" => r.address),
                    );
                }
                return reply;
            }
        };
        // Local domains: the final recipients go into the envelope (aliases expanded,
        // unknown users refused here so nothing is bounced later).
        let finals = match relay.local().resolve(&address) {
            Ok(Resolution::NotLocal) => vec![address.clone()],
            Ok(Resolution::Local(list)) => list,
            Err(refusal) => {
                txn.refused += 1;
                let (event, reason) = if refusal.is_alias_problem() {
                    (&catalog::LOCAL_ALIAS_REFUSED, Reject::Alias)
                } else {
                    (&catalog::LOCAL_RECIPIENT_UNKNOWN, Reject::UnknownUser)
                };
                tern_metrics::get().reject(reason);
                self.ctx.shared.events.emit(
                    event,
                    fields!("client" => self.peer.ip(), "recipient" => address, "reason" => refusal),
                );
                return Reply::new(refusal.code(), refusal.enhanced(), refusal.to_string());
            }
        };
        let local = relay.local();
        let same = |a: &str, b: &str| {
            a == b || (local.is_local_domain(domain_of(a)) && key_of(a) == key_of(b))
        };
        let new: Vec<String> = finals
            .into_iter()
            .filter(|f| !txn.recipients.iter().any(|x| same(&x.address, f)))
            .collect();
        if txn.recipients.len().saturating_add(new.len()) > max {
            tern_metrics::get().reject(Reject::Limits);
            return Reply::new(452, "4.5.3", "Too many recipients");
        }
        let notify = r.notify.map(|n| Notify {
            success: n.success,
            failure: n.failure,
            delay: n.delay,
            never: n.never,
        });
        for final_address in new {
            // An expanded recipient keeps the address the client gave as its ORCPT, so a
            // DSN names what the sender wrote (RFC 3461 §4.2).
            let orcpt = if final_address == address {
                r.orcpt.clone()
            } else {
                r.orcpt
                    .clone()
                    .or_else(|| Some(original_recipient(&address)))
            };
            txn.recipients.push(Recipient {
                address: final_address,
                orcpt,
                notify,
                status: RecipientStatus::Pending,
            });
        }
        Reply::new(250, "2.1.5", "Ok")
    }

    async fn starttls(&mut self) -> Flow {
        let reply = if !matches!(self.conn, Conn::Plain(_)) {
            Reply::new(503, "5.5.1", "TLS already active")
        } else if self.ctx.tls.is_none() {
            Reply::new(502, "5.5.1", "STARTTLS not available")
        } else if self.phase.in_transaction() || self.bdat.is_some() {
            Reply::new(503, "5.5.1", "Mail transaction in progress")
        } else {
            Reply::new(220, "2.0.0", "Ready to start TLS").write_to(&mut self.out);
            self.flush().await?;
            // Whatever the client pipelined after STARTTLS in plaintext is discarded.
            self.inbuf.clear();
            self.framer.reset();
            self.start_tls().await?;
            self.phase = Phase::Connected;
            return Ok(());
        };
        self.reply(reply).await
    }

    async fn start_tls(&mut self) -> Flow {
        let Some(acceptor) = self.ctx.tls.clone() else {
            return Err(EndReason::TlsFailed("no certificate".into()));
        };
        let limit = Duration::from_secs(self.ctx.config.timeouts.tls_handshake);
        match tokio::time::timeout(limit, self.conn.upgrade(&acceptor)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(EndReason::TlsFailed(e.to_string())),
            Err(_) => Err(EndReason::TlsFailed("handshake timed out".into())),
        }
    }

    /// Writes pending replies.
    async fn flush(&mut self) -> Flow {
        if self.out.is_empty() {
            return Ok(());
        }
        let limit = Duration::from_secs(self.ctx.config.timeouts.write);
        let res = tokio::time::timeout(limit, async {
            self.conn.write_all(&self.out).await?;
            self.conn.flush().await
        })
        .await;
        self.out.clear();
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(EndReason::Io(e.to_string())),
            Err(_) => Err(EndReason::Timeout),
        }
    }

    /// Reads at least one byte into the input buffer. Between commands a shutdown request
    /// ends the session with 421; during message content it does not (the grace period
    /// bounds that).
    async fn read_more(&mut self, timeout_secs: u64, in_content: bool) -> Flow {
        let limit = Duration::from_secs(timeout_secs);
        // Read straight into the buffer's spare capacity: no zeroing, no copy.
        self.inbuf.reserve(READ_CHUNK);
        tokio::select! {
            r = tokio::time::timeout(limit, self.conn.read_buf(&mut self.inbuf)) => match r {
                Ok(Ok(0)) => Err(EndReason::ClientClosed),
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(EndReason::Io(e.to_string())),
                Err(_) => {
                    Reply::new(421, "4.4.2", format!("{} Timeout exceeded, closing connection", self.ctx.shared.hostname))
                        .write_to(&mut self.out);
                    let _ = self.flush().await;
                    Err(EndReason::Timeout)
                }
            },
            _ = wait_for_shutdown(&mut self.shutdown), if !in_content => {
                Reply::new(421, "4.3.2", format!("{} Service shutting down, try again later", self.ctx.shared.hostname))
                    .write_to(&mut self.out);
                let _ = self.flush().await;
                Err(EndReason::Shutdown)
            }
        }
    }
}

/// The domain of an address (after its last `@`).
fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
}

/// ORCPT for a recipient reached through an alias: `rfc822;<address>`, or RFC 6533's
/// `utf-8;` type for an internationalised one.
fn original_recipient(address: &str) -> String {
    if address.is_ascii() {
        format!("rfc822;{address}")
    } else {
        format!("utf-8;{address}")
    }
}

/// Resolves when shutdown is requested (or its sender is gone).
pub(crate) async fn wait_for_shutdown(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
