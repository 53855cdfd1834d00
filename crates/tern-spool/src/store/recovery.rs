//! The scan at start: remove partial writes, validate every queued file, recover the
//! segments, check the other directories, quarantine what is bad or not Tern's, count
//! the rest.
//!
//! Order (each step relies on the ones before):
//! 1. `tmp/`: Tern's partial writes (regular `<id>`, `<id>.record`) are removed (event
//!    3002); anything else is quarantined.
//! 2. Names left twice by a move cut short keep one name (`lifecycle`); a different file
//!    under the same id is quarantined.
//! 3. Every state directory but `corrupt/`: names that are not queue ids, and entries
//!    that are not regular files (by `lstat`, never opened), are quarantined; the rest is
//!    read in full and checked (header, trailer, both checksums, envelope); bad files are
//!    quarantined (event 3003), never deleted.
//! 4. Segments (`segment`), knowing which messages have a *valid* file of their own.
//! 5. `records/` (`records`), `free/` (`recycle`), `alloc/`.
//!
//! A lazy open (a server that delivers) splits it: [`recover_foreground`] runs before the
//! listeners and does only what is bounded whatever the queue holds (1; 2 for the names
//! of `active/`; `free/`, `alloc/`; the list of the segments, the newest marked), and
//! [`recover_rest`] runs in the background while the server works (2 for the rest, 3
//! without `deferred/`, 4 for the segments listed at the start); `deferred/` and
//! `records/` are the deferred load's (`backlog`). See docs/SPOOL.md, "The start does
//! not wait for the spool".
//!
//! Invariants:
//! - Runs only under the spool lock. The eager recovery and the foreground part run
//!   before the spool handle exists, so nothing else writes the directories meanwhile.
//!   The background part runs beside the server: it leaves alone every message the
//!   process began since the start (`skip`/`fresh`) and every segment created since, and
//!   the queue touches no other message until it ends.
//! - A second scan finds nothing new.
//! - A quarantined message takes its record with it (`quarantine`), so removing orphan
//!   records never deletes the record of a message that still exists, in `corrupt/`.
//! - An I/O error that belongs to the system rather than to one file (see `entry`) stops
//!   the scan with an error instead of quarantining the queue.
//!
//! Cost: reads every byte of the queue once, plus one `lstat` per entry; validation runs
//! on a few threads (the work is I/O and CRC) with one reused buffer each, so memory
//! stays bounded with 100k files.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tern_events::{catalog, fields};

use crate::error::{CorruptReason, SpoolError};
use crate::id::QueueId;
use crate::state::QueueState;

use super::entry::{self, EntryError};
use super::key::SpoolKey;
use super::lifecycle::PRECEDENCE;
use super::sys::{self, EntryKind};
use super::{Area, Inner, RecoveryReport, name_to_id, read_names};

/// Most validation threads.
const MAX_WORKERS: usize = 4;

/// The states whose directories hold message files (all but `corrupt/`).
const MESSAGE_STATES: [QueueState; 5] = [
    QueueState::Incoming,
    QueueState::Active,
    QueueState::Deferred,
    QueueState::Hold,
    QueueState::Poison,
];

/// The eager recovery (`Spool::open`, `Spool::open_watched`): everything, in the order
/// of the module header. `already`: entries quarantined before (the spool's own tree,
/// see `layout`).
pub(crate) fn recover(inner: &Inner, already: usize) -> Result<RecoveryReport, SpoolError> {
    let (partials_removed, mut quarantined) = remove_partials(inner)?;
    quarantined += already;
    quarantined += inner.resolve_duplicates(&PRECEDENCE, &|_| false)?;
    let mut rest = recover_messages(inner, false, &|_| false, None, &|| true)?;
    quarantined += inner.recover_records(&mut rest.counts)?;
    quarantined += inner.load_free_pool()?;
    quarantined += check_placements(inner)?;
    let report = finish_report(
        inner,
        rest.counts,
        partials_removed + rest.partials,
        quarantined + rest.quarantined,
    )?;
    emit_recovered(inner, &report);
    Ok(report)
}

/// What a lazy open (`Spool::open_lazy`) leaves to [`recover_rest`].
#[derive(Debug)]
pub(crate) struct Pending {
    /// The segments there at the start (their names' ids): the only ones recovered
    /// later; the commit thread appends only to segments it creates.
    pub(crate) segments: HashSet<QueueId>,
    /// Unfinished writes removed before the listeners started.
    pub(crate) partials: usize,
    /// Entries quarantined before the listeners started.
    pub(crate) quarantined: usize,
}

