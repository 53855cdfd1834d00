//! Interoperability with a real peer: Postfix's smtp-sink takes 50 pipelined
//! transactions on one session.

#![allow(clippy::unwrap_used)]

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use tern_deliver::{OutRecipient, SmtpSession, TlsPolicy};

const SMTP_SINK: &str = "/usr/sbin/smtp-sink";

struct Sink(Child);

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn fifty_pipelined_transactions_to_smtp_sink() {
    assert!(
        Path::new(SMTP_SINK).exists(),
        "{SMTP_SINK} is missing: run scripts/test.sh, which installs Postfix's test tools"
    );
    let dir = tempfile::tempdir().unwrap();
    // smtp-sink drops to `nobody` when started as root; let it write the dumps.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let addr = unused_port("127.0.0.5");
    let mut cmd = Command::new(SMTP_SINK);
    if running_as_root() {
        cmd.args(["-u", "nobody"]);
    }
    cmd.arg("-d")
        .arg(format!("{}/msg.", dir.path().display()))
        .arg("-c")
        .arg(addr.to_string())
        .arg("100")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _sink = Sink(cmd.spawn().unwrap());

    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "smtp-sink did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut session = SmtpSession::connect(&context(), addr, "smtp-sink", TlsPolicy::May)
        .await
        .unwrap();
    assert!(session.capabilities().pipelining);
    for i in 0..50 {
        let a = format!("first{i}@example.net");
        let b = format!("second{i}@example.net");
        let rcpts = [OutRecipient::new(&a), OutRecipient::new(&b)];
        let body = format!("Subject: sink {i}\r\n\r\n.dot line {i}\r\n");
        let outcome = session
            .send(
                &transaction(&rcpts, body.as_bytes()),
                &mut reader(body.as_bytes()),
            )
            .await
            .unwrap();
        assert_eq!(outcome.delivered(), 2, "transaction {i}: {outcome:?}");
    }
    assert_eq!(session.transactions(), 50);
    session.quit().await;

    let dumps: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(dumps.len(), 50);
    for i in 0..50 {
        let found = dumps
            .iter()
            .find(|d| d.contains(&format!("Subject: sink {i}\n")))
            .unwrap();
        assert!(found.contains(&format!("X-Rcpt-Args: <second{i}@example.net>")));
        assert!(found.contains(&format!("\n.dot line {i}\n")), "{found}");
    }
}
