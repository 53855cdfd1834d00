//! A client of Dovecot's authentication protocol (version 1.2), the one Postfix's
//! `smtpd_sasl_type = dovecot` speaks, over the Unix socket Dovecot's auth service
//! listens on (`auth-client`, or one set up for Tern: docs/SUBMISSION.md).
//!
//! Handshake: the client sends `VERSION 1 2` and `CPID <pid>`; the server answers with
//! its `VERSION`, one `MECH` line per mechanism, `SPID`, `CUID`, `COOKIE` and `DONE`.
//! An exchange is `AUTH <id> <mech> service=smtp nologin lip= rip= [secured] [resp=]`,
//! then `CONT` lines both ways until the server says `OK` (with `user=`) or `FAIL`
//! (with `temp` for a temporary failure). Fields are tab-separated; values escape tab,
//! newline and `\x01` as `\x01t`, `\x01n`, `\x011`.
//!
//! Bounds: every line read is at most [`MAX_LINE`] octets and every read and write must
//! finish within the configured timeout; a connection that breaks either is dropped.
//! Connections are kept for reuse (at most [`MAX_IDLE`] idle); one that turns out to be
//! dead when an exchange starts is replaced by a new one, once (reconnect). One
//! connection carries one exchange at a time, so no multiplexing is needed.
//!
//! Trust: Dovecot is trusted to judge credentials; its lines are still parsed without
//! ever panicking, and only `user=` of an `OK` line is believed.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Longest line accepted from Dovecot, octets.
pub const MAX_LINE: usize = 16 * 1024;
/// Most idle connections kept.
pub const MAX_IDLE: usize = 8;

/// Why talking to Dovecot failed: the session answers `454 4.7.0 Temporary
/// authentication failure` and the event says why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DovecotError {
    /// The socket could not be reached.
    #[error("connecting to {path}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Reading or writing failed, or Dovecot closed the connection.
    #[error("dovecot auth connection: {0}")]
    Io(std::io::Error),
    /// Dovecot did not answer in time.
    #[error("dovecot auth did not answer within {0:?}")]
    Timeout(Duration),
    /// Dovecot sent something this client does not understand.
    #[error("dovecot auth protocol: {0}")]
    Protocol(String),
}

/// What one step of a Dovecot exchange produced.
#[derive(Debug, PartialEq, Eq)]
pub enum DovecotStep {
    /// Send this challenge to the client.
    Challenge(Vec<u8>),
    /// Authenticated as this user (Dovecot's `user=`); `final_data` is the mechanism's
    /// last server message (`resp=`, SCRAM's `v=`), which the client must still get in a
    /// `334` before the success (RFC 4954 §4).
    Ok {
        /// The user.
        user: String,
        /// Additional data with the success, if any.
        final_data: Option<Vec<u8>>,
    },
    /// Refused; `user` is the name Dovecot reported, `temporary` when it said `temp`.
    Fail {
        /// The user name, if Dovecot gave it.
        user: Option<String>,
        /// A temporary failure (its backend is down), not wrong credentials.
        temporary: bool,
    },
}

/// One open connection, past the handshake.
struct Connection {
    stream: UnixStream,
    buffer: Vec<u8>,
}

/// A Dovecot auth client: the socket's path and the idle connections.
pub struct DovecotClient {
    path: PathBuf,
    timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    next_id: AtomicU32,
    mechanisms: Mutex<Vec<String>>,
}

impl std::fmt::Debug for DovecotClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DovecotClient")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Escapes a value for the protocol.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\x01' => out.push_str("\x011"),
            '\t' => out.push_str("\x01t"),
            '\n' => out.push_str("\x01n"),
            '\r' => out.push_str("\x01r"),
            c => out.push(c),
        }
    }
    out
}

/// Undoes [`escape`].
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\x01' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('1') => out.push('\x01'),
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

