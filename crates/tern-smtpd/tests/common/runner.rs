//! Runs a parsed transcript against a fresh [`TestServer`].
//!
//! Every read has a deadline ([`LINE_DEADLINE`] per expected line or per closed-connection
//! check); nothing sleeps. A mismatch panics with the file, the line, what was expected,
//! what arrived, and the conversation so far.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use tern_spool::StoredMessage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

use super::TestServer;
use super::script::{self, Action, Check, Piece, Script};

/// How long one expected server line (or the close of a connection) may take.
pub const LINE_DEADLINE: Duration = Duration::from_secs(5);

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Gone,
}

/// One client connection with its unread input.
struct Client {
    stream: Stream,
    buf: Vec<u8>,
}

/// How a read ended when it did not deliver bytes.
enum ReadEnd {
    Closed,
    Error(std::io::Error),
    Deadline,
}

impl Client {
    async fn connect(server: &TestServer, from: Option<IpAddr>) -> Client {
        let tcp = match from {
            None => TcpStream::connect(server.addr).await,
            Some(ip) => {
                let socket = TcpSocket::new_v4().expect("create socket");
                socket.bind(SocketAddr::new(ip, 0)).expect("bind client address");
                socket.connect(server.addr).await
            }
        }
        .expect("connect to the test server");
        tcp.set_nodelay(true).expect("set TCP_NODELAY");
        Client {
            stream: Stream::Plain(tcp),
            buf: Vec::new(),
        }
    }

    /// Appends at least one byte to `buf`, or says why not.
    async fn read_more(&mut self, deadline: Instant) -> Result<(), ReadEnd> {
        let mut chunk = [0u8; 4096];
        let read = async {
            match &mut self.stream {
                Stream::Plain(s) => s.read(&mut chunk).await,
                Stream::Tls(s) => s.read(&mut chunk).await,
                Stream::Gone => Ok(0),
            }
        };
        match tokio::time::timeout_at(deadline, read).await {
            Err(_) => Err(ReadEnd::Deadline),
            Ok(Ok(0)) => Err(ReadEnd::Closed),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Ok(Err(e)) => Err(ReadEnd::Error(e)),
        }
    }

