//! One outbound SMTP connection: set-up (greeting, EHLO, STARTTLS) and transactions.
//!
//! Set-up: connect, read the greeting, EHLO (HELO when EHLO gets a 5xx), then STARTTLS
//! as the [`TlsPolicy`] says and EHLO again inside TLS. Capabilities from before TLS are
//! discarded after it (RFC 3207 §4.2). A greeting that carries this process's own loop
//! mark ([`crate::ClientConfig::loop_mark`]) is this very server: QUIT, and
//! [`SessionError::LoopsBack`] instead of EHLO.
//!
//! A transaction ([`SmtpSession::send`]):
//! - With PIPELINING, MAIL, every RCPT and DATA go out in one write and the replies are
//!   read in order. A transaction with very many recipients is written in groups of
//!   about [`PIPELINE_GROUP_BYTES`], reading each group's replies before the next, so
//!   neither side can block forever on a full socket buffer.
//! - Without PIPELINING, one command at a time; no RCPT after a refused MAIL, no DATA
//!   when no recipient was accepted.
//! - The content is streamed: read from the caller's `AsyncRead` 64 KiB at a time after
//!   the `354`, each piece dot-stuffed ([`DotStuffer`] carries a line or CRLF split
//!   between pieces) and written before the next is read, so memory per transaction is
//!   bounded whatever the message size. A read error abandons the transaction before the
//!   end-of-data marker ([`SessionError::Content`]): the server discards what it got.
//! - The content is never sent when no recipient was accepted. If a pipelined DATA was
//!   nevertheless answered 354, only the end-of-data marker is sent and its reply
//!   ignored.
//! - After a refused MAIL, no accepted recipient, or a refused DATA, RSET is sent so the
//!   connection can carry another transaction. A refused or failed RSET leaves the
//!   session [unusable](SessionError::Unusable) but the outcome stands.
//! - RSET between transactions: every transaction after the first on a connection starts
//!   with RSET, unless the last one already ended with a confirmed RSET. It probes a
//!   connection that may have sat idle in a cache (as Postfix's client does with a
//!   cached session) and puts the server in a known state. With PIPELINING it travels
//!   in the same write as MAIL, so it costs no round trip. A refused or failed RSET is
//!   an error at [`Stage::Rset`] ([`SessionError::ResetRefused`], `Dropped`, `Timeout`):
//!   no content was sent, so nothing can have been delivered, and the caller opens a
//!   new connection.
//! - Any error ends the session: the connection is closed or out of sync.
//!
//! The duplicate window: a timeout or a lost connection while sending the content or
//! waiting for the final reply ([`Stage::DataBlock`], [`Stage::DataEnd`]) leaves the
//! message's fate unknown; the server may have accepted it. The caller must defer the
//! recipients (never bounce them) and accept that a retry may deliver twice, as every
//! MTA does (RFC 1047). Recipient refusals read before such an error are not returned;
//! the retry will hear them again.
//!
//! LMTP (RFC 2033, [`SmtpSession::connect_lmtp`]): the same client over TCP or a Unix
//! socket, with `LHLO` instead of `EHLO` (no HELO fallback, no STARTTLS), and after the
//! final dot one reply per accepted recipient, in RCPT order, each deciding that
//! recipient alone. A connection lost among those replies leaves the recipients not yet
//! answered in the duplicate window above (an error is returned; the caller defers all).
//!
//! Trust: replies come from the remote server and are bounded by the reply parser; a
//! reply that makes no sense at its step (250 to DATA) is a protocol error, never taken
//! as success.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::timeout;

use crate::capabilities::Capabilities;
use crate::connection::Connection;
use crate::context::{ClientContext, TlsPolicy};
use crate::data::DotStuffer;
use crate::envelope::{Transaction, mail_command, rcpt_command};
use crate::error::{SessionError, Stage};
use crate::outcome::{RcptOutcome, TransactionOutcome};
use crate::reply::Reply;
use crate::security::TlsRequest;

/// Largest pipelined write of commands before the client reads their replies.
pub const PIPELINE_GROUP_BYTES: usize = 16 * 1024;

/// Content is encoded and written in pieces of this many input octets.
const DATA_PIECE: usize = 64 * 1024;

/// Where a session connects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix domain socket (LMTP only).
    Unix(PathBuf),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "{a}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// An established session, ready for transactions.
