//! Segment mode on a real filesystem: commits share one fdatasync and create no file per
//! message; leaving the segment writes a file out; recovery brings back exactly the
//! resident messages, cuts unfinished tails and quarantines damaged segments.

use std::io::Write;

use super::*;
use crate::state::QueueState;
use crate::store::CommitMode;

fn open_segment(dir: &Path) -> (Spool, RecoveryReport) {
    let (spool, report) = open(dir);
    spool.set_commit_mode(CommitMode::Segment);
    (spool, report)
}

fn segment_files(dir: &Path) -> Vec<String> {
    names(&sub(dir, "segments"))
        .into_iter()
        .filter(|n| !n.ends_with(".out"))
        .collect()
}

fn body_of(spool: &Spool, state: QueueState, id: QueueId) -> Vec<u8> {
    spool
        .read(state, id)
        .unwrap_or_else(|e| panic!("read {id}: {e}"))
        .body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn segment_commits_share_fdatasyncs_and_create_no_file_per_message() {
    const N: usize = 200;
    let dir = tempdir();
    let (spool, _) = open_segment(dir.path());
    let stored = concurrent_commits(&spool, N, 900).await;
    let stats = spool.sync_stats();
    assert!(
        stats.file_syncs >= 1 && stats.file_syncs < N as u64,
        "{} fdatasyncs for {N} commits: not shared",
        stats.file_syncs
    );
    assert!(names(&sub(dir.path(), "incoming")).is_empty());
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert_eq!(spool.queued(), N);
    assert_eq!(spool.count(QueueState::Incoming).ok(), Some(N));
    let listed = spool
        .list(Some(QueueState::Incoming))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        listed.iter().map(|m| m.id).collect::<Vec<_>>(),
        stored.iter().map(|(id, _)| *id).collect::<Vec<_>>()
    );
    for (id, body) in &stored {
        assert_eq!(&body_of(&spool, QueueState::Incoming, *id), body);
        let peeked = spool
            .peek(QueueState::Incoming, *id, 10)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(peeked.head, body[..10]);
        assert_eq!(peeked.envelope.id, *id);
    }
    assert_eq!(
        spool.find(stored[0].0, &[QueueState::Active, QueueState::Incoming]),
        Some(QueueState::Incoming)
    );
    // A tool beside the running server sees the same queue.
    let ro = Spool::open_read_only(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ro.queued(), N);
    let ro_listed = ro
        .list(Some(QueueState::Incoming))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ro_listed.len(), N);
    assert_eq!(
        &body_of(&ro, QueueState::Incoming, stored[7].0),
        &stored[7].1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_spool_has_exactly_the_messages_that_did_not_leave_their_segment() {
    let dir = tempdir();
    let stored = {
        let (spool, _) = open_segment(dir.path());
        let stored = concurrent_commits(&spool, 10, 900).await;
        let first = stored[0].0;
        let at = spool.location(QueueState::Incoming, first);
        let seg_dir = sub(dir.path(), "segments").display().to_string();
        assert!(
            at.starts_with(&seg_dir) && at.contains(" at offset "),
            "a resident message is located in its segment: {at}"
        );
        // Three go to active/ (the queue taking them): written out as files.
        for (id, _) in &stored[..3] {
            spool
                .move_to(*id, QueueState::Incoming, QueueState::Active)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(names(&sub(dir.path(), "active")).len(), 3);
        assert_eq!(
            spool.location(QueueState::Active, first),
            sub(dir.path(), "active")
                .join(first.to_string())
                .display()
                .to_string()
        );
        assert_eq!(spool.count(QueueState::Incoming).ok(), Some(7));
        assert_eq!(spool.queued(), 10);
        // Two of them are delivered, one resident message is removed.
        for (id, _) in &stored[..2] {
            spool
                .remove(QueueState::Active, *id)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        spool
            .remove(QueueState::Incoming, stored[3].0)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spool.queued(), 7);
        assert!(matches!(
            spool.read(QueueState::Incoming, stored[3].0),
            Err(crate::SpoolError::NotFound)
        ));
        stored
    };
    let (spool, report) = open_segment(dir.path());
    assert_eq!(report.count(QueueState::Incoming), 6);
    assert_eq!(report.count(QueueState::Active), 1);
    assert_eq!(spool.queued(), 7);
    let incoming: Vec<QueueId> = spool
        .list(Some(QueueState::Incoming))
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(
        incoming,
        stored[4..].iter().map(|(id, _)| *id).collect::<Vec<_>>()
    );
    for (id, body) in &stored[4..] {
        assert_eq!(&body_of(&spool, QueueState::Incoming, *id), body);
    }
    assert_eq!(
        &body_of(&spool, QueueState::Active, stored[2].0),
        &stored[2].1
    );
    assert_eq!(spool.find(stored[0].0, &QueueState::ALL), None);
    assert_eq!(spool.find(stored[3].0, &QueueState::ALL), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_with_nothing_resident_is_removed_at_open() {
    let dir = tempdir();
    {
        let (spool, _) = open_segment(dir.path());
        for (id, _) in concurrent_commits(&spool, 5, 900).await {
            spool
                .move_to(id, QueueState::Incoming, QueueState::Hold)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(segment_files(dir.path()).len(), 1);
    }
    let (spool, report) = open_segment(dir.path());
    assert!(segment_files(dir.path()).is_empty());
    assert!(names(&sub(dir.path(), "segments")).is_empty());
    assert_eq!(report.count(QueueState::Hold), 5);
    assert_eq!(report.count(QueueState::Incoming), 0);
    assert_eq!(spool.queued(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_tail_is_cut_and_a_damaged_segment_is_quarantined_after_its_messages_are_written_out()
 {
    let dir = tempdir();
    let stored = {
        let (spool, _) = open_segment(dir.path());
        concurrent_commits(&spool, 3, 900).await
    };
    let seg = sub(&sub(dir.path(), "segments"), &segment_files(dir.path())[0]);
    // What kill -9 leaves: no seal (a clean stop wrote one), then a record cut short.
    let good_len = unseal(&seg);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap_or_else(|e| panic!("{e}"));
    f.write_all(b"TERNSEG1\x01\x02")
        .unwrap_or_else(|e| panic!("{e}"));
    drop(f);
    {
        let (spool, report) = open_segment(dir.path());
        assert_eq!(report.partials_removed, 1);
        assert_eq!(report.quarantined, 0);
        assert_eq!(report.count(QueueState::Incoming), 3);
        assert_eq!(
            std::fs::metadata(&seg).map(|m| m.len()).ok(),
            Some(good_len + SEAL_LEN),
            "cut, then sealed"
        );
        assert_eq!(seal_at(&seg), Some(good_len));
        assert_eq!(
            &body_of(&spool, QueueState::Incoming, stored[2].0),
            &stored[2].1
        );
    }
    // Now damage the second message's content inside the segment.
    let mut bytes = std::fs::read(&seg).unwrap_or_else(|e| panic!("{e}"));
    let at = record_of(&bytes, stored[1].0);
    bytes[at + super::super::segment::FRAME_LEN + crate::format::HEADER_LEN + 5] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let (spool, report) = open_segment(dir.path());
    assert_eq!(report.quarantined, 1);
    assert_eq!(report.count(QueueState::Incoming), 2);
    assert!(segment_files(dir.path()).is_empty());
    let seg_name = seg.file_name().map(|n| n.to_string_lossy().into_owned());
    let corrupt = names(&sub(dir.path(), "corrupt"));
    let seg_name = seg_name.unwrap_or_default();
    assert!(corrupt.contains(&seg_name), "{corrupt:?}");
    assert!(
        corrupt.contains(&format!("{seg_name}.reason")),
        "{corrupt:?}"
    );
    // The readable messages are files of their own now, byte for byte.
    assert_eq!(names(&sub(dir.path(), "incoming")).len(), 2);
    for i in [0, 2] {
        assert_eq!(
            &body_of(&spool, QueueState::Incoming, stored[i].0),
            &stored[i].1
        );
    }
    assert_eq!(spool.find(stored[1].0, &[QueueState::Incoming]), None);
}

/// Breaks the frame of the middle one of three records in the only segment; returns
/// the three (id, body) in file order.
fn break_middle_frame(dir: &Path, stored: &[(QueueId, Vec<u8>)]) -> Vec<(QueueId, Vec<u8>)> {
    let seg = sub(&sub(dir, "segments"), &segment_files(dir)[0]);
    let mut bytes = std::fs::read(&seg).unwrap_or_else(|e| panic!("{e}"));
    // The three in file order (batches may have ordered them otherwise than their ids).
    let mut order: Vec<(usize, &(QueueId, Vec<u8>))> =
        stored.iter().map(|m| (record_of(&bytes, m.0), m)).collect();
    order.sort_by_key(|(at, _)| *at);
    let (middle_at, _) = order[1];
    bytes[middle_at] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap_or_else(|e| panic!("{e}"));
    order.into_iter().map(|(_, m)| m.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_past_a_damaged_frame_are_queued_when_their_mac_verifies() {
    let dir = tempdir();
    let stored = {
        let (spool, _) = open_segment(dir.path());
        concurrent_commits(&spool, 3, 900).await
    };
    let order = break_middle_frame(dir.path(), &stored);
    let (spool, report) = open_segment(dir.path());
    assert_eq!(report.quarantined, 1);
    assert_eq!(report.count(QueueState::Incoming), 2, "{report:?}");
    assert_eq!(report.count(QueueState::Hold), 0, "{report:?}");
    for m in [&order[0], &order[2]] {
        assert_eq!(&body_of(&spool, QueueState::Incoming, m.0), &m.1);
    }
    assert_eq!(spool.find(order[1].0, &QueueState::QUEUED), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_found_past_a_damaged_frame_without_a_valid_mac_are_held_not_queued() {
    let dir = tempdir();
    let stored = {
        let (spool, _) = open_segment(dir.path());
        concurrent_commits(&spool, 3, 900).await
    };
    let order = break_middle_frame(dir.path(), &stored);
    // The key file lost: a new key is made, and the old frames no longer verify.
    std::fs::remove_file(dir.path().join("spool.key")).unwrap_or_else(|e| panic!("{e}"));
    let events = dir.path().join("events.jsonl");
    let (spool, report, log) = open_logged(dir.path(), &events);
    assert_eq!(report.quarantined, 1);
    assert_eq!(report.count(QueueState::Incoming), 1, "{report:?}");
    assert_eq!(report.count(QueueState::Hold), 1, "{report:?}");
    assert_eq!(
        &body_of(&spool, QueueState::Incoming, order[0].0),
        &order[0].1
    );
    assert_eq!(
        &body_of(&spool, QueueState::Hold, order[2].0),
        &order[2].1,
        "the record past the resync waits in hold/ for an operator"
    );
    assert_eq!(spool.find(order[1].0, &QueueState::QUEUED), None);
    assert_eq!(events_with_id(&log, &events, 3012).len(), 1, "a new key");
    let held = events_with_id(&log, &events, 3009);
    assert_eq!(held.len(), 1);
    assert_eq!(held[0]["queue_id"], order[2].0.to_string());
    let recovered = events_with_id(&log, &events, 3008);
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0]["queue_id"], order[0].0.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_segment_that_is_not_the_newest_is_quarantined_never_cut() {
    let dir = tempdir();
    // Two runs, two clean stops: two segments, both sealed.
    let first = {
        let (spool, _) = open_segment(dir.path());
        concurrent_commits(&spool, 3, 900).await
    };
    let second = {
        let (spool, _) = open_segment(dir.path());
        concurrent_commits(&spool, 2, 700).await
    };
    let segs = segment_files(dir.path());
    assert_eq!(segs.len(), 2, "{segs:?}");
    let older = sub(&sub(dir.path(), "segments"), &segs[0]);
    let mut order: Vec<(usize, &(QueueId, Vec<u8>))> = {
        let bytes = std::fs::read(&older).unwrap_or_default();
        first.iter().map(|m| (record_of(&bytes, m.0), m)).collect()
    };
    order.sort_by_key(|(at, _)| *at);
    // Cut inside the last record of the older segment (its seal goes with it).
    let cut = u64::try_from(order[2].0).unwrap_or(0) + 100;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&older)
        .unwrap_or_else(|e| panic!("{e}"));
    f.set_len(cut).unwrap_or_else(|e| panic!("{e}"));
    drop(f);
    let before = std::fs::read(&older).unwrap_or_default();
    let events = dir.path().join("events.jsonl");
    let (spool, report, log) = open_logged(dir.path(), &events);
    assert_eq!(report.partials_removed, 0, "never cut: {report:?}");
    assert_eq!(report.quarantined, 1);
    let kept =
        std::fs::read(sub(&sub(dir.path(), "corrupt"), &segs[0])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(kept, before, "quarantined byte for byte");
    let reason = std::fs::read_to_string(sub(
        &sub(dir.path(), "corrupt"),
        &format!("{}.reason", segs[0]),
    ))
    .unwrap_or_default();
    let cut_id = order[2].1.0;
    assert!(
        reason.contains(&format!("offset {}", order[2].0)),
        "{reason}"
    );
    assert!(
        reason.contains("was sealed") || reason.contains("not the newest"),
        "{reason}"
    );
    for (_, m) in &order[..2] {
        assert!(reason.contains(&format!("message {}", m.0)), "{reason}");
        assert_eq!(&body_of(&spool, QueueState::Incoming, m.0), &m.1);
    }
    // The message cut short is not lost: its bytes are in the quarantined segment, and
    // the reason and event 3003 name the segment; the other segment is untouched.
    assert_eq!(spool.find(cut_id, &QueueState::QUEUED), None);
    assert!(
        reason.contains(&format!(
            "message {cut_id} at offset {}: cut short",
            order[2].0
        )),
        "{reason}"
    );
    let named = events_with_id(&log, &events, 3007);
    assert_eq!(named.len(), 1, "{named:?}");
    assert_eq!(named[0]["queue_id"], cut_id.to_string());
    for m in &second {
        assert_eq!(&body_of(&spool, QueueState::Incoming, m.0), &m.1);
    }
    let q = events_with_id(&log, &events, 3003);
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0]["queue_id"], "", "a segment is not a message");
    assert!(events_with_id(&log, &events, 3002).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_segment_cut_short_after_a_clean_stop_is_quarantined_never_cut() {
    let dir = tempdir();
    let stored = {
        let (spool, _) = open_segment(dir.path());
        concurrent_commits(&spool, 3, 900).await
    };
    let seg = sub(&sub(dir.path(), "segments"), &segment_files(dir.path())[0]);
    let len = std::fs::metadata(&seg).map(|m| m.len()).unwrap_or(0);
    // The seal and the end of the last record gone; the `.out` still says sealed.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap_or_else(|e| panic!("{e}"));
    f.set_len(len - SEAL_LEN - 10)
        .unwrap_or_else(|e| panic!("{e}"));
    drop(f);
    let (spool, report) = open_segment(dir.path());
    assert_eq!(report.partials_removed, 0, "{report:?}");
    assert_eq!(report.quarantined, 1, "{report:?}");
    assert_eq!(report.count(QueueState::Incoming), 2, "{report:?}");
    let _ = (spool, stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_too_large_for_memory_is_committed_as_a_file_in_segment_mode() {
    let dir = tempdir();
    let (spool, _) = open_segment(dir.path());
    let body = content(crate::MessageWriter::BUFFER_LIMIT + 1000, 9);
    let id = store(&spool, &body, 64 * 1024).await;
    assert_eq!(names(&sub(dir.path(), "incoming")), [id.to_string()]);
    assert!(segment_files(dir.path()).is_empty());
    assert_eq!(body_of(&spool, QueueState::Incoming, id), body);
}

/// Bytes of a seal frame.
const SEAL_LEN: u64 = 64;

/// Where a segment file's seal is, if its last 64 bytes are one.
fn seal_at(seg: &Path) -> Option<u64> {
    let bytes = std::fs::read(seg).ok()?;
    let at = bytes.len().checked_sub(64)?;
    (&bytes[at..at + 8] == b"TERNSEG2" && bytes[at + 8] == 2).then_some(at as u64)
}

/// Makes a cleanly stopped segment look like one a crash left: its seal cut off and the
/// `sealed` line of its `.out` removed. Returns its length then.
fn unseal(seg: &Path) -> u64 {
    let at = seal_at(seg).unwrap_or_else(|| panic!("{} is sealed", seg.display()));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(seg)
        .unwrap_or_else(|e| panic!("{e}"));
    f.set_len(at).unwrap_or_else(|e| panic!("{e}"));
    let mut out = seg.as_os_str().to_os_string();
    out.push(".out");
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let kept: String = text
        .lines()
        .filter(|l| !l.starts_with("sealed "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&out, kept).unwrap_or_else(|e| panic!("{e}"));
    at
}

/// Offset of message `id`'s record (its version-2 frame) in a segment's bytes.
fn record_of(seg: &[u8], id: QueueId) -> usize {
    let needle = id.to_string();
    seg.windows(needle.len())
        .enumerate()
        .find(|(i, w)| *w == needle.as_bytes() && *i >= 12 && &seg[i - 12..i - 4] == b"TERNSEG2")
        .map(|(i, _)| i - 12)
        .unwrap_or_else(|| panic!("no record of {id}"))
}

/// What kill -9 leaves in segment mode: three messages resident in a segment without a
/// seal and with a record cut short at its end, plus a message file of its own in
/// `incoming/` whose content is damaged. Returns the resident messages, the segment's
/// path and its length.
async fn killed_spool(dir: &Path) -> (Vec<(QueueId, Vec<u8>)>, PathBuf, u64) {
    let stored = {
        let (spool, _) = open_segment(dir);
        concurrent_commits(&spool, 3, 900).await
    };
    let seg = sub(&sub(dir, "segments"), &segment_files(dir)[0]);
    unseal(&seg);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap_or_else(|e| panic!("{e}"));
    f.write_all(b"TERNSEG2\x01\x00")
        .unwrap_or_else(|e| panic!("{e}"));
    drop(f);
    let len = std::fs::metadata(&seg).map(|m| m.len()).unwrap_or(0);
    (stored, seg, len)
}

/// Opens lazily (a server's start), failing the test on error.
fn open_lazy(dir: &Path) -> Spool {
    let (spool, _) = Spool::open_lazy(dir, EventLog::discard(), None)
        .unwrap_or_else(|e| panic!("open_lazy: {e}"));
    spool.set_commit_mode(CommitMode::Segment);
    spool
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lazy_open_leaves_the_segments_and_files_to_the_background_and_new_mail_takes_a_new_segment()
 {
    let dir = tempdir();
    let (stored, seg, len) = killed_spool(dir.path()).await;
    let bad = {
        let (spool, _) = open(dir.path());
        spool.set_commit_mode(CommitMode::File);
        store(&spool, b"Subject: bad\r\n\r\nbad\r\n", 64).await
    };
    // The eager open above recovered the segment: kill it again the same way.
    unseal(&seg);
    let len = {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&seg)
            .unwrap_or_else(|e| panic!("{e}"));
        f.write_all(b"TERNSEG2\x01\x00")
            .unwrap_or_else(|e| panic!("{e}"));
        let _ = len;
        std::fs::metadata(&seg).map(|m| m.len()).unwrap_or(0)
    };
    let bad_path = sub(&sub(dir.path(), "incoming"), &bad.to_string());
    let mut bytes = std::fs::read(&bad_path).unwrap_or_else(|e| panic!("{e}"));
    bytes[crate::format::HEADER_LEN + 3] ^= 0x20;
    std::fs::write(&bad_path, &bytes).unwrap_or_else(|e| panic!("{e}"));

    let spool = open_lazy(dir.path());
    assert!(spool.recovery_pending());
    // Nothing of it was read, cut or quarantined before the listeners would start.
    assert_eq!(std::fs::metadata(&seg).map(|m| m.len()).ok(), Some(len));
    assert!(bad_path.exists());
    assert_eq!(
        spool.queued(),
        0,
        "counts only new mail until the recovery ends"
    );
    assert!(
        spool.read(QueueState::Incoming, stored[0].0).is_err(),
        "not indexed yet"
    );
    // A read of the damaged file now does not quarantine it: the recovery judges it.
    assert!(spool.read(QueueState::Incoming, bad).is_err());
    assert!(bad_path.exists());
    // New mail: a new segment, the old one untouched; read back at once.
    let fresh = store(&spool, b"Subject: fresh\r\n\r\nnew\r\n", 64).await;
    assert_eq!(segment_files(dir.path()).len(), 2);
    assert_eq!(std::fs::metadata(&seg).map(|m| m.len()).ok(), Some(len));
    assert_eq!(
        body_of(&spool, QueueState::Incoming, fresh),
        b"Subject: fresh\r\n\r\nnew\r\n"
    );
    assert_eq!(spool.queued(), 1);

    let s = spool.clone();
    let done = tokio::task::spawn_blocking(move || s.finish_recovery(&|| true))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!done.stopped);
    assert!(!spool.recovery_pending());
    let report = done.report.unwrap_or_else(|| panic!("no report"));
    assert_eq!(report.count(QueueState::Incoming), 3);
    assert_eq!(report.quarantined, 1);
    assert_eq!(report.partials_removed, 1, "the torn tail was cut");
    let mut want: Vec<QueueId> = stored.iter().map(|(id, _)| *id).collect();
    want.sort();
    assert_eq!(done.incoming, want, "the old messages, not the new one");
    assert_eq!(seal_at(&seg), Some(len - 10), "cut, then sealed");
    assert!(!bad_path.exists());
    assert!(names(&sub(dir.path(), "corrupt")).contains(&bad.to_string()));
    for (id, body) in &stored {
        assert_eq!(&body_of(&spool, QueueState::Incoming, *id), body);
    }
    assert_eq!(spool.queued(), 4);
    // Done once: a second call has nothing to do.
    let again = spool
        .finish_recovery(&|| true)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.report, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_left_unrecovered_by_a_second_kill_still_has_its_tail_cut_not_quarantined() {
    let dir = tempdir();
    let (stored, seg, len) = killed_spool(dir.path()).await;
    {
        let spool = open_lazy(dir.path());
        // New mail goes to a newer segment; the process dies before the recovery.
        store(&spool, b"Subject: fresh\r\n\r\nnew\r\n", 64).await;
    }
    let newest = segment_files(dir.path())
        .into_iter()
        .max()
        .unwrap_or_default();
    assert_ne!(sub(&sub(dir.path(), "segments"), &newest), seg);
    let out = std::fs::read_to_string(format!("{}.out", seg.display())).unwrap_or_default();
    assert!(out.lines().any(|l| l == "unfinished"), "{out:?}");
    // The old segment is no longer the newest, yet its tail is still a write a crash
    // cut: the mark says so. Without it, it would be quarantined as damage.
    let (spool, report) = open_segment(dir.path());
    assert_eq!(report.quarantined, 0, "{report:?}");
    assert_eq!(report.partials_removed, 1);
    assert_eq!(report.count(QueueState::Incoming), 4);
    assert!(names(&sub(dir.path(), "corrupt")).is_empty());
    assert_eq!(seal_at(&seg), Some(len - 10));
    for (id, body) in &stored {
        assert_eq!(&body_of(&spool, QueueState::Incoming, *id), body);
    }
}

#[tokio::test]
async fn a_stopped_recovery_leaves_the_rest_for_the_next_start_and_no_deferred_load() {
    let dir = tempdir();
    let (stored, seg, len) = killed_spool(dir.path()).await;
    {
        let spool = open_lazy(dir.path());
        let done = spool
            .finish_recovery(&|| false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(done.stopped);
        assert!(spool.recovery_unfinished());
        assert!(done.incoming.is_empty());
        assert_eq!(std::fs::metadata(&seg).map(|m| m.len()).ok(), Some(len));
        assert!(matches!(
            spool.load_deferred(10, &mut |_| true),
            Err(crate::SpoolError::RecoveryUnfinished)
        ));
    }
    let (_spool, report) = open_segment(dir.path());
    assert_eq!(report.count(QueueState::Incoming), stored.len());
    assert_eq!(report.quarantined, 0);
}

#[tokio::test]
async fn the_background_recovery_leaves_alone_a_message_of_this_process_caught_in_a_move() {
    let dir = tempdir();
    let (stored, _, _) = killed_spool(dir.path()).await;
    let spool = open_lazy(dir.path());
    spool.set_commit_mode(CommitMode::File);
    let fresh = store(&spool, b"Subject: fresh\r\n\r\nnew\r\n", 64).await;
    // The queue is moving it (link into active/, then unlink from incoming/): two names
    // of one file, which an eager start would resolve by removing the incoming/ one.
    let incoming = sub(&sub(dir.path(), "incoming"), &fresh.to_string());
    let active = sub(&sub(dir.path(), "active"), &fresh.to_string());
    std::fs::hard_link(&incoming, &active).unwrap_or_else(|e| panic!("{e}"));
    let done = spool
        .finish_recovery(&|| true)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        incoming.exists() && active.exists(),
        "the move is the queue's"
    );
    assert!(!done.incoming.contains(&fresh), "not handed over twice");
    assert_eq!(done.incoming.len(), stored.len());
    let report = done.report.unwrap_or_else(|| panic!("no report"));
    assert_eq!(report.count(QueueState::Active), 0);
    assert_eq!(report.quarantined, 0);
}
