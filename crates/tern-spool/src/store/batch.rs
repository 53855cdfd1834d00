//! Batched commit of new messages: many files, two filesystem syncs.
//!
//! The per-file commit (`writer.rs`) costs every message an `fdatasync`, an `fsync` of
//! its new link count and a share of the `incoming/` directory fsync: three cache flushes
//! of the disk for one small file. Here one thread takes every message whose file is
//! to commit, and for the whole batch:
//! 0. writes each message's file (unnamed O_TMPFILE inode, a reused file or `tmp/<id>`,
//!    as the writer would), so a small message needs no blocking-pool task of its own;
//! 1. `syncfs` on the spool's filesystem: every file's data and inode are on disk (and
//!    whatever else was dirty on that filesystem: the cost of this mode, see below);
//! 2. gives each file its name in `incoming/` (linkat, link or rename, as in
//!    `TmpFile::publish`), never replacing an existing one;
//! 3. `syncfs` again: the names, the link counts and the directory blocks are on disk;
//! 4. answers every message of the batch.
//!
//! So the durability contract of the per-file path holds: a file has its name only once
//! its data is durable (step 1 before 2), and a commit returns `Ok` only once its name is
//! durable (step 3 before 4). A failure of step 1 fails the whole batch (the unnamed
//! files are freed by their guards); of step 3, every name the batch gave is taken back
//! before the error is answered, so a client told 451 never finds its message queued.
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
//! the thread after it has served what is pending.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use super::SyncCounters;
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

/// A message whose file is written, waiting for the batch's first `syncfs`.
struct Written {
    tmp: TmpFile,
    to: PathBuf,
    reply: oneshot::Sender<Answer>,
}

struct Queue {
    list: Vec<Pending>,
    stopping: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

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
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                list: Vec::new(),
                stopping: false,
            }),
            wake: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("tern-spool-commit".into())
            .spawn(move || commit_loop(&thread_shared, &fs, &counters, &queued))?;
        Ok(BatchCommitter { shared })
    }

    /// Writes the file with `prepare` and names it `to` durably, with the other messages
    /// of its batch (see the module header).
    pub(crate) async fn commit(&self, prepare: Prepare, to: PathBuf) -> Answer {
        let (reply, rx) = oneshot::channel();
        {
            let mut q = self.shared.lock();
            if q.stopping {
                return Err(SpoolError::BlockingTask("commit thread stopped".into()));
            }
            q.list.push(Pending { prepare, to, reply });
        }
        self.shared.wake.notify_one();
        rx.await
            .unwrap_or_else(|_| Err(SpoolError::BlockingTask("commit thread ended".into())))
    }
}

impl Drop for BatchCommitter {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_one();
    }
}

fn syncfs(fs: &File) -> io::Result<()> {
    let started = std::time::Instant::now();
    // SAFETY: syncfs(2) on a valid open descriptor; no memory is passed.
    let r = if unsafe { libc::syncfs(fs.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    };
    tern_metrics::get()
        .fsync_latency
        .observe_duration(started.elapsed());
    r
}

fn commit_loop(shared: &Shared, fs: &File, counters: &SyncCounters, queued: &AtomicUsize) {
    loop {
        let batch = {
            let mut q = shared.lock();
            while q.list.is_empty() && !q.stopping {
                q = shared.wake.wait(q).unwrap_or_else(PoisonError::into_inner);
            }
            if q.list.is_empty() {
                return;
            }
            std::mem::take(&mut q.list)
        };
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
        if written.is_empty() {
            continue;
        }
        if let Err(e) = syncfs(fs) {
            let kind = e.kind();
            for p in written {
                let e = io::Error::new(kind, e.to_string());
                let _ = p.reply.send(Err(SpoolError::io("syncfs", &p.to, e)));
            }
            continue;
        }
        let mut named = Vec::with_capacity(written.len());
        for mut p in written {
            match p.tmp.publish(&p.to) {
                Ok(()) => named.push(p),
                Err(e) => {
                    let _ = p.reply.send(Err(e));
                }
            }
        }
        match syncfs(fs) {
            Ok(()) => {
                counters.file_syncs.fetch_add(1, Ordering::Relaxed);
                counters.dir_syncs.fetch_add(1, Ordering::Relaxed);
                for p in named {
                    queued.fetch_add(1, Ordering::AcqRel);
                    tern_metrics::get().received.inc();
                    let free = p.tmp.free_name();
                    let _ = p.reply.send(Ok(free));
                }
            }
            Err(e) => {
                let kind = e.kind();
                for p in named {
                    // Not known to be durable, so not accepted: take the name back.
                    let _ = std::fs::remove_file(&p.to);
                    let e = io::Error::new(kind, e.to_string());
                    let _ = p.reply.send(Err(SpoolError::io("syncfs", &p.to, e)));
                }
            }
        }
    }
}
