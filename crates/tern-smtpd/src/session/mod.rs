//! One inbound SMTP session: the I/O loop around the codec and the state machine.
//!
//! The loop reads into a bounded input buffer, lets [`tern_proto::CommandFramer`] cut
//! command lines out of it, answers each command, and flushes the collected replies only
//! when the buffer holds no further complete command (RFC 2920 pipelining: one write per
//! batch). DATA and BDAT content is streamed from the same buffer into a
//! [`tern_spool::MessageDraft`] (see `message.rs`).
//!
//! Invariants:
//! - Every read has a deadline and a size bound; the input buffer never holds more than one
//!   command line's limit plus one read, except during DATA, where it is drained as it is
//!   decoded. Deadlines do not restart per byte (see `clock.rs`): a command line must
//!   arrive whole within the command timeout counted from when the server began waiting
//!   for it, content must keep progressing at `min_data_rate`, and the whole session ends
//!   at `timeouts.session` (a message in transfer gets `timeouts.data` more). Writes are
//!   bounded by `timeouts.write`.
//! - While it waits for a command with no transaction or transfer open, the session is in
//!   its listener's idle list (`crate::limits`) and may be told to give its place to a new
//!   client: it then answers `421 4.7.0` and closes. As soon as a complete command line is
//!   in its buffer it leaves the list; if it was displaced in between, it closes without
//!   executing the command. While the listener is in stress, the session's timeouts and
//!   limits are the stress ones (it is woken at each change to recompute its deadline).
//! - NOOP, RSET, HELP, VRFY and EXPN are junk commands: past `max_junk_commands` the
//!   session is closed with `421 4.7.0`. The count restarts when a message is queued.
//!   `452 4.5.3` (too many recipients) does not count toward `max_errors`: the client is
//!   doing what RFC 5321 §4.5.3.1.10 asks.
//! - Rate limits (`crate::rate`, docs/LIMITS.md): a network session's first act, before
//!   any event or greeting, is its client network's connection rate check (`421 4.7.0`
//!   and close when over). MAIL and each RCPT that would be accepted are charged to the
//!   client network, user and sender domain (`451 4.7.1` when over, nothing charged); a
//!   limit is logged once per key and window, and the `max_recipients` refusal once per
//!   transaction. Local sessions (`tern sendmail -bs`) are not limited.
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
//! - Screening (`screen.rs`, docs/SCREENING.md): on a listener that screens, a client
//!   outside the relay networks that the pass cache does not remember gets `220-` and
//!   waits `greet_wait` (the DNS lists asked meanwhile, each bounded) before the final
//!   `220 `; what it sends meanwhile is pre-greeting talk, read once and kept for after
//!   the greeting. A failed test under `drop` ends the session with `521` before any
//!   command is executed; under `enforce` every RCPT gets `550`. Greylisting answers
//!   `451 4.7.1` at a RCPT that would be accepted, never to relay-network or
//!   authenticated clients, and does not count toward `max_errors`.
//! - SMTP AUTH (`auth.rs`): offered only under TLS (or to loopback clients where allowed);
//!   an authenticated client may relay like a relay-network client; on a listener with
//!   `auth = "required"` nothing is accepted before AUTH. During an exchange the input
//!   buffer may hold one response line of up to 12288 octets (RFC 4954 §4).