    /// The next line including its line ending.
    async fn read_line(&mut self) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + LINE_DEADLINE;
        loop {
            if let Some(lf) = self.buf.iter().position(|&b| b == b'\n') {
                return Ok(self.buf.drain(..=lf).collect());
            }
            match self.read_more(deadline).await {
                Ok(()) => {}
                Err(ReadEnd::Closed) => return Err(format!("connection closed; unread {:?}", lossy(&self.buf))),
                Err(ReadEnd::Error(e)) => return Err(format!("read error: {e}")),
                Err(ReadEnd::Deadline) => {
                    return Err(format!("no complete line within {LINE_DEADLINE:?}; unread {:?}", lossy(&self.buf)));
                }
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.stream {
            Stream::Plain(s) => s.write_all(bytes).await,
            Stream::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Stream::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    /// Ok when the server closes the connection (EOF or reset) without sending more.
    async fn expect_closed(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + LINE_DEADLINE;
        loop {
            if !self.buf.is_empty() {
                return Err(format!("expected the connection to close, got {:?}", lossy(&self.buf)));
            }
            match self.read_more(deadline).await {
                Ok(()) => {}
                Err(ReadEnd::Closed) => return Ok(()),
                Err(ReadEnd::Error(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
                    ) =>
                {
                    return Ok(());
                }
                Err(ReadEnd::Error(e)) => return Err(format!("read error instead of close: {e}")),
                Err(ReadEnd::Deadline) => return Err(format!("connection still open after {LINE_DEADLINE:?}")),
            }
        }
    }

    async fn tls_handshake(&mut self) -> Result<(), String> {
        if !self.buf.is_empty() {
            return Err(format!("server sent bytes before the handshake: {:?}", lossy(&self.buf)));
        }
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err("connection is not plain TCP".into());
        };
        let tls = tokio::time::timeout(LINE_DEADLINE, super::tls_client::handshake(tcp))
            .await
            .map_err(|_| "TLS handshake timed out".to_string())?
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Where the transcript files are.
pub fn transcripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("transcripts")
}

/// True when `pieces` match the start of `input` (all of it when `full`). `{ID}` matches
/// are appended to `ids`; `{QID}` must equal `qid`. Backtracks over `{ANY}`.
fn match_prefix(pieces: &[Piece], input: &[u8], qid: Option<&str>, ids: &mut Vec<String>, full: bool) -> bool {
    let Some((first, rest)) = pieces.split_first() else {
        return !full || input.is_empty();
    };
    match first {
        Piece::Literal(l) => input.starts_with(l) && match_prefix(rest, &input[l.len()..], qid, ids, full),
        Piece::Qid => {
            let q = qid.unwrap_or("{QID} used outside a stored-message check");
            input.starts_with(q.as_bytes()) && match_prefix(rest, &input[q.len()..], qid, ids, full)
        }
        Piece::Id => {
            let Some(cand) = input.get(..15).and_then(|c| std::str::from_utf8(c).ok()) else {
                return false;
            };
            if tern_spool::QueueId::parse(cand).is_err() {
                return false;
            }
            ids.push(cand.to_string());
            if match_prefix(rest, &input[15..], qid, ids, full) {
                return true;
            }
            ids.pop();
            false
        }
        Piece::End => input.is_empty() && match_prefix(rest, input, qid, ids, full),
        Piece::Any => {
            let limit = input.iter().position(|&b| b == b'\r' || b == b'\n').unwrap_or(input.len());
            (0..=limit).rev().any(|n| match_prefix(rest, &input[n..], qid, ids, full))
        }
    }
}

fn render(pieces: &[Piece]) -> String {
    pieces
        .iter()
        .map(|p| match p {
            Piece::Literal(l) => lossy(l),
            Piece::Id => "{ID}".into(),
            Piece::Qid => "{QID}".into(),
            Piece::Any => "{ANY}".into(),
            Piece::End => "{END}".into(),
        })
        .collect()
}

/// An envelope field as text, for `# envelope: field = value`.
fn envelope_field(m: &StoredMessage, field: &str) -> Result<String, String> {
    let e = &m.envelope;
    let opt = |o: Option<String>| o.unwrap_or_else(|| "none".into());
    let rcpt = |i: &str| -> Result<&tern_spool::Recipient, String> {
        let i: usize = i.parse().map_err(|_| format!("bad recipient index {i:?}"))?;
        e.recipients.get(i).ok_or_else(|| format!("no recipient {i}"))
    };
    Ok(match field {
        "sender" => e.sender.clone(),
        "recipients" => e.recipients.iter().map(|r| r.address.as_str()).collect::<Vec<_>>().join(", "),
        "dsn_ret" => opt(e.params.dsn_ret.map(|r| format!("{r:?}").to_lowercase())),
        "dsn_envid" => opt(e.params.dsn_envid.clone()),
        "smtputf8" => e.params.smtputf8.to_string(),
        "body" => format!("{:?}", e.params.body).to_lowercase(),
        "declared_size" => opt(e.params.declared_size.map(|s| s.to_string())),
        "helo" => e.client.helo.clone(),
        "esmtp" => e.client.esmtp.to_string(),
        "tls" => opt(e.client.tls.clone()),
        "verified_name" => opt(e.client.verified_name.clone()),
        _ => {
            let (what, index) = field
                .strip_suffix(']')
                .and_then(|f| f.split_once('['))
                .ok_or_else(|| format!("unknown envelope field {field:?}"))?;
            let r = rcpt(index)?;
            match what {
                "orcpt" => opt(r.orcpt.clone()),
                "notify" => opt(r.notify.map(|n| {
                    [("success", n.success), ("failure", n.failure), ("delay", n.delay), ("never", n.never)]
                        .iter()
                        .filter(|(_, on)| *on)
                        .map(|(name, _)| *name)
                        .collect::<Vec<_>>()
                        .join(",")
                })),
                _ => return Err(format!("unknown envelope field {field:?}")),
            }
        }
    })
}

fn check_message(m: &StoredMessage, check: &Check) -> Result<(), String> {
    let body = &m.body;
    let contains = |needle: &[u8]| needle.is_empty() || body.windows(needle.len()).any(|w| w == needle);
    match check {
        Check::BodyContains(n) if !contains(n) => Err(format!("stored content lacks {:?}", lossy(n))),
        Check::BodyLacks(n) if contains(n) => Err(format!("stored content contains {:?}", lossy(n))),
        Check::BodyEndsWith(n) if !body.ends_with(n) => Err(format!("stored content does not end with {:?}", lossy(n))),
        Check::BodyStartsWith(p) => {
            let qid = m.envelope.id.to_string();
            if match_prefix(p, body, Some(&qid), &mut Vec::new(), false) {
                Ok(())
            } else {
                Err(format!("stored content does not start with {:?}", render(p)))
            }
        }
        Check::Envelope(field, expected) => {
            let got = envelope_field(m, field)?;
            if &got == expected {
                Ok(())
            } else {
                Err(format!("envelope {field} is {got:?}, expected {expected:?}"))
            }
        }
        _ => Ok(()),
    }
    .map_err(|e| format!("{e}\n--- stored content of {} ---\n{}", m.envelope.id, lossy(body)))
}

/// Runs `tests/transcripts/<name>.txt`.
pub async fn run(name: &str) {
    let path = transcripts_dir().join(format!("{name}.txt"));
    let file = format!("tests/transcripts/{name}.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    let script = script::parse(&file, &text).unwrap_or_else(|e| panic!("{e}"));
    run_script(&file, script).await;
}

async fn run_script(file: &str, script: Script) {
    let mut server = TestServer::start(script.options.clone()).await;
    let mut log: Vec<String> = Vec::new();
    let mut clients: HashMap<String, Client> = HashMap::new();
    let mut current = "main".to_string();
    clients.insert(current.clone(), Client::connect(&server, None).await);
    let mut ids: Vec<String> = Vec::new();
    let mut shutdown = None;
    for step in &script.steps {
        let line = step.line;
        let client = clients.get_mut(&current).expect("current connection exists");
        match &step.action {
            Action::Send(bytes) => {
                for l in lossy(bytes).split_inclusive('\n') {
                    log.push(format!("[{current}] C: {l:?}"));
                }
                if let Err(e) = client.send(bytes).await {
                    fail(file, line, &format!("write failed: {e}"), &log);
                }
            }
            Action::Expect(pattern) => {
                let got = match client.read_line().await {
                    Ok(l) => l,
                    Err(e) => fail(file, line, &format!("expected {:?}: {e}", render(pattern)), &log),
                };
                log.push(format!("[{current}] S: {:?}", lossy(&got)));
                let Some(text) = got.strip_suffix(b"\r\n") else {
                    fail(file, line, &format!("reply line not ended by CRLF: {:?}", lossy(&got)), &log);
                };
                if !match_prefix(pattern, text, None, &mut ids, true) {
                    fail(file, line, &format!("expected {:?}\n                got {:?}", render(pattern), lossy(text)), &log);
                }
            }
            Action::TlsHandshake => {
                if let Err(e) = client.tls_handshake().await {
                    fail(file, line, &e, &log);
                }
                log.push(format!("[{current}] -- TLS handshake --"));
            }
            Action::Closed => {
                if let Err(e) = client.expect_closed().await {
                    fail(file, line, &e, &log);
                }
                log.push(format!("[{current}] -- closed --"));
            }
            Action::Connect(name, from) => {
                let c = Client::connect(&server, *from).await;
                clients.insert(name.clone(), c);
                current = name.clone();
            }
            Action::Switch(name) => {
                if !clients.contains_key(name) {
                    fail(file, line, &format!("no connection named {name:?}"), &log);
                }
                current = name.clone();
            }
            Action::ShutdownServer => shutdown = Some(server.begin_shutdown()),
        }
    }
    if let Some(line) = script.expect_closed {
        let client = clients.get_mut(&current).expect("current connection exists");
        if let Err(e) = client.expect_closed().await {
            fail(file, line, &e, &log);
        }
    }
    drop(clients);
    check_spool(file, &script, &server, &ids);
    match shutdown {
        Some(task) => task.await.expect("server shutdown task"),
        None => server.shutdown().await,
    }
}

fn fail(file: &str, line: usize, msg: &str, log: &[String]) -> ! {
    let start = log.len().saturating_sub(30);
    panic!("{file}:{line}: {msg}\n--- conversation so far ---\n{}", log[start..].join("\n"));
}

fn check_spool(file: &str, script: &Script, server: &TestServer, ids: &[String]) {
    let messages = server.queued_messages();
    let stored: Vec<String> = messages.iter().map(|m| m.envelope.id.to_string()).collect();
    if let Some((line, n)) = script.queued {
        assert_eq!(messages.len(), n, "{file}:{line}: queued messages {stored:?}");
    }
    for id in ids {
        assert!(stored.contains(id), "{file}: the server said `queued as {id}` but the spool holds {stored:?}");
    }
    for (line, check) in &script.checks {
        assert!(!messages.is_empty(), "{file}:{line}: no queued message to check");
        for m in &messages {
            if let Err(e) = check_message(m, check) {
                panic!("{file}:{line}: {e}");
            }
        }
    }
}
