//! Moves between states, removal, delivery records, and how recovery treats what a crash
//! in the middle of those leaves behind.

use super::{content, open, store};
use crate::RecipientStatus;
use crate::error::{CorruptReason, SpoolError};
use crate::record::DeliveryRecord;
use crate::state::QueueState;

#[tokio::test]
async fn a_message_moves_through_the_states_and_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let body = content(3000, 7);
    let id = store(&spool, &body, 512).await;
    assert_eq!(spool.queued(), 1);
    spool
        .move_to(id, QueueState::Incoming, QueueState::Active)
        .await
        .unwrap();
    assert!(!spool.path_of(QueueState::Incoming, id).exists());
    assert_eq!(spool.read(QueueState::Active, id).unwrap().body, body);
    spool
        .move_to(id, QueueState::Active, QueueState::Deferred)
        .await
        .unwrap();
    spool
        .move_to(id, QueueState::Deferred, QueueState::Poison)
        .await
        .unwrap();
    assert_eq!(spool.queued(), 0, "poison does not count as queued");
    spool
        .move_to(id, QueueState::Poison, QueueState::Incoming)
        .await
        .unwrap();
    assert_eq!(spool.queued(), 1);
    assert!(matches!(
        spool
            .move_to(id, QueueState::Hold, QueueState::Active)
            .await,
        Err(SpoolError::NotFound)
    ));
    spool.remove(QueueState::Incoming, id).await.unwrap();
    assert_eq!(spool.queued(), 0);
    assert!(matches!(
        spool.remove(QueueState::Incoming, id).await,
        Err(SpoolError::NotFound)
    ));
}

#[tokio::test]
async fn records_are_replaced_atomically_and_removed_with_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let id = store(&spool, b"Subject: x\r\n\r\nhi\r\n", 64).await;
    assert_eq!(spool.read_record(id).unwrap(), None);
    let mut rec = DeliveryRecord::new(id, 2);
    rec.attempts = 1;
    spool.write_record(&rec).await.unwrap();
    rec.attempts = 2;
    rec.recipients[1].status = RecipientStatus::Failed {
        reply: "550 5.1.1 no".into(),
    };
    spool.write_record(&rec).await.unwrap();
    assert_eq!(spool.read_record(id).unwrap(), Some(rec));
    assert!(
        std::fs::read_dir(dir.path().join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "no temporary file left behind"
    );
    spool.remove(QueueState::Incoming, id).await.unwrap();
    assert_eq!(spool.read_record(id).unwrap(), None);
}

#[tokio::test]
async fn a_damaged_record_is_reported_and_quarantined_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let id = store(&spool, b"Subject: x\r\n\r\nhi\r\n", 64).await;
    // A legacy record (records/<id>, from an older version) that fails validation.
    super::write_legacy_record(dir.path(), &DeliveryRecord::new(id, 2));
    let path = dir.path().join("records").join(id.to_string());
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len() - 3;
    bytes[n] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let err = spool.read_record(id).unwrap_err();
    let SpoolError::Corrupt(reason) = err else {
        panic!("{err}")
    };
    assert!(matches!(reason, CorruptReason::BadRecord(_)));
    assert!(
        spool
            .quarantine_message(QueueState::Incoming, id, &reason)
            .unwrap()
    );
    let corrupt = dir.path().join("corrupt");
    assert!(corrupt.join(id.to_string()).exists());
    assert!(corrupt.join(format!("{id}.record")).exists());
    assert!(corrupt.join(format!("{id}.reason")).exists());
    assert_eq!(spool.queued(), 0);
    drop(spool);
    let (_, report) = open(dir.path());
    assert_eq!(
        report.count(QueueState::Corrupt),
        1,
        "the record is not a second entry"
    );
}

#[tokio::test]
async fn count_reads_names_only_and_skips_reasons_and_records() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    // Process-wide counters: other tests run beside this one, so at least.
    let m = tern_metrics::get();
    let (received, quarantined, fsyncs) = (
        m.received.get(),
        m.quarantined.get(),
        m.fsync_latency.count(),
    );
    let a = store(&spool, b"Subject: a\r\n\r\na\r\n", 64).await;
    let b = store(&spool, b"Subject: b\r\n\r\nb\r\n", 64).await;
    let _c = store(&spool, b"Subject: c\r\n\r\nc\r\n", 64).await;
    spool
        .move_to(a, QueueState::Incoming, QueueState::Deferred)
        .await
        .unwrap();
    spool
        .write_record(&DeliveryRecord::new(b, 1))
        .await
        .unwrap();
    assert!(
        spool
            .quarantine_message(QueueState::Incoming, b, &CorruptReason::BadMagic)
            .unwrap()
    );
    // A stray name that is no queue id is not a message.
    std::fs::write(dir.path().join("hold").join("notes.txt"), b"x").unwrap();
    let counts: Vec<usize> = QueueState::ALL
        .iter()
        .map(|s| spool.count(*s).unwrap())
        .collect();
    // incoming, active, deferred, hold, poison, corrupt (message, not .reason/.record).
    assert_eq!(counts, vec![1, 0, 1, 0, 0, 1]);
    assert!(m.received.get() >= received + 3);
    assert!(m.quarantined.get() > quarantined);
    assert!(m.fsync_latency.count() >= fsyncs + 3);
}

