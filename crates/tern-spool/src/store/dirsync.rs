//! Group commit of a directory: many renames, one fsync.
//!
//! A [`DirSyncer`] owns a thread that loops: wait until at least one commit is waiting,
//! take every waiter registered so far, fsync the directory ONCE, wake them all. A commit
//! registers only after its rename returned, and a batch is taken before its fsync starts,
//! so the fsync that answers a waiter always started after that waiter's rename: one
//! directory fsync covers every message renamed before it started. Waiters that register
//! during an fsync are served by the next one.
//!
//! Invariants: the mutex guards only the waiter list; it is never held across an fsync
//! or an `.await`. Dropping the `DirSyncer` stops the thread after it has served every
//! waiter already registered.
//!
//! Watchdog: the syncer's heartbeat counts each registered waiter as work waiting and
//! each completed fsync as progress, so an fsync that never returns shows as a stalled
//! spool writer. It is only reported: a thread stuck in the kernel cannot be replaced,
//! and the commits it holds must not be answered by anyone else.
//!
//! Known race: a waiter whose future is dropped still gets its fsync; only the wake-up is
//! lost, which is harmless.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use tern_watchdog::Heartbeat;
use tokio::sync::oneshot;

use super::SyncCounters;

/// The outcome sent to each waiter (io::Error is not Clone, so kind and text travel).
type Outcome = Result<(), (io::ErrorKind, String)>;

struct Waiters {
    list: Vec<oneshot::Sender<Outcome>>,
    stopping: bool,
}

struct Shared {
    waiters: Mutex<Waiters>,
    wake: Condvar,
    /// Waiting = waiters registered and not yet answered; progress = one fsync.
    beat: Heartbeat,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Handle to the group-commit thread of one directory.
pub(crate) struct DirSyncer {
    shared: Arc<Shared>,
    path: PathBuf,
}

impl DirSyncer {
    /// Opens `path` and starts its syncing thread, which reports on `beat`.
    pub(crate) fn start(
        path: PathBuf,
        counters: Arc<SyncCounters>,
        beat: Heartbeat,
    ) -> io::Result<DirSyncer> {
        // Never through a symbolic link: the spool's directories were checked at open.
        let dir = super::sys::open_dir(&path)?;
        let shared = Arc::new(Shared {
            waiters: Mutex::new(Waiters {
                list: Vec::new(),
                stopping: false,
            }),
            wake: Condvar::new(),
            beat,
        });
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("tern-spool-dirsync".into())
            .spawn(move || sync_loop(&thread_shared, &dir, &counters))?;
        Ok(DirSyncer { shared, path })
    }

    /// Waits until a directory fsync that started after this call has completed.
    pub(crate) async fn sync(&self) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        {
            let mut w = self.shared.lock();
            if w.stopping {
                return Err(io::Error::other("directory sync thread stopped"));
            }
            w.list.push(tx);
            self.shared.beat.add_waiting(1);
        }
        self.shared.wake.notify_one();
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err((kind, text))) => Err(io::Error::new(kind, text)),
            Err(_) => Err(io::Error::other("directory sync thread ended")),
        }
    }

    /// The directory this syncer covers.
    pub(crate) fn path(&self) -> &PathBuf {
        &self.path
    }
}

impl Drop for DirSyncer {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_one();
    }
}

/// Marks the syncer stopped and drops pending waiters (so they get an error instead of
/// waiting forever) however the thread ends.
struct StopOnExit<'a>(&'a Shared);

impl Drop for StopOnExit<'_> {
    fn drop(&mut self) {
        let mut w = self.0.lock();
        w.stopping = true;
        w.list.clear();
        self.0.beat.set_waiting(0);
    }
}

fn sync_loop(shared: &Shared, dir: &File, counters: &SyncCounters) {
    let _stop = StopOnExit(shared);
    loop {
        let batch = {
            let mut w = shared.lock();
            while w.list.is_empty() && !w.stopping {
                w = shared.wake.wait(w).unwrap_or_else(PoisonError::into_inner);
            }
            if w.list.is_empty() {
                return;
            }
            std::mem::take(&mut w.list)
        };
        let started = std::time::Instant::now();
        let outcome: Outcome = dir.sync_all().map_err(|e| (e.kind(), e.to_string()));
        tern_metrics::get()
            .fsync_latency
            .observe_duration(started.elapsed());
        counters.dir_syncs.fetch_add(1, Ordering::Relaxed);
        shared.beat.done_waiting(batch.len() as u64);
        shared.beat.progress();
        for waiter in batch {
            let _ = waiter.send(outcome.clone());
        }
    }
}
