//! Tests of the spool on a real filesystem (tempfile directories): the write path,
//! recovery and quarantine, locking, and group commit. Helpers shared by them live here.

mod adopt;
mod backlog;
mod commit;
mod lifecycle;
mod recovery;
mod segment;
mod streaming;
mod unexpected;
mod write_read;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_events::EventLog;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::id::QueueId;
use crate::store::{RecoveryReport, Spool};
use crate::testutil::envelope;

/// Opens a read-write spool with a discarding event log, failing the test on error.
fn open(dir: &Path) -> (Spool, RecoveryReport) {
    match Spool::open(dir, EventLog::discard()) {
        Ok(x) => x,
        Err(e) => panic!("open {}: {e}", dir.display()),
    }
}

/// Opens with an event log writing JSON lines to `events`.
fn open_logged(dir: &Path, events: &Path) -> (Spool, RecoveryReport, EventLog) {
    let log = EventLog::open(Some(events), false).unwrap_or_else(|e| panic!("event log: {e}"));
    let (spool, report) = Spool::open(dir, log.clone()).unwrap_or_else(|e| panic!("open: {e}"));
    (spool, report, log)
}

/// Event lines with the given numeric id, after flushing the log.
fn events_with_id(log: &EventLog, path: &Path, id: u64) -> Vec<serde_json::Value> {
    assert!(log.flush(Duration::from_secs(10)));
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["id"] == id)
        .collect()
}

/// Writes `content` in chunks of `chunk` bytes and commits it with a sample envelope.
async fn store(spool: &Spool, content: &[u8], chunk: usize) -> QueueId {
    let mut w = spool.begin();
    for part in content.chunks(chunk.max(1)) {
        w.write(part).await.unwrap_or_else(|e| panic!("write: {e}"));
    }
    assert_eq!(w.written(), content.len() as u64);
    let id = w.id();
    let env = envelope(id, w.written(), 2);
    w.commit(env)
        .await
        .unwrap_or_else(|e| panic!("commit: {e}"));
    id
}

/// Deterministic test content of `n` bytes that is not all one value.
/// Writes `rec` as an older version did: a `records/<id>` file (mode 0600) under the
/// spool directory `dir`.
fn write_legacy_record(dir: &Path, rec: &crate::record::DeliveryRecord) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("records").join(rec.id.to_string());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .unwrap_or_else(|e| panic!("{e}"));
    f.write_all(&crate::record::encode(rec))
        .unwrap_or_else(|e| panic!("{e}"));
}

fn content(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// Names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn sub(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Commits `n` messages from `n` tasks released together by a barrier, so their commits
/// overlap; returns each id with its body, in id order.
async fn concurrent_commits(spool: &Spool, n: usize, base_len: usize) -> Vec<(QueueId, Vec<u8>)> {
    let barrier = Arc::new(Barrier::new(n));
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let spool = spool.clone();
        let barrier = Arc::clone(&barrier);
        tasks.spawn(async move {
            let body = content(base_len + i, i as u8);
            let mut w = spool.begin();
            w.write(&body).await?;
            let env = envelope(w.id(), w.written(), 1);
            let id = w.id();
            barrier.wait().await;
            w.commit(env).await.map(|()| (id, body))
        });
    }
    let mut stored = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(x)) => stored.push(x),
            Ok(Err(e)) => panic!("commit failed: {e}"),
            Err(e) => panic!("task failed: {e}"),
        }
    }
    stored.sort_by_key(|(id, _)| *id);
    stored
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
}