#[tokio::test]
async fn a_message_quarantined_by_the_scan_or_a_read_keeps_its_record_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let at_start = store(&spool, b"Subject: a\r\n\r\na\r\n", 64).await;
    let on_read = store(&spool, b"Subject: b\r\n\r\nb\r\n", 64).await;
    // `at_start` has its record as a frame in its file, `on_read` a legacy record file.
    for id in [at_start, on_read] {
        let mut rec = DeliveryRecord::new(id, 2);
        rec.recipients[0].status = RecipientStatus::Delivered {
            reply: "250 ok".into(),
        };
        if id == at_start {
            spool.write_record(&rec).await.unwrap();
        } else {
            super::write_legacy_record(dir.path(), &rec);
        }
    }
    let key = spool.inner.record_key().cloned().unwrap();
    drop(spool);
    let flip = |id| {
        let path = dir.path().join("incoming").join(format!("{id}"));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[super::super::super::format::HEADER_LEN + 1] ^= 1;
        std::fs::write(&path, bytes).unwrap();
    };
    flip(at_start);
    let (spool, report) = open(dir.path());
    assert_eq!(report.quarantined, 1);
    flip(on_read);
    assert!(matches!(
        spool.read(QueueState::Incoming, on_read),
        Err(SpoolError::Corrupt(_))
    ));
    let corrupt = dir.path().join("corrupt");
    for id in [at_start, on_read] {
        assert!(corrupt.join(id.to_string()).exists());
        let rec = if id == at_start {
            // The record travelled inside the file: its last frame.
            assert!(!corrupt.join(format!("{id}.record")).exists());
            let file = std::fs::read(corrupt.join(id.to_string())).unwrap();
            let layout =
                crate::format::frame::locate(file.as_slice(), file.len() as u64, id, Some(&key))
                    .unwrap();
            crate::record::decode_json(&layout.last.unwrap().json, id).unwrap()
        } else {
            let moved = std::fs::read(corrupt.join(format!("{id}.record"))).unwrap();
            crate::record::decode(&moved, id).unwrap()
        };
        assert!(
            matches!(rec.recipients[0].status, RecipientStatus::Delivered { .. }),
            "the record says who already has the message"
        );
        assert!(!dir.path().join("records").join(id.to_string()).exists());
    }
    drop(spool);
    // A later start neither deletes the quarantined records nor counts them as entries.
    let (_, report) = open(dir.path());
    assert_eq!(report.count(QueueState::Corrupt), 2);
    assert!(corrupt.join(format!("{on_read}.record")).exists());
}

#[tokio::test]
async fn recovery_keeps_one_name_after_a_move_cut_short_and_drops_orphan_records() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let a = store(&spool, b"Subject: a\r\n\r\na\r\n", 64).await;
    let b = store(&spool, b"Subject: b\r\n\r\nb\r\n", 64).await;
    let gone = store(&spool, b"Subject: c\r\n\r\nc\r\n", 64).await;
    spool
        .write_record(&DeliveryRecord::new(gone, 2))
        .await
        .unwrap();
    spool
        .write_record(&DeliveryRecord::new(a, 2))
        .await
        .unwrap();
    drop(spool);
    // A move incoming -> deferred cut after the link, and one active -> hold.
    std::fs::hard_link(
        dir.path().join("incoming").join(a.to_string()),
        dir.path().join("deferred").join(a.to_string()),
    )
    .unwrap();
    std::fs::rename(
        dir.path().join("incoming").join(b.to_string()),
        dir.path().join("active").join(b.to_string()),
    )
    .unwrap();
    std::fs::hard_link(
        dir.path().join("active").join(b.to_string()),
        dir.path().join("hold").join(b.to_string()),
    )
    .unwrap();
    // `gone` was delivered and removed; its record was not.
    std::fs::remove_file(dir.path().join("incoming").join(gone.to_string())).unwrap();
    let (spool, report) = open(dir.path());
    assert_eq!(report.count(QueueState::Deferred), 1);
    assert_eq!(report.count(QueueState::Hold), 1);
    assert_eq!(report.count(QueueState::Incoming), 0);
    assert_eq!(report.count(QueueState::Active), 0);
    assert_eq!(spool.queued(), 2);
    assert!(
        spool.read_record(a).unwrap().is_some(),
        "a keeps its record"
    );
    assert!(!dir.path().join("records").join(gone.to_string()).exists());
}

