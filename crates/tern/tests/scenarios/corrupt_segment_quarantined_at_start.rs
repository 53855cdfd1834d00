//! A damaged segment (the default `[spool] commit = "segment"`) is quarantined at start,
//! never deleted and never fatal: one flipped byte inside one message's record makes the
//! next start write every other message of that segment out to `incoming/` as a file
//! of its own, byte-identical, and move the segment whole to `spool/corrupt/` with a
//! reason beside it (event 3003). The damaged message is no longer queued. A second
//! start finds nothing new; new mail is accepted.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::common::{Setup, send_one, simple_message};

#[test]
fn damaged_segment_is_quarantined_and_its_good_messages_stay() {
    let mut tern = Setup::new().start();
    let addr = tern.addr();
    let body = "a line of text to give the record some content\n".repeat(40);
    let ids: Vec<String> = (0..10)
        .map(|i| {
            send_one(
                addr,
                "s@client.test",
                &[&format!("r{i}@localhost")],
                &simple_message(&format!("m{i}"), &body),
            )
        })
        .collect();
    tern.stop(Duration::from_secs(10));

    // Every message is resident in a segment: no file of its own in incoming/.
    assert!(
        tern.spool_files("incoming").is_empty(),
        "{:?}",
        tern.spool_files("incoming")
    );
    let before: BTreeMap<String, (String, Vec<u8>)> = tern
        .spooled()
        .into_iter()
        .map(|(m, s)| {
            (
                m.id.to_string(),
                (format!("{:?}", s.envelope), s.body.clone()),
            )
        })
        .collect();
    assert_eq!(
        before.keys().cloned().collect::<BTreeSet<_>>(),
        ids.iter().cloned().collect::<BTreeSet<_>>(),
        "all ten are queued"
    );

    let segments: Vec<String> = tern
        .spool_files("segments")
        .into_iter()
        .filter(|n| !n.ends_with(".out"))
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    let seg = &segments[0];
    let seg_path = tern.spool_dir().join("segments").join(seg);
    let mut bytes = std::fs::read(&seg_path).unwrap();
    let original_len = bytes.len();

    // Flip one byte inside the content of the fifth message's record.
    let damaged = &ids[4];
    // Its frame: "TERNSEG2", kind, three zeros, then the queue id (docs/SPOOL.md).
    let at = bytes
        .windows(damaged.len())
        .position(|w| w == damaged.as_bytes())
        .map(|p| p - 12)
        .expect("the fifth message's frame is in the segment");
    assert_eq!(&bytes[at..at + 8], b"TERNSEG2");
    bytes[at + 64 + 400] ^= 0x01;
    std::fs::write(&seg_path, &bytes).unwrap();

    tern.restart();

    // The nine good ones are incoming, now as files of their own, byte-identical.
    let good: BTreeSet<String> = ids.iter().filter(|id| *id != damaged).cloned().collect();
    let incoming_listed: BTreeSet<String> = tern
        .queue_json(&["--state", "incoming"])
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        incoming_listed, good,
        "the nine good messages stay incoming"
    );
    assert_eq!(
        tern.spool_files("incoming")
            .into_iter()
            .collect::<BTreeSet<_>>(),
        good,
        "written out as files"
    );
    for (m, s) in tern.spooled() {
        let id = m.id.to_string();
        let (envelope, body) = &before[&id];
        assert_eq!(&format!("{:?}", s.envelope), envelope, "{id}: envelope");
        assert_eq!(&s.body, body, "{id}: body");
    }

    // The segment is kept whole in corrupt/, with a reason.
    let corrupt = tern.spool_files("corrupt");
    assert!(corrupt.contains(seg), "{corrupt:?}");
    assert!(corrupt.contains(&format!("{seg}.reason")), "{corrupt:?}");
    let kept = std::fs::read(tern.spool_dir().join("corrupt").join(seg)).unwrap();
    assert_eq!(kept.len(), original_len, "quarantined, not rewritten");
    assert_eq!(kept, bytes, "quarantined, not rewritten");
    let reason = std::fs::read_to_string(
        tern.spool_dir()
            .join("corrupt")
            .join(format!("{seg}.reason")),
    )
    .unwrap();
    assert!(reason.contains("segment damaged:"), "{reason}");
    assert!(
        reason.contains(&format!("message {damaged} at offset {at}: damaged")),
        "{reason}"
    );
    assert!(
        tern.spool_files("segments").is_empty(),
        "{:?}",
        tern.spool_files("segments")
    );

    let quarantined = tern.wait_for_events(3003, 1, Duration::from_secs(10));
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert_eq!(quarantined[0]["file"], format!("segments/{seg}"));
    let recovered = tern.wait_for_events(3001, 2, Duration::from_secs(10));
    let last = recovered.last().unwrap();
    assert_eq!(last["incoming"], "9", "{last}");
    assert_eq!(last["quarantined"], "1", "{last}");

    // New mail flows; a second start finds nothing new to quarantine.
    tern.assert_mail_flows_and_restart_is_clean(2, 1, 10);
}
