//! Damaged spool files are quarantined at start, never deleted and never fatal: a
//! truncated file, a file with one flipped byte, a file overwritten with garbage and a
//! file whose name is not a queue id all move to `spool/corrupt/` (event 3003 each) while
//! the good messages stay queued; a partial write left in `spool/tmp/` is removed (event
//! 3002). A second start finds nothing new.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::{Rng, Setup, send_one, simple_message};

#[test]
fn damaged_files_are_quarantined_and_good_ones_stay() {
    // Per-message files (`commit = "file"`): this test damages them one by one; a damaged
    // segment is `corrupt_segment_quarantined_at_start`.
    let mut tern = Setup::new().section("[spool]\ncommit = \"file\"\n").start();
    let addr = tern.addr();
    let body = "a line of text to give the file some content\n".repeat(40);
    for i in 0..10 {
        send_one(
            addr,
            "s@client.test",
            &[&format!("r{i}@localhost")],
            &simple_message(&format!("m{i}"), &body),
        );
    }
    tern.stop(Duration::from_secs(10));

    let spool = tern.spool_dir();
    let incoming = spool.join("incoming");
    let ids = tern.spool_files("incoming");
    assert_eq!(ids.len(), 10);
    let before: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| std::fs::read(incoming.join(id)).unwrap())
        .collect();

    // 1. Truncated to half its length.
    let truncated = &ids[0];
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(incoming.join(truncated))
        .unwrap();
    f.set_len(before[0].len() as u64 / 2).unwrap();
    drop(f);
    // 2. One byte flipped inside the content (after the 16-byte header).
    let flipped = &ids[1];
    let mut bytes = before[1].clone();
    bytes[16 + 300] ^= 0x01;
    std::fs::write(incoming.join(flipped), &bytes).unwrap();
    // 3. Overwritten with garbage of the same length.
    let garbage = &ids[2];
    let mut rng = Rng::new(7);
    let junk: Vec<u8> = (0..before[2].len()).map(|_| rng.next_u64() as u8).collect();
    std::fs::write(incoming.join(garbage), junk).unwrap();
    // 4. A file whose name is not a queue id.
    std::fs::write(incoming.join("junk-name.txt"), b"not a message").unwrap();
    // 5. A partial write in tmp/ (the first bytes of a real file).
    let partial = "0K3M9QW2XYZAB7F";
    std::fs::write(spool.join("tmp").join(partial), &before[3][..100]).unwrap();

    tern.restart();

    let damaged: BTreeSet<&str> = [truncated, flipped, garbage]
        .iter()
        .map(|s| s.as_str())
        .collect();
    let good: BTreeSet<&str> = ids
        .iter()
        .map(String::as_str)
        .filter(|id| !damaged.contains(id))
        .collect();

    let corrupt_listed: BTreeSet<String> = tern
        .queue_json(&["--state", "corrupt"])
        .iter()
        .map(|m| {
            assert_eq!(m["state"], "corrupt", "{m}");
            m["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        corrupt_listed,
        damaged.iter().map(|s| s.to_string()).collect(),
        "the damaged messages are listed as corrupt"
    );
    let incoming_listed: BTreeSet<String> = tern
        .queue_json(&["--state", "incoming"])
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        incoming_listed,
        good.iter().map(|s| s.to_string()).collect(),
        "the 7 good messages are still incoming"
    );
    for (id, original) in ids.iter().zip(&before) {
        if good.contains(id.as_str()) {
            assert_eq!(
                &std::fs::read(incoming.join(id)).unwrap(),
                original,
                "{id} untouched"
            );
        }
    }

    // Quarantine keeps every file, each with a reason beside it.
    let corrupt_files: BTreeSet<String> = tern.spool_files("corrupt").into_iter().collect();
    for name in damaged.iter().copied().chain(["junk-name.txt"]) {
        assert!(
            corrupt_files.contains(name),
            "{name} not in corrupt/: {corrupt_files:?}"
        );
        assert!(
            corrupt_files.contains(&format!("{name}.reason")),
            "no reason file for {name}: {corrupt_files:?}"
        );
    }
    assert_eq!(
        std::fs::read(spool.join("corrupt").join("junk-name.txt")).unwrap(),
        b"not a message",
        "quarantined files are moved, not rewritten"
    );
    assert!(
        tern.spool_files("tmp").is_empty(),
        "the partial write is removed"
    );

    let quarantined = tern.wait_for_events(3003, 4, Duration::from_secs(10));
    let files: BTreeSet<String> = quarantined
        .iter()
        .map(|e| e["file"].as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = damaged
        .iter()
        .copied()
        .chain(["junk-name.txt"])
        .map(|n| format!("incoming/{n}"))
        .collect();
    assert_eq!(files, expected, "one 3003 event per damaged file");
    assert_eq!(quarantined.len(), 4, "{quarantined:?}");
    let removed = tern.wait_for_events(3002, 1, Duration::from_secs(10));
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(removed[0]["file"], format!("tmp/{partial}"));
    let recovered = tern.wait_for_events(3001, 2, Duration::from_secs(10));
    let last = recovered.last().unwrap();
    assert_eq!(last["incoming"], "7", "{last}");
    assert_eq!(last["quarantined"], "4", "{last}");
    assert_eq!(last["partials_removed"], "1", "{last}");

    // The rest of the queue flows, and a second start finds nothing new to quarantine.
    tern.assert_mail_flows_and_restart_is_clean(2, 4, 8);
}