/// The part of a lazy open that runs before the listeners start: only what is bounded
/// whatever the queue holds. `tmp/` (Tern's unfinished writes: new writes and spill
/// files use it at once), the names left twice by a move cut short that involve
/// `active/` (bounded by `queue.max_active_messages` and the suspects of earlier
/// crashes: the queue judges the crash evidence from `active/` before anything else),
/// `free/` (at most `MAX_FREE` files), `alloc/` (always empty), and the list of the
/// segments with the newest one marked (`Segments::prepare_background`). The report
/// counts no message.
pub(crate) fn recover_foreground(
    inner: &Inner,
    already: usize,
) -> Result<(RecoveryReport, Pending), SpoolError> {
    let (partials, mut quarantined) = remove_partials(inner)?;
    quarantined += already;
    quarantined += inner.resolve_duplicates(&[QueueState::Active], &|_| false)?;
    quarantined += inner.load_free_pool()?;
    quarantined += check_placements(inner)?;
    let segments = inner.segments.prepare_background()?;
    let counts = QueueState::ALL.into_iter().map(|s| (s, 0)).collect();
    let report = RecoveryReport {
        counts,
        partials_removed: partials,
        quarantined,
    };
    Ok((
        report,
        Pending {
            segments,
            partials,
            quarantined,
        },
    ))
}

/// What [`recover_rest`] found.
#[derive(Debug)]
pub(crate) struct Rest {
    /// The whole recovery's report (the foreground's part included).
    pub(crate) report: RecoveryReport,
    /// The messages in `incoming/` and resident in the segments recovered, by id.
    pub(crate) incoming: Vec<QueueId>,
    /// `go_on` said stop before the end.
    pub(crate) stopped: bool,
}

/// The rest of a lazy open's recovery, in the background while the server runs: the
/// names left twice in the other state directories, the full validation of `incoming/`,
/// `active/`, `hold/` and `poison/`, then the segments that were there at the start
/// (`pending.segments`). `fresh(id)`: messages this process made meanwhile, left alone
/// (they are the queue's, and were validated as they were written). `go_on` is asked
/// between steps; `false` stops (everything left is recovered at the next start).
pub(crate) fn recover_rest(
    inner: &Inner,
    pending: &Pending,
    fresh: &dyn Fn(QueueId) -> bool,
    go_on: &dyn Fn() -> bool,
) -> Result<Rest, SpoolError> {
    let listed: Vec<QueueState> = PRECEDENCE
        .into_iter()
        .filter(|s| *s != QueueState::Deferred)
        .collect();
    let mut quarantined = pending.quarantined;
    quarantined += inner.resolve_duplicates(&listed, fresh)?;
    if !go_on() {
        return Ok(Rest {
            report: finish_report(inner, BTreeMap::new(), pending.partials, quarantined)?,
            incoming: Vec::new(),
            stopped: true,
        });
    }
    let rest = recover_messages(inner, true, fresh, Some(&pending.segments), go_on)?;
    let report = finish_report(
        inner,
        rest.counts,
        pending.partials + rest.partials,
        quarantined + rest.quarantined,
    )?;
    if !rest.stopped {
        emit_recovered(inner, &report);
    }
    Ok(Rest {
        report,
        incoming: rest.incoming,
        stopped: rest.stopped,
    })
}

/// What [`recover_messages`] found.
struct Messages {
    counts: BTreeMap<QueueState, usize>,
    incoming: Vec<QueueId>,
    partials: usize,
    quarantined: usize,
    stopped: bool,
}