#[derive(Debug)]
pub struct SmtpSession {
    ctx: Arc<ClientContext>,
    conn: Connection,
    /// The TCP peer; `0.0.0.0:0` for a Unix socket.
    peer: SocketAddr,
    endpoint: Endpoint,
    /// LMTP: LHLO was used, and the data gets one reply per accepted recipient.
    lmtp: bool,
    server_name: String,
    greeting: Reply,
    ehlo: Reply,
    caps: Capabilities,
    tls: Option<String>,
    transactions: u32,
    /// False once an error or a refused RSET left the connection out of sync.
    usable: bool,
    /// True while the server is known to be at the start of a transaction: just after
    /// EHLO, or after a confirmed RSET. Otherwise the next transaction starts with RSET.
    fresh: bool,
    /// True from the first octet of content until the end-of-data marker is written: a
    /// session left in this state (the content could not be read) is closed without
    /// QUIT, which the server would take as content.
    in_data: bool,
    /// The MTA-STS `testing` audit of the certificate ([`TlsRequest::audit`]): `None`
    /// when none was asked or TLS was not negotiated.
    audit: Option<Result<(), crate::TlsFailure>>,
}

impl SmtpSession {
    /// Connects, reads the greeting, EHLO (falls back to HELO if EHLO gets 5xx),
    /// STARTTLS per policy then EHLO again. `server_name` is the MX host name: sent as
    /// SNI, and checked against the certificate under [`TlsPolicy::Verify`].
    pub async fn connect(
        ctx: &Arc<ClientContext>,
        addr: SocketAddr,
        server_name: &str,
        policy: TlsPolicy,
    ) -> Result<SmtpSession, SessionError> {
        Self::connect_with(ctx, addr, server_name, &TlsRequest::plain(policy)).await
    }

    /// [`connect`](Self::connect) with everything the connection's TLS must satisfy:
    /// the TLSA records under [`TlsPolicy::Dane`], the MTA-STS `testing` audit.
    pub async fn connect_with(
        ctx: &Arc<ClientContext>,
        addr: SocketAddr,
        server_name: &str,
        request: &TlsRequest,
    ) -> Result<SmtpSession, SessionError> {
        let policy = request.policy;
        let t = ctx.config.timeouts;
        let tcp = match timeout(t.connect, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(source)) => return Err(SessionError::Connect { addr, source }),
            Err(_) => {
                return Err(SessionError::Timeout {
                    stage: Stage::Connect,
                });
            }
        };
        // Small commands must not wait for Nagle; failure to set it is harmless.
        let _ = tcp.set_nodelay(true);
        let mut conn = Connection::new(tcp);

        let greeting = conn.read_reply(Stage::Greeting, t.greeting).await?;
        if !greeting.is_positive() {
            quit_quietly(&mut conn, t.quit).await;
            return Err(SessionError::Greeting(greeting));
        }
        if greets_as_us(&greeting, ctx.config.loop_mark.as_deref()) {
            quit_quietly(&mut conn, t.quit).await;
            return Err(SessionError::LoopsBack);
        }
        let helo_name = ctx.config.helo_name.as_str();
        let (mut ehlo, mut caps) = match hello(&mut conn, helo_name, t.ehlo).await {
            Ok(found) => found,
            Err(e) => {
                quit_quietly(&mut conn, t.quit).await;
                return Err(e);
            }
        };

        let mut tls = None;
        let mut audit = None;
        let required = matches!(
            policy,
            TlsPolicy::Encrypt | TlsPolicy::Verify | TlsPolicy::Dane
        );
        if policy != TlsPolicy::None && (caps.starttls || required) {
            match start_tls(ctx, &mut conn, addr, server_name, request, &caps).await {
                Ok(Some(description)) => {
                    tls = Some(description);
                    if request.audit {
                        // MTA-STS `testing`: checked as `verify` would, never fatal.
                        audit = Some(match conn.peer_certificates() {
                            Some(chain) => ctx.audit(&chain, server_name),
                            None => Err(crate::TlsFailure::ValidationFailure),
                        });
                    }
                    (ehlo, caps) = hello(&mut conn, helo_name, t.ehlo).await?;
                }
                Ok(None) => {}
                Err(e) => {
                    if matches!(e, SessionError::TlsUnavailable | SessionError::StartTls(_)) {
                        quit_quietly(&mut conn, t.quit).await;
                    }
                    return Err(e);
                }
            }
        }

