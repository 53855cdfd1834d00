//! Shared harness for the integration tests: starts `testpeers/smtp_peer.py` on a
//! loopback address with a kernel-chosen port, waits (with a deadline) for its ready
//! file, reads what it stored, and kills it on drop.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_deliver::{
    Body, ClientConfig, ClientContext, OutRecipient, SmtpSession, Timeouts, TlsPolicy, Transaction,
};

/// How long a peer may take to start listening.
const READY_DEADLINE: Duration = Duration::from_secs(20);

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testpeers/smtp_peer.py")
}

/// A running smtp_peer.py; killed when dropped.
pub struct Peer {
    child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

/// One message the peer stored.
#[derive(Debug)]
pub struct Stored {
    pub meta: serde_json::Value,
    pub content: Vec<u8>,
}

impl Peer {
    pub fn start(ip: &str, behaviours: &[&str]) -> Peer {
        Peer::start_with(ip, behaviours, &[])
    }

    pub fn start_with(ip: &str, behaviours: &[&str], extra: &[&str]) -> Peer {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        let stderr = std::fs::File::create(dir.path().join("stderr")).unwrap();
        let mut cmd = Command::new("python3");
        cmd.arg(script())
            .arg("--listen")
            .arg(format!("{ip}:0"))
            .arg("--maildir")
            .arg(dir.path().join("mail"))
            .arg("--ready-file")
            .arg(&ready)
            .arg("--log")
            .arg(dir.path().join("log"));
        if !behaviours.is_empty() {
            cmd.arg("--behaviour").args(behaviours);
        }
        cmd.args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = cmd
            .spawn()
            .expect("python3 must be installed (run scripts/test.sh)");
        let mut peer = Peer {
            child,
            addr: SocketAddr::new(ip.parse().unwrap(), 0),
            dir,
        };
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready)
                && let Ok(port) = text.trim().parse::<u16>()
            {
                peer.addr.set_port(port);
                return peer;
            }
            if let Some(status) = peer.child.try_wait().unwrap() {
                panic!(
                    "smtp_peer.py exited ({status}) before listening; stderr:\n{}\n\
                     (needs python3 with aiosmtpd: run scripts/test.sh)",
                    peer.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "smtp_peer.py not ready within {READY_DEADLINE:?}; stderr:\n{}",
                peer.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the peer: its connections are closed by the kernel.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Complete stored messages, oldest first.
    pub fn messages(&self) -> Vec<Stored> {
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("mail")) else {
            return Vec::new();
        };
        let mut names: Vec<PathBuf> = entries
            .map(|e| e.unwrap().path())
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|path| {
                let bytes = std::fs::read(&path).unwrap();
                let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
                Stored {
                    meta: serde_json::from_slice(&bytes[..nl]).unwrap(),
                    content: bytes[nl + 1..].to_vec(),
                }
            })
            .collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port on `ip` where nobody listens (bound, then released).
pub fn unused_port(ip: &str) -> SocketAddr {
    let listener = TcpListener::bind((ip.parse::<IpAddr>().unwrap(), 0)).unwrap();
    listener.local_addr().unwrap()
}

pub fn config() -> ClientConfig {
    ClientConfig {
        helo_name: "client.test.example".into(),
        timeouts: short_timeouts(),
        extra_roots_pem: None,
        loop_mark: None,
    }
}

/// Generous for a loopback peer, short enough that a hung test fails fast.
pub fn short_timeouts() -> Timeouts {
    let s = Duration::from_secs(15);
    Timeouts {
        connect: s,
        greeting: s,
        ehlo: s,
        starttls: s,
        mail: s,
        rcpt: s,
        data_start: s,
        data_block: s,
        data_end: s,
        rset: s,
        quit: Duration::from_secs(5),
    }
}

pub fn context() -> Arc<ClientContext> {
    ClientContext::new(config()).unwrap()
}

pub async fn connect(peer: &Peer) -> SmtpSession {
    SmtpSession::connect(&context(), peer.addr, "peer.test.example", TlsPolicy::None)
        .await
        .unwrap()
}

/// A small 7-bit message.
pub const MESSAGE: &[u8] =
    b"From: a@example.org\r\nTo: b@example.net\r\nSubject: test\r\n\r\nHello.\r\n";

pub fn transaction<'a>(recipients: &'a [OutRecipient<'a>], content: &'a [u8]) -> Transaction<'a> {
    Transaction {
        sender: "sender@example.org",
        recipients,
        size: content.len() as u64,
        body: Body::SevenBit,
        smtputf8: false,
        dsn_ret: None,
        dsn_envid: None,
    }
}

/// A CA and a server certificate for `name` signed by it, written as PEM files.
pub struct TestPki {
    pub ca_pem: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn pki(name: &str) -> TestPki {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Tern test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    TestPki {
        ca_pem: ca_cert.pem(),
        cert,
        key,
        _dir: dir,
    }
}

/// The content as the stream `SmtpSession::send` reads.
pub fn reader(content: &[u8]) -> &[u8] {
    content
}