/// Steps 3 and 4 of the module header: the state directories (all but `deferred/` when
/// `lazy_deferred`), then the segments (`only`: those; `None`: all), knowing which
/// messages have a valid file of their own.
fn recover_messages(
    inner: &Inner,
    lazy_deferred: bool,
    skip: &dyn Fn(QueueId) -> bool,
    only: Option<&HashSet<QueueId>>,
    go_on: &dyn Fn() -> bool,
) -> Result<Messages, SpoolError> {
    let mut out = Messages {
        counts: BTreeMap::new(),
        incoming: Vec::new(),
        partials: 0,
        quarantined: 0,
        stopped: false,
    };
    let mut valid: HashSet<QueueId> = HashSet::new();
    for state in MESSAGE_STATES {
        if lazy_deferred && state == QueueState::Deferred {
            continue;
        }
        if !go_on() {
            out.stopped = true;
            return Ok(out);
        }
        let (good, bad) = validate_state(inner, state, skip)?;
        out.quarantined += bad;
        out.counts.insert(state, good.len());
        if state == QueueState::Incoming {
            out.incoming.extend(good.iter().copied());
        }
        valid.extend(good);
    }
    if !go_on() {
        out.stopped = true;
        return Ok(out);
    }
    // After the state directories: a segment's record counts as taken only when its
    // message has a valid file of its own (a directory or a damaged file named like it,
    // quarantined above, must not hide the segment's good copy). With `deferred/` not
    // validated yet, a resident id is looked up there and that one file verified.
    let deferred_dir = inner.area_dir(Area::State(QueueState::Deferred));
    let has_file = |id: QueueId| {
        valid.contains(&id)
            || (lazy_deferred
                && entry::verify(
                    &deferred_dir.join(id.to_string()),
                    id,
                    &mut Vec::new(),
                    inner.record_key(),
                )
                .is_ok())
    };
    let segments = inner.recover_segments(&has_file, only)?;
    out.partials += segments.partials;
    out.quarantined += segments.quarantined;
    *out.counts.entry(QueueState::Incoming).or_insert(0) +=
        segments.resident + segments.to_incoming;
    *out.counts.entry(QueueState::Hold).or_insert(0) += segments.to_hold;
    out.incoming.extend(segments.incoming_ids.iter().copied());
    match only {
        Some(segs) => out.incoming.extend(inner.segments.residents_in(segs)),
        None => out
            .incoming
            .extend(inner.segments.residents().into_iter().map(|(id, _)| id)),
    }
    out.incoming.sort_unstable();
    out.incoming.dedup();
    Ok(out)
}

