//! `tern serve` with no `--config` runs on the embedded default: it listens on
//! 127.0.0.1:2525, keeps its data in `./tern-data`, accepts mail for `localhost` and,
//! from loopback clients, for any domain (README, "Run Tern"). Mail for `you@localhost`
//! ends in the Maildir `./tern-data/mail/you/Maildir`.
//!
//! This is the only scenario on the fixed port 2525. A machine-wide lock serialises it
//! with any other run of this test (another checkout, another engineer's `cargo test`);
//! if something else holds the port, the test fails and says so.

#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use crate::common::{MachineLock, SmtpClient, Tern, run, send_one, simple_message};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn default_config_listens_on_2525_and_queues_local_and_relayed_mail() {
    let _lock = MachineLock::acquire("port-2525", Duration::from_secs(120));
    let addr: SocketAddr = "127.0.0.1:2525".parse().unwrap();
    match TcpListener::bind(addr) {
        Ok(probe) => drop(probe),
        Err(e) => panic!(
            "port 2525 on 127.0.0.1 is busy on this machine ({e}); the default-configuration \
             test needs it free (is a tern serve or another mail server running?)"
        ),
    }

    let mut tern = Tern::start_default_config(addr);
    // Make sure what answers on 2525 is this server: it logged its start in ./tern-data.
    let started = tern.wait_for_events(1001, 1, Duration::from_secs(10));
    assert_eq!(started[0]["listeners"], "127.0.0.1:2525", "{started:?}");
    assert!(
        tern.dir.join("tern-data").is_dir(),
        "./tern-data created in the working directory"
    );
    assert!(tern.dir.join("tern-data/spool/incoming").is_dir());
    let hostname = started[0]["hostname"].as_str().unwrap().to_string();
    assert!(!hostname.is_empty());

    let mut c = SmtpClient::connect(addr).unwrap();
    let greeting = c.read_reply().unwrap();
    // The host name, then the process's loop mark (docs/DELIVERY.md, "Mail to myself").
    let text = greeting.text();
    let mark = text
        .strip_prefix(&format!("220 {hostname} ESMTP Tern loop-check="))
        .unwrap_or_else(|| panic!("greeting: {text}"));
    assert!(
        mark.len() == 16 && mark.bytes().all(|b| b.is_ascii_hexdigit()),
        "greeting: {text}"
    );
    let _ = c.command("QUIT");

    let local = send_one(
        addr,
        "me@client.test",
        &["you@localhost"],
        &simple_message("local", "for localhost"),
    );
    let relayed = send_one(
        addr,
        "me@client.test",
        &["someone@example.org"],
        &simple_message("relay", "from loopback to anywhere"),
    );

    // Delivery runs: mail for localhost goes into its Maildir under ./tern-data/mail
    // (the default route), the relayed message is tried by MX and deferred (DNS answers
    // nothing in this test's namespace).
    let delivered = tern.wait_for_events(6003, 1, Duration::from_secs(20));
    assert_eq!(delivered[0]["queue_id"], local.as_str(), "{delivered:?}");
    let new = tern.dir.join("tern-data/mail/you/Maildir/new");
    let files: Vec<_> = std::fs::read_dir(&new).unwrap().collect();
    assert_eq!(files.len(), 1, "one message in {}", new.display());
    let stored = std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
    assert!(
        stored.starts_with("Return-Path: <me@client.test>\nDelivered-To: you@localhost\n"),
        "{stored}"
    );
    tern.wait_for_events(4002, 1, Duration::from_secs(30));
    // `tern queue list` without --config reads ./tern-data too.
    let queued = tern.queue_json(&[]);
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0]["id"], relayed.as_str());
    assert_eq!(queued[0]["recipients"][0]["address"], "someone@example.org");

    tern.stop(Duration::from_secs(40));
    let plain = run(
        &mut tern.tern_command(&["queue", "list"]),
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&plain.stdout);
    assert!(!text.contains(&local) && text.contains(&relayed), "{text}");
}
