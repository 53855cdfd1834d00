//! Batched commit of new messages: many files, one filesystem sync per batch.
//!
//! The per-file commit (`writer.rs`) costs every message an `fdatasync`, an `fsync` of
//! its new link count and a share of the `incoming/` directory fsync: three cache flushes
//! of the disk for one small file. Here one thread takes every message whose file is to
//! commit and runs them through a two-stage pipeline in which every `syncfs` serves two
//! batches at once. One turn of the loop:
//! 1. writes the file of each message that arrived since the last turn (unnamed O_TMPFILE
//!    inode, a reused file or `tmp/<id>`, as the writer would), so a small message needs
//!    no blocking-pool task of its own: batch B;
//! 2. `syncfs` on the spool's filesystem. This makes durable both the data and inodes of
//!    batch B and the names given at the end of the previous turn to batch A (and
//!    whatever else was dirty on that filesystem: the cost of this mode, see below);
//! 3. answers every message of batch A: its name is durable;
//! 4. gives each file of batch B its name in `incoming/` (linkat, link or rename, as in
//!    `TmpFile::publish`), never replacing an existing one. Batch B is the next turn's A.
//!
//! A turn with no new message but names waiting runs step 2 for the names alone, so a
//! lone message costs two syncs, as before the pipeline; under load each sync covers one
//! batch's data and the previous batch's names, half the syncs of doing them in turn.
//!
//! So the durability contract of the per-file path holds: a file has its name only once
//! its data is durable (step 4 comes after the sync of step 2 that followed its write),
//! and a commit returns `Ok` only once its name is durable (step 3 comes after a sync
//! that started after the name was given). A failed sync fails everything it covered:
//! batch B's unnamed files are freed by their guards, and every name given to batch A is
//! taken back before its error is answered, so a client told 451 never finds its message
//! queued.
//!
//! Cost: `syncfs` writes back everything dirty on the filesystem, not only Tern's files.
//! On a filesystem of its own (or one shared with little else) that is exactly the
//! batch; on one shared with heavy writers every batch waits for their data too. That is
//! why it is a setting (`spool.commit = "batch" | "file"`, see docs/SPOOL.md).
//!
//! Invariants: the mutex guards only the pending list and is never held across I/O or
//! an `.await`; a pending commit whose future was dropped is still made durable (its
//! answer is lost, harmless: the message is queued and the scheduler finds it at the next
//! start, like any message committed just before a crash). Dropping the committer stops
//! the thread after it has served what is pending, names waiting for their sync
//! included.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::oneshot;

use super::SyncCounters;
use super::handoff::Handoff;
use super::writer::TmpFile;
use crate::error::SpoolError;

/// What the committer answers: the `free/` name to remove (recycled files), on success.
type Answer = Result<Option<PathBuf>, SpoolError>;

/// Writes a message's file (creates it, writes what is left, cuts it to length) on the
/// commit thread, so a small message costs no hop to a blocking thread of its own.
pub(crate) type Prepare = Box<dyn FnOnce() -> Result<TmpFile, SpoolError> + Send>;

/// One message waiting for its batch.
struct Pending {
    prepare: Prepare,
    to: PathBuf,
    reply: oneshot::Sender<Answer>,
}

/// A message whose file is written: waiting for the sync of its data, then, once named,
/// for the sync of its name.
struct Written {
    tmp: TmpFile,
    to: PathBuf,
    reply: oneshot::Sender<Answer>,
}

type Shared = Handoff<Pending>;

/// Handle to the batch-commit thread of a spool.
pub(crate) struct BatchCommitter {
    shared: Arc<Shared>,
}

impl BatchCommitter {
    /// Starts the thread; `fs` is any open file of the spool's filesystem (the spool
    /// directory) for `syncfs`; `queued` is the spool's queued count, raised for each
    /// message named.
    pub(crate) fn start(
        fs: File,
        counters: Arc<SyncCounters>,
        queued: Arc<AtomicUsize>,
    ) -> io::Result<BatchCommitter> {
        Self::start_with(move || syncfs(&fs), counters, queued)
    }

    /// `start` with the filesystem sync given as a function (tests gate and fail it).
    fn start_with(
        sync: impl FnMut() -> io::Result<()> + Send + 'static,
        counters: Arc<SyncCounters>,
        queued: Arc<AtomicUsize>,
    ) -> io::Result<BatchCommitter> {
        let shared = Arc::new(Shared::new());
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("tern-spool-commit".into())
            .spawn(move || commit_loop(&thread_shared, sync, &counters, &queued))?;
        Ok(BatchCommitter { shared })
    }

