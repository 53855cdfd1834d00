//! Loading the deferred backlog after a lazy open ([`Spool::open_lazy`]), while the
//! server runs: `deferred/` is validated here instead of before the listeners start,
//! and `records/` is checked after it.
//!
//! Order and guarantees:
//! 1. **Scheduled from the names and the inodes.** `deferred/` is read once (its names
//!    at that instant, sorted by inode number). A name that is not a queue id is
//!    quarantined without being opened (event 3003). Every other entry gets one `lstat`
//!    (eight at a time): an entry that is not a regular file is quarantined without
//!    being opened; a file is handed to the caller as [`BacklogStep::Due`] with the
//!    due time its modification time holds (set with every delivery record that has a
//!    next attempt: `Inner::append_record`). No file is opened in this pass, so a
//!    million messages are scheduled in seconds. [`BacklogStep::AllDue`] ends it.
//!    The modification time is a hint, never the truth: one that a crash lost (a
//!    frame's `fdatasync` need not carry it) or that was never set (a file from an
//!    older version) is earlier than the record's next attempt, and only makes that
//!    attempt come early; the next pass corrects it.
//! 2. **Read.** The same names are then read and validated in full like at an eager
//!    start (header, trailer, both checksums, envelope), eight at a time; each chunk of
//!    valid messages is handed over as [`BacklogStep::Read`] with its envelope and
//!    delivery record (`None` when absent or unreadable: the message task deals with it
//!    when the message is loaded, as before), so the caller learns each message's next
//!    hops and the record's own next attempt. A file that fails validation is *not*
//!    quarantined here: the queue may be delivering it at this very moment (it was
//!    scheduled in step 1, and may have been due), and a rename into `corrupt/` racing
//!    its move to `active/` would leave it under both names. It is handed over as
//!    [`BacklogStep::Damaged`] instead, and the queue loads it at once: the message
//!    task, which owns the message while it runs, validates it and quarantines it
//!    (`Spool::quarantine_message`), as it does for damage found at any other time. A
//!    file a retry was writing while it was read may be reported too; the task then
//!    finds it sound and goes on (seen once in a million at the benchmark).
//! 3. `records/`: names that are not queue ids are quarantined; a regular record whose
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
//! count (back pressure on the queue's size) counts each message of step 1.
//!
//! Step 1 quarantines only entries the queue never sees (names that are not ids, entries
//! that are not files), so it races with nothing.
//!
//! Cost: one directory read; per message one `lstat` (step 1), then one read of the
//! file (whole, for a file up to 1 MiB) and of its record (step 2). Memory: the ids in
//! inode order (24 bytes each, the names are not kept) and one chunk.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::envelope::Envelope;
use crate::error::{CorruptReason, SpoolError};
use crate::id::QueueId;
use crate::record::DeliveryRecord;
use crate::state::QueueState;

use super::entry::{self, EntryError};
use super::sys::{self, EntryKind};
use super::{Area, RECORDS_DIR, Spool, name_to_id, read_names};

/// How many records the check of `records/` looks at between two questions to its caller.
const ASK_EVERY: usize = 4096;

/// Threads reading one chunk of `deferred/`.
const READERS: usize = 8;

/// Entries of `deferred/` the first pass (one `lstat` each) hands over at a time.
const DUE_CHUNK: usize = 4096;

/// What reading one entry of `deferred/` found.
enum Outcome<T> {
    Good(T),
    /// Moved on or removed since the directory was read.
    Gone,
    /// To quarantine, with why.
    Bad(CorruptReason),
}

/// The names in `dir` split into queue ids, in the order of their inode numbers (on ext4
/// roughly the order of the inode table on disk, so a cold cache reads it with short
/// seeks), and the names that are not the text of a queue id.
fn ids_by_inode(dir: &Path) -> Result<(Vec<QueueId>, Vec<OsString>), SpoolError> {
    use std::os::unix::fs::DirEntryExt;
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(SpoolError::io("read directory", dir, e)),
    };
    let mut ids = Vec::new();
    let mut others = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| SpoolError::io("read directory", dir, e))?;
        let name = entry.file_name();
        // Only the canonical text of an id: it is the name every later step opens.
        match name_to_id(&name) {
            Some(id) if id.to_ascii().as_slice() == name.as_encoded_bytes() => {
                ids.push((entry.ino(), id));
            }
            _ => others.push(name),
        }
    }
    ids.sort_unstable_by_key(|(ino, _)| *ino);
    Ok((ids.into_iter().map(|(_, id)| id).collect(), others))
}

