//! The scan at start: remove partial writes, validate every queued file, quarantine the
//! bad ones, count the rest.
//!
//! Invariants:
//! - Runs only under the spool lock, before the spool handle exists, so nothing else
//!   writes the directories meanwhile.
//! - Everything in `tmp/` is an unacknowledged write (a commit renames out of `tmp/`
//!   before it returns), so regular files there are removed (event 3002). Anything else
//!   there (a directory) is quarantined, not removed.
//! - Every entry of every state directory except `corrupt/` is read in full and checked
//!   (header, trailer, both checksums, envelope). Bad files and names that are not queue
//!   ids are quarantined (event 3003), never deleted. A second scan finds nothing new.
//! - A message found under two state directories (a move cut short) keeps one name
//!   (`lifecycle`); records whose message is gone are removed after validation. A
//!   quarantined message takes its record with it (`quarantine`), so that removal never
//!   deletes the record of a message that still exists, in `corrupt/`.
//! - An I/O error that belongs to the system rather than to one file (see `entry`) stops
//!   the scan with an error instead of quarantining the queue.
//!
//! Cost: reads every byte of the queue once; validation runs on a few threads (the work
//! is I/O and CRC) with one reused buffer each, so memory stays bounded with 100k files.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tern_events::{catalog, fields};

use crate::error::{CorruptReason, SpoolError};
use crate::id::QueueId;
use crate::state::QueueState;

use super::entry::{self, EntryError};
use super::{Area, Inner, RecoveryReport, name_to_id, read_names};

/// Most validation threads.
const MAX_WORKERS: usize = 4;

pub(crate) fn recover(inner: &Inner) -> Result<RecoveryReport, SpoolError> {
    let (mut partials_removed, mut quarantined) = remove_partials(inner)?;
    inner.resolve_duplicates()?;
    // Before the state directories: a damaged segment's records are written out to
    // `incoming/` and validated and counted with it below.
    let segments = inner.recover_segments()?;
    partials_removed += segments.partials;
    quarantined += segments.quarantined;
    let mut counts = BTreeMap::new();
    for state in QueueState::ALL {
        if state == QueueState::Corrupt {
            continue;
        }
        let area = Area::State(state);
        let dir = inner.area_dir(area);
        let mut todo: Vec<(OsString, QueueId)> = Vec::new();
        let mut bad_here = 0;
        for name in read_names(&dir)? {
            match name_to_id(&name) {
                Some(id) => todo.push((name, id)),
                None => {
                    let reason = CorruptReason::BadFileName(name.to_string_lossy().into());
                    bad_here += usize::from(inner.quarantine(area, &name, &reason)?);
                }
            }
        }
        let failures = verify_all(&dir, &todo)?;
        let mut gone = 0;
        let mut bad_files = 0;
        for (i, failure) in failures {
            let Some((name, _)) = todo.get(i) else {
                continue;
            };
            match failure {
                None => gone += 1,
                Some(reason) => {
                    if inner.quarantine(area, name, &reason)? {
                        bad_files += 1;
                    } else {
                        gone += 1;
                    }
                }
            }
        }
        bad_here += bad_files;
        if bad_here > 0 {
            inner.sync_after_quarantine(area)?;
        }
        quarantined += bad_here;
        let good = todo.len().saturating_sub(gone + bad_files);
        counts.insert(state, good);
    }
    let corrupt_dir = inner.area_dir(Area::State(QueueState::Corrupt));
    let in_corrupt = read_names(&corrupt_dir)?
        .iter()
        .filter(|n| {
            // Every quarantined entry, whatever its name, but not the explanations beside
            // them (`.reason`) nor delivery records quarantined with their message.
            let n = n.to_string_lossy();
            !n.ends_with(super::quarantine::REASON_SUFFIX) && !n.contains(".record")
        })
        .count();
    inner.remove_orphan_records()?;
    counts.insert(QueueState::Corrupt, in_corrupt);
    *counts.entry(QueueState::Incoming).or_insert(0) += segments.resident;
    let report = RecoveryReport {
        counts,
        partials_removed,
        quarantined,
    };
    let c = |s| report.count(s);
    inner.events.emit(
        &catalog::SPOOL_RECOVERED,
        fields!(
            "dir" => inner.dir.display(),
            "incoming" => c(QueueState::Incoming),
            "active" => c(QueueState::Active),
            "deferred" => c(QueueState::Deferred),
            "hold" => c(QueueState::Hold),
            "poison" => c(QueueState::Poison),
            "corrupt" => c(QueueState::Corrupt),
            "partials_removed" => report.partials_removed,
            "quarantined" => report.quarantined,
        ),
    );
    Ok(report)
}

