//! Loading the deferred backlog after a lazy open ([`Spool::open_lazy`]), while the
//! server runs: `deferred/` is validated here instead of before the listeners start,
//! and `records/` is checked after it.
//!
//! Order and guarantees:
//! 1. `deferred/` is read once (its names at that instant) and handled in chunks: a name
//!    that is not a queue id and an entry that is not a regular file are quarantined
//!    without being opened (event 3003); every other file is read and validated in full
//!    like at an eager start (header, trailer, both checksums, envelope) and quarantined
//!    if bad; each chunk of valid messages is handed to the caller with its envelope and
//!    delivery record (`None` when absent or unreadable: the message task deals with it
//!    when the message is loaded, as before).
//! 2. `records/`: names that are not queue ids are quarantined; a regular record whose
//!    message is in no state directory nor segment is an orphan. Since messages move
//!    while this runs (link, then unlink), an orphan is removed only if it is still
//!    without a message when looked up again after the whole pass, and a move takes
//!    milliseconds. A record that is not a regular file is left to the queue, which
//!    sets it aside and holds its message when it loads the message
//!    (`Spool::hold_without_record`), as it does for one that appears while Tern runs.
//!
//! Races with the running queue (it is the caller's business to ignore what it already
//! knows): a message deferred during this run may also be listed here; one that left
//! `deferred/` since the names were read is skipped (vanished). The spool's queued
//! count (back pressure on the queue's size) counts each message handed over.
//!
//! Cost: one directory read (the names sorted by inode number, so a cold cache reads
//! the inode table in order), and per message one `lstat`, one read of the file (whole,
//! for a file up to 1 MiB) and one of its record, eight at a time; memory is one chunk
//! of envelopes.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::envelope::Envelope;
use crate::error::{CorruptReason, SpoolError};
use crate::id::QueueId;
use crate::record::DeliveryRecord;
use crate::state::QueueState;

use super::entry::{self, EntryError};
use super::recovery::not_a_file;
use super::sys::{self, EntryKind};
use super::{Area, RECORDS_DIR, Spool, name_to_id, read_names};

/// How many records the check of `records/` looks at between two questions to its caller.
const ASK_EVERY: usize = 4096;

/// Threads reading one chunk of `deferred/`.
const READERS: usize = 8;

/// What reading one entry of `deferred/` found.
enum Outcome {
    Good(Box<DeferredEntry>),
    /// Moved on or removed since the directory was read.
    Gone,
    /// To quarantine, with why.
    Bad(CorruptReason),
}

/// The names in `dir`, in the order of their inode numbers: on ext4 that is roughly the
/// order of the inode table on disk, so a cold cache reads it with short seeks.
fn names_by_inode(dir: &Path) -> Result<Vec<OsString>, SpoolError> {
    use std::os::unix::fs::DirEntryExt;
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(SpoolError::io("read directory", dir, e)),
    };
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| SpoolError::io("read directory", dir, e))?;
        names.push((entry.ino(), entry.file_name()));
    }
    names.sort_unstable_by_key(|(ino, _)| *ino);
    Ok(names.into_iter().map(|(_, n)| n).collect())
}

/// A deferred message found by [`Spool::load_deferred`].
#[derive(Debug)]
pub struct DeferredEntry {
    /// Its queue id.
    pub id: QueueId,
    /// Its envelope (validated with the whole file).
    pub envelope: Envelope,
    /// Its delivery record, when one could be read.
    pub record: Option<DeliveryRecord>,
}

/// What [`Spool::load_deferred`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeferredLoad {
    /// Valid deferred messages handed over.
    pub loaded: usize,
    /// Entries quarantined (deferred files and records).
    pub quarantined: usize,
    /// Orphan records removed.
    pub orphans_removed: usize,
    /// The caller asked to stop before the end.
    pub stopped: bool,
}

