//! Issue 16 §2 ("the whole backlog is scheduled within 30 s"): after a restart, every
//! deferred message gets its retry timer from its name and its file's modification time
//! (which Tern sets to the next attempt with every delivery record), before any file is
//! read (event 4067); the files are read afterwards (event 4055). Between the two:
//! - `tern queue summary` counts the messages not read yet in a row of their own and
//!   says the answer is an estimate;
//! - an administrator's `tern dest retry` of a destination nobody knows yet reaches each
//!   message that turns out to wait for it, as soon as its file is read.
//!
//! The test build holds the reading of the files until the file named by
//! `TERN_FAULT_HOLD_BACKLOG_READ_UNTIL` exists, so "between the two" is a fact of the
//! test. The retry backoff is 10 minutes: without the remembered retry, the messages
//! would wait that long and the test would fail on its 30-second bound.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::peers::SmtpPeer;
use crate::common::{Setup, Tern, free_port, run, send_one, simple_message};

const DEFERRED: usize = 8;

fn cli(tern: &Tern, args: &[&str]) -> (bool, String) {
    let out = run(&mut tern.tern_command(args), Duration::from_secs(30));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn backlog_is_scheduled_before_its_files_are_read() {
    // A smarthost that is down: nothing listens there until the test starts a peer.
    let ip: IpAddr = "127.0.0.9".parse().unwrap();
    let dead = SocketAddr::new(ip, free_port(ip));
    let hop = format!("smtp:[{}]:{}", dead.ip(), dead.port());
    let flags = tempfile::tempdir().unwrap();
    let go = flags.path().join("go");
    std::fs::write(&go, b"").unwrap();
    let mut tern = Setup::new()
        .queue("[queue]\ndeliver = true\nmin_backoff_secs = 600\nmax_backoff_secs = 1200\n")
        .section(&format!(
            "[delivery]\nconnect_timeout_secs = 2\n\
             [[route]]\ndomains = [\"down.test\"]\ntransport = \"smtp\"\nhosts = [\"{dead}\"]\n"
        ))
        .env("TERN_FAULT_HOLD_BACKLOG_READ_UNTIL", go.to_str().unwrap())
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
            "not all deferred\n{}",
            tern.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Each file's modification time is its next attempt, about ten minutes ahead.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let deferred_dir = tern.spool_dir().join("deferred");
    for name in tern.spool_files("deferred") {
        let mtime = std::fs::metadata(deferred_dir.join(&name)).unwrap().mtime();
        let ahead = mtime - i64::try_from(now).unwrap();
        assert!(
            (500..=700).contains(&ahead),
            "{name}: modification time {ahead} s from now, not its next attempt"
        );
    }
    let scheduled_before = tern.events_with_id(4067).len();
    let read_before = tern.events_with_id(4055).len();

    // The reading of the files is held from now on.
    std::fs::remove_file(&go).unwrap();
    tern.kill9();
    tern.restart();
    let scheduled = tern.wait_for_events(4067, scheduled_before + 1, Duration::from_secs(30));
    assert_eq!(
        scheduled[scheduled.len() - 1]["deferred"],
        DEFERRED.to_string(),
        "{:?}",
        scheduled.last()
    );

    // The summary counts them apart, as an estimate.
    let (ok, out) = cli(&tern, &["queue", "summary", "--json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let rows = v["rows"].as_array().unwrap();
    let unread = rows
        .iter()
        .find(|r| r["destination"] == "(not read yet)")
        .unwrap_or_else(|| panic!("no row for the messages not read yet: {v}"));
    assert_eq!(unread["total"], DEFERRED, "{v}");
    assert_eq!(v["exact"], false, "{v}");
    assert_eq!(
        tern.events_with_id(4055).len(),
        read_before,
        "the files were read already: the test proves nothing"
    );

    // The smarthost is back; the administrator retries it before Tern knows who waits.
    let peer = SmtpPeer::start_on(&dead.ip().to_string(), dead.port(), &[]);
    let (ok, out) = cli(&tern, &["dest", "retry", &hop]);
    assert!(ok, "retry refused while the backlog is unread: {out}");
    assert_eq!(peer.count(), 0, "nothing is due before its file is read");

    std::fs::write(&go, b"").unwrap();
    tern.wait_for_events(4055, read_before + 1, Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(30);
    while peer.count() < DEFERRED {
        assert!(
            Instant::now() < deadline,
            "the retry did not reach the messages read after it: {} of {DEFERRED}\n{}",
            peer.count(),
            tern.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(tern.spool_files("corrupt").is_empty());
    tern.stop(Duration::from_secs(30));
}
