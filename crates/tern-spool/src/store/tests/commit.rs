//! Group commit and cancellation of commits.

use super::*;
use crate::state::QueueState;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_share_directory_fsyncs() {
    const N: usize = 200;
    let dir = tempdir();
    let (spool, _) = open(dir.path());
    let stored = concurrent_commits(&spool, N, 1024).await;
    assert_eq!(stored.len(), N);
    let stats = spool.sync_stats();
    assert_eq!(stats.file_syncs, N as u64);
    assert!(stats.dir_syncs >= 1);
    assert!(
        stats.dir_syncs < N as u64,
        "{} directory fsyncs for {N} commits: no group commit",
        stats.dir_syncs
    );
    assert_eq!(spool.queued(), N);
    assert_eq!(names(&sub(dir.path(), "incoming")).len(), N);
    for (id, body) in stored.iter().take(20) {
        let m = spool
            .read(QueueState::Incoming, *id)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(&m.body == body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_commits_each_wait_for_their_own_fsync() {
    let dir = tempdir();
    let (spool, _) = open(dir.path());
    for i in 0..5u8 {
        store(&spool, &content(10, i), 10).await;
        // With nothing concurrent, every commit needs a directory fsync that started
        // after its rename: exactly one each.
        assert_eq!(spool.sync_stats().dir_syncs, u64::from(i) + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_dropped_before_it_runs_leaves_nothing() {
    let dir = tempdir();
    let (spool, _) = open(dir.path());
    let mut w = spool.begin();
    w.write(&content(400 * 1024, 1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(w.spilled().is_some(), "400 KiB must have spilled to a file");
    let env = envelope(w.id(), w.written(), 1);
    let fut = w.commit(env);
    drop(fut);
    assert!(names(&sub(dir.path(), "tmp")).is_empty());
    assert!(names(&sub(dir.path(), "incoming")).is_empty());
    assert_eq!(spool.queued(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_dropped_while_running_still_completes_the_message() {
    let dir = tempdir();
    let (spool, _) = open(dir.path());
    for (i, len) in [10usize, 400 * 1024].into_iter().enumerate() {
        let body = content(len, i as u8);
        let mut w = spool.begin();
        w.write(&body).await.unwrap_or_else(|e| panic!("{e}"));
        let id = w.id();
        let env = envelope(id, w.written(), 1);
        // One poll starts the blocking task, then the future is dropped.
        let r = tokio::time::timeout(Duration::ZERO, w.commit(env)).await;
        if let Ok(done) = r {
            done.unwrap_or_else(|e| panic!("{e}"));
        }
        let path = spool.path_of(QueueState::Incoming, id);
        // The name appears at the link; the count follows once the file's fsync is done.
        assert!(wait_until(Duration::from_secs(10), || path.exists()
            && spool.queued() == i + 1));
        assert!(names(&sub(dir.path(), "tmp")).is_empty());
        let m = spool
            .read(QueueState::Incoming, id)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(m.body == body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_dropped_while_spilling_breaks_the_writer() {
    let dir = tempdir();
    let (spool, _) = open(dir.path());
    let mut w = spool.begin();
    let big = content(300 * 1024, 2);
    let r = tokio::time::timeout(Duration::ZERO, w.write(&big)).await;
    if r.is_err() {
        assert!(matches!(
            w.write(b"more").await,
            Err(crate::SpoolError::WriterBroken)
        ));
        let env = envelope(w.id(), w.written(), 1);
        assert!(matches!(
            w.commit(env).await,
            Err(crate::SpoolError::WriterBroken)
        ));
    } else {
        drop(w);
    }
    let tmp = sub(dir.path(), "tmp");
    assert!(wait_until(Duration::from_secs(10), || names(&tmp).is_empty()));
    assert!(names(&sub(dir.path(), "incoming")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_commits_share_filesystem_syncs() {
    const N: usize = 200;
    let dir = tempdir();
    let (spool, _) = open(dir.path());
    spool.set_commit_mode(crate::CommitMode::Batch);
    let stored = concurrent_commits(&spool, N, 100).await;
    let stats = spool.sync_stats();
    // Every batch had one sync for its data and one for its names, and a sync did one
    // or both (which ones share a sync is timing; the pipeline's own tests in batch.rs
    // pin that down).
    assert!(stats.file_syncs >= 1 && stats.file_syncs == stats.dir_syncs);
    assert!(stats.fs_syncs >= stats.file_syncs.max(stats.dir_syncs));
    assert!(stats.fs_syncs <= stats.file_syncs + stats.dir_syncs);
    assert!(
        stats.file_syncs < N as u64 / 2,
        "{} batches for {N} concurrent commits: no batching",
        stats.file_syncs
    );
    assert_eq!(spool.queued(), N);
    assert_eq!(names(&sub(dir.path(), "incoming")).len(), N);
    assert!(names(&sub(dir.path(), "tmp")).is_empty());
    for (id, body) in &stored {
        let m = spool
            .read(QueueState::Incoming, *id)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(&m.body == body);
    }
    // A reopened spool finds every one of them valid.
    drop(spool);
    let (again, report) = open(dir.path());
    assert_eq!(report.count(QueueState::Incoming), N);
    assert_eq!(again.queued(), N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_mode_commits_large_and_recycled_files_too() {
    let dir = tempdir();
    let (spool, _) = open(dir.path());
    spool.set_commit_mode(crate::CommitMode::Batch);
    // Spilled to a file before the commit.
    let big = content(600 * 1024, 7);
    let id = store(&spool, &big, 64 * 1024).await;
    let m = spool
        .read(QueueState::Incoming, id)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(m.body == big);
    // A delivered message's file goes to the pool and is reused by the next commit.
    spool
        .move_to(id, QueueState::Incoming, QueueState::Active)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    spool
        .remove(QueueState::Active, id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let small = content(100, 8);
    let id2 = store(&spool, &small, 100).await;
    let m = spool
        .read(QueueState::Incoming, id2)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        m.body == small,
        "the reused file was cut to the new message"
    );
    assert!(
        names(&sub(dir.path(), "free")).is_empty(),
        "its free/ name is gone"
    );
    assert_eq!(spool.queued(), 1);
}
