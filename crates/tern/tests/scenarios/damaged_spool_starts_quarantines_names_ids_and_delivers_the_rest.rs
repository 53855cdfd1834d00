//! Issue 15, with the real binary: a stopped server's spool is damaged in every way the
//! probe found, all at once, and Tern starts anyway, quarantines what is not its own,
//! names every damaged message by its queue id, and delivers every untouched message
//! exactly once.
//!
//! Two runs, two clean stops: segment A (older) and segment B (newest), both sealed.
//! Then, offline:
//! 1. a directory named like a segment, and a FIFO in `incoming/` (Tern used to exit at
//!    every start: "Is a directory");
//! 2. a FIFO named like a segment (Tern used to hang at every start);
//! 3. segment A, not the newest, cut inside its last record (Tern used to cut it off as
//!    an unfinished write, deleting an acknowledged message);
//! 4. in segment B, one message's content flipped, and another's frame broken (Tern
//!    used to name only the segment; `tern track <id>` showed nothing after "received";
//!    every record after the broken frame went to `hold/`);
//! 5. a directory in place of a resident message's delivery record (it failed every
//!    retry for ever);
//!
//! plus an administrator's `notes.txt` in the spool directory (left alone, reported).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::peers::SmtpPeer;
use crate::common::{Setup, Tern, header_value, run, send_one, simple_message};

/// Record frames of a segment (version 2), in chain order: (queue id, frame offset).
fn frames(bytes: &[u8]) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 64 <= bytes.len() && &bytes[at..at + 8] == b"TERNSEG2" && bytes[at + 8] == 1 {
        let id = String::from_utf8_lossy(&bytes[at + 12..at + 27]).into_owned();
        let len = u32::from_le_bytes(bytes[at + 28..at + 32].try_into().unwrap()) as usize;
        out.push((id, at));
        at += 64 + len;
    }
    out
}

fn segments(tern: &Tern) -> Vec<String> {
    tern.spool_files("segments")
        .into_iter()
        .filter(|n| !n.ends_with(".out"))
        .collect()
}

fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path and a mode.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

