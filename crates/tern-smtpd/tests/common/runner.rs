//! Runs a parsed transcript against a fresh [`TestServer`].
//!
//! Every read has a deadline ([`LINE_DEADLINE`] per expected line or per closed-connection
//! check); nothing sleeps. A mismatch panics with the file, the line, what was expected,
//! what arrived, and the conversation so far.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

use super::TestServer;
use super::script::{self, Action, Script, lossy, matches, render};

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
    async fn connect(server: &TestServer, from: Option<IpAddr>) -> std::io::Result<Client> {
        let tcp = match from {
            None => TcpStream::connect(server.addr).await?,
            Some(ip) => {
                let socket = TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(server.addr).await?
            }
        };
        tcp.set_nodelay(true)?;
        Ok(Client {
            stream: Stream::Plain(tcp),
            buf: Vec::new(),
        })
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
                Err(ReadEnd::Closed) => {
                    return Err(format!("connection closed; unread {:?}", lossy(&self.buf)));
                }
                Err(ReadEnd::Error(e)) => return Err(format!("read error: {e}")),
                Err(ReadEnd::Deadline) => {
                    return Err(format!(
                        "no complete line within {LINE_DEADLINE:?}; unread {:?}",
                        lossy(&self.buf)
                    ));
                }
            }
        }
    }

    /// Ok when the server sends nothing and keeps the connection open for `period`.
    async fn expect_quiet(&mut self, period: Duration) -> Result<(), String> {
        if !self.buf.is_empty() {
            return Err(format!(
                "expected silence, but unread: {:?}",
                lossy(&self.buf)
            ));
        }
        match self.read_more(Instant::now() + period).await {
            Err(ReadEnd::Deadline) => Ok(()),
            Ok(()) => Err(format!(
                "expected silence for {period:?}, got {:?}",
                lossy(&self.buf)
            )),
            Err(ReadEnd::Closed) => Err(format!("connection closed within {period:?}")),
            Err(ReadEnd::Error(e)) => Err(format!("read error within {period:?}: {e}")),
        }
    }

    /// Sends `bytes` one at a time, waiting up to `every` for the server after each;
    /// stops at the first byte the server sends (kept for the next `S:` lines) or its
    /// close. Returns how many bytes were sent.
    async fn trickle(&mut self, bytes: &[u8], every: Duration) -> usize {
        for (i, b) in bytes.iter().enumerate() {
            if self.send(std::slice::from_ref(b)).await.is_err() {
                return i;
            }
            match self.read_more(Instant::now() + every).await {
                Err(ReadEnd::Deadline) => {}
                _ => return i + 1,
            }
        }
        bytes.len()
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
                return Err(format!(
                    "expected the connection to close, got {:?}",
                    lossy(&self.buf)
                ));
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
                Err(ReadEnd::Deadline) => {
                    return Err(format!("connection still open after {LINE_DEADLINE:?}"));
                }
            }
        }
    }

    /// Ok when the server sends exactly one TLS alert record (content type 21, version
    /// 3.x, two octets of alert) and then closes.
    async fn expect_tls_alert_then_closed(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + LINE_DEADLINE;
        while self.buf.len() < 7 {
            match self.read_more(deadline).await {
                Ok(()) => {}
                Err(ReadEnd::Deadline) => {
                    return Err(format!("no TLS alert within {LINE_DEADLINE:?}"));
                }
                Err(_) => break,
            }
        }
        let record: Vec<u8> = self.buf.drain(..self.buf.len().min(7)).collect();
        match record.as_slice() {
            [21, 3, _, 0, 2, _, _] => self.expect_closed().await,
            other => Err(format!("expected a TLS alert record, got {other:?}")),
        }
    }

    async fn tls_handshake(&mut self) -> Result<(), String> {
        if !self.buf.is_empty() {
            return Err(format!(
                "server sent bytes before the handshake: {:?}",
                lossy(&self.buf)
            ));
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

/// Where the transcript files are.
pub fn transcripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("transcripts")
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
    let main = Client::connect(&server, None).await;
    clients.insert(
        current.clone(),
        main.unwrap_or_else(|e| panic!("{file}: connect: {e}")),
    );
    let mut ids: Vec<String> = Vec::new();
    let mut shutdown = None;
    for step in &script.steps {
        let line = step.line;
        let client = clients
            .get_mut(&current)
            .expect("current connection exists");
        match &step.action {
            Action::Send(bytes) => {
                for l in lossy(bytes).split_inclusive('\n') {
                    log.push(format!("[{current}] C: {:?}", shorten(l)));
                }
                if let Err(e) = client.send(bytes).await {
                    fail(file, line, &format!("write failed: {e}"), &log);
                }
            }
            Action::Expect(pattern) => {
                let got = match client.read_line().await {
                    Ok(l) => l,
                    Err(e) => fail(
                        file,
                        line,
                        &format!("expected {:?}: {e}", render(pattern)),
                        &log,
                    ),
                };
                log.push(format!("[{current}] S: {:?}", lossy(&got)));
                let Some(text) = got.strip_suffix(b"\r\n") else {
                    fail(
                        file,
                        line,
                        &format!("reply line not ended by CRLF: {:?}", lossy(&got)),
                        &log,
                    );
                };
                if !matches(pattern, text, None, &mut ids, true) {
                    fail(
                        file,
                        line,
                        &format!(
                            "expected {:?}\n                got {:?}",
                            render(pattern),
                            lossy(text)
                        ),
                        &log,
                    );
                }
            }
            Action::TlsHandshake => {
                if let Err(e) = client.tls_handshake().await {
                    fail(file, line, &e, &log);
                }
                log.push(format!("[{current}] -- TLS handshake --"));
            }
            Action::TlsAlertThenClosed => {
                if let Err(e) = client.expect_tls_alert_then_closed().await {
                    fail(file, line, &e, &log);
                }
                log.push(format!("[{current}] -- TLS alert, closed --"));
            }
            Action::Closed => {
                if let Err(e) = client.expect_closed().await {
                    fail(file, line, &e, &log);
                }
                log.push(format!("[{current}] -- closed --"));
            }
            Action::Connect(name, from) => {
                match Client::connect(&server, *from).await {
                    Ok(c) => clients.insert(name.clone(), c),
                    Err(e) => fail(file, line, &format!("connect: {e}"), &log),
                };
                current = name.clone();
            }
            Action::Switch(name) => {
                if !clients.contains_key(name) {
                    fail(file, line, &format!("no connection named {name:?}"), &log);
                }
                current = name.clone();
            }
            Action::ShutdownServer => shutdown = Some(server.begin_shutdown().await),
            Action::Quiet(period) => {
                if let Err(e) = client.expect_quiet(*period).await {
                    fail(file, line, &e, &log);
                }
                log.push(format!("[{current}] -- quiet for {period:?} --"));
            }
            Action::TrickleNext(_) => fail(file, line, "`# trickle:` without client bytes", &log),
            Action::Trickle(bytes, every) => {
                let sent = client.trickle(bytes, *every).await;
                log.push(format!(
                    "[{current}] C (trickled every {every:?}, {sent} of {} bytes sent): {:?}",
                    bytes.len(),
                    shorten(&lossy(bytes))
                ));
            }
        }
    }
    if let Some(line) = script.expect_closed {
        let client = clients
            .get_mut(&current)
            .expect("current connection exists");
        if let Err(e) = client.expect_closed().await {
            fail(file, line, &e, &log);
        }
    }
    drop(clients);
    super::stored::check_spool(file, &script, &server, &ids);
    match shutdown {
        Some(task) => task.await.expect("server shutdown task"),
        None => server.shutdown().await,
    }
}

/// At most 100 characters of `s`, for the conversation log.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(100) {
        Some((at, _)) => format!("{}…({} bytes)", &s[..at], s.len()),
        None => s.to_string(),
    }
}

fn fail(file: &str, line: usize, msg: &str, log: &[String]) -> ! {
    let start = log.len().saturating_sub(30);
    panic!(
        "{file}:{line}: {msg}\n--- conversation so far ---\n{}",
        log[start..].join("\n")
    );
}
