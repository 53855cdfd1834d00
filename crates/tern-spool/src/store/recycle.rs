//! Reusing the files of delivered messages.
//!
//! Creating an inode for every new message and freeing one for every delivered message
//! are the costliest metadata operations of the spool on ext4 (allocation scans the inode
//! table; without a journal, freeing writes the inode synchronously). So a delivered
//! message's file is not unlinked: it gets a name in `free/` and is overwritten by a later
//! message, which is then linked into `incoming/` like a new file.
//!
//! Invariants:
//! - A file in the in-memory pool has exactly one name, in `free/`, and belongs to no
//!   message: `Spool::remove` links it there and only then unlinks its queue name, and
//!   the writer unlinks the `free/` name only after the message's own name is durable.
//! - A crash between those steps leaves a file with two names (link count 2). At open,
//!   any `free/` file whose link count is not 1 is still a message (or part of one), so
//!   only its `free/` name is removed; it never enters the pool. Everything else in
//!   `free/` that is a regular file is reusable, whatever it contains: a message is
//!   only ever read through a queue name, and a recycled file is cut to its new length
//!   before it is synced and linked.
//! - The pool holds at most `MAX_FREE` files; beyond that, delivered files are unlinked.
//!
//! Trust: names in `free/` are only used as paths inside it; nothing in a free file is
//! ever read.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use crate::error::{CorruptReason, SpoolError};
use crate::id::QueueId;
use crate::state::QueueState;

use super::{Area, FREE_DIR, Inner, MAX_FREE, read_names, sys};

impl Inner {
    fn free_dir(&self) -> PathBuf {
        self.dir.join(FREE_DIR)
    }

    /// A reusable file, if the pool has one.
    pub(crate) fn take_free(&self) -> Option<PathBuf> {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    /// Puts back a file taken with `take_free` and not used.
    pub(crate) fn give_back_free(&self, path: PathBuf) {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(path);
    }

    /// At open: fills the pool from `free/` (see the module header for what is kept).
    /// Only regular files named `f<n>` are Tern's; anything else there is quarantined
    /// (never opened, never reused). Returns how many entries were quarantined.
    pub(crate) fn load_free_pool(&self) -> Result<usize, SpoolError> {
        let dir = self.free_dir();
        let mut pool = Vec::new();
        let mut highest = 0u64;
        let mut quarantined = 0;
        for name in read_names(&dir)? {
            let path = dir.join(&name);
            let n = name
                .to_str()
                .and_then(|s| s.strip_prefix('f'))
                .and_then(|s| s.parse::<u64>().ok());
            let (kind, meta) =
                sys::entry_kind(&path).map_err(|e| SpoolError::io("stat", &path, e))?;
            let meta = match (n, kind, meta) {
                (_, sys::EntryKind::Missing, _) => continue,
                (Some(n), sys::EntryKind::File, Some(meta)) => {
                    highest = highest.max(n);
                    meta
                }
                (n, kind, _) => {
                    let reason = CorruptReason::UnexpectedEntry(format!(
                        "{} {} in free/, where Tern keeps only regular files named f<n>",
                        kind.describe(),
                        if n.is_some() {
                            "named like a free file"
                        } else {
                            "with a name Tern does not make"
                        }
                    ));
                    quarantined += usize::from(self.quarantine(Area::Free, &name, &reason)?);
                    continue;
                }
            };
            if meta.nlink() != 1 || pool.len() >= MAX_FREE {
                // Still a message's file (a crash between link and unlink), or too many:
                // only the free/ name goes.
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(SpoolError::io("unlink", path, e)),
                }
                continue;
            }
            pool.push(path);
        }
        if quarantined > 0 {
            self.sync_after_quarantine(Area::Free)?;
        }
        self.next_free
            .store(highest.saturating_add(1), Ordering::Relaxed);
        *self.free.lock().unwrap_or_else(PoisonError::into_inner) = pool;
        Ok(quarantined)
    }

    /// Retires the file of message `id` in `state`: into the pool when there is room
    /// (link into `free/`, then unlink the queue name), else unlinked. `Ok(false)` when
    /// the message was not there.
    pub(crate) fn retire(&self, state: QueueState, id: QueueId) -> Result<bool, SpoolError> {
        let src = self.entry_path(Area::State(state), id);
        let room = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
            < MAX_FREE;
        let mut kept = None;
        if room {
            let n = self.next_free.fetch_add(1, Ordering::Relaxed);
            let dst = self.free_dir().join(format!("f{n}"));
            match std::fs::hard_link(&src, &dst) {
                Ok(()) => kept = Some(dst),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                // No room for the name or a clash: just unlink below.
                Err(_) => {}
            }
        }
        match std::fs::remove_file(&src) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(k) = kept {
                    let _ = std::fs::remove_file(k);
                }
                return Ok(false);
            }
            Err(e) => {
                if let Some(k) = kept {
                    let _ = std::fs::remove_file(k);
                }
                return Err(SpoolError::io("unlink", src, e));
            }
        }
        if let Some(k) = kept {
            self.give_back_free(k);
        }
        Ok(true)
    }
}