#[tokio::test]
async fn a_read_only_spool_refuses_to_change_anything() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let id = store(&spool, b"Subject: a\r\n\r\na\r\n", 64).await;
    let ro = crate::Spool::open_read_only(dir.path()).unwrap();
    assert!(matches!(
        ro.remove(QueueState::Incoming, id).await,
        Err(SpoolError::ReadOnly)
    ));
    assert!(matches!(
        ro.move_to(id, QueueState::Incoming, QueueState::Active)
            .await,
        Err(SpoolError::ReadOnly)
    ));
    assert!(matches!(
        ro.write_record(&DeliveryRecord::new(id, 1)).await,
        Err(SpoolError::ReadOnly)
    ));
    assert!(spool.path_of(QueueState::Incoming, id).exists());
}

fn inode(p: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().ino()
}

#[tokio::test]
async fn a_delivered_file_is_reused_for_the_next_message_and_cut_to_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let big = content(200_000, 3);
    let old = store(&spool, &big, 4096).await;
    let old_inode = inode(&spool.path_of(QueueState::Incoming, old));
    spool.remove(QueueState::Incoming, old).await.unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path().join("free")).unwrap().count(),
        1,
        "the file waits in free/"
    );
    let small = content(1000, 9);
    let new = store(&spool, &small, 64).await;
    let path = spool.path_of(QueueState::Incoming, new);
    assert_eq!(inode(&path), old_inode, "same inode, no allocation");
    assert_eq!(spool.read(QueueState::Incoming, new).unwrap().body, small);
    assert_eq!(
        std::fs::read_dir(dir.path().join("free")).unwrap().count(),
        0,
        "its free/ name is gone"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&path).unwrap().nlink(), 1);
    // And it survives a restart byte-identical.
    drop(spool);
    let (spool, report) = open(dir.path());
    assert_eq!(report.count(QueueState::Incoming), 1);
    assert_eq!(spool.read(QueueState::Incoming, new).unwrap().body, small);
}

#[tokio::test]
async fn a_free_name_that_is_still_a_message_is_dropped_at_open_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let body = content(5000, 1);
    let id = store(&spool, &body, 512).await;
    drop(spool);
    // A crash between linking a recycled file into incoming/ and removing its free/
    // name: the message has two names.
    std::fs::hard_link(
        dir.path().join("incoming").join(id.to_string()),
        dir.path().join("free").join("f7"),
    )
    .unwrap();
    std::fs::write(dir.path().join("free").join("f8"), b"old garbage").unwrap();
    let (spool, _) = open(dir.path());
    assert!(
        !dir.path().join("free").join("f7").exists(),
        "its free/ name is removed"
    );
    assert!(
        dir.path().join("free").join("f8").exists(),
        "a real free file stays"
    );
    // The next message reuses f8, never the queued message's inode.
    let other = store(&spool, &content(100, 2), 64).await;
    assert_eq!(spool.read(QueueState::Incoming, id).unwrap().body, body);
    assert_eq!(
        spool.read(QueueState::Incoming, other).unwrap().body,
        content(100, 2)
    );
}

#[tokio::test]
async fn an_abandoned_draft_gives_its_recycled_file_back() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let id = store(&spool, &content(300_000, 5), 65536).await;
    spool.remove(QueueState::Incoming, id).await.unwrap();
    let mut w = spool.begin();
    // Enough to spill to a file (the buffer limit), then abandon it.
    w.write(&content(crate::MessageWriter::BUFFER_LIMIT + 10, 6))
        .await
        .unwrap();
    drop(w);
    assert_eq!(
        std::fs::read_dir(dir.path().join("free")).unwrap().count(),
        1
    );
    let next = store(&spool, &content(10, 7), 64).await;
    assert_eq!(
        spool.read(QueueState::Incoming, next).unwrap().body,
        content(10, 7)
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("free")).unwrap().count(),
        0
    );
}

