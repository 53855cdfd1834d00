//! Issue 16 §2: after kill -9 with a large segment left unrecovered (its tail cut short
//! by the kill) and message files in `incoming/`, the listener greets and new mail is
//! accepted and delivered before any of that is recovered; the recovery then runs in the
//! background (event 4065) and every old message is delivered exactly once.
//!
//! The test build (`--features tern/fault-injection`) holds the background recovery
//! until the file named by `TERN_FAULT_HOLD_RECOVERY_UNTIL` exists, so "before the
//! recovery" is a fact of the test, not a race: with the recovery before the listeners
//! (as before this change) the restart itself would hang until the file appears and
//! fail; with new mail appended to the old segment, or the old segment touched, the
//! checks on its length below fail.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::common::peers::SmtpPeer;
use crate::common::{Setup, header_value, send_batch, send_one, simple_message};

/// Messages resident in the segment at the kill.
const OLD: usize = 300;
/// Messages too large for a segment: files of their own in `incoming/`.
const OLD_FILES: usize = 2;

#[test]
fn segment_recovery_runs_in_background_after_kill9() {
    let peer = SmtpPeer::start("127.0.0.6", &[]);
    let flags = tempfile::tempdir().unwrap();
    let go = flags.path().join("go");
    let routes = format!(
        "[[route]]\ndomains = [\"*\"]\ntransport = \"smtp\"\nhosts = [\"{}\"]\n",
        peer.addr
    );
    // Delivery off while the old mail is queued, so it stays in `incoming`.
    let mut tern = Setup::new()
        .section(&routes)
        .env("TERN_FAULT_HOLD_RECOVERY_UNTIL", go.to_str().unwrap())
        .start();
    let filler = format!("{}\r\n", "0123456789abcdef".repeat(4)).repeat(256);
    let mut batch: Vec<(String, Vec<u8>)> = (0..OLD)
        .map(|i| {
            (
                format!("r{i}@old.test"),
                simple_message(&format!("old {i}"), &filler),
            )
        })
        .collect();
    let big = format!("{}\r\n", "x".repeat(76)).repeat(4 * 1024);
    batch.extend((0..OLD_FILES).map(|i| {
        (
            format!("big{i}@old.test"),
            simple_message(&format!("old big {i}"), &big),
        )
    }));
    send_batch(tern.addr(), 8, &batch);
    assert_eq!(tern.spool_files("incoming").len(), OLD_FILES);
    tern.kill9();

    // What the kill leaves: one segment without a seal; make its last write torn too.
    let segs: Vec<String> = tern
        .spool_files("segments")
        .into_iter()
        .filter(|n| !n.ends_with(".out"))
        .collect();
    assert_eq!(segs.len(), 1, "{segs:?}");
    let seg = tern.spool_dir().join("segments").join(&segs[0]);
    let out = std::fs::read_to_string(format!("{}.out", seg.display())).unwrap_or_default();
    assert!(!out.contains("sealed"), "{out}");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(b"TERNSEG2\x01\x00\x00")
        .unwrap();
    let torn_len = std::fs::metadata(&seg).unwrap().len();
    assert!(torn_len > (OLD * 16 * 1024) as u64);

    tern.replace_in_config("deliver = false", "deliver = true");
    let t = Instant::now();
    tern.restart();
    let greeted = t.elapsed();
    // Greeted and new mail accepted and delivered with the recovery held.
    send_one(
        tern.addr(),
        "s@client.test",
        &["a@fresh.test"],
        &simple_message("fresh", "new mail during the recovery"),
    );
    let got = peer.wait_for(1, Duration::from_secs(30));
    assert_eq!(
        header_value(&got[0].content, "Subject").as_deref(),
        Some("fresh")
    );
    assert!(
        tern.events_with_id(4065).is_empty(),
        "the recovery ran already: the test proves nothing"
    );
    assert_eq!(peer.count(), 1, "an old message went before its recovery");
    // The old segment was neither cut, sealed nor appended to: new mail took a new one.
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), torn_len);
    assert_eq!(tern.spool_files("incoming").len(), OLD_FILES);
    std::fs::write(&go, b"").unwrap();
    let done = tern.wait_for_events(4065, 1, Duration::from_secs(60));
    let ev = &done[0];
    assert_eq!(ev["incoming"], (OLD + OLD_FILES).to_string(), "{ev}");
    assert_eq!(ev["scheduled"], (OLD + OLD_FILES).to_string(), "{ev}");
    assert_eq!(ev["quarantined"], "0", "{ev}");
    assert_eq!(ev["partials_removed"], "1", "{ev}");
    assert_eq!(ev["stopped"], "false", "{ev}");
    let all = peer.wait_for(1 + OLD + OLD_FILES, Duration::from_secs(120));
    // Everything left the queue; nothing more arrives.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(tern.spool_files("incoming").is_empty()
        && tern.spool_files("active").is_empty()
        && !tern.spool_files("segments").iter().any(|n| n == &segs[0]))
    {
        assert!(Instant::now() < deadline, "the queue did not empty");
        std::thread::sleep(Duration::from_millis(20));
    }
    let all = if peer.count() > all.len() {
        peer.received()
    } else {
        all
    };
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for m in &all {
        let subject = header_value(&m.content, "Subject").unwrap_or_default();
        *seen.entry(subject).or_default() += 1;
    }
    for i in 0..OLD {
        assert_eq!(seen.get(&format!("old {i}")), Some(&1), "old {i}");
    }
    for i in 0..OLD_FILES {
        assert_eq!(seen.get(&format!("old big {i}")), Some(&1), "old big {i}");
    }
    assert_eq!(seen.get("fresh"), Some(&1));
    assert_eq!(
        all.len(),
        1 + OLD + OLD_FILES,
        "a message was delivered twice"
    );
    assert!(tern.spool_files("corrupt").is_empty());
    eprintln!("greeted {greeted:?} after the restart");
    tern.stop(Duration::from_secs(30));
}