        Ok(SmtpSession {
            ctx: ctx.clone(),
            conn,
            peer: addr,
            endpoint: Endpoint::Tcp(addr),
            lmtp: false,
            server_name: server_name.to_string(),
            greeting,
            ehlo,
            caps,
            tls,
            transactions: 0,
            usable: true,
            fresh: true,
            in_data: false,
            audit,
        })
    }

    /// Connects to an LMTP server (RFC 2033) over TCP or a Unix socket, reads the
    /// greeting and says LHLO. No STARTTLS: LMTP runs to a server on this machine or a
    /// trusted network. `server_name` names the server in results.
    pub async fn connect_lmtp(
        ctx: &Arc<ClientContext>,
        endpoint: &Endpoint,
        server_name: &str,
    ) -> Result<SmtpSession, SessionError> {
        let t = ctx.config.timeouts;
        let timed_out = || SessionError::Timeout {
            stage: Stage::Connect,
        };
        let (mut conn, peer) = match endpoint {
            Endpoint::Tcp(addr) => match timeout(t.connect, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => {
                    let _ = tcp.set_nodelay(true);
                    (Connection::new(tcp), *addr)
                }
                Ok(Err(source)) => {
                    return Err(SessionError::Connect {
                        addr: *addr,
                        source,
                    });
                }
                Err(_) => return Err(timed_out()),
            },
            Endpoint::Unix(path) => match timeout(t.connect, UnixStream::connect(path)).await {
                Ok(Ok(unix)) => (
                    Connection::new_unix(unix),
                    SocketAddr::from(([0, 0, 0, 0], 0)),
                ),
                Ok(Err(source)) => {
                    return Err(SessionError::ConnectUnix {
                        path: path.clone(),
                        source,
                    });
                }
                Err(_) => return Err(timed_out()),
            },
        };
        let greeting = conn.read_reply(Stage::Greeting, t.greeting).await?;
        if !greeting.is_positive() {
            quit_quietly(&mut conn, t.quit).await;
            return Err(SessionError::Greeting(greeting));
        }
        let line = format!("LHLO {}\r\n", ctx.config.helo_name);
        let lhlo = conn.command(line.as_bytes(), Stage::Ehlo, t.ehlo).await?;
        if !lhlo.is_positive() {
            quit_quietly(&mut conn, t.quit).await;
            return Err(SessionError::Ehlo(lhlo));
        }
        let caps = Capabilities::from_ehlo(&lhlo);
        Ok(SmtpSession {
            ctx: ctx.clone(),
            conn,
            peer,
            endpoint: endpoint.clone(),
            lmtp: true,
            server_name: server_name.to_string(),
            greeting,
            ehlo: lhlo,
            caps,
            tls: None,
            transactions: 0,
            usable: true,
            fresh: true,
            in_data: false,
            audit: None,
        })
    }

    /// Where the session is connected.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Whether this is an LMTP session.
    pub fn is_lmtp(&self) -> bool {
        self.lmtp
    }

    /// What the server advertised (inside TLS when TLS is up).
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// `TLSv1.3 TLS13_AES_256_GCM_SHA384` when encrypted.
    pub fn tls(&self) -> Option<&str> {
        self.tls.as_deref()
    }

    /// The server's greeting.
    pub fn greeting(&self) -> &Reply {
        &self.greeting
    }

    /// The last EHLO (or HELO) reply.
    pub fn ehlo_reply(&self) -> &Reply {
        &self.ehlo
    }

    /// The outcome of the `verify`-style check of the certificate asked with
    /// [`TlsRequest::audit`] (MTA-STS `testing`): `None` when not asked or no TLS.
    pub fn tls_audit(&self) -> Option<Result<(), crate::TlsFailure>> {
        self.audit
    }

    /// Address connected to; `0.0.0.0:0` for a Unix socket (see [`Self::endpoint`]).
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// MX host name given to `connect`.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// Transactions completed on this connection: every `send` that returned `Ok`,
    /// whatever the recipients' results (for connection reuse limits).
    pub fn transactions(&self) -> u32 {
        self.transactions
    }

    /// False when the connection can carry no further transaction.
    pub fn is_usable(&self) -> bool {
        self.usable
    }

    /// One mail transaction; see the module documentation. Every recipient of `tx`
    /// gets exactly one entry in the outcome, in order.
    ///
    /// `content` is read only after the server answered `354`, in pieces of 64 KiB,
    /// each dot-stuffed and written before the next is read: memory is bounded whatever
    /// the message size. It must yield exactly `tx.size` octets. A read error
    /// ([`SessionError::Content`]) abandons the transaction before the end-of-data
    /// marker, so the server delivers nothing.
    pub async fn send(
        &mut self,
        tx: &Transaction<'_>,
        content: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<TransactionOutcome, SessionError> {
        if !self.usable {
            return Err(SessionError::Unusable);
        }
        if tx.recipients.is_empty() {
            return Err(SessionError::Envelope(
                "transaction without recipients".into(),
            ));
        }
        let mut commands = Vec::with_capacity(tx.recipients.len() + 2);
        commands.push(mail_command(tx, &self.caps).map_err(|e| SessionError::Envelope(e.0))?);
        for rcpt in tx.recipients {
            commands.push(rcpt_command(rcpt, &self.caps).map_err(|e| SessionError::Envelope(e.0))?);
        }
        commands.push(b"DATA\r\n".to_vec());

        self.usable = false;
        let reset_first = !std::mem::replace(&mut self.fresh, false);
        let (outcome, needs_rset) = self
            .transaction(tx, &commands, reset_first, content)
            .await?;
        self.usable = !needs_rset || self.rset().await;
        self.fresh = needs_rset && self.usable;
        self.transactions = self.transactions.saturating_add(1);
        Ok(outcome)
    }

    /// Sends QUIT and closes, bounded by the quit timeout; errors are ignored.
    pub async fn quit(mut self) {
        let limit = self.ctx.config.timeouts.quit;
        if !self.in_data {
            quit_quietly(&mut self.conn, limit).await;
        }
        self.conn.shutdown(limit).await;
    }

    /// The exchange itself, after a RSET when `reset_first` (pipelined with the first
    /// group when the server offers PIPELINING). Returns the outcome and whether RSET is
    /// needed after it.
    async fn transaction(
        &mut self,
        tx: &Transaction<'_>,
        commands: &[Vec<u8>],
        reset_first: bool,
        content: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<(TransactionOutcome, bool), SessionError> {
        let t = self.ctx.config.timeouts;
        let n = tx.recipients.len();
        let data_index = n + 1;
        let stage_of = |i: usize| match i {
            0 => (Stage::Mail, t.mail),
            i if i == data_index => (Stage::DataStart, t.data_start),
            _ => (Stage::Rcpt, t.rcpt),
        };

        let mut replies: Vec<Reply> = Vec::with_capacity(commands.len());
        let mut next = 0;
        let mut group = Vec::new();
        let mut reset_pending = reset_first;
        if reset_pending && !self.caps.pipelining {
            let reply = self.conn.command(b"RSET\r\n", Stage::Rset, t.rset).await?;
            if !reply.is_positive() {
                return Err(SessionError::ResetRefused(reply));
            }
            reset_pending = false;
        }
        while next < commands.len() {
            if replies.first().is_some_and(|mail| !mail.is_positive()) {
                break;
            }
            if next == data_index && !replies.iter().skip(1).any(Reply::is_positive) {
                break;
            }
            let first = next;
            group.clear();
            if reset_pending {
                group.extend_from_slice(b"RSET\r\n");
            }
            for command in commands.iter().skip(first) {
                group.extend_from_slice(command);
                next += 1;
                if !self.caps.pipelining || group.len() >= PIPELINE_GROUP_BYTES {
                    break;
                }
            }
            let (stage, limit) = stage_of(first);
            // A connection found dead at the RSET fails at the RSET, before anything of
            // the transaction could count.
            let stage = if reset_pending { Stage::Rset } else { stage };
            self.conn.write(&group, stage, limit).await?;
            if std::mem::replace(&mut reset_pending, false) {
                let reply = self.conn.read_reply(Stage::Rset, t.rset).await?;
                if !reply.is_positive() {
                    return Err(SessionError::ResetRefused(reply));
                }
            }
            for i in first..next {
                let (stage, limit) = stage_of(i);
                replies.push(self.conn.read_reply(stage, limit).await?);
            }
        }

        let mut replies = replies.into_iter();
        let Some(mail) = replies.next() else {
            return Err(SessionError::Protocol {
                stage: Stage::Mail,
                detail: "no reply to MAIL".into(),
            });
        };
        let rcpt_replies: Vec<Reply> = replies.by_ref().take(n).collect();
        let data_reply = replies.next();

        if !mail.is_positive() || !rcpt_replies.iter().any(Reply::is_positive) {
            if data_reply.as_ref().is_some_and(Reply::is_intermediate) {
                // A pipelined DATA got 354 with nobody to deliver to: end it empty.
                self.conn
                    .write(b".\r\n", Stage::DataBlock, t.data_block)
                    .await?;
                self.conn.read_reply(Stage::DataEnd, t.data_end).await?;
            }
            let recipients = if mail.is_positive() {
                rcpt_replies
                    .into_iter()
                    .map(RcptOutcome::Rejected)
                    .collect()
            } else {
                vec![RcptOutcome::MailRejected(mail.clone()); n]
            };
            let outcome = TransactionOutcome {
                mail,
                recipients,
                data: None,
            };
            return Ok((outcome, true));
        }

        let Some(data_reply) = data_reply else {
            return Err(SessionError::Protocol {
                stage: Stage::DataStart,
                detail: "no reply to DATA".into(),
            });
        };
        // One reply for every accepted recipient (LMTP after the content), or one for
        // all of them (SMTP, or a refused DATA).
        let (finals, needs_rset) = if data_reply.is_intermediate() {
            self.send_content(content).await?;
            let count = if self.lmtp {
                rcpt_replies.iter().filter(|r| r.is_positive()).count()
            } else {
                1
            };
            let mut finals = Vec::with_capacity(count);
            for _ in 0..count {
                finals.push(self.conn.read_reply(Stage::DataEnd, t.data_end).await?);
            }
            (finals, false)
        } else if data_reply.is_positive() {
            return Err(SessionError::Protocol {
                stage: Stage::DataStart,
                detail: format!("DATA answered {data_reply} instead of 354"),
            });
        } else {
            (vec![data_reply], true)
        };
        let per_recipient = self.lmtp && !needs_rset;
        let last = finals.last().cloned();
        let mut finals = finals.into_iter();
        let mut shared = None;
        let mut recipients = Vec::with_capacity(rcpt_replies.len());
        for rcpt in rcpt_replies {
            if !rcpt.is_positive() {
                recipients.push(RcptOutcome::Rejected(rcpt));
                continue;
            }
            let data = if per_recipient {
                finals.next()
            } else {
                if shared.is_none() {
                    shared = finals.next();
                }
                shared.clone()
            };
            let Some(data) = data else {
                return Err(SessionError::Protocol {
                    stage: Stage::DataEnd,
                    detail: "fewer replies after the data than accepted recipients".into(),
                });
            };
            recipients.push(RcptOutcome::Accepted { rcpt, data });
        }
        let outcome = TransactionOutcome {
            mail,
            recipients,
            data: last,
        };
        Ok((outcome, needs_rset))
    }

    /// Writes the dot-stuffed content and the end-of-data marker, one piece at a time:
    /// a piece is read, encoded (a line or a CRLF split across pieces is carried by the
    /// [`DotStuffer`]) and written, each write within the `data_block` limit, before the
    /// next piece is read. A read error stops before the marker (see [`Self::send`]).
    async fn send_content(
        &mut self,
        content: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<(), SessionError> {
        let limit = self.ctx.config.timeouts.data_block;
        let mut stuffer = DotStuffer::new();
        let mut piece = vec![0u8; DATA_PIECE];
        let mut out = Vec::with_capacity(DATA_PIECE + DATA_PIECE / 8);
        self.in_data = true;
        loop {
            let n = content
                .read(&mut piece)
                .await
                .map_err(SessionError::Content)?;
            if n == 0 {
                break;
            }
            out.clear();
            stuffer.encode(piece.get(..n).unwrap_or_default(), &mut out);
            self.conn.write(&out, Stage::DataBlock, limit).await?;
        }
        out.clear();
        stuffer.finish(&mut out);
        self.conn.write(&out, Stage::DataBlock, limit).await?;
        self.in_data = false;
        Ok(())
    }

    /// RSET; true when the server confirmed it.
    async fn rset(&mut self) -> bool {
        let limit = self.ctx.config.timeouts.rset;
        matches!(
            self.conn.command(b"RSET\r\n", Stage::Rset, limit).await,
            Ok(reply) if reply.is_positive()
        )
    }
}

/// EHLO, or HELO when EHLO gets a 5xx.
async fn hello(
    conn: &mut Connection,
    helo_name: &str,
    limit: Duration,
) -> Result<(Reply, Capabilities), SessionError> {
    let ehlo = conn
        .command(
            format!("EHLO {helo_name}\r\n").as_bytes(),
            Stage::Ehlo,
            limit,
        )
        .await?;
    if ehlo.is_positive() {
        let caps = Capabilities::from_ehlo(&ehlo);
        return Ok((ehlo, caps));
    }
    if !ehlo.is_permanent() {
        return Err(SessionError::Ehlo(ehlo));
    }
    let helo = conn
        .command(
            format!("HELO {helo_name}\r\n").as_bytes(),
            Stage::Ehlo,
            limit,
        )
        .await?;
    if helo.is_positive() {
        Ok((helo, Capabilities::default()))
    } else {
        Err(SessionError::Ehlo(helo))
    }
}

/// STARTTLS per policy. `Ok(None)`: continue in plaintext (only under `may`).
async fn start_tls(
    ctx: &ClientContext,
    conn: &mut Connection,
    addr: SocketAddr,
    server_name: &str,
    request: &TlsRequest,
    caps: &Capabilities,
) -> Result<Option<String>, SessionError> {
    let policy = request.policy;
    let t = ctx.config.timeouts;
    if !caps.starttls {
        return match policy {
            TlsPolicy::Encrypt | TlsPolicy::Verify | TlsPolicy::Dane => {
                Err(SessionError::TlsUnavailable)
            }
            TlsPolicy::None | TlsPolicy::May => Ok(None),
        };
    }
    let (config, name) = match policy {
        TlsPolicy::None => return Ok(None),
        TlsPolicy::Dane => {
            // A verifier for this connection's TLSA records (RFC 7672); without records
            // the request fails closed, never opens unverified.
            let Some(tlsa) = request.dane.clone() else {
                return Err(SessionError::TlsHandshake {
                    failure: crate::TlsFailure::TlsaInvalid,
                    detail: "DANE required but no TLSA records were given".into(),
                });
            };
            // SNI: the MX host name (RFC 7672 §8.1).
            let name = ServerName::try_from(server_name.to_string()).map_err(|_| {
                SessionError::TlsHandshake {
                    failure: crate::TlsFailure::ValidationFailure,
                    detail: format!("{server_name:?} is not a valid server name"),
                }
            })?;
            let verifier = Arc::new(crate::dane::DaneVerifier::new(tlsa, &ctx.provider));
            let config = rustls::ClientConfig::builder_with_provider(ctx.provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| SessionError::TlsHandshake {
                    failure: crate::TlsFailure::ValidationFailure,
                    detail: e.to_string(),
                })?
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            (Arc::new(config), name)
        }
        TlsPolicy::Verify => {
            let name = ServerName::try_from(server_name.to_string()).map_err(|_| {
                SessionError::TlsHandshake {
                    failure: crate::TlsFailure::CertificateHostMismatch,
                    detail: format!("{server_name:?} is not a valid server name"),
                }
            })?;
            (ctx.verifying.clone(), name)
        }
        TlsPolicy::May | TlsPolicy::Encrypt => {
            // Any certificate is accepted; a name that cannot be SNI is replaced by the
            // address, which sends no SNI.
            let name = ServerName::try_from(server_name.to_string())
                .unwrap_or_else(|_| ServerName::IpAddress(addr.ip().into()));
            (ctx.opportunistic.clone(), name)
        }
    };
    let reply = conn
        .command(b"STARTTLS\r\n", Stage::StartTls, t.starttls)
        .await?;
    if reply.code != 220 {
        return match policy {
            TlsPolicy::May if !reply.is_intermediate() => Ok(None),
            _ => Err(SessionError::StartTls(reply)),
        };
    }
    conn.start_tls(config, name, t.starttls).await.map(Some)
}

/// Whether `greeting` carries this process's own loop mark (see
/// [`crate::ClientConfig::loop_mark`]): a whole word of one of its lines.
fn greets_as_us(greeting: &Reply, mark: Option<&str>) -> bool {
    let Some(mark) = mark.filter(|m| !m.is_empty()) else {
        return false;
    };
    greeting
        .lines
        .iter()
        .any(|line| line.split_ascii_whitespace().any(|word| word == mark))
}

/// QUIT and read the reply, within `limit` in total; errors are ignored.
async fn quit_quietly(conn: &mut Connection, limit: Duration) {
    let _ = timeout(limit, conn.command(b"QUIT\r\n", Stage::Quit, limit)).await;
}