#[tokio::test]
async fn hold_takes_only_deferred_mail_and_keeps_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let id = store(&spool, &content(100, 1), 64).await;
    assert!(matches!(spool.hold(id).await, Err(SpoolError::NotFound)));
    spool
        .move_to(id, QueueState::Incoming, QueueState::Deferred)
        .await
        .unwrap();
    let mut rec = DeliveryRecord::new(id, 1);
    rec.attempts = 2;
    spool.write_record(&rec).await.unwrap();
    assert_eq!(spool.hold(id).await.unwrap(), QueueState::Deferred);
    assert_eq!(spool.find(id, &QueueState::ALL), Some(QueueState::Hold));
    assert!(!spool.path_of(QueueState::Deferred, id).exists());
    assert_eq!(spool.read_record(id).unwrap(), Some(rec));
    assert_eq!(spool.queued(), 1, "held mail still counts as queued");
    assert!(matches!(spool.hold(id).await, Err(SpoolError::NotFound)));
    assert_eq!(spool.release(id).await.unwrap(), QueueState::Hold);
    assert_eq!(spool.find(id, &QueueState::ALL), Some(QueueState::Deferred));
}

#[tokio::test]
async fn peek_reads_the_envelope_and_the_start_of_the_content_only() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let body = content(5000, 3);
    let id = store(&spool, &body, 512).await;
    let p = spool.peek(QueueState::Incoming, id, 100).unwrap();
    assert_eq!(p.head, body[..100]);
    assert_eq!(p.envelope.id, id);
    assert_eq!(p.envelope.size, 5000);
    assert!(p.file_size > 5000);
    let all = spool.peek(QueueState::Incoming, id, 1 << 20).unwrap();
    assert_eq!(
        all.head, body,
        "a limit above the size reads the content only"
    );
    assert!(matches!(
        spool.peek(QueueState::Deferred, id, 100),
        Err(SpoolError::NotFound)
    ));
    // A damaged trailer is reported, and the file is left where it is.
    let path = spool.path_of(QueueState::Incoming, id);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        spool.peek(QueueState::Incoming, id, 100),
        Err(SpoolError::Corrupt(_))
    ));
    assert!(path.exists());
}

/// `changes` moves with every commit, move, write-out of a resident message, removal and
/// quarantine, and stands still otherwise: a caller walking several states can tell
/// whether what it read was one consistent queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_count_every_commit_move_and_removal_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let start = spool.changes();
    let id = store(&spool, &content(300, 1), 100).await;
    let committed = spool.changes();
    assert!(committed > start, "a commit counts");
    // Reading, listing and counting change nothing.
    let _ = spool.list(None).unwrap();
    let _ = spool.read(QueueState::Incoming, id).unwrap();
    let _ = spool.count(QueueState::Incoming).unwrap();
    assert_eq!(spool.changes(), committed);
    spool
        .move_to(id, QueueState::Incoming, QueueState::Active)
        .await
        .unwrap();
    let moved = spool.changes();
    assert!(moved > committed, "a move counts");
    // A move refused before it started is no change.
    assert!(
        spool
            .move_to(id, QueueState::Active, QueueState::Active)
            .await
            .is_ok()
    );
    assert_eq!(spool.changes(), moved);
    spool.remove(QueueState::Active, id).await.unwrap();
    let removed = spool.changes();
    assert!(removed > moved, "a removal counts");

    // A message resident in a segment, written out by its move.
    spool.set_commit_mode(crate::store::CommitMode::Segment);
    let resident = store(&spool, &content(200, 2), 100).await;
    let appended = spool.changes();
    assert!(appended > removed, "a segment commit counts");
    spool
        .move_to(resident, QueueState::Incoming, QueueState::Deferred)
        .await
        .unwrap();
    assert!(spool.changes() > appended, "a write-out counts");
    let before = spool.changes();
    std::fs::write(dir.path().join("deferred").join("not-an-id"), b"x").unwrap();
    let _ = spool.list(Some(QueueState::Deferred)).unwrap();
    assert!(spool.changes() > before, "a quarantine counts");
}