    /// Writes the file with `prepare` and names it `to` durably, with the other messages
    /// of its batch (see the module header).
    pub(crate) async fn commit(&self, prepare: Prepare, to: PathBuf) -> Answer {
        let (reply, rx) = oneshot::channel();
        if self.shared.push(Pending { prepare, to, reply }).is_err() {
            return Err(SpoolError::BlockingTask("commit thread stopped".into()));
        }
        rx.await
            .unwrap_or_else(|_| Err(SpoolError::BlockingTask("commit thread ended".into())))
    }
}

impl Drop for BatchCommitter {
    fn drop(&mut self) {
        self.shared.stop();
    }
}

fn syncfs(fs: &File) -> io::Result<()> {
    let started = std::time::Instant::now();
    let r = super::sys::syncfs(fs);
    tern_metrics::get()
        .fsync_latency
        .observe_duration(started.elapsed());
    r
}

fn commit_loop(
    shared: &Shared,
    mut sync: impl FnMut() -> io::Result<()>,
    counters: &SyncCounters,
    queued: &AtomicUsize,
) {
    // Batch A of the module header: named, waiting for a sync to make the names durable.
    let mut named: Vec<Written> = Vec::new();
    loop {
        let Some(batch) = shared.take(!named.is_empty()) else {
            return;
        };
        // Step 1: batch B's files.
        let mut written = Vec::with_capacity(batch.len());
        for p in batch {
            match (p.prepare)() {
                Ok(tmp) => written.push(Written {
                    tmp,
                    to: p.to,
                    reply: p.reply,
                }),
                Err(e) => {
                    let _ = p.reply.send(Err(e));
                }
            }
        }
        if written.is_empty() && named.is_empty() {
            continue;
        }
        // Step 2: one sync for B's data and A's names.
        if let Err(e) = sync() {
            let kind = e.kind();
            for p in named.drain(..) {
                // Not known to be durable, so not accepted: take the name back.
                let _ = std::fs::remove_file(&p.to);
                let e = io::Error::new(kind, e.to_string());
                let _ = p.reply.send(Err(SpoolError::io("syncfs", &p.to, e)));
            }
            for Written { tmp, to, reply } in written {
                // The unnamed file is freed before the answer, so a client told 451
                // never meets it either.
                drop(tmp);
                let e = io::Error::new(kind, e.to_string());
                let _ = reply.send(Err(SpoolError::io("syncfs", &to, e)));
            }
            continue;
        }
        counters.fs_syncs.fetch_add(1, Ordering::Relaxed);
        if !written.is_empty() {
            counters.file_syncs.fetch_add(1, Ordering::Relaxed);
        }
        // Step 3: A's names are durable.
        if !named.is_empty() {
            counters.dir_syncs.fetch_add(1, Ordering::Relaxed);
        }
        for p in named.drain(..) {
            queued.fetch_add(1, Ordering::AcqRel);
            tern_metrics::get().received.inc();
            let free = p.tmp.free_name();
            let _ = p.reply.send(Ok(free));
        }
        // Step 4: B's names; B waits for the next turn's sync.
        for mut p in written {
            match p.tmp.publish(&p.to) {
                Ok(()) => named.push(p),
                Err(e) => {
                    let Written { tmp, reply, .. } = p;
                    drop(tmp);
                    let _ = reply.send(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The pipeline with a sync the test controls: which sync covers what, and what a
    //! failed sync takes back.

    use std::sync::mpsc;

    use super::*;

    struct Harness {
        dir: tempfile::TempDir,
        committer: Arc<BatchCommitter>,
        counters: Arc<SyncCounters>,
        queued: Arc<AtomicUsize>,
    }

    /// A committer whose n-th sync (from 1) first sends n on `calls`, then waits for a
    /// go-ahead on `gate` and returns what `result` says for n.
    fn harness(
        result: impl Fn(u64) -> io::Result<()> + Send + 'static,
    ) -> (Harness, mpsc::Receiver<u64>, mpsc::Sender<()>) {
        let (calls_tx, calls) = mpsc::channel();
        let (gate, gate_rx) = mpsc::channel::<()>();
        let mut n = 0u64;
        let sync = move || {
            n += 1;
            let _ = calls_tx.send(n);
            let _ = gate_rx.recv();
            result(n)
        };
        let counters = Arc::new(SyncCounters::default());
        let queued = Arc::new(AtomicUsize::new(0));
        let committer = Arc::new(
            BatchCommitter::start_with(sync, Arc::clone(&counters), Arc::clone(&queued))
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for sub in ["tmp", "incoming"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap_or_else(|e| panic!("{e}"));
        }
        (
            Harness {
                dir,
                committer,
                counters,
                queued,
            },
            calls,
            gate,
        )
    }

    impl Harness {
        /// Starts the commit of message `name` (a named file in `tmp/`).
        fn commit(
            &self,
            rt: &tokio::runtime::Runtime,
            name: &str,
        ) -> tokio::task::JoinHandle<Answer> {
            let tmp_path = self.dir.path().join("tmp").join(name);
            let to = self.dir.path().join("incoming").join(name);
            let prepare: Prepare = Box::new(move || {
                let mut tmp = TmpFile::create_named(tmp_path)?;
                tmp.write_all(b"message")?;
                Ok(tmp)
            });
            let committer = Arc::clone(&self.committer);
            rt.spawn(async move { committer.commit(prepare, to).await })
        }

        fn incoming(&self) -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(self.dir.path().join("incoming"))
                .unwrap_or_else(|e| panic!("{e}"))
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn next_call(calls: &mpsc::Receiver<u64>) -> u64 {
        calls
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("no sync call: {e}"))
    }

    /// Waits until the committer holds `n` pending commits (bounded).
    fn wait_pending(h: &Harness, n: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while h.committer.shared.waiting() < n {
            assert!(std::time::Instant::now() < deadline, "commit never queued");
            std::thread::yield_now();
        }
    }

    #[test]
    fn one_sync_makes_one_batch_s_names_and_the_next_batch_s_data_durable() {
        let rt = runtime();
        let (h, calls, gate) = harness(|_| Ok(()));
        let a = h.commit(&rt, "a");
        // Sync 1: a's data. While it runs, b arrives.
        assert_eq!(next_call(&calls), 1);
        assert!(
            h.incoming().is_empty(),
            "no name before its data is durable"
        );
        let b = h.commit(&rt, "b");
        wait_pending(&h, 1);
        gate.send(()).unwrap_or_else(|e| panic!("{e}"));
        // Sync 2: a's name and b's data together; a is answered only after it.
        assert_eq!(next_call(&calls), 2);
        assert_eq!(h.incoming(), ["a"], "a named after sync 1, b not yet");
        assert!(!a.is_finished(), "a answered before its name was durable");
        gate.send(()).unwrap_or_else(|e| panic!("{e}"));
        assert!(rt.block_on(a).unwrap_or_else(|e| panic!("{e}")).is_ok());
        // Sync 3: b's name alone.
        assert_eq!(next_call(&calls), 3);
        assert_eq!(h.incoming(), ["a", "b"]);
        assert!(!b.is_finished());
        gate.send(()).unwrap_or_else(|e| panic!("{e}"));
        assert!(rt.block_on(b).unwrap_or_else(|e| panic!("{e}")).is_ok());
        // Three syncs for two batches: two data syncs, two name syncs, one shared.
        assert_eq!(h.counters.fs_syncs.load(Ordering::Relaxed), 3);
        assert_eq!(h.counters.file_syncs.load(Ordering::Relaxed), 2);
        assert_eq!(h.counters.dir_syncs.load(Ordering::Relaxed), 2);
        assert_eq!(h.queued.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_failed_sync_takes_back_the_names_it_covered_and_fails_both_batches() {
        let rt = runtime();
        let (h, calls, gate) = harness(|n| {
            if n == 2 {
                Err(io::Error::other("injected"))
            } else {
                Ok(())
            }
        });
        let a = h.commit(&rt, "a");
        assert_eq!(next_call(&calls), 1);
        let b = h.commit(&rt, "b");
        wait_pending(&h, 1);
        gate.send(()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(next_call(&calls), 2);
        assert_eq!(h.incoming(), ["a"]);
        gate.send(()).unwrap_or_else(|e| panic!("{e}"));
        assert!(rt.block_on(a).unwrap_or_else(|e| panic!("{e}")).is_err());
        assert!(rt.block_on(b).unwrap_or_else(|e| panic!("{e}")).is_err());
        assert!(
            h.incoming().is_empty(),
            "a client told 451 finds nothing queued"
        );
        let tmp = std::fs::read_dir(h.dir.path().join("tmp"))
            .unwrap_or_else(|e| panic!("{e}"))
            .count();
        assert_eq!(tmp, 0, "b's unnamed file was freed by its guard");
        assert_eq!(h.queued.load(Ordering::Relaxed), 0);
        // The committer goes on: the next message is committed normally.
        let c = h.commit(&rt, "c");
        for _ in 0..2 {
            next_call(&calls);
            gate.send(()).unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(rt.block_on(c).unwrap_or_else(|e| panic!("{e}")).is_ok());
        assert_eq!(h.incoming(), ["c"]);
    }
}