/// What [`Spool::load_deferred`] hands its caller, in this order: `Due` chunks, one
/// `AllDue`, `Read` chunks (see the module header).
#[derive(Debug)]
pub enum BacklogStep {
    /// Messages of `deferred/` with the due time (microseconds since the Unix epoch)
    /// their file's modification time holds; nothing of them is read yet.
    Due(Vec<(QueueId, i64)>),
    /// Every message of `deferred/` was handed over as `Due`: how many.
    AllDue(usize),
    /// Messages read and validated, with what they hold. Empty when the check of
    /// `records/` only asks whether to go on.
    Read(Vec<DeferredEntry>),
    /// Messages whose files failed validation when read (module header, step 2): the
    /// caller has the message task load them now, which quarantines them.
    Damaged(Vec<QueueId>),
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
    /// Messages handed over as due (the first pass).
    pub scheduled: usize,
    /// Valid deferred messages read and handed over (the second pass).
    pub loaded: usize,
    /// Messages whose files failed validation in the second pass, handed over as
    /// [`BacklogStep::Damaged`] (quarantined by the queue, not here).
    pub damaged: usize,
    /// Entries quarantined (deferred files and records).
    pub quarantined: usize,
    /// Orphan records removed.
    pub orphans_removed: usize,
    /// The caller asked to stop before the end.
    pub stopped: bool,
}

/// Runs `f` on every item of `items` on [`READERS`] threads (several reads in flight
/// keep the disk busy when the cache is cold); the results in the order of `items`.
/// The first error stops the work and is returned.
fn on_readers<I: Sync, T: Send>(
    items: &[I],
    f: &(dyn Fn(&I) -> Result<T, SpoolError> + Sync),
) -> Result<Vec<Option<T>>, SpoolError> {
    let next = AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<T>>> =
        items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    let failed: std::sync::Mutex<Option<SpoolError>> = std::sync::Mutex::new(None);
    let work = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let (Some(item), Some(slot)) = (items.get(i), slots.get(i)) else {
                break;
            };
            match f(item) {
                Ok(t) => {
                    if let Ok(mut s) = slot.lock() {
                        *s = Some(t);
                    }
                }
                Err(e) => {
                    // Each mutex is taken alone, for one assignment.
                    if let Ok(mut f) = failed.lock() {
                        f.get_or_insert(e);
                    }
                    break;
                }
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
        .map(|m| m.into_inner().ok().flatten())
        .collect())
}

/// The due time a file's modification time holds, in microseconds since the epoch.
fn due_of(m: &std::fs::Metadata) -> i64 {
    m.mtime()
        .saturating_mul(1_000_000)
        .saturating_add(m.mtime_nsec() / 1000)
}