fn track(tern: &Tern, id: &str) -> Vec<Value> {
    let out = run(
        &mut tern.tern_command(&["track", "--json", id]),
        Duration::from_secs(30),
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["records"].as_array().cloned().unwrap_or_default()
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn damaged_spool_starts_quarantines_names_ids_and_delivers_the_rest() {
    let peer = SmtpPeer::start("127.0.0.5", &[]);
    let route = format!(
        "[delivery]\nconnect_timeout_secs = 2\ngreeting_timeout_secs = 3\ncommand_timeout_secs = 5\n\
         [[route]]\ndomains = [\"relay.test\"]\ntransport = \"smtp\"\nhosts = [\"{}\"]\n",
        peer.addr
    );
    let mut tern = Setup::new()
        .queue("[queue]\ndeliver = false\n")
        .section(&route)
        .start();
    let body = "a line of text to give the record some content\n".repeat(20);
    let mut subject_of: BTreeMap<String, String> = BTreeMap::new();
    let mut send = |tern: &Tern, subject: String| {
        let id = send_one(
            tern.addr(),
            "s@client.test",
            &[&format!("{subject}@relay.test")],
            &simple_message(&subject, &body),
        );
        subject_of.insert(id.clone(), subject);
        id
    };
    for i in 0..6 {
        send(&tern, format!("a{i}"));
    }
    tern.stop(Duration::from_secs(10));
    tern.restart();
    let mut b_ids = Vec::new();
    for i in 0..6 {
        b_ids.push(send(&tern, format!("b{i}")));
    }
    tern.stop(Duration::from_secs(10));

    let spool = tern.spool_dir();
    let segs = segments(&tern);
    assert_eq!(segs.len(), 2, "{segs:?}");
    let (seg_a, seg_b) = (segs[0].clone(), segs[1].clone());
    let path_a = spool.join("segments").join(&seg_a);
    let path_b = spool.join("segments").join(&seg_b);
    let mut a = std::fs::read(&path_a).unwrap();
    let mut b = std::fs::read(&path_b).unwrap();
    // A clean stop seals the segment it was appending to (its last frame).
    let last = b.len() - 64;
    assert_eq!(&b[last..last + 8], b"TERNSEG2", "B ends in its seal");
    assert_eq!(b[last + 8], 2, "B ends in its seal");
    let frames_a = frames(&a);
    let frames_b = frames(&b);
    assert_eq!(frames_a.len(), 6);
    assert_eq!(frames_b.len(), 6);

    // 1, 2: a directory and a FIFO named like segments; a FIFO in incoming/.
    let fake_dir = "1K1ZZZZZZZZZZZ0";
    std::fs::create_dir(spool.join("segments").join(fake_dir)).unwrap();
    let fake_fifo = "1K1ZZZZZZZZZZZ1";
    mkfifo(&spool.join("segments").join(fake_fifo));
    mkfifo(&spool.join("incoming").join("1K1ZZZZZZZZZZZ2"));
    // 3: A cut inside its last record.
    let (cut_id, cut_at) = frames_a[5].clone();
    a.truncate(cut_at + 64 + 100);
    std::fs::write(&path_a, &a).unwrap();
    // 4: in B, the second message's content flipped, the fourth one's frame broken.
    let (damaged_id, damaged_at) = frames_b[1].clone();
    b[damaged_at + 64 + 200] ^= 0x01;
    let (lost_frame_id, lost_frame_at) = frames_b[3].clone();
    b[lost_frame_at + 20] ^= 0x01;
    std::fs::write(&path_b, &b).unwrap();
    // 5: a directory in place of the delivery record of B's third message.
    let held_id = frames_b[2].0.clone();
    std::fs::create_dir(spool.join("records").join(&held_id)).unwrap();
    std::fs::write(spool.join("notes.txt"), b"the admin's notes").unwrap();

    tern.replace_in_config("deliver = false", "deliver = true");
    tern.restart();

    let not_delivered: BTreeSet<String> = [&cut_id, &damaged_id, &lost_frame_id, &held_id]
        .into_iter()
        .cloned()
        .collect();
    let expected: BTreeSet<String> = subject_of
        .iter()
        .filter(|(id, _)| !not_delivered.contains(*id))
        .map(|(_, s)| s.clone())
        .collect();
    assert_eq!(expected.len(), 8);
    wait_for("eight deliveries", Duration::from_secs(60), || {
        peer.count() >= expected.len()
    });
    // Every untouched message exactly once, nothing else.
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    for r in peer.received() {
        *got.entry(header_value(&r.content, "Subject").unwrap_or_default())
            .or_default() += 1;
    }
    assert_eq!(
        got.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "{got:?}"
    );
    assert!(got.values().all(|n| *n == 1), "{got:?}");

    // Quarantined, byte for byte, with reasons.
    let corrupt = tern.spool_files("corrupt");
    for name in [
        &seg_a,
        &seg_b,
        &fake_dir.to_string(),
        &fake_fifo.to_string(),
    ] {
        assert!(corrupt.contains(name), "{name}: {corrupt:?}");
        assert!(
            corrupt.contains(&format!("{name}.reason")),
            "{name}: {corrupt:?}"
        );
    }
    assert!(
        corrupt.contains(&"1K1ZZZZZZZZZZZ2".to_string()),
        "{corrupt:?}"
    );
    assert!(
        corrupt.contains(&format!("{held_id}.record")),
        "{corrupt:?}"
    );
    assert_eq!(
        std::fs::read(spool.join("corrupt").join(&seg_a)).unwrap(),
        a
    );
    assert_eq!(
        std::fs::read(spool.join("corrupt").join(&seg_b)).unwrap(),
        b
    );
    let reason_a =
        std::fs::read_to_string(spool.join("corrupt").join(format!("{seg_a}.reason"))).unwrap();
    assert!(
        reason_a.contains(&format!("message {cut_id} at offset {cut_at}: cut short")),
        "{reason_a}"
    );
    let reason_b =
        std::fs::read_to_string(spool.join("corrupt").join(format!("{seg_b}.reason"))).unwrap();
    assert!(
        reason_b.contains(&format!("damage: offset {damaged_at} ")),
        "{reason_b}"
    );
    assert!(
        reason_b.contains(&format!("damage: offset {lost_frame_at} ")),
        "{reason_b}"
    );
    assert!(
        reason_b.contains(&format!(
            "message {damaged_id} at offset {damaged_at}: damaged"
        )),
        "{reason_b}"
    );
    // The admin's file is left where it was, and reported.
    assert!(spool.join("notes.txt").is_file());
    let unknown = tern.wait_for_events(3011, 1, Duration::from_secs(10));
    assert_eq!(unknown[0]["names"], "notes.txt");

    // Each damaged message is named by its id, in an event and in the tracking log.
    let named = tern.wait_for_events(3007, 2, Duration::from_secs(10));
    let named: BTreeSet<String> = named
        .iter()
        .map(|e| e["queue_id"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        named,
        [cut_id.clone(), damaged_id.clone()].into_iter().collect(),
        "events 3007"
    );
    let records = track(&tern, &damaged_id);
    assert!(
        records.iter().any(|r| r["step"] == "received"),
        "{records:?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["step"] == "quarantined" && r["moved_to"] == format!("corrupt/{seg_b}")),
        "{records:?}"
    );
    // A message written out of a damaged segment is tracked to its delivery; the one
    // past the broken frame is authenticated, so it was queued, not held.
    let after_break = frames_b[4].0.clone();
    wait_for(
        "its delivery in the tracking log",
        Duration::from_secs(20),
        || {
            track(&tern, &after_break)
                .iter()
                .any(|r| r["step"] == "delivered")
        },
    );
    let records = track(&tern, &after_break);
    assert!(
        records
            .iter()
            .any(|r| r["step"] == "recovered" && r["found"] == "authenticated"),
        "{records:?}"
    );
    // The message whose record was a directory is held, and says why.
    assert!(tern.spool_files("hold").contains(&held_id));
    let records = track(&tern, &held_id);
    assert!(
        records
            .iter()
            .any(|r| r["step"] == "held" && r["event"] == "spool.record.set_aside"),
        "{records:?}"
    );

    // New mail flows, and a second start finds nothing new to quarantine.
    let before = tern.events_with_id(3003).len();
    tern.stop(Duration::from_secs(10));
    tern.restart();
    let recovered = tern.wait_for_events(3001, 4, Duration::from_secs(10));
    assert_eq!(recovered.last().unwrap()["quarantined"], "0");
    assert_eq!(tern.events_with_id(3003).len(), before);
}