/// Returns (files removed, entries quarantined).
fn remove_partials(inner: &Inner) -> Result<(usize, usize), SpoolError> {
    let dir = inner.area_dir(Area::Tmp);
    let mut removed = 0;
    let mut quarantined = 0;
    for name in read_names(&dir)? {
        let path = dir.join(&name);
        let is_dir = path.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false);
        if is_dir {
            quarantined +=
                usize::from(inner.quarantine(Area::Tmp, &name, &CorruptReason::NotAFile)?);
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                removed += 1;
                inner.events.emit(
                    &catalog::SPOOL_PARTIAL_REMOVED,
                    fields!("file" => format!("tmp/{}", name.to_string_lossy())),
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SpoolError::io("remove partial write", path, e)),
        }
    }
    if quarantined > 0 {
        inner.sync_after_quarantine(Area::Tmp)?;
    }
    Ok((removed, quarantined))
}

/// Validates `todo` (names in `dir`) on a few threads. Returns the failures by index:
/// `None` when the file vanished, `Some(reason)` when it is corrupt.
fn verify_all(
    dir: &Path,
    todo: &[(OsString, QueueId)],
) -> Result<Vec<(usize, Option<CorruptReason>)>, SpoolError> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_WORKERS)
        .min(todo.len().max(1));
    let next = AtomicUsize::new(0);
    let abort = AtomicBool::new(false);
    let results: Vec<_> = std::thread::scope(|s| {
        // The calling thread is one worker; a helper that cannot be spawned is skipped.
        let helpers: Vec<_> = (1..workers)
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("tern-spool-recovery".into())
                    .spawn_scoped(s, || verify_worker(dir, todo, &next, &abort))
                    .ok()
            })
            .collect();
        let mut results = vec![Ok(verify_worker(dir, todo, &next, &abort))];
        results.extend(helpers.into_iter().map(|h| h.join()));
        results
    });
    let mut failures = Vec::new();
    for r in results {
        match r {
            Ok(Ok(mut f)) => failures.append(&mut f),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(SpoolError::BlockingTask(
                    "a spool recovery thread panicked".into(),
                ));
            }
        }
    }
    failures.sort_by_key(|(i, _)| *i);
    Ok(failures)
}

fn verify_worker(
    dir: &Path,
    todo: &[(OsString, QueueId)],
    next: &AtomicUsize,
    abort: &AtomicBool,
) -> Result<Vec<(usize, Option<CorruptReason>)>, SpoolError> {
    let mut buf = Vec::new();
    let mut failures = Vec::new();
    while !abort.load(Ordering::Relaxed) {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some((name, id)) = todo.get(i) else { break };
        let path = dir.join(name);
        match entry::verify(&path, *id, &mut buf) {
            Ok(()) => {}
            Err(EntryError::Vanished) => failures.push((i, None)),
            Err(EntryError::Corrupt(reason)) => failures.push((i, Some(reason))),
            Err(EntryError::Io(op, e)) => {
                abort.store(true, Ordering::Relaxed);
                return Err(SpoolError::io(op, path, e));
            }
        }
        // Do not keep a large scratch buffer alive after one big file.
        if buf.capacity() > 2 * 1024 * 1024 {
            buf = Vec::new();
        }
    }
    Ok(failures)
}