impl DovecotClient {
    /// A client of the socket at `path`; every read and write is bounded by `timeout`.
    pub fn new(path: &Path, timeout: Duration) -> DovecotClient {
        DovecotClient {
            path: path.to_path_buf(),
            timeout,
            idle: Mutex::new(Vec::new()),
            next_id: AtomicU32::new(1),
            mechanisms: Mutex::new(Vec::new()),
        }
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The mechanisms Dovecot listed at the last handshake (empty before the first).
    pub fn mechanisms(&self) -> Vec<String> {
        self.mechanisms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Connects and handshakes, to learn the mechanisms and check the socket (at start
    /// and reload); the connection is kept for the next exchange.
    pub async fn probe(&self) -> Result<Vec<String>, DovecotError> {
        let conn = self.connect().await?;
        self.put_back(conn);
        Ok(self.mechanisms())
    }

    async fn connect(&self) -> Result<Connection, DovecotError> {
        let stream = tokio::time::timeout(self.timeout, UnixStream::connect(&self.path))
            .await
            .map_err(|_| DovecotError::Timeout(self.timeout))?
            .map_err(|source| DovecotError::Connect {
                path: self.path.clone(),
                source,
            })?;
        let mut conn = Connection {
            stream,
            buffer: Vec::new(),
        };
        let hello = format!("VERSION\t1\t2\nCPID\t{}\n", std::process::id());
        self.write(&mut conn, hello.as_bytes()).await?;
        let mut mechs = Vec::new();
        let mut version_seen = false;
        loop {
            let line = self.read_line(&mut conn).await?;
            let mut f = line.split('\t');
            match f.next().unwrap_or_default() {
                "VERSION" => {
                    if f.next() != Some("1") {
                        return Err(DovecotError::Protocol(format!(
                            "unsupported version: {line}"
                        )));
                    }
                    version_seen = true;
                }
                "MECH" => {
                    if let Some(m) = f.next() {
                        mechs.push(m.to_ascii_uppercase());
                    }
                }
                "DONE" => break,
                "SPID" | "CUID" | "COOKIE" => {}
                _ => {}
            }
            if mechs.len() > 64 {
                return Err(DovecotError::Protocol("too many MECH lines".into()));
            }
        }
        if !version_seen {
            return Err(DovecotError::Protocol("no VERSION line".into()));
        }
        *self
            .mechanisms
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = mechs;
        Ok(conn)
    }

    fn take_idle(&self) -> Option<Connection> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    fn put_back(&self, conn: Connection) {
        if !conn.buffer.is_empty() {
            return; // unread bytes: out of step, drop it
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    async fn write(&self, conn: &mut Connection, bytes: &[u8]) -> Result<(), DovecotError> {
        tokio::time::timeout(self.timeout, conn.stream.write_all(bytes))
            .await
            .map_err(|_| DovecotError::Timeout(self.timeout))?
            .map_err(DovecotError::Io)
    }

    async fn read_line(&self, conn: &mut Connection) -> Result<String, DovecotError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            if let Some(lf) = conn.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = conn.buffer.drain(..=lf).collect();
                let line = line.get(..lf).unwrap_or_default();
                return String::from_utf8(line.to_vec())
                    .map_err(|_| DovecotError::Protocol("line is not UTF-8".into()));
            }
            if conn.buffer.len() > MAX_LINE {
                return Err(DovecotError::Protocol("line too long".into()));
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, conn.stream.read(&mut chunk))
                .await
                .map_err(|_| DovecotError::Timeout(self.timeout))?
                .map_err(DovecotError::Io)?;
            if n == 0 {
                return Err(DovecotError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            conn.buffer
                .extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
    }

    /// Starts an exchange for `mechanism` from the client at `remote` (connected to
    /// `local`); `secured` when the session is encrypted (or trusted as loopback).
    pub fn exchange(
        self: &Arc<Self>,
        mechanism: &str,
        local: Option<IpAddr>,
        remote: IpAddr,
        secured: bool,
    ) -> DovecotExchange {
        DovecotExchange {
            client: Arc::clone(self),
            conn: None,
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            mechanism: mechanism.to_string(),
            local,
            remote,
            secured,
        }
    }
}

/// One exchange in progress; the connection goes back to the pool when it ends well.
pub struct DovecotExchange {
    client: Arc<DovecotClient>,
    conn: Option<Connection>,
    id: u32,
    mechanism: String,
    local: Option<IpAddr>,
    remote: IpAddr,
    secured: bool,
}

impl DovecotExchange {
    /// The next step. The first call sends `AUTH` (with `response` as the initial
    /// response when there is one); later calls send `CONT` with the client's response.
    pub async fn step(&mut self, response: Option<&[u8]>) -> Result<DovecotStep, DovecotError> {
        let (mut conn, line) = match self.conn.take() {
            Some(conn) => {
                let line = format!(
                    "CONT\t{}\t{}\n",
                    self.id,
                    STANDARD.encode(response.unwrap_or_default())
                );
                (conn, line)
            }
            None => {
                let mut line = format!(
                    "AUTH\t{}\t{}\tservice=smtp\tnologin\trip={}",
                    self.id,
                    escape(&self.mechanism),
                    self.remote
                );
                if let Some(l) = self.local {
                    line.push_str(&format!("\tlip={l}"));
                }
                if self.secured {
                    line.push_str("\tsecured");
                }
                if let Some(r) = response {
                    line.push_str(&format!("\tresp={}", STANDARD.encode(r)));
                }
                line.push('\n');
                // A pooled connection may have been closed by Dovecot meanwhile: one
                // more try on a new connection.
                match self.client.take_idle() {
                    Some(mut pooled) => match self.client.write(&mut pooled, line.as_bytes()).await
                    {
                        Ok(()) => {
                            return self.read_reply(pooled, true, line).await;
                        }
                        Err(_) => (self.client.connect().await?, line),
                    },
                    None => (self.client.connect().await?, line),
                }
            }
        };
        self.client.write(&mut conn, line.as_bytes()).await?;
        self.read_reply(conn, false, line).await
    }

    async fn read_reply(
        &mut self,
        mut conn: Connection,
        pooled: bool,
        sent: String,
    ) -> Result<DovecotStep, DovecotError> {
        let line = match self.client.read_line(&mut conn).await {
            Ok(l) => l,
            Err(DovecotError::Io(_)) if pooled => {
                // The pooled connection was dead: reconnect once and resend.
                let mut fresh = self.client.connect().await?;
                self.client.write(&mut fresh, sent.as_bytes()).await?;
                conn = fresh;
                self.client.read_line(&mut conn).await?
            }
            Err(e) => return Err(e),
        };
        let mut f = line.split('\t');
        let verb = f.next().unwrap_or_default();
        let id = f.next().unwrap_or_default();
        if id != self.id.to_string() {
            return Err(DovecotError::Protocol(format!(
                "reply for another request: {verb} {id}"
            )));
        }
        match verb {
            "CONT" => {
                let data = STANDARD
                    .decode(f.next().unwrap_or_default())
                    .map_err(|_| DovecotError::Protocol("CONT data is not base64".into()))?;
                self.conn = Some(conn);
                Ok(DovecotStep::Challenge(data))
            }
            "OK" => {
                let mut user = None;
                let mut final_data = None;
                for p in f {
                    if let Some(u) = p.strip_prefix("user=") {
                        user = Some(unescape(u));
                    } else if let Some(r) = p.strip_prefix("resp=") {
                        final_data = Some(STANDARD.decode(r).map_err(|_| {
                            DovecotError::Protocol("OK resp= is not base64".into())
                        })?);
                    }
                }
                let user = user.ok_or_else(|| DovecotError::Protocol("OK without user=".into()))?;
                self.client.put_back(conn);
                Ok(DovecotStep::Ok { user, final_data })
            }
            "FAIL" => {
                let mut user = None;
                let mut temporary = false;
                for p in f {
                    if let Some(u) = p.strip_prefix("user=") {
                        user = Some(unescape(u));
                    } else if p == "temp" {
                        temporary = true;
                    }
                }
                self.client.put_back(conn);
                Ok(DovecotStep::Fail { user, temporary })
            }
            other => Err(DovecotError::Protocol(format!("unexpected reply {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_round_trip() {
        for s in ["plain", "tab\there", "nl\nx\x01y"] {
            assert_eq!(unescape(&escape(s)), s);
        }
        assert!(!escape("a\tb\nc").contains(['\t', '\n']));
    }

    /// A scripted server: answers the handshake, then one FAIL, on one connection.
    #[tokio::test]
    async fn handshake_and_fail_against_a_scripted_server() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nSPID\t1\nCUID\t1\nCOOKIE\tab\nDONE\n")
                .await
                .unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !String::from_utf8_lossy(&got).contains("AUTH\t") || !got.ends_with(b"\n") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            let text = String::from_utf8(got).unwrap();
            let id = text
                .lines()
                .find(|l| l.starts_with("AUTH"))
                .unwrap()
                .split('\t')
                .nth(1)
                .unwrap()
                .to_string();
            s.write_all(format!("FAIL\t{id}\tuser=bob\n").as_bytes())
                .await
                .unwrap();
            text
        });
        let client = Arc::new(DovecotClient::new(&path, Duration::from_secs(5)));
        let mut ex = client.exchange("PLAIN", None, "192.0.2.1".parse().unwrap(), true);
        let step = ex.step(Some(b"\0bob\0wrong")).await.unwrap();
        assert_eq!(
            step,
            DovecotStep::Fail {
                user: Some("bob".into()),
                temporary: false
            }
        );
        assert_eq!(client.mechanisms(), ["PLAIN", "LOGIN"]);
        let sent = server.await.unwrap();
        assert!(sent.starts_with("VERSION\t1\t2\nCPID\t"), "{sent}");
        assert!(
            sent.contains(
                "\tservice=smtp\tnologin\trip=192.0.2.1\tsecured\tresp=AGJvYgB3cm9uZw==\n"
            ),
            "{sent}"
        );
    }
}