mod auth;
pub mod clock;
mod conn;
mod from_header;
mod message;
mod screen;
pub mod state;
mod verify;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
use crate::limits::ConnectionSlot;
use crate::rdns::ClientName;
use crate::relay;
use clock::{ContentBudget, Expiry, InForce};
pub use conn::{Conn, LocalStream};
use state::{Greeting, Phase};

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Replies are flushed early once this much output is pending (a client that pipelines
/// thousands of commands without reading).
const MAX_PENDING_OUTPUT: usize = 16 * 1024;
/// The most time spent writing a last `421` before closing (the client may not read).
const GOODBYE_WRITE: Duration = Duration::from_secs(10);

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The client sent QUIT.
    Quit,
    /// The client closed the connection.
    ClientClosed,
    /// The client did not keep up at this stage (`command`, `content`, `write`).
    Timeout(&'static str),
    /// The session lasted longer than `timeouts.session`.
    SessionLimit,
    /// Too many erroneous commands.
    TooManyErrors,
    /// Too many junk commands (NOOP, RSET, HELP, VRFY, EXPN).
    TooManyJunk,
    /// The listener was full and this idle session gave its place to a new client.
    Evicted,
    /// Tern is shutting down.
    Shutdown,
    /// TLS handshake failed.
    TlsFailed(String),
    /// A socket error.
    Io(String),
    /// Screening dropped the client (`dnsbl`, `pregreet`; docs/SCREENING.md).
    Screened(&'static str),
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndReason::Quit => f.write_str("quit"),
            EndReason::ClientClosed => f.write_str("client closed"),
            EndReason::Timeout(stage) => write!(f, "timeout ({stage})"),
            EndReason::SessionLimit => f.write_str("session time limit"),
            EndReason::TooManyErrors => f.write_str("too many errors"),
            EndReason::TooManyJunk => f.write_str("too many junk commands"),
            EndReason::Evicted => f.write_str("gave way to a new client"),
            EndReason::Shutdown => f.write_str("shutdown"),
            EndReason::TlsFailed(e) => write!(f, "tls failed: {e}"),
            EndReason::Io(e) => write!(f, "i/o error: {e}"),
            EndReason::Screened(test) => write!(f, "screened ({test})"),
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
    /// The SASL identity after a successful AUTH (at most once per session; cleared by
    /// STARTTLS).
    authenticated: Option<String>,
    errors: u32,
    /// Junk commands since the session started or last queued a message.
    junk: u32,
    queued: u32,
    shutdown: watch::Receiver<bool>,
    /// The session's place on its listener (`None` for a local session).
    slot: Option<ConnectionSlot>,
    /// Follows the listener's stress state (`None` for a local session).
    stress: Option<watch::Receiver<bool>>,
    /// True while the session is in its listener's idle list.
    idle: bool,
    /// When the session started (the session time limit counts from here).
    started: Instant,
    /// When the server began waiting for the command line being read; `None` while a
    /// command is being answered.
    command_since: Option<Instant>,
    /// The progress budget of the message in transfer. Invariant: `Some` exactly while
    /// DATA content is being read or a BDAT transfer is open (a refused BDAT chunk being
    /// read counts too).
    content: Option<ContentBudget>,
    /// What screening decided (`screen.rs`).
    screen: screen::ScreenState,
    /// The SPF check of the open transaction, started at MAIL FROM when the message is
    /// verified (`verify.rs`); taken when its content starts.
    spf: Option<verify::SpfTask>,
}

/// What a read waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// The next command line.
    Command,
    /// Message content.
    Content,
}

impl Session {
    /// Runs a session on an accepted connection until it ends. `slot` is its place on
    /// the listener (released when the session ends); `client_may_relay` whether the
    /// client is in a relay network (decided when it was admitted).
    pub async fn run(
        ctx: Arc<ListenerContext>,
        tcp: TcpStream,
        peer: SocketAddr,
        slot: ConnectionSlot,
        client_may_relay: bool,
        shutdown: watch::Receiver<bool>,
    ) {
        let _ = tcp.set_nodelay(true);
        // Connections per window of the client network, before anything else: no
        // greeting, no session events, no reverse lookup for a client over its rate.
        let now = tern_watchdog::clock::unix_ms();
        if let Err(limited) = ctx
            .shared
            .limits
            .connection(peer.ip(), client_may_relay, now)
            .await
        {
            limited.record(&ctx.shared.events, peer);
            // The place goes back at once, not after the refusal is written.
            drop(slot);
            refuse_over_rate(tcp, &ctx, &limited).await;
            return;
        }
        Session::run_on(
            ctx,
            Conn::Plain(tcp),
            peer,
            Some(slot),
            client_may_relay,
            shutdown,
        )
        .await;
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
        Session::run_on(ctx, Conn::Local(stream), peer, None, true, shutdown).await;
    }

    async fn run_on(
        ctx: Arc<ListenerContext>,
        conn: Conn,
        peer: SocketAddr,
        slot: Option<ConnectionSlot>,
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
        let screen = screen::ScreenState::for_session(
            shared.screen.as_ref(),
            &ctx.config,
            client_may_relay,
            slot.is_none(),
        );
        let mut s = Session {
            screen,
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
            authenticated: None,
            errors: 0,
            junk: 0,
            queued: 0,
            shutdown,
            stress: slot.as_ref().map(ConnectionSlot::stress_receiver),
            // A session is admitted idle (see `crate::limits`).
            idle: slot.is_some(),
            slot,
            started: Instant::now(),
            command_since: None,
            content: None,
            spf: None,
        };
        let reason = match s.serve().await {
            Ok(()) => EndReason::Quit,
            Err(r) => r,
        };
        let name = s.client_name.get().await;
        let events = &s.ctx.shared.events;
        match &reason {
            EndReason::Timeout(stage) => events.emit(
                &catalog::SMTP_TIMEOUT,
                fields!("client" => s.peer, "stage" => stage),
            ),
            EndReason::SessionLimit => events.emit(
                &catalog::SMTP_SESSION_LIMIT,
                fields!("client" => s.peer, "seconds" => s.started.elapsed().as_secs()),
            ),
            EndReason::TooManyErrors => {
                events.emit(&catalog::SMTP_TOO_MANY_ERRORS, fields!("client" => s.peer))
            }
            EndReason::TooManyJunk => events.emit(
                &catalog::SMTP_JUNK_LIMIT,
                fields!("client" => s.peer, "junk_commands" => s.junk),
            ),
            EndReason::Evicted => events.emit(
                &catalog::SMTP_IDLE_EVICTED,
                fields!("client" => s.peer, "listener" => s.ctx.config.name),
            ),
            EndReason::TlsFailed(e) => {
                events.emit(
                    &catalog::SMTP_TLS_FAILED,
                    fields!("client" => s.peer, "error" => e),
                );
                if let Some(inbound) = &s.ctx.shared.inbound_tls {
                    inbound.handshake_failed(events, s.peer, &s.ctx.config.name, e);
                }
            }
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
            // A client that connects and never starts its handshake is as idle as one
            // that never sends a command (a new session is idle from its admission): it
            // may be displaced, without a reply (there is no TLS to send one in).
            self.start_tls().await?;
        }
        let shared = &self.ctx.shared;
        let greeting = match &shared.loop_mark {
            Some(mark) => format!("{} ESMTP Tern {mark}", shared.hostname),
            None => format!("{} ESMTP Tern", shared.hostname),
        };
        // Screening (`screen.rs`): the first line of the greeting and the wait, for a
        // client not yet known; a drop ends the session here.
        self.before_greeting(&greeting).await?;
        let greeting = Reply::plain(220, vec![greeting]);
        greeting.write_to(&mut self.out);
        loop {
            self.process_buffered().await?;
            // Idle from before the replies are written: the client cannot act on them
            // before the session is in line, so the line is in the order of the replies.
            if self.content.is_none() && !self.phase.in_transaction() {
                self.mark_idle();
            }
            self.flush().await?;
            self.read_more(Wait::Command).await?;
        }
    }

    /// The limits in force now (stress applied).
    fn in_force(&self) -> InForce {
        let stress = self.slot.as_ref().is_some_and(ConnectionSlot::in_stress);
        InForce::of(&self.ctx.config, stress)
    }

    /// When the session must end: `timeouts.session` after it started, plus
    /// `timeouts.data` while a message is in transfer.
    fn session_end(&self, limits: &InForce) -> Instant {
        let end = clock::after(self.started, limits.session);
        match self.content {
            Some(_) => clock::after(end, limits.data),
            None => end,
        }
    }

    /// Enters the listener's idle list (once per wait).
    fn mark_idle(&mut self) {
        if !self.idle
            && let Some(slot) = &self.slot
        {
            slot.set_idle();
            self.idle = true;
        }
    }

    /// A complete command line is in the buffer: the wait for it is over, and the session
    /// may no longer give way; if it already has, it closes now.
    async fn command_arrived(&mut self) -> Flow {
        self.command_since = None;
        if !self.idle {
            return Ok(());
        }
        self.idle = false;
        match self.slot.as_ref().map(ConnectionSlot::set_busy) {
            Some(Err(_)) => self.evicted().await,
            _ => Ok(()),
        }
    }

    /// Closes a session that gave its place to a new client.
    async fn evicted(&mut self) -> Flow {
        let reply = Reply::new(
            421,
            "4.7.0",
            format!(
                "{} Too many connections, closing idle connection",
                self.ctx.shared.hostname
            ),
        );
        self.goodbye(reply, EndReason::Evicted).await
    }

    /// Sends a last reply (after whatever is pending), briefly, and ends the session.
    async fn goodbye(&mut self, reply: Reply, reason: EndReason) -> Flow {
        reply.write_to(&mut self.out);
        let limit = self.in_force().write.min(GOODBYE_WRITE);
        let _ = self.write_out(limit).await;
        Err(reason)
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
                    self.command_arrived().await?;
                    self.reply(Reply::new(500, "5.5.2", "Line too long"))
                        .await?;
                    continue;
                }
                Frame::Line(line) => tern_proto::command::parse(line),
            };
            self.inbuf.drain(..used);
            self.command_arrived().await?;
            self.command(cmd).await?;
            if self.out.len() > MAX_PENDING_OUTPUT {
                self.flush().await?;
            }
        }
    }

    async fn command(&mut self, cmd: Result<Command, CommandError>) -> Flow {
        let junk = matches!(
            cmd,
            Ok(Command::Noop | Command::Rset | Command::Help | Command::Vrfy | Command::Expn)
        );
        if junk {
            self.junk = self.junk.saturating_add(1);
            if self.junk > self.in_force().max_junk {
                tern_metrics::get().reject(Reject::Limits);
                let reply = Reply::new(
                    421,
                    "4.7.0",
                    format!(
                        "{} Too many junk commands, closing connection",
                        self.ctx.shared.hostname
                    ),
                );
                return self.goodbye(reply, EndReason::TooManyJunk).await;
            }
        }
        let reply = match cmd {
            Err(e) => e.reply(),
            Ok(Command::Ehlo(name)) => self.helo(name, true),
            Ok(Command::Helo(name)) => self.helo(name, false),
            Ok(Command::Mail(m)) => self.mail(m).await,
            Ok(Command::Rcpt(r)) => self.rcpt(r).await,
            Ok(Command::Data) => return self.data().await,
            Ok(Command::Bdat { size, last }) => return self.bdat(size, last).await,
            Ok(Command::Rset) => {
                self.bdat = None;
                self.content = None;
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
                let auth = if self.auth_ehlo_line().is_some() {
                    " AUTH"
                } else {
                    ""
                };
                Reply::new(
                    214,
                    "2.0.0",
                    format!(
                        "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY{tls}{auth}"
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
            Ok(Command::Auth { mechanism, initial }) => {
                return self.auth(mechanism, initial).await;
            }
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
        if counts_as_error(&reply) {
            self.errors = self.errors.saturating_add(1);
            if self.errors >= self.in_force().max_errors {
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
        self.content = None;
        let name = crate::received::without_controls(&name);
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
        if let Some(auth) = self.auth_ehlo_line() {
            lines.push(auth);
        }
        if self.starttls_offered() {
            lines.push("STARTTLS".into());
        }
        lines.push("HELP".into());
        Reply::plain(250, lines)
    }

    fn starttls_offered(&self) -> bool {
        self.ctx.tls.is_some() && matches!(self.conn, Conn::Plain(_))
    }

    async fn mail(&mut self, m: tern_proto::MailCommand) -> Reply {
        if let Err(r) = self.phase.may_start_mail() {
            return r;
        }
        if let Some(r) = self.auth_required_refusal() {
            return r;
        }
        if m.auth.is_some() && self.auth_ehlo_line().is_none() && self.authenticated.is_none() {
            // RFC 4954 §5: AUTH= only where AUTH was advertised. Where it was, it is
            // accepted and ignored: Tern does not pass it on.
            tern_metrics::get().reject(Reject::Syntax);
            return Reply::new(555, "5.5.4", "Parameter AUTH not supported");
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
        if let Some(r) = self.sender_refusal(&sender) {
            return r;
        }
        // Messages per window: client network, user, sender domain (docs/LIMITS.md);
        // in the same call, the recipient limits' units for the RCPTs pipelined after it.
        let user: Option<&str> = self.authenticated.as_deref();
        let now = tern_watchdog::clock::unix_ms();
        let shared = &self.ctx.shared;
        let (inbuf, max_recipients) = (&self.inbuf, self.ctx.config.max_recipients);
        let allowance = match shared
            .limits
            .message_ahead(
                self.peer.ip(),
                self.client_may_relay,
                user,
                &sender,
                || pipelined_rcpts(inbuf, max_recipients),
                now,
            )
            .await
        {
            Ok(a) => a,
            Err(limited) => {
                limited.record(&shared.events, self.peer);
                return limited.reply(&shared.hostname);
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
        // SPF starts now, in the background; the reply does not wait for it.
        self.spf = self.verifier().filter(|v| v.config().spf).map(|v| {
            let helo = self.phase.greeting().map_or("", |g| g.name.as_str());
            verify::SpfTask::start(v, self.peer.ip(), helo, &sender)
        });
        self.phase =
            std::mem::replace(&mut self.phase, Phase::Connected).start_mail(sender, params);
        if let Ok(txn) = self.phase.transaction_mut() {
            txn.allowance = allowance;
        }
        Reply::new(250, "2.1.0", "Ok")
    }

    async fn rcpt(&mut self, r: tern_proto::RcptCommand) -> Reply {
        let max = self.ctx.config.max_recipients;
        let ctx = Arc::clone(&self.ctx);
        let relay = ctx.shared.relay.load();
        // An authenticated client may relay, like a relay-network client (but only a
        // relay network is exempt from the per-client rate limits).
        let may_relay = self.client_may_relay || self.authenticated.is_some();
        let in_relay_network = self.client_may_relay;
        let user = self.authenticated.clone();
        let peer = self.peer;
        let greylisting = self.greylisting(may_relay);
        if self.phase.transaction_mut().is_ok()
            && let Some(reply) = self.screen_refusal()
        {
            if let Ok(txn) = self.phase.transaction_mut() {
                txn.refused += 1;
            }
            return reply;
        }
        let txn = match self.phase.transaction_mut() {
            Ok(t) => t,
            Err(reply) => return reply,
        };
        if txn.recipients.len() >= max {
            return too_many_recipients(&ctx, peer, txn, max);
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
            a == b
                || (local.is_local_domain(tern_proto::address::domain_of(a))
                    && key_of(a) == key_of(b))
        };
        let new: Vec<String> = finals
            .into_iter()
            .filter(|f| !txn.recipients.iter().any(|x| same(&x.address, f)))
            .collect();
        if txn.recipients.len().saturating_add(new.len()) > max {
            return too_many_recipients(&ctx, peer, txn, max);
        }
        // Greylisting (docs/SCREENING.md), for a recipient that would be accepted.
        if !new.is_empty()
            && let Some(screen) = &greylisting
            && let Some(reply) =
                screen::greylist(screen, &ctx.shared.events, peer, &txn.sender, &address).await
        {
            txn.refused += 1;
            return reply;
        }
        // Recipients per window: client network, user, sender domain
        // (docs/LIMITS.md); charged only for a recipient about to be accepted.
        let now = tern_watchdog::clock::unix_ms();
        if !new.is_empty()
            && let Err(limited) = ctx
                .shared
                .limits
                .recipient(
                    peer.ip(),
                    in_relay_network,
                    user.as_deref(),
                    &txn.sender,
                    &mut txn.allowance,
                    now,
                )
                .await
        {
            limited.record(&ctx.shared.events, peer);
            return limited.reply(&ctx.shared.hostname);
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
            // RFC 3207 §4.2: nothing learned before TLS counts after it.
            self.authenticated = None;
            return Ok(());
        };
        self.reply(reply).await
    }

    async fn start_tls(&mut self) -> Flow {
        let Some(acceptor) = self.ctx.tls.clone() else {
            return Err(EndReason::TlsFailed("no certificate".into()));
        };
        let limits = self.in_force();
        let end = self.session_end(&limits);
        let limit = limits
            .tls_handshake
            .min(end.saturating_duration_since(Instant::now()));
        let evictable = self.idle;
        let handshake = tokio::select! {
            r = tokio::time::timeout(limit, self.conn.upgrade(&acceptor)) => r,
            _ = displaced(&self.slot), if evictable => return Err(EndReason::Evicted),
        };
        match handshake {
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
        let limit = self.in_force().write;
        match self.write_out(limit).await {
            Ok(()) => Ok(()),
            Err(Some(e)) => Err(EndReason::Io(e.to_string())),
            Err(None) => Err(EndReason::Timeout("write")),
        }
    }

    /// Writes and clears the pending output within `limit`; `Err(None)` when the time
    /// ran out.
    async fn write_out(&mut self, limit: Duration) -> Result<(), Option<std::io::Error>> {
        let res = tokio::time::timeout(limit, async {
            self.conn.write_all(&self.out).await?;
            self.conn.flush().await
        })
        .await;
        self.out.clear();
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Some(e)),
            Err(_) => Err(None),
        }
    }

    /// Reads at least one byte into the input buffer, within the deadline of `wait` (see
    /// `clock.rs`). Between commands a shutdown request ends the session with 421, and so
    /// does being displaced by a new client while idle; during a message transfer neither
    /// does (the grace period bounds a shutdown). A change of stress state recomputes the
    /// deadline.
    async fn read_more(&mut self, wait: Wait) -> Flow {
        // Read straight into the buffer's spare capacity: no zeroing, no copy.
        self.inbuf.reserve(READ_CHUNK);
        loop {
            let limits = self.in_force();
            let now = Instant::now();
            let since = match wait {
                Wait::Command => Some(*self.command_since.get_or_insert(now)),
                Wait::Content => None,
            };
            let (at, expiry) = clock::deadline(
                now,
                self.session_end(&limits),
                since,
                self.content.as_ref(),
                &limits,
            );
            let in_message = self.content.is_some();
            let evictable = self.idle;
            let read = tokio::select! {
                r = tokio::time::timeout_at(at.into(), self.conn.read_buf(&mut self.inbuf)) => Some(r),
                _ = wait_for_shutdown(&mut self.shutdown), if !in_message => {
                    let reply = Reply::new(421, "4.3.2", format!("{} Service shutting down, try again later", self.ctx.shared.hostname));
                    return self.goodbye(reply, EndReason::Shutdown).await;
                }
                _ = displaced(&self.slot), if evictable => return self.evicted().await,
                _ = stress_changed(&mut self.stress) => None,
            };
            let waited = now.elapsed();
            let octets = match &read {
                Some(Ok(Ok(n))) => *n,
                _ => 0,
            };
            if let Some(budget) = self.content.as_mut() {
                budget.spend(waited, octets, limits.min_data_rate, limits.data);
            }
            match read {
                // The stress state changed: recompute the deadline.
                None => continue,
                Some(Ok(Ok(0))) => return Err(EndReason::ClientClosed),
                Some(Ok(Ok(_))) => return Ok(()),
                Some(Ok(Err(e))) => return Err(EndReason::Io(e.to_string())),
                Some(Err(_)) => return self.expired(expiry).await,
            }
        }
    }

    /// Closes the session whose `expiry` ran out.
    async fn expired(&mut self, expiry: Expiry) -> Flow {
        let host = &self.ctx.shared.hostname;
        let (text, reason) = match expiry {
            Expiry::Command => ("Timeout exceeded", EndReason::Timeout("command")),
            Expiry::Content => ("Timeout exceeded", EndReason::Timeout("content")),
            Expiry::Session => ("Session time limit exceeded", EndReason::SessionLimit),
        };
        let reply = Reply::new(421, "4.4.2", format!("{host} {text}, closing connection"));
        self.goodbye(reply, reason).await
    }
}

/// True for the replies that count toward `max_errors`: every 4xx and 5xx but `452
/// 4.5.3` (too many recipients), which a client that pipelines many RCPTs gets by design
/// and answers by sending the rest in a later transaction, and greylisting's `451 4.7.1`
/// (one per new recipient, by design too).
fn counts_as_error(reply: &Reply) -> bool {
    let greylisted = reply.code == 451
        && reply
            .lines
            .first()
            .is_some_and(|l| l.starts_with(screen::GREYLISTED));
    reply.is_error()
        && !(reply.code == 452 && reply.status.as_deref() == Some("4.5.3"))
        && !greylisted
}

/// `452 4.5.3` past the listener's `max_recipients`, counted each time and logged once
/// per transaction (event 2133).
fn too_many_recipients(
    ctx: &ListenerContext,
    peer: SocketAddr,
    txn: &mut state::Transaction,
    max: usize,
) -> Reply {
    let metrics = tern_metrics::get();
    metrics.reject(Reject::Limits);
    metrics.rate_limited(tern_metrics::RateLimited::RecipientsPerMessage);
    if !txn.recipient_limit_logged {
        txn.recipient_limit_logged = true;
        ctx.shared.events.emit(
            &catalog::LIMIT_RECIPIENTS_PER_MESSAGE,
            fields!("client" => peer, "listener" => ctx.config.name, "max_recipients" => max),
        );
    }
    Reply::new(
        452,
        "4.5.3",
        format!("Too many recipients for one message (limit {max})"),
    )
}

/// Refuses a connection over its client network's rate: `421 4.7.0` (briefly), or on
/// an implicit-TLS listener a plain close (no TLS to say it in, and no handshake
/// spent on a client over its rate).
async fn refuse_over_rate(
    mut tcp: TcpStream,
    ctx: &ListenerContext,
    limited: &crate::rate::Limited,
) {
    if ctx.config.tls == crate::config::TlsMode::Implicit {
        return;
    }
    let mut out = Vec::new();
    limited.reply(&ctx.shared.hostname).write_to(&mut out);
    let _ = tokio::time::timeout(GOODBYE_WRITE, async {
        tcp.write_all(&out).await?;
        tcp.shutdown().await
    })
    .await;
}

/// Resolves when the session has been displaced (never without a listener place).
async fn displaced(slot: &Option<ConnectionSlot>) {
    match slot {
        Some(s) => s.evicted().await,
        None => std::future::pending().await,
    }
}

/// Resolves when the listener's stress state changes (never without a listener).
async fn stress_changed(rx: &mut Option<watch::Receiver<bool>>) {
    if let Some(r) = rx
        && r.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
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

/// Most input read for [`pipelined_rcpts`].
const PIPELINE_SCAN: usize = 64 * 1024;

/// The RCPT commands complete in `buf` one after the other from its start (what a client
/// pipelined after MAIL FROM, RFC 2920), at most `max`; the first line of another
/// command ends the count. Reads at most [`PIPELINE_SCAN`] octets.
fn pipelined_rcpts(buf: &[u8], max: usize) -> u32 {
    let buf = buf.get(..buf.len().min(PIPELINE_SCAN)).unwrap_or_default();
    let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
        return 0;
    };
    let n = buf
        .get(..end)
        .unwrap_or_default()
        .split(|b| *b == b'\n')
        .take_while(|line| {
            line.get(..5)
                .is_some_and(|verb| verb.eq_ignore_ascii_case(b"RCPT "))
        })
        .take(max)
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelined_rcpts_are_counted_up_to_the_first_other_command() {
        let buf = b"RCPT TO:<a@x>\r\nrcpt to:<b@x>\r\nRCPT TO:<c@x>\r\nDATA\r\nRCPT TO:<d@x>\r\n";
        assert_eq!(pipelined_rcpts(buf, 100), 3);
        assert_eq!(pipelined_rcpts(buf, 2), 2, "at most max");
        assert_eq!(
            pipelined_rcpts(b"RCPT TO:<a@x>\r\nRCPT TO:<b", 100),
            1,
            "complete only"
        );
        assert_eq!(pipelined_rcpts(b"", 100), 0);
        assert_eq!(pipelined_rcpts(b"RCPT", 100), 0);
        assert_eq!(pipelined_rcpts(b"NOOP\r\nRCPT TO:<a@x>\r\n", 100), 0);
        let many = b"RCPT TO:<a@example.test>\r\n".repeat(10_000);
        assert!(pipelined_rcpts(&many, 100_000) < 10_000, "bounded scan");
    }
}