/// Every regular file under `dir` whose name starts with `id` (the message's files).
fn files_of(dir: &std::path::Path, id: crate::id::QueueId) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for sub in std::fs::read_dir(dir).unwrap().flatten() {
        if let Ok(entries) = std::fs::read_dir(sub.path()) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&id.to_string()) {
                    out.push(e.path());
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn a_record_is_a_frame_of_its_message_file_and_a_legacy_record_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let body = content(5000, 3);
    let id = store(&spool, &body, 700).await;
    spool
        .move_to(id, QueueState::Incoming, QueueState::Active)
        .await
        .unwrap();
    // A record written by an older version (records/<id>) is honoured...
    let mut old = DeliveryRecord::new(id, 2);
    old.attempts = 4;
    super::write_legacy_record(dir.path(), &old);
    assert_eq!(spool.read_record(id).unwrap(), Some(old.clone()));
    // ... and the next write moves it into the message file and removes the old file.
    let mut rec = old.clone();
    rec.attempts = 5;
    spool.write_record(&rec).await.unwrap();
    let legacy = dir.path().join("records").join(id.to_string());
    assert!(!legacy.exists(), "the legacy record was removed");
    assert_eq!(spool.read_record(id).unwrap(), Some(rec.clone()));
    spool
        .move_to(id, QueueState::Active, QueueState::Deferred)
        .await
        .unwrap();
    assert_eq!(
        files_of(dir.path(), id),
        vec![dir.path().join("deferred").join(id.to_string())],
        "one file per deferred message"
    );
    // Every reader still sees the message as it was received.
    assert_eq!(spool.read(QueueState::Deferred, id).unwrap().body, body);
    let mut seen = Vec::new();
    spool
        .scan(QueueState::Deferred, id, &mut |c| seen.extend_from_slice(c))
        .unwrap();
    assert_eq!(seen, body);
    assert_eq!(
        spool.peek(QueueState::Deferred, id, 10).unwrap().head,
        body[..10]
    );
    // A frame always wins over a legacy file (one brought back by a power loss).
    super::write_legacy_record(dir.path(), &old);
    assert_eq!(spool.read_record(id).unwrap(), Some(rec.clone()));
    // A torn append (the first 30 bytes of a frame) is ignored, then cut off.
    let path = dir.path().join("deferred").join(id.to_string());
    let good_len = std::fs::metadata(&path).unwrap().len();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        let json = crate::record::encode_json(&rec);
        f.write_all(&json[..30]).unwrap();
    }
    drop(spool);
    let (spool, report) = open(dir.path());
    assert_eq!(report.quarantined, 0, "a torn tail is not damage");
    assert_eq!(spool.read_record(id).unwrap(), Some(rec.clone()));
    rec.attempts = 6;
    spool.write_record(&rec).await.unwrap();
    assert_eq!(spool.read_record(id).unwrap(), Some(rec.clone()));
    let json_len = crate::record::encode_json(&rec).len() as u64;
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        good_len + crate::format::frame::frame_len(json_len as usize),
        "the torn bytes were cut off"
    );
    assert_eq!(spool.read(QueueState::Deferred, id).unwrap().body, body);
}

#[tokio::test]
async fn a_reused_file_never_shows_the_record_of_its_previous_message() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    // A long message with long records, delivered: its file goes to free/.
    let old = store(&spool, &content(20_000, 1), 4096).await;
    spool
        .move_to(old, QueueState::Incoming, QueueState::Active)
        .await
        .unwrap();
    let mut rec = DeliveryRecord::new(old, 2);
    for n in 1..4 {
        rec.attempts = n;
        spool.write_record(&rec).await.unwrap();
    }
    spool.remove(QueueState::Active, old).await.unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path().join("free")).unwrap().count(),
        1,
        "the file is in the pool"
    );
    // A short new message takes that file: no record, and it reads back whole.
    let body = content(300, 2);
    let new = store(&spool, &body, 64).await;
    assert_eq!(
        std::fs::read_dir(dir.path().join("free")).unwrap().count(),
        0,
        "the file was reused"
    );
    assert_eq!(spool.read_record(new).unwrap(), None);
    assert_eq!(spool.read(QueueState::Incoming, new).unwrap().body, body);
    let mut next = DeliveryRecord::new(new, 2);
    next.attempts = 1;
    spool.write_record(&next).await.unwrap();
    assert_eq!(spool.read_record(new).unwrap(), Some(next));
}

#[tokio::test]
async fn a_record_entry_that_is_not_a_file_beside_a_record_frame_holds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let id = store(&spool, b"Subject: x\r\n\r\nhi\r\n", 64).await;
    spool
        .move_to(id, QueueState::Incoming, QueueState::Deferred)
        .await
        .unwrap();
    let mut rec = DeliveryRecord::new(id, 2);
    rec.attempts = 2;
    spool.write_record(&rec).await.unwrap();
    drop(spool);
    std::fs::create_dir(dir.path().join("records").join(id.to_string())).unwrap();
    let (spool, report) = open(dir.path());
    assert_eq!(
        report.count(QueueState::Deferred),
        1,
        "not held: {report:?}"
    );
    assert!(
        dir.path()
            .join("corrupt")
            .join(format!("{id}.record"))
            .is_dir(),
        "the entry was set aside"
    );
    assert_eq!(spool.read_record(id).unwrap(), Some(rec));
}
