//! Write path and read path: round trips, spilling, dropped writers, refused commits,
//! read-only mode and the lock.

use super::*;
use crate::error::SpoolError;
use crate::state::QueueState;
use crate::store::MessageWriter;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_then_read_back_list_and_count() {
    let dir = tempdir();
    let (spool, report) = open(dir.path());
    assert_eq!(report.quarantined, 0);
    assert_eq!(spool.queued(), 0);
    let body = b"Received: from x\r\nSubject: hi\r\n\r\nhello\r\n.\r\n".to_vec();
    let id = store(&spool, &body, 7).await;

    assert_eq!(spool.queued(), 1);
    let path = spool.path_of(QueueState::Incoming, id);
    assert_eq!(path, dir.path().join("incoming").join(id.to_string()));
    assert!(path.is_file());
    assert!(names(&sub(dir.path(), "tmp")).is_empty());
    // The placement directories only steer inode allocation; nothing is ever named there.
    let placements: Vec<_> = std::fs::read_dir(dir.path().join("alloc"))
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    assert_eq!(placements.len(), 16);
    assert!(placements.iter().all(|p| names(p).is_empty()));

    let msg = spool
        .read(QueueState::Incoming, id)
        .unwrap_or_else(|e| panic!("read: {e}"));
    assert_eq!(msg.body, body);
    assert_eq!(msg.envelope, envelope(id, body.len() as u64, 2));

    let all = spool.list(None).unwrap_or_default();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, id);
    assert_eq!(all[0].state, QueueState::Incoming);
    assert_eq!(all[0].envelope.as_ref(), Some(&msg.envelope));
    assert_eq!(
        all[0].file_size,
        path.metadata().map(|m| m.len()).unwrap_or(0)
    );
    assert!(
        spool
            .list(Some(QueueState::Active))
            .unwrap_or_default()
            .is_empty()
    );
    assert!(matches!(
        spool.read(QueueState::Active, id),
        Err(SpoolError::NotFound)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_is_sorted_by_id() {
    let dir = tempdir();
    let (spool, _) = open(dir.path());
    let mut ids = Vec::new();
    for i in 0..5u8 {
        ids.push(store(&spool, &content(100, i), 100).await);
    }
    let listed: Vec<QueueId> = spool
        .list(None)
        .unwrap_or_default()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(listed, ids);
    assert_eq!(spool.queued(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_message_spills_to_a_file_with_bounded_memory() {
    let dir = tempdir();
    let (spool, _) = open(dir.path());
    let body = content(3 * 1024 * 1024 + 17, 9);
    let mut w = spool.begin();
    let tmp = spool.dir().join("tmp").join(w.id().to_string());
    for part in body.chunks(1000) {
        w.write(part).await.unwrap_or_else(|e| panic!("write: {e}"));
        assert!(
            w.buffered() < MessageWriter::BUFFER_LIMIT,
            "memory bound exceeded"
        );
    }
    // Spilled to a file: an unnamed O_TMPFILE inode where supported (nothing visible),
    // else tmp/<id>.
    let named = w
        .spilled()
        .expect("a large message must be written through a file");
    assert_eq!(named, tmp.exists());
    assert!(!spool.path_of(QueueState::Incoming, w.id()).exists());
    // One huge slice is split, not buffered whole.
    let big = content(1024 * 1024, 3);
    w.write(&big).await.unwrap_or_else(|e| panic!("write: {e}"));
    assert!(w.buffered() < MessageWriter::BUFFER_LIMIT);
    let mut all = body.clone();
    all.extend_from_slice(&big);

    let id = w.id();
    let env = envelope(id, w.written(), 3);
    w.commit(env.clone())
        .await
        .unwrap_or_else(|e| panic!("commit: {e}"));
    assert!(!tmp.exists());
    let msg = spool
        .read(QueueState::Incoming, id)
        .unwrap_or_else(|e| panic!("read: {e}"));
    assert!(msg.body == all, "content differs after round trip");
    assert_eq!(msg.envelope, env);
    drop(spool);

    // Recovery validates the large file by streaming it, and finds it good.
    let (spool, report) = open(dir.path());
    assert_eq!(report.count(QueueState::Incoming), 1);
    assert_eq!(report.quarantined, 0);
    assert_eq!(spool.queued(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_writers_leave_nothing() {
    let dir = tempdir();
    let (spool, _) = open(dir.path());
    let mut small = spool.begin();
    small
        .write(b"short")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    drop(small);

    let mut big = spool.begin();
    let tmp = spool.dir().join("tmp").join(big.id().to_string());
    big.write(&content(600 * 1024, 1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(big.spilled().is_some());
    drop(big);
    assert!(!tmp.exists());

    assert!(names(&sub(dir.path(), "tmp")).is_empty());
    assert!(names(&sub(dir.path(), "incoming")).is_empty());
    assert_eq!(spool.queued(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_envelopes_are_refused_and_leave_nothing() {
    let dir = tempdir();
    let (spool, _) = open(dir.path());
    type MakeEnvelope = Box<dyn Fn(QueueId, u64) -> crate::Envelope>;
    let cases: Vec<(usize, MakeEnvelope)> = vec![
        (10, Box::new(|_, n| envelope(QueueId::generate(), n, 1))),
        (10, Box::new(|id, n| envelope(id, n + 1, 1))),
        (
            300 * 1024,
            Box::new(|id, n| envelope(id, n.saturating_sub(1), 1)),
        ),
        (
            10,
            Box::new(|id, n| {
                let mut e = envelope(id, n, 1);
                e.recipients.clear();
                e
            }),
        ),
    ];
    for (i, (len, make)) in cases.into_iter().enumerate() {
        let mut w = spool.begin();
        w.write(&content(len, 0))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let env = make(w.id(), w.written());
        let r = w.commit(env).await;
        match i {
            0 => assert!(matches!(r, Err(SpoolError::IdMismatch)), "{r:?}"),
            1 | 2 => assert!(matches!(r, Err(SpoolError::SizeMismatch { .. })), "{r:?}"),
            _ => assert!(matches!(r, Err(SpoolError::InvalidEnvelope(_))), "{r:?}"),
        }
    }
    assert!(names(&sub(dir.path(), "tmp")).is_empty());
    assert!(names(&sub(dir.path(), "incoming")).is_empty());
    assert_eq!(spool.queued(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_open_is_locked_but_read_only_works() {
    let dir = tempdir();
    let (spool, _) = open(dir.path());
    let id = store(&spool, b"locked", 100).await;
    assert!(matches!(
        Spool::open(dir.path(), EventLog::discard()),
        Err(SpoolError::Locked)
    ));
    let ro = Spool::open_read_only(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert!(ro.is_read_only());
    assert_eq!(ro.queued(), 1);
    let listed = ro.list(None).unwrap_or_default();
    assert_eq!(listed.iter().map(|m| m.id).collect::<Vec<_>>(), vec![id]);
    assert_eq!(
        ro.read(QueueState::Incoming, id).map(|m| m.body).ok(),
        Some(b"locked".to_vec())
    );
    let mut w = ro.begin();
    assert!(matches!(w.write(b"x").await, Err(SpoolError::ReadOnly)));
    let w2 = ro.begin();
    let env = envelope(w2.id(), 0, 1);
    assert!(matches!(w2.commit(env).await, Err(SpoolError::ReadOnly)));

    // The lock goes with the last handle (writers hold one too).
    let clone = spool.clone();
    drop(spool);
    assert!(matches!(
        Spool::open(dir.path(), EventLog::discard()),
        Err(SpoolError::Locked)
    ));
    drop(clone);
    let (again, report) = open(dir.path());
    assert_eq!(report.count(QueueState::Incoming), 1);
    assert_eq!(again.queued(), 1);
}

#[test]
fn read_only_open_of_a_missing_directory_fails() {
    let dir = tempdir();
    let missing = dir.path().join("nope");
    assert!(matches!(
        Spool::open_read_only(&missing),
        Err(SpoolError::Io { .. })
    ));
    assert!(!missing.exists());
}

#[test]
fn disk_space_reports_the_filesystem() {
    let dir = tempdir();
    let (spool, _) = open(dir.path());
    let d = spool.disk_space().unwrap_or_else(|e| panic!("{e}"));
    assert!(d.total > 0);
    assert!(d.available <= d.total);
}

/// Filesystems without O_TMPFILE take the `tmp/<id>` + rename path: small and large
/// messages round-trip, a large one is visible in `tmp/` while it is written, and nothing
/// is left there afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_o_tmpfile_messages_go_through_tmp_and_rename() {
    let dir = tempdir();
    let (spool, _) = open(dir.path());
    spool.disable_tmpfile();
    let small = b"Subject: small\r\n\r\nhi\r\n".to_vec();
    let id = store(&spool, &small, 1).await;
    let read = spool
        .read(QueueState::Incoming, id)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read.body, small);

    let big = content(700 * 1024, 5);
    let mut w = spool.begin();
    let tmp = spool.dir().join("tmp").join(w.id().to_string());
    w.write(&big).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(w.spilled(), Some(true), "must spill to a named tmp/ file");
    assert!(tmp.exists());
    let id = w.id();
    let env = envelope(id, w.written(), 2);
    w.commit(env).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!tmp.exists());
    let read = spool
        .read(QueueState::Incoming, id)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(read.body == big);
    assert!(names(&sub(dir.path(), "tmp")).is_empty());
    assert_eq!(spool.queued(), 2);
}