impl Spool {
    /// Validates `deferred/` and hands its messages to `take` in chunks of at most
    /// `chunk`, then checks `records/` (see the module header). `take` returns `false`
    /// to stop (the server stops); during the check of `records/` it is called with an
    /// empty chunk now and then, only to ask that. Blocking: run it on a blocking thread.
    /// On a spool opened otherwise (everything was recovered at open), it only hands over
    /// what `deferred/` holds: nothing is counted again and `records/` is not checked
    /// again. After a lazy open it runs [`Spool::finish_recovery`] first if nobody did
    /// (its list of `incoming/` is then dropped), and refuses to run
    /// (`SpoolError::RecoveryUnfinished`) when that recovery failed or was stopped: the
    /// names left twice between `deferred/` and the others may not be resolved yet.
    pub fn load_deferred(
        &self,
        chunk: usize,
        take: &mut dyn FnMut(Vec<DeferredEntry>) -> bool,
    ) -> Result<DeferredLoad, SpoolError> {
        if self.recovery_pending() {
            self.finish_recovery(&|| true)?;
        }
        if self.recovery_unfinished() {
            return Err(SpoolError::RecoveryUnfinished);
        }
        let inner = &self.inner;
        let area = Area::State(QueueState::Deferred);
        let dir = inner.area_dir(area);
        let mut report = DeferredLoad::default();
        let chunk = chunk.max(1);
        let mut bad_here = false;
        for names in names_by_inode(&dir)?.chunks(chunk) {
            let read = self.read_chunk(&dir, names)?;
            let mut batch = Vec::with_capacity(read.len());
            for (name, outcome) in names.iter().zip(read) {
                let reason = match outcome {
                    Outcome::Good(entry) => {
                        batch.push(*entry);
                        continue;
                    }
                    Outcome::Gone => continue,
                    Outcome::Bad(reason) => reason,
                };
                if inner.quarantine(area, name, &reason)? {
                    report.quarantined += 1;
                    bad_here = true;
                }
            }
            if !self.hand_over(&mut batch, &mut report, take) {
                report.stopped = true;
                break;
            }
        }
        if bad_here {
            inner.sync_after_quarantine(area)?;
        }
        if report.stopped {
            return Ok(report);
        }
        if inner.lazy_deferred {
            self.check_records(&mut report, take)?;
        }
        Ok(report)
    }