/// The report: `counts` with every state, `corrupt/` counted from its names.
fn finish_report(
    inner: &Inner,
    mut counts: BTreeMap<QueueState, usize>,
    partials_removed: usize,
    quarantined: usize,
) -> Result<RecoveryReport, SpoolError> {
    for state in QueueState::ALL {
        counts.entry(state).or_insert(0);
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
    counts.insert(QueueState::Corrupt, in_corrupt);
    Ok(RecoveryReport {
        counts,
        partials_removed,
        quarantined,
    })
}

/// Event 3001 with the report's counts.
fn emit_recovered(inner: &Inner, report: &RecoveryReport) {
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
}

/// Why an entry of a directory that holds files of Tern's is unexpected, from `lstat`
/// (never opened): `None` for a regular file.
pub(crate) fn not_a_file(
    inner: &Inner,
    area: Area,
    name: &std::ffi::OsStr,
) -> Result<Option<String>, SpoolError> {
    let path = inner.area_dir(area).join(name);
    match sys::entry_kind(&path).map_err(|e| SpoolError::io("stat", &path, e))? {
        (EntryKind::File | EntryKind::Missing, _) => Ok(None),
        (kind, _) => Ok(Some(format!(
            "{} in {}/, not a regular file (it was not opened)",
            kind.describe(),
            area.rel()
        ))),
    }
}

/// Validates one state directory: quarantines names that are not queue ids, entries
/// that are not regular files (without opening them) and files that fail validation;
/// leaves the ids `skip` says alone. Returns (the valid files' ids, entries quarantined).
fn validate_state(
    inner: &Inner,
    state: QueueState,
    skip: &dyn Fn(QueueId) -> bool,
) -> Result<(Vec<QueueId>, usize), SpoolError> {
    let area = Area::State(state);
    let dir = inner.area_dir(area);
    let mut todo: Vec<(OsString, QueueId)> = Vec::new();
    let mut bad = 0;
    for name in read_names(&dir)? {
        if name_to_id(&name).is_some_and(skip) {
            continue;
        }
        let reason = match (name_to_id(&name), not_a_file(inner, area, &name)?) {
            (Some(id), None) => {
                todo.push((name, id));
                continue;
            }
            (_, Some(why)) => CorruptReason::UnexpectedEntry(why),
            (None, None) => CorruptReason::BadFileName(name.to_string_lossy().into()),
        };
        bad += usize::from(inner.quarantine(area, &name, &reason)?);
    }
    let failures = verify_all(&dir, &todo, inner.record_key())?;
    let mut failed = vec![false; todo.len()];
    let mut gone = 0;
    for (i, failure) in failures {
        let Some((name, _)) = todo.get(i) else {
            continue;
        };
        if let Some(f) = failed.get_mut(i) {
            *f = true;
        }
        match failure {
            None => gone += 1,
            Some(reason) => {
                if inner.quarantine(area, name, &reason)? {
                    bad += 1;
                } else {
                    gone += 1;
                }
            }
        }
    }
    let good: Vec<QueueId> = todo
        .iter()
        .zip(&failed)
        .filter(|(_, f)| !**f)
        .map(|((_, id), _)| *id)
        .collect();
    if bad > 0 {
        inner.sync_after_quarantine(area)?;
    }
    let _ = gone;
    Ok((good, bad))
}

/// `tmp/` at start: Tern's unfinished writes (`<id>`, `<id>.record`, regular files) are
/// removed (event 3002); anything else is quarantined. Returns (removed, quarantined).
fn remove_partials(inner: &Inner) -> Result<(usize, usize), SpoolError> {
    let dir = inner.area_dir(Area::Tmp);
    let mut removed = 0;
    let mut quarantined = 0;
    for name in read_names(&dir)? {
        let path = dir.join(&name);
        let ours = name
            .to_str()
            .map(|n| n.strip_suffix(".record").unwrap_or(n))
            .is_some_and(|n| QueueId::parse(n).is_ok());
        let reason = match (ours, not_a_file(inner, Area::Tmp, &name)?) {
            (_, Some(why)) => Some(CorruptReason::UnexpectedEntry(why)),
            (false, None) => Some(CorruptReason::UnexpectedEntry(format!(
                "{:?} is not a name Tern gives a write in progress",
                name.to_string_lossy()
            ))),
            (true, None) => None,
        };
        if let Some(reason) = reason {
            quarantined += usize::from(inner.quarantine(Area::Tmp, &name, &reason)?);
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

/// The placement directories are always empty (Tern only creates unnamed inodes there):
/// anything in them, and any name in `alloc/` other than `00`..`15`, is quarantined.
fn check_placements(inner: &Inner) -> Result<usize, SpoolError> {
    let mut quarantined = 0;
    let slots: Vec<String> = (0..super::PLACEMENTS).map(|n| format!("{n:02}")).collect();
    for name in read_names(&inner.area_dir(Area::Alloc))? {
        if slots.iter().any(|s| name.to_str() == Some(s.as_str())) {
            continue;
        }
        let reason = CorruptReason::UnexpectedEntry(format!(
            "{:?} in alloc/, which holds only the placement directories 00 to 15",
            name.to_string_lossy()
        ));
        quarantined += usize::from(inner.quarantine(Area::Alloc, &name, &reason)?);
    }
    for n in 0..super::PLACEMENTS {
        let area = Area::AllocSlot(u8::try_from(n).unwrap_or(0));
        let mut here = 0;
        for name in read_names(&inner.area_dir(area))? {
            let reason = CorruptReason::UnexpectedEntry(format!(
                "{:?} in {}/, a placement directory that is always empty",
                name.to_string_lossy(),
                area.rel()
            ));
            here += usize::from(inner.quarantine(area, &name, &reason)?);
        }
        if here > 0 {
            inner.sync_after_quarantine(area)?;
        }
        quarantined += here;
    }
    if quarantined > 0 {
        inner.sync_after_quarantine(Area::Alloc)?;
    }
    Ok(quarantined)
}

/// Validates `todo` (names in `dir`) on a few threads. Returns the failures by index:
/// `None` when the file vanished, `Some(reason)` when it is corrupt.
fn verify_all(
    dir: &Path,
    todo: &[(OsString, QueueId)],
    key: Option<&SpoolKey>,
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
                    .spawn_scoped(s, || verify_worker(dir, todo, &next, &abort, key))
                    .ok()
            })
            .collect();
        let mut results = vec![Ok(verify_worker(dir, todo, &next, &abort, key))];
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
    key: Option<&SpoolKey>,
) -> Result<Vec<(usize, Option<CorruptReason>)>, SpoolError> {
    let mut buf = Vec::new();
    let mut failures = Vec::new();
    while !abort.load(Ordering::Relaxed) {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some((name, id)) = todo.get(i) else { break };
        let path = dir.join(name);
        match entry::verify(&path, *id, &mut buf, key) {
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
