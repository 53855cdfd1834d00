//! Issue 16 §2: after a kill -9 with deferred mail on disk, Tern answers and delivers new
//! mail before its backlog is loaded; the backlog (`deferred/`, `records/`) is read in
//! the background and scheduled, event 4055 with its count.
//!
//! The test build (`--features tern/fault-injection`) holds the background load until
//! the file named by `TERN_FAULT_HOLD_BACKLOG_UNTIL` exists, so "before the backlog is
//! loaded" is a fact of the test, not a race: without the background load (the listener
//! and queue waiting for the whole scan), the fresh message could not be delivered while
//! the load is held, and the restart itself would hang until the file appears.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::common::peers::SmtpPeer;
use crate::common::{Setup, free_port, send_one, simple_message};

const DEFERRED: usize = 12;

#[test]
fn backlog_loads_in_background_while_new_mail_flows() {
    let peer = SmtpPeer::start("127.0.0.6", &[]);
    // A smarthost that is down: nothing listens on this port.
    let dead_ip: IpAddr = "127.0.0.7".parse().unwrap();
    let dead = SocketAddr::new(dead_ip, free_port(dead_ip));
    let flags = tempfile::tempdir().unwrap();
    let go = flags.path().join("go");
    std::fs::write(&go, b"").unwrap();
    let routes = format!(
        "[delivery]\nconnect_timeout_secs = 2\n\
         [[route]]\ndomains = [\"fresh.test\"]\ntransport = \"smtp\"\nhosts = [\"{}\"]\n\
         [[route]]\ndomains = [\"down.test\"]\ntransport = \"smtp\"\nhosts = [\"{dead}\"]\n",
        peer.addr
    );
    let mut tern = Setup::new()
        .queue("[queue]\ndeliver = true\n")
        .section(&routes)
        .env("TERN_FAULT_HOLD_BACKLOG_UNTIL", go.to_str().unwrap())
        .start();
    for i in 0..DEFERRED {
        send_one(
            tern.addr(),
            "s@client.test",
            &[&format!("r{i}@down.test")],
            &simple_message(&format!("r{i}"), "waits for a dead smarthost"),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while tern.spool_files("deferred").len() < DEFERRED {
        assert!(
            Instant::now() < deadline,
            "not all deferred: {:?}",
            tern.spool_files("deferred")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let loaded_before = tern.events_with_id(4055).len();

    // The load is held from now on.
    std::fs::remove_file(&go).unwrap();
    tern.kill9();
    tern.restart();
    send_one(
        tern.addr(),
        "s@client.test",
        &["a@fresh.test"],
        &simple_message("fresh", "new mail during the load"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while peer.count() < 1 {
        assert!(
            Instant::now() < deadline,
            "new mail not delivered while the backlog loads\n{}",
            tern.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        tern.events_with_id(4055).len(),
        loaded_before,
        "the backlog was loaded already: the test proves nothing"
    );
    assert_eq!(tern.spool_files("deferred").len(), DEFERRED);

    std::fs::write(&go, b"").unwrap();
    let loaded = tern.wait_for_events(4055, loaded_before + 1, Duration::from_secs(30));
    let last = &loaded[loaded.len() - 1];
    // Event fields are text.
    assert_eq!(last["deferred"], DEFERRED.to_string(), "{last}");
    assert_eq!(last["quarantined"], "0", "{last}");
    // Scheduled: the queue's view counts them for the dead smarthost's next hop.
    let out = crate::common::run(
        &mut tern.tern_command(&["dest", "list", "--json"]),
        Duration::from_secs(20),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let queued = v["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == format!("smtp:[{}]:{}", dead.ip(), dead.port()).as_str())
        .map(|d| d["queued"].clone());
    assert_eq!(queued, Some(serde_json::json!(DEFERRED)), "{text}");
    assert!(tern.spool_files("corrupt").is_empty());
    tern.stop(Duration::from_secs(30));
}