    /// Reads and validates `names` (in `dir`) on [`READERS`] threads, each file with its
    /// record: several reads in flight keep the disk busy when the cache is cold.
    fn read_chunk(&self, dir: &Path, names: &[OsString]) -> Result<Vec<Outcome>, SpoolError> {
        let next = AtomicUsize::new(0);
        let slots: Vec<std::sync::Mutex<Option<Outcome>>> =
            names.iter().map(|_| std::sync::Mutex::new(None)).collect();
        let failed: std::sync::Mutex<Option<SpoolError>> = std::sync::Mutex::new(None);
        let work = || {
            let mut buf = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let (Some(name), Some(slot)) = (names.get(i), slots.get(i)) else {
                    break;
                };
                let outcome = match self.read_one(dir, name, &mut buf) {
                    Ok(o) => o,
                    Err(e) => {
                        // Each mutex is taken alone, for one assignment.
                        if let Ok(mut f) = failed.lock() {
                            f.get_or_insert(e);
                        }
                        break;
                    }
                };
                if let Ok(mut s) = slot.lock() {
                    *s = Some(outcome);
                }
                if buf.capacity() > 2 * 1024 * 1024 {
                    buf = Vec::new();
                }
            }
        };
        std::thread::scope(|s| {
            let helpers: Vec<_> = (1..READERS)
                .filter_map(|_| {
                    std::thread::Builder::new()
                        .name("tern-spool-backlog".into())
                        .spawn_scoped(s, work)
                        .ok()
                })
                .collect();
            work();
            for h in helpers {
                let _ = h.join();
            }
        });
        if let Some(e) = failed.into_inner().ok().flatten() {
            return Err(e);
        }
        Ok(slots
            .into_iter()
            .map(|m| m.into_inner().ok().flatten().unwrap_or(Outcome::Gone))
            .collect())
    }

    /// One entry of `deferred/` (see the module header, step 1).
    fn read_one(
        &self,
        dir: &Path,
        name: &OsString,
        buf: &mut Vec<u8>,
    ) -> Result<Outcome, SpoolError> {
        let area = Area::State(QueueState::Deferred);
        Ok(
            match (name_to_id(name), not_a_file(&self.inner, area, name)?) {
                (Some(id), None) => {
                    let path = dir.join(name);
                    match entry::verify_envelope(&path, id, buf, self.inner.record_key()) {
                        // The record comes from the file just read (its last frame);
                        // only a message without a frame looks for a legacy file.
                        Ok((envelope, last)) => Outcome::Good(Box::new(DeferredEntry {
                            id,
                            envelope,
                            record: match last {
                                Some(f) => crate::record::decode_json(&f.json, id).ok(),
                                None => self.read_legacy_record(id).ok().flatten(),
                            },
                        })),
                        Err(EntryError::Vanished) => Outcome::Gone,
                        Err(EntryError::Corrupt(reason)) => Outcome::Bad(reason),
                        Err(EntryError::Io(op, e)) => return Err(SpoolError::io(op, path, e)),
                    }
                }
                (_, Some(why)) => Outcome::Bad(CorruptReason::UnexpectedEntry(why)),
                (None, None) => {
                    Outcome::Bad(CorruptReason::BadFileName(name.to_string_lossy().into()))
                }
            },
        )
    }

    fn hand_over(
        &self,
        batch: &mut Vec<DeferredEntry>,
        report: &mut DeferredLoad,
        take: &mut dyn FnMut(Vec<DeferredEntry>) -> bool,
    ) -> bool {
        if batch.is_empty() {
            return true;
        }
        let n = batch.len();
        report.loaded += n;
        if self.inner.lazy_deferred {
            self.inner.queued.fetch_add(n, Ordering::AcqRel);
        }
        take(std::mem::take(batch))
    }

    /// Step 2 of the module header. `take` is asked with an empty chunk every
    /// [`ASK_EVERY`] records whether to go on.
    fn check_records(
        &self,
        report: &mut DeferredLoad,
        take: &mut dyn FnMut(Vec<DeferredEntry>) -> bool,
    ) -> Result<(), SpoolError> {
        let inner = &self.inner;
        let dir = inner.dir.join(RECORDS_DIR);
        let mut candidates: HashSet<QueueId> = HashSet::new();
        let mut bad = false;
        for (n, name) in read_names(&dir)?.into_iter().enumerate() {
            if n % ASK_EVERY == ASK_EVERY - 1 && !take(Vec::new()) {
                report.stopped = true;
                break;
            }
            let Some(id) = name_to_id(&name) else {
                let path = dir.join(&name);
                let (kind, _) =
                    sys::entry_kind(&path).map_err(|e| SpoolError::io("stat", &path, e))?;
                if kind == EntryKind::Missing {
                    continue;
                }
                let reason = CorruptReason::UnexpectedEntry(format!(
                    "{} named {:?} in records/, where Tern keeps only <queue id> records",
                    kind.describe(),
                    name.to_string_lossy()
                ));
                if inner.quarantine(Area::Records, &name, &reason)? {
                    report.quarantined += 1;
                    bad = true;
                }
                continue;
            };
            if !inner.message_exists(id) {
                candidates.insert(id);
            }
        }
        if bad {
            inner.sync_after_quarantine(Area::Records)?;
        }
        if report.stopped {
            return Ok(());
        }
        for id in candidates {
            let path = inner.record_path(id);
            // Looked up again: a message that was moving at the first look has its new
            // name by now.
            if inner.message_exists(id)
                || !matches!(sys::entry_kind(&path), Ok((EntryKind::File, _)))
            {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => report.orphans_removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(SpoolError::io("remove orphan record", path, e)),
            }
        }
        Ok(())
    }
}