impl Spool {
    /// Schedules, validates and hands over `deferred/` (steps 1 and 2 of the module
    /// header, `Read` chunks of at most `chunk`), then checks `records/` (step 3).
    /// `take` returns `false` to stop (the server stops); during the check of
    /// `records/` it is called with an empty `Read` now and then, only to ask that.
    /// Blocking: run it on a blocking thread. On a spool opened otherwise (everything
    /// was recovered at open), it only hands over what `deferred/` holds: nothing is
    /// counted again and `records/` is not checked again. After a lazy open it runs
    /// [`Spool::finish_recovery`] first if nobody did (its list of `incoming/` is then
    /// dropped), and refuses to run (`SpoolError::RecoveryUnfinished`) when that
    /// recovery failed or was stopped: the names left twice between `deferred/` and the
    /// others may not be resolved yet.
    pub fn load_deferred(
        &self,
        chunk: usize,
        take: &mut dyn FnMut(BacklogStep) -> bool,
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
        let mut bad_here = false;
        let (mut ids, others) = ids_by_inode(&dir)?;
        for name in others {
            let path = dir.join(&name);
            let reason = match sys::entry_kind(&path)
                .map_err(|e| SpoolError::io("stat", &path, e))?
            {
                (EntryKind::Missing, _) => continue,
                (EntryKind::File, _) => CorruptReason::BadFileName(name.to_string_lossy().into()),
                (kind, _) => CorruptReason::UnexpectedEntry(format!(
                    "{} in {}/, not a regular file (it was not opened)",
                    kind.describe(),
                    area.rel()
                )),
            };
            if inner.quarantine(area, &name, &reason)? {
                report.quarantined += 1;
                bad_here = true;
            }
        }
        // Step 1: the due times, from one lstat each.
        let mut kept = Vec::with_capacity(ids.len());
        for names in ids.chunks(DUE_CHUNK) {
            let found = on_readers(names, &|id: &QueueId| {
                let path = dir.join(id.to_string());
                Ok(
                    match sys::entry_kind(&path).map_err(|e| SpoolError::io("stat", &path, e))? {
                        (EntryKind::Missing, _) => Outcome::Gone,
                        (EntryKind::File, Some(m)) => Outcome::Good(due_of(&m)),
                        (kind, _) => Outcome::Bad(CorruptReason::UnexpectedEntry(format!(
                            "{} in {}/, not a regular file (it was not opened)",
                            kind.describe(),
                            area.rel()
                        ))),
                    },
                )
            })?;
            let mut due = Vec::with_capacity(found.len());
            for (id, outcome) in names.iter().zip(found) {
                match outcome {
                    Some(Outcome::Good(at)) => {
                        due.push((*id, at));
                        kept.push(*id);
                    }
                    Some(Outcome::Bad(reason)) => {
                        if inner.quarantine(area, &OsString::from(id.to_string()), &reason)? {
                            report.quarantined += 1;
                            bad_here = true;
                        }
                    }
                    Some(Outcome::Gone) | None => {}
                }
            }
            if due.is_empty() {
                continue;
            }
            report.scheduled += due.len();
            if inner.lazy_deferred {
                inner.queued.fetch_add(due.len(), Ordering::AcqRel);
            }
            if !take(BacklogStep::Due(due)) {
                report.stopped = true;
                break;
            }
        }
        ids = kept;
        ids.shrink_to_fit();
        if !report.stopped && !take(BacklogStep::AllDue(report.scheduled)) {
            report.stopped = true;
        }
        // Step 2: every file read and validated.
        if !report.stopped {
            for names in ids.chunks(chunk.max(1)) {
                let read = on_readers(names, &|id: &QueueId| {
                    let mut buf = Vec::new();
                    self.read_one(&dir, *id, &mut buf)
                })?;
                let mut batch = Vec::with_capacity(read.len());
                let mut damaged = Vec::new();
                for (id, outcome) in names.iter().zip(read) {
                    match outcome {
                        Some(Outcome::Good(entry)) => batch.push(*entry),
                        Some(Outcome::Bad(_)) => damaged.push(*id),
                        Some(Outcome::Gone) | None => {}
                    }
                }
                report.loaded += batch.len();
                report.damaged += damaged.len();
                let go_on = (damaged.is_empty() || take(BacklogStep::Damaged(damaged)))
                    && (batch.is_empty() || take(BacklogStep::Read(batch)));
                if !go_on {
                    report.stopped = true;
                    break;
                }
            }
        }
        drop(ids);
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

    /// Reads and validates one file of `deferred/` (step 2 of the module header).
    fn read_one(
        &self,
        dir: &Path,
        id: QueueId,
        buf: &mut Vec<u8>,
    ) -> Result<Outcome<Box<DeferredEntry>>, SpoolError> {
        let path = dir.join(id.to_string());
        Ok(
            match entry::verify_envelope(&path, id, buf, self.inner.record_key()) {
                // The record comes from the file just read (its last frame); only a
                // message without a frame looks for a legacy file.
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
            },
        )
    }

    /// Step 3 of the module header. `take` is asked with an empty `Read` every
    /// [`ASK_EVERY`] records whether to go on.
    fn check_records(
        &self,
        report: &mut DeferredLoad,
        take: &mut dyn FnMut(BacklogStep) -> bool,
    ) -> Result<(), SpoolError> {
        let inner = &self.inner;
        let dir = inner.dir.join(RECORDS_DIR);
        let mut candidates: HashSet<QueueId> = HashSet::new();
        let mut bad = false;
        for (n, name) in read_names(&dir)?.into_iter().enumerate() {
            if n % ASK_EVERY == ASK_EVERY - 1 && !take(BacklogStep::Read(Vec::new())) {
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
