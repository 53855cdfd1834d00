//! The spool on disk: opening (lock + recovery), paths, listing and reading messages.
//!
//! Invariants:
//! - [`Inner::entry_path`] is the one function that turns a directory and a queue id into
//!   a path; [`Spool::path_of`] is its public face for queue states.
//! - At most one read-write [`Spool`] exists per directory, enforced by an exclusive
//!   `flock` on `spool.lock` held for the spool's lifetime (flock locks belong to the
//!   open file description, so a second `open` in the same process is refused too).
//! - Only a read-write spool changes the disk. A read-only spool never creates, moves or
//!   removes anything, so tools can run beside a live server.
//! - `queued` counts the files in incoming, active, deferred and hold: set by the scan at
//!   open, incremented by each commit's rename, decremented by each quarantine out of
//!   those states. After a lazy open it counts only new messages until the background
//!   recovery adds what it found (and the deferred load what it loads). For a read-only
//!   spool it is a snapshot taken at open.
//! - While a lazy open's recovery runs (`RECOVERY_RUNNING`), the ids `begin` hands out are
//!   noted in `fresh`, and nothing but the recovery quarantines an entry of another
//!   message (`Inner::may_quarantine`).
//! - `changes` only grows: it is raised when a commit, move or removal starts, after each
//!   step of it that a listing could see (a move's link), when it ends, and at each
//!   quarantine. Two equal readings around a listing therefore mean that no message
//!   appeared, moved or left while it read (see [`Spool::changes`]).
//!
//! Trust: every file read here is validated by `format` before use; names found in state
//! directories are parsed as queue ids before they are used as ids.
//!
//! Known race: a read-only spool lists while the server moves messages; a message moving
//! between states during a listing is listed once (in its new state) if both names were
//! seen, and may be missed if the listing read its new directory before the link and its
//! old one after the unlink.

pub(crate) mod adopt;
mod backlog;
mod batch;
mod body;
mod dirsync;
mod entry;
mod evidence;
mod handoff;
pub(crate) mod key;
mod layout;
mod lifecycle;
mod quarantine;
mod records;
mod recovery;
mod recycle;
mod resident;
mod segment;
#[allow(unsafe_code)]
pub(crate) mod sys;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{DirBuilder, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tern_events::EventLog;
use tern_watchdog::{Heartbeat, Kind, Watchdog};

use crate::envelope::Envelope;
use crate::error::SpoolError;
use crate::id::QueueId;
use crate::state::QueueState;

pub use adopt::{
    ADOPTED_FILE, AdoptMarker, AdoptOptions, AdoptReport, AdoptedMessage, NODE_FILE, SpoolNode,
    read_marker, read_node, remove_marker, write_node,
};
pub use backlog::{BacklogStep, DeferredEntry, DeferredLoad};
pub use body::{AsyncBodyReader, BODY_CHUNK, BodyError, BodyReader};
pub use evidence::{CrashEvidence, JournalRead, ProbeJournal};
pub use lifecycle::{DELETABLE, RELEASABLE};
pub use writer::MessageWriter;

use dirsync::DirSyncer;
use entry::EntryError;

/// Runs the segment scanner over `data` as one segment file (the fuzz target).
#[doc(hidden)]
pub(crate) fn segment_scan(data: &[u8]) {
    segment::scan_bytes_for_fuzzing(data);
}

/// Edits a genuine segment with `data` and checks the scanner's invariants (the
/// `spool_segment` fuzz target; panics on a violation).
#[doc(hidden)]
pub(crate) fn segment_edited(data: &[u8]) {
    segment::fuzz_edited_segment(data);
}

/// Name of the lock file inside the spool directory.
const LOCK_FILE: &str = "spool.lock";
/// Name of the directory for writes in progress.
const TMP_DIR: &str = "tmp";
/// Name of the directory of delivery records.
pub(crate) const RECORDS_DIR: &str = "records";
/// Name of the directory of recycled files (see `recycle`).
pub(crate) const FREE_DIR: &str = "free";
/// Most files kept for reuse.
pub(crate) const MAX_FREE: usize = 4096;

/// Free and total space of the filesystem holding the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    /// Bytes available to unprivileged users.
    pub available: u64,
    /// Size of the filesystem in bytes.
    pub total: u64,
}

/// What [`Spool::open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Valid messages per state after quarantine; `Corrupt` counts quarantined files
    /// (old and new), not their `.reason` files. Every state has an entry.
    pub counts: BTreeMap<QueueState, usize>,
    /// Unfinished writes removed from `tmp/`.
    pub partials_removed: usize,
    /// Entries moved to `corrupt/` by this scan.
    pub quarantined: usize,
}

impl RecoveryReport {
    /// The count for one state.
    pub fn count(&self, state: QueueState) -> usize {
        self.counts.get(&state).copied().unwrap_or(0)
    }
}

/// What [`Spool::finish_recovery`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FinishedRecovery {
    /// The whole recovery's counts (the part done at open included); `None` when there
    /// was nothing left to recover (an eager open, or a second call).
    pub report: Option<RecoveryReport>,
    /// The messages recovered in `incoming/` (files, and resident in the segments that
    /// were there at open), by id: for the queue to schedule.
    pub incoming: Vec<QueueId>,
    /// Asked to stop before the end: the rest waits for the next start.
    pub stopped: bool,
    /// How long it took.
    pub elapsed: std::time::Duration,
}

/// One message as listed by [`Spool::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedMessage {
    /// Its queue id.
    pub id: QueueId,
    /// The directory it is in.
    pub state: QueueState,
    /// The envelope; `None` for entries in `corrupt/` and, in read-only mode, for files
    /// that failed to decode (listed with state `Corrupt`).
    pub envelope: Option<Envelope>,
    /// Size of the whole file in bytes.
    pub file_size: u64,
}

/// A message read back in full by [`Spool::read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The validated envelope.
    pub envelope: Envelope,
    /// The content, byte-identical to what was written (checksum verified).
    pub body: Vec<u8>,
}

/// The start of a message, read by [`Spool::peek`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeekedMessage {
    /// The validated envelope.
    pub envelope: Envelope,
    /// Size of the whole file in bytes.
    pub file_size: u64,
    /// The first octets of the content (at most the limit given to `peek`).
    pub head: Vec<u8>,
}

/// How many fsyncs the write path has done, to show that group commit shares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncStats {
    /// `fdatasync` calls on message files (one per commit).
    pub file_syncs: u64,
    /// `fsync` calls on the `incoming/` directory (one per group of commits).
    pub dir_syncs: u64,
    /// `syncfs` calls of batch mode (each counts in `file_syncs` when it made a batch's
    /// data durable and in `dir_syncs` when it made a batch's names durable; one call
    /// can do both). Zero in per-file mode.
    pub fs_syncs: u64,
}

#[derive(Default)]
pub(crate) struct SyncCounters {
    pub(crate) file_syncs: AtomicU64,
    pub(crate) dir_syncs: AtomicU64,
    pub(crate) fs_syncs: AtomicU64,
}

/// A directory of the spool (see docs/SPOOL.md for what each may hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Area {
    /// The spool directory itself.
    Root,
    /// `tmp/`: writes in progress.
    Tmp,
    /// A queue state's directory.
    State(QueueState),
    /// `segments/`: shared files of messages committed in segment mode (`segment`).
    Segments,
    /// `records/`: delivery records.
    Records,
    /// `free/`: files kept for reuse (`recycle`).
    Free,
    /// `alloc/`: the placement directories' parent.
    Alloc,
    /// `alloc/NN`: one placement directory (always empty).
    AllocSlot(u8),
}

impl Area {
    /// The directory's path relative to the spool (empty for the spool itself).
    fn rel(self) -> String {
        match self {
            Area::Root => String::new(),
            Area::Tmp => TMP_DIR.into(),
            Area::State(s) => s.as_str().into(),
            Area::Segments => segment::SEGMENTS_DIR.into(),
            Area::Records => RECORDS_DIR.into(),
            Area::Free => FREE_DIR.into(),
            Area::Alloc => PLACEMENT_DIR.into(),
            Area::AllocSlot(n) => format!("{PLACEMENT_DIR}/{n:02}"),
        }
    }

    /// `<dir>/<name>` for people (`name` alone in the spool directory itself).
    pub(crate) fn show(self, name: &std::ffi::OsStr) -> String {
        match self {
            Area::Root => name.to_string_lossy().into_owned(),
            _ => format!("{}/{}", self.rel(), name.to_string_lossy()),
        }
    }

    /// Every subdirectory of the spool, parents before children, `corrupt/` first (the
    /// others are checked and quarantined into it).
    pub(crate) fn subdirectories() -> Vec<Area> {
        let mut v = vec![Area::State(QueueState::Corrupt), Area::Tmp];
        v.extend(
            QueueState::ALL
                .into_iter()
                .filter(|s| *s != QueueState::Corrupt)
                .map(Area::State),
        );
        v.extend([Area::Records, Area::Free, Area::Segments, Area::Alloc]);
        v.extend((0..PLACEMENTS as u8).map(Area::AllocSlot));
        v
    }
}

/// What only a read-write spool has.
struct Writable {
    incoming: DirSyncer,
    /// The batch-commit thread (`batch`), used while `Inner::batch_commit` is set.
    batch: batch::BatchCommitter,
    /// Group commit for the other state directories a message can move into, and for
    /// `records/` (see `lifecycle`).
    moves: BTreeMap<QueueState, DirSyncer>,
    records: DirSyncer,
    /// Stops the segment commit thread when the spool closes.
    _segment_thread: SegmentThread,
    /// Holds the flock; released when the last handle is dropped.
    _lock: File,
}

/// Stops the segment commit thread (`segment`) when dropped.
struct SegmentThread(Arc<segment::Segments>);

impl Drop for SegmentThread {
    fn drop(&mut self) {
        self.0.stop_committer();
    }
}

pub(crate) struct Inner {
    /// Absolute path of the spool directory.
    dir: PathBuf,
    events: EventLog,
    /// See the module header for what this counts. Shared with the batch-commit thread.
    queued: Arc<AtomicUsize>,
    /// See the module header for what this counts.
    changes: AtomicU64,
    counters: Arc<SyncCounters>,
    writable: Option<Writable>,
    /// Round-robin position over the placement directories.
    next_placement: AtomicUsize,
    /// Use O_TMPFILE when the filesystem has it (tests turn it off to exercise the
    /// `tmp/` + rename path that filesystems without it take).
    use_tmpfile: std::sync::atomic::AtomicBool,
    /// Files of delivered messages waiting to be reused (`free/<n>`). The mutex guards
    /// only this list and is never held across I/O or an await.
    free: std::sync::Mutex<Vec<PathBuf>>,
    /// Next `free/` name.
    next_free: AtomicU64,
    /// New messages are committed in batches (`batch`) instead of one by one.
    batch_commit: std::sync::atomic::AtomicBool,
    /// New messages are appended to segments (`segment`) instead of files of their own.
    segment_commit: std::sync::atomic::AtomicBool,
    /// Messages held in segments (`segment`), in every commit mode: a spool may hold
    /// segments from an earlier run in segment mode.
    segments: Arc<segment::Segments>,
    /// Opened with [`Spool::open_lazy`]: `deferred/` and `records/` wait for
    /// [`Spool::load_deferred`]. Set once, at open.
    lazy_deferred: bool,
    /// Where the recovery of a lazy open stands (`RECOVERY_*`).
    recovery: std::sync::atomic::AtomicU8,
    /// What a lazy open left to [`Spool::finish_recovery`]; taken by it, once. The mutex
    /// guards only the take.
    pending: std::sync::Mutex<Option<recovery::Pending>>,
    /// While the recovery runs in the background: the ids of the messages this process
    /// began (`Spool::begin`), which it leaves alone. `None` otherwise. The mutex is held
    /// for one insert or lookup, never with another lock, never across I/O.
    fresh: std::sync::Mutex<Option<std::collections::HashSet<QueueId>>>,
}

/// The recovery is complete (an eager open, or `finish_recovery` done).
const RECOVERY_DONE: u8 = 0;
/// A lazy open left part of it to `finish_recovery`, which has not ended yet.
const RECOVERY_RUNNING: u8 = 1;
/// `finish_recovery` failed or was stopped: what it did not do waits for the next start.
const RECOVERY_UNFINISHED: u8 = 2;

/// Directory under the spool holding the placement directories.
const PLACEMENT_DIR: &str = "alloc";
/// Number of placement directories (see [`Inner::placement_dir`]).
const PLACEMENTS: usize = 16;

impl Inner {
    /// Where the next message's unnamed inode is created. The placement directories
    /// `alloc/00` .. `alloc/15` stay empty: an O_TMPFILE inode is allocated in its
    /// directory's block group and can then be linked anywhere on the filesystem, so these
    /// directories only steer where inodes are allocated. Created under FS_TOPDIR_FL
    /// parents, each sits in its own fresh ext4 block group, where allocation does not scan
    /// a crowded inode table (measured in docs/BENCHMARKS.md). Round-robin spreads the
    /// messages over 16 groups.
    /// Whether new messages may use O_TMPFILE.
    pub(crate) fn use_tmpfile(&self) -> bool {
        self.use_tmpfile.load(Ordering::Relaxed)
    }

    pub(crate) fn placement_dir(&self) -> PathBuf {
        let n = self.next_placement.fetch_add(1, Ordering::Relaxed) % PLACEMENTS;
        self.dir.join(PLACEMENT_DIR).join(format!("{n:02}"))
    }

    pub(crate) fn area_dir(&self, area: Area) -> PathBuf {
        match area {
            Area::Root => self.dir.clone(),
            _ => self.dir.join(area.rel()),
        }
    }

    /// THE function that turns a directory and a queue id into a path.
    pub(crate) fn entry_path(&self, area: Area, id: QueueId) -> PathBuf {
        let mut p = self.area_dir(area);
        p.push(id.to_string());
        p
    }

    /// The key of delivery-record frames (absent in a read-only spool without a
    /// readable `spool.key`: frames are then not recognised).
    pub(crate) fn record_key(&self) -> Option<&key::SpoolKey> {
        self.segments.record_key()
    }

    pub(crate) fn is_writable(&self) -> bool {
        self.writable.is_some()
    }

    /// Counts one step of a change to the set of queued messages (module header).
    pub(crate) fn note_change(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// While the background recovery runs: a message this process began is left alone by
    /// it. No lock at all otherwise.
    fn note_fresh(&self, id: QueueId) {
        if self.recovery.load(Ordering::Acquire) == RECOVERY_RUNNING
            && let Some(set) = self
                .fresh
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_mut()
        {
            set.insert(id);
        }
    }

    /// Whether message `id` was begun by this process while the background recovery runs.
    fn is_fresh(&self, id: QueueId) -> bool {
        self.fresh
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_some_and(|set| set.contains(&id))
    }

    /// Whether entries of message `id` found bad may be quarantined now: always, except
    /// while the background recovery runs, for messages it has to judge itself (not
    /// this process's own).
    pub(crate) fn may_quarantine(&self, id: Option<QueueId>) -> bool {
        self.is_writable()
            && (self.recovery.load(Ordering::Acquire) != RECOVERY_RUNNING
                || id.is_some_and(|id| self.is_fresh(id)))
    }

    /// Takes one message off the queued count (saturating: never below zero).
    pub(crate) fn forget_queued(&self, state: QueueState) {
        self.note_change();
        if state.is_queued() {
            let _ = self
                .queued
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }
}

/// Counts a change when it starts ([`Noted::begin`]) and again when it ends (its
/// `Drop`, also on an error or a panic): see the module header.
pub(crate) struct Noted<'a>(&'a Inner);

impl<'a> Noted<'a> {
    pub(crate) fn begin(inner: &'a Inner) -> Noted<'a> {
        inner.note_change();
        Noted(inner)
    }
}

impl Drop for Noted<'_> {
    fn drop(&mut self) {
        self.0.note_change();
    }
}

/// How new messages are made durable (`spool.commit` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CommitMode {
    /// Each message on its own: `fdatasync` of its file, link, `fsync` of the file, and
    /// a group-committed fsync of `incoming/`. Touches nothing but Tern's files.
    File,
    /// Messages committed at the same time share two `syncfs` calls: far fewer disk cache
    /// flushes, but each batch also waits for whatever else is dirty on the spool's
    /// filesystem. For a spool on a filesystem of its own.
    Batch,
    /// Messages committed at the same time are appended to one shared segment file and
    /// share one `fdatasync` of it: no file, inode or directory entry per message until
    /// the queue takes the message out of `incoming` (see docs/SPOOL.md). Touches nothing
    /// but Tern's files. The default.
    #[default]
    Segment,
}

/// A handle to an open spool. Cheap to clone; all clones share one lock and one
/// group-commit thread, which end when the last clone (or writer) is dropped.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.inner.dir)
            .field("read_only", &!self.inner.is_writable())
            .field("queued", &self.queued())
            .finish()
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SpoolError + 'a {
    move |e| SpoolError::io(op, path, e)
}

/// Names in a directory; a missing directory reads as empty.
pub(crate) fn read_names(dir: &Path) -> Result<Vec<OsString>, SpoolError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(SpoolError::io("read directory", dir, e)),
    };
    let mut names = Vec::new();
    for entry in rd {
        names.push(entry.map_err(io_err("read directory", dir))?.file_name());
    }
    Ok(names)
}

/// The queue id a file name in a state directory stands for, if it is one.
pub(crate) fn name_to_id(name: &std::ffi::OsStr) -> Option<QueueId> {
    name.to_str().and_then(|s| QueueId::parse(s).ok())
}

impl Spool {
    /// Opens the spool for the server: creates the directories if needed, takes the
    /// exclusive lock (`SpoolError::Locked` if another process has it), removes partial
    /// writes from `tmp/` (event 3002 each), validates every file in every state directory
    /// except `corrupt/` in full and quarantines the invalid ones (event 3003 each), then
    /// emits event 3001 with the counts. Blocking; reads every byte of the queue.
    pub fn open(dir: &Path, events: EventLog) -> Result<(Spool, RecoveryReport), SpoolError> {
        Spool::open_watched(dir, events, None)
    }

    /// [`Spool::open`], with each group-commit thread (`incoming/`, the other state
    /// directories a message moves into, `records/`) registered with `watchdog` as a spool
    /// writer named `spool.sync.<directory>`: work waiting = commits waiting for the
    /// directory fsync, progress = one fsync. Report only (see `dirsync`).
    pub fn open_watched(
        dir: &Path,
        events: EventLog,
        watchdog: Option<&Watchdog>,
    ) -> Result<(Spool, RecoveryReport), SpoolError> {
        Spool::open_with(dir, events, watchdog, false)
    }

    /// [`Spool::open_watched`] for a server that delivers: before it returns, only what
    /// is bounded whatever the queue holds (the lock, the spool's own tree and key,
    /// `tmp/`, the names left twice that involve `active/`, `free/`, `alloc/`, and the
    /// list of the segments, the newest marked; see `recovery::recover_foreground`). The
    /// rest is left to [`Spool::finish_recovery`] (the names left twice elsewhere, the
    /// full validation of `incoming/`, `active/`, `hold/`, `poison/`, the segments that
    /// are there now) and `deferred/` and `records/` to [`Spool::load_deferred`]; the
    /// queue runs both in the background, in that order, while the listeners answer. New
    /// messages are appended to new segments only, never to one waiting for its recovery.
    /// The report counts no message; [`Spool::queued`] counts only new ones until the
    /// recovery has ended. Its cost no longer grows with what the spool holds: the
    /// listener can answer at once after a restart, even after kill -9.
    pub fn open_lazy(
        dir: &Path,
        events: EventLog,
        watchdog: Option<&Watchdog>,
    ) -> Result<(Spool, RecoveryReport), SpoolError> {
        Spool::open_with(dir, events, watchdog, true)
    }

    /// Whether a lazy open's recovery has not run yet ([`Spool::finish_recovery`]).
    pub fn recovery_pending(&self) -> bool {
        self.inner.recovery.load(Ordering::Acquire) == RECOVERY_RUNNING
    }

    /// Whether a lazy open's recovery failed or was stopped before its end.
    pub fn recovery_unfinished(&self) -> bool {
        self.inner.recovery.load(Ordering::Acquire) == RECOVERY_UNFINISHED
    }

    /// The rest of a lazy open's recovery ([`Spool::open_lazy`]), while the server runs:
    /// the names left twice by a move cut short (other than those found at open), every
    /// file of `incoming/`, `active/`, `hold/` and `poison/` validated in full and
    /// quarantined when bad, then the segments that were there at open recovered exactly
    /// as an eager start does (scanned, MACs checked, the unfinished tail of the one a
    /// crash left cut, damaged ones written out and quarantined, the rest sealed and
    /// indexed). Messages this process began meanwhile (new mail, bounces) are left
    /// alone: they are the queue's already. Then event 3001 with the counts, which join
    /// the queued count. Returns the ids in `incoming/` and resident in those segments:
    /// the caller (the queue) schedules them. `go_on` is asked between steps: `false`
    /// stops it (the rest is recovered at the next start; `stopped` is set). On an error
    /// or a stop, nothing more is done on the messages that were there at open: they
    /// wait on disk, untouched, for the next start. On a spool opened eagerly, or called
    /// a second time: an empty result. Blocking: run it on a blocking thread.
    pub fn finish_recovery(
        &self,
        go_on: &dyn Fn() -> bool,
    ) -> Result<FinishedRecovery, SpoolError> {
        let inner = &self.inner;
        let started = std::time::Instant::now();
        let pending = inner
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(pending) = pending else {
            return Ok(FinishedRecovery::default());
        };
        let fresh = |id: QueueId| inner.is_fresh(id);
        let result = recovery::recover_rest(inner, &pending, &fresh, go_on);
        let done = matches!(&result, Ok(r) if !r.stopped);
        if let Ok(r) = &result
            && done
        {
            let queued: usize = QueueState::QUEUED.iter().map(|s| r.report.count(*s)).sum();
            inner.queued.fetch_add(queued, Ordering::AcqRel);
        }
        inner.recovery.store(
            if done {
                RECOVERY_DONE
            } else {
                RECOVERY_UNFINISHED
            },
            Ordering::Release,
        );
        *inner
            .fresh
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        let r = result?;
        Ok(FinishedRecovery {
            report: Some(r.report),
            incoming: r.incoming,
            stopped: r.stopped,
            elapsed: started.elapsed(),
        })
    }

    fn open_with(
        dir: &Path,
        events: EventLog,
        watchdog: Option<&Watchdog>,
        lazy_deferred: bool,
    ) -> Result<(Spool, RecoveryReport), SpoolError> {
        let beat = |name: &str| {
            let name = format!("spool.sync.{name}");
            match watchdog {
                Some(w) => w.register(name, Kind::SpoolWriter),
                None => Heartbeat::detached(name, Kind::SpoolWriter),
            }
        };
        let dir = std::path::absolute(dir).map_err(io_err("resolve", dir))?;
        let mut builder = DirBuilder::new();
        builder.recursive(true).mode(0o700);
        builder
            .create(&dir)
            .map_err(io_err("create directory", &dir))?;
        layout::check_root(&dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let aside = layout::clear_lock_path(&dir)?;
        let mut lock = layout::open_lock(&dir)?;
        if !sys::try_lock_exclusive(&lock).map_err(io_err("lock", &lock_path))? {
            return Err(SpoolError::Locked);
        }
        // The pid is for the operator only; the flock is what excludes.
        let _ = lock
            .set_len(0)
            .and_then(|()| writeln!(lock, "{}", std::process::id()));
        // Before the queue directories exist: ask the filesystem to place each of them in a
        // fresh block group (ext4's FS_TOPDIR_FL), where allocating a message's inode does
        // not scan a crowded inode table. Best effort; see `sys::mark_top_directory`.
        sys::mark_top_directory(&dir);
        if sys::entry_kind(&dir.join(PLACEMENT_DIR))
            .map_err(io_err("stat", &dir))?
            .0
            == sys::EntryKind::Missing
        {
            // Created first, so that it is marked before its placement directories exist.
            DirBuilder::new()
                .mode(0o700)
                .create(dir.join(PLACEMENT_DIR))
                .map_err(io_err("create directory", &dir))?;
            sys::mark_top_directory(&dir.join(PLACEMENT_DIR));
        }
        let mut set_aside = layout::check_dirs(&dir, &events, aside)?;
        layout::report_unknown(&dir, &events)?;
        let (key, key_set_aside) = key::open_or_create(&dir, &events)?;
        set_aside += usize::from(key_set_aside);
        let segments_dir = dir.join(segment::SEGMENTS_DIR);
        let records_dir = dir.join(RECORDS_DIR);
        sys::sync_dir(&dir).map_err(io_err("fsync directory", &dir))?;
        let counters = Arc::new(SyncCounters::default());
        let incoming_dir = dir.join(QueueState::Incoming.as_str());
        let incoming = DirSyncer::start(
            incoming_dir.clone(),
            Arc::clone(&counters),
            beat(QueueState::Incoming.as_str()),
        )
        .map_err(io_err("start directory syncer", &incoming_dir))?;
        let mut moves = BTreeMap::new();
        for state in [
            QueueState::Active,
            QueueState::Deferred,
            QueueState::Hold,
            QueueState::Poison,
        ] {
            let p = dir.join(state.as_str());
            let syncer = DirSyncer::start(p.clone(), Arc::clone(&counters), beat(state.as_str()))
                .map_err(io_err("start directory syncer", &p))?;
            moves.insert(state, syncer);
        }
        let records = DirSyncer::start(
            records_dir.clone(),
            Arc::clone(&counters),
            beat(RECORDS_DIR),
        )
        .map_err(io_err("start directory syncer", &records_dir))?;
        let queued = Arc::new(AtomicUsize::new(0));
        let fs = File::open(&dir).map_err(io_err("open", &dir))?;
        let batch = batch::BatchCommitter::start(fs, Arc::clone(&counters), Arc::clone(&queued))
            .map_err(io_err("start commit thread", &dir))?;
        let segments = Arc::new(segment::Segments::new(&dir));
        segments.set_key(key);
        let inner = Inner {
            segments: Arc::clone(&segments),
            segment_commit: std::sync::atomic::AtomicBool::new(false),
            dir,
            events,
            queued,
            changes: AtomicU64::new(0),
            counters,
            writable: Some(Writable {
                incoming,
                batch,
                moves,
                records,
                _segment_thread: SegmentThread(Arc::clone(&segments)),
                _lock: lock,
            }),
            next_placement: AtomicUsize::new(0),
            use_tmpfile: std::sync::atomic::AtomicBool::new(true),
            free: std::sync::Mutex::new(Vec::new()),
            next_free: AtomicU64::new(0),
            batch_commit: std::sync::atomic::AtomicBool::new(false),
            lazy_deferred,
            recovery: std::sync::atomic::AtomicU8::new(RECOVERY_DONE),
            pending: std::sync::Mutex::new(None),
            fresh: std::sync::Mutex::new(None),
        };
        let report = if lazy_deferred {
            let (report, pending) = recovery::recover_foreground(&inner, set_aside)?;
            *inner
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(pending);
            *inner
                .fresh
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(std::collections::HashSet::new());
            inner.recovery.store(RECOVERY_RUNNING, Ordering::Release);
            report
        } else {
            recovery::recover(&inner, set_aside)?
        };
        segments
            .start_committer(
                Arc::clone(&inner.counters),
                Arc::clone(&inner.queued),
                inner.events.clone(),
            )
            .map_err(io_err("start segment thread", &segments_dir))?;
        let queued = QueueState::QUEUED.iter().map(|s| report.count(*s)).sum();
        inner.queued.store(queued, Ordering::Release);
        Ok((
            Spool {
                inner: Arc::new(inner),
            },
            report,
        ))
    }

    /// How new messages are made durable: one by one (`fdatasync`, link, `fsync`, group
    /// fsync of `incoming/`; the default) or in batches (`syncfs` twice per batch, see
    /// `batch`). Takes effect for commits that start afterwards.
    pub fn set_commit_mode(&self, mode: CommitMode) {
        self.inner
            .batch_commit
            .store(mode == CommitMode::Batch, Ordering::Relaxed);
        self.inner
            .segment_commit
            .store(mode == CommitMode::Segment, Ordering::Relaxed);
    }

    /// Makes new messages take the `tmp/` + rename path, as on a filesystem without
    /// O_TMPFILE (tests).
    #[cfg(test)]
    pub(crate) fn disable_tmpfile(&self) {
        self.inner
            .use_tmpfile
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Opens the spool for tools: no lock, no changes to disk, safe beside a running
    /// server. `queued()` is a count of file names taken now, without validation.
    pub fn open_read_only(dir: &Path) -> Result<Spool, SpoolError> {
        let dir = std::path::absolute(dir).map_err(io_err("resolve", dir))?;
        let meta = std::fs::metadata(&dir).map_err(io_err("open", &dir))?;
        if !meta.is_dir() {
            return Err(SpoolError::io(
                "open",
                &dir,
                io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            ));
        }
        let segments = Arc::new(segment::Segments::new(&dir));
        let inner = Inner {
            segments: Arc::clone(&segments),
            segment_commit: std::sync::atomic::AtomicBool::new(false),
            dir,
            events: EventLog::discard(),
            queued: Arc::new(AtomicUsize::new(0)),
            changes: AtomicU64::new(0),
            counters: Arc::new(SyncCounters::default()),
            writable: None,
            next_placement: AtomicUsize::new(0),
            use_tmpfile: std::sync::atomic::AtomicBool::new(true),
            free: std::sync::Mutex::new(Vec::new()),
            next_free: AtomicU64::new(0),
            batch_commit: std::sync::atomic::AtomicBool::new(false),
            lazy_deferred: false,
            recovery: std::sync::atomic::AtomicU8::new(RECOVERY_DONE),
            pending: std::sync::Mutex::new(None),
            fresh: std::sync::Mutex::new(None),
        };
        let mut queued = 0;
        for state in QueueState::QUEUED {
            let names = read_names(&inner.area_dir(Area::State(state)))?;
            queued += names.iter().filter(|n| name_to_id(n).is_some()).count();
        }
        let ids = inner.file_ids()?;
        let has_file = |id| ids.contains(&id);
        if let Ok(key::Loaded::Key(k)) = key::load(&inner.dir) {
            segments.set_key(k);
        }
        let (scanned, _) = segments.scan_all(&has_file, false, None)?;
        segments.load_read_only(scanned);
        queued += segments.resident_count();
        inner.queued.store(queued, Ordering::Release);
        Ok(Spool {
            inner: Arc::new(inner),
        })
    }

    /// The process id of the server that holds the spool's lock, or `None` when no process
    /// holds it (no server running). Takes the lock for a moment when it is free, so it
    /// must not be called by the server itself.
    pub fn lock_holder(dir: &Path) -> Result<Option<u32>, SpoolError> {
        let path = dir.join(LOCK_FILE);
        // Never through a link, never blocking on a FIFO: no server locks such a thing.
        let Some(mut file) = layout::open_lock_read(dir)? else {
            return Ok(None);
        };
        if sys::try_lock_exclusive(&file).map_err(io_err("lock", &path))? {
            // Free: nobody serves this spool. Dropping the file releases the lock.
            return Ok(None);
        }
        let mut text = String::new();
        std::io::Read::take(&mut file, 64)
            .read_to_string(&mut text)
            .map_err(io_err("read", &path))?;
        Ok(text.trim().parse().ok())
    }

    /// Starts a new message and allocates its queue id. Does no I/O.
    pub fn begin(&self) -> MessageWriter {
        let id = QueueId::generate();
        self.inner.note_fresh(id);
        MessageWriter::new(Arc::clone(&self.inner), id)
    }

    /// Messages in incoming, active, deferred and hold. O(1): an atomic read.
    pub fn queued(&self) -> usize {
        self.inner.queued.load(Ordering::Acquire)
    }

    /// A count that grows whenever a message is committed, moved between states,
    /// removed or quarantined by this process: raised when each such change starts,
    /// after each step of it a listing could see, and when it ends. Read it before and
    /// after a walk over several states ([`Spool::list`] per state): equal readings mean
    /// nothing appeared, moved or left meanwhile, so the walk saw one consistent queue;
    /// different readings mean a message may have been seen twice (in the state it left
    /// and the one it entered) or not at all. A read-only spool never changes it (it
    /// cannot see the server's changes: its walks are always to be taken as
    /// approximate). O(1): an atomic read.
    pub fn changes(&self) -> u64 {
        self.inner.changes.load(Ordering::Acquire)
    }

    /// The ids of the messages in `state` now, from the directory's file names only
    /// (no file is read), in id order (the time each message's transaction began). For
    /// `incoming`, only messages with a file of their own (not those resident in a
    /// segment); `corrupt` is not a list of ids (`Err` `ReadOnly` is never returned for
    /// it: it answers an empty list). Blocking.
    pub fn ids(&self, state: QueueState) -> Result<Vec<QueueId>, SpoolError> {
        if state == QueueState::Corrupt {
            return Ok(Vec::new());
        }
        let mut ids: Vec<QueueId> = read_names(&self.inner.area_dir(Area::State(state)))?
            .iter()
            .filter_map(|n| name_to_id(n))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Messages in `state` now, counted from the directory's file names (queue ids;
    /// in `corrupt/`, quarantined files without their `.reason` and `.record` files).
    /// Reads no file: cheap enough for every metrics scrape. A message caught in the
    /// middle of a move can count in two states for that moment. Blocking.
    pub fn count(&self, state: QueueState) -> Result<usize, SpoolError> {
        let names = read_names(&self.inner.area_dir(Area::State(state)))?;
        let n = if state == QueueState::Corrupt {
            names
                .iter()
                .filter(|n| quarantine::quarantined_id(n).is_some())
                .count()
        } else {
            names.iter().filter(|n| name_to_id(n).is_some()).count()
        };
        if state == QueueState::Incoming {
            return Ok(n + self.inner.segments.resident_count());
        }
        Ok(n)
    }

    /// The path of message `id` in `state`.
    pub fn path_of(&self, state: QueueState, id: QueueId) -> PathBuf {
        self.inner.entry_path(Area::State(state), id)
    }

    /// Where message `id` in `state` is stored, for people: its file's path, or, for a
    /// message resident in a segment, `<spool>/segments/<segment> at offset N`.
    pub fn location(&self, state: QueueState, id: QueueId) -> String {
        if state == QueueState::Incoming
            && let Some(r) = self.inner.segments.lookup(id)
        {
            return r.loc.describe(&self.inner.dir);
        }
        self.path_of(state, id).display().to_string()
    }

    /// The spool directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Whether this handle came from [`Spool::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        !self.inner.is_writable()
    }

    /// Free and total bytes of the filesystem holding the spool (statvfs).
    pub fn disk_space(&self) -> io::Result<DiskSpace> {
        sys::disk_space(&self.inner.dir)
    }

    /// File and directory syncs done by commits since open.
    pub fn sync_stats(&self) -> SyncStats {
        SyncStats {
            file_syncs: self.inner.counters.file_syncs.load(Ordering::Relaxed),
            dir_syncs: self.inner.counters.dir_syncs.load(Ordering::Relaxed),
            fs_syncs: self.inner.counters.fs_syncs.load(Ordering::Relaxed),
        }
    }

    /// Reads and fully validates one message. Blocking. In read-write mode a corrupt file
    /// is quarantined (event 3003) before `SpoolError::Corrupt` is returned.
    pub fn read(&self, state: QueueState, id: QueueId) -> Result<StoredMessage, SpoolError> {
        if state == QueueState::Incoming
            && let Some(r) = self.inner.segments.lookup(id)
        {
            let blob = self.inner.read_resident(&r)?;
            return match crate::format::decode(&blob, Some(id)) {
                Ok(d) => Ok(StoredMessage {
                    envelope: d.envelope,
                    body: d.content.to_vec(),
                }),
                Err(reason) => {
                    if self.inner.may_quarantine(Some(id)) {
                        self.inner.quarantine_resident(id, &blob, &reason)?;
                    }
                    Err(SpoolError::Corrupt(reason))
                }
            };
        }
        let path = self.path_of(state, id);
        let result = entry::read_full(&path, id, self.inner.record_key());
        self.entry_result(state, id, path, result)
    }

    /// Reads and validates the envelope and streams the content through `visit`, in
    /// pieces of at most 256 KiB, checking the content's checksum at the end: the
    /// message task's load, which never holds the content. Blocking. A corrupt file is
    /// quarantined (event 3003) as by [`Spool::read`], and `SpoolError::Corrupt`
    /// returned; `visit` may have seen some or all of the content by then, so a caller
    /// acts on what it learned only after `Ok`. Files only: not for a message resident in
    /// a segment (`incoming`), which is [`Spool::read`] instead.
    pub fn scan(
        &self,
        state: QueueState,
        id: QueueId,
        visit: &mut dyn FnMut(&[u8]),
    ) -> Result<Envelope, SpoolError> {
        let path = self.path_of(state, id);
        let mut buf = Vec::new();
        let result = entry::scan(&path, id, &mut buf, visit, self.inner.record_key());
        self.entry_result(state, id, path, result)
    }

    /// Opens the content of a message stored as a file for streaming, checked as it is
    /// read (see [`BodyReader`]). Blocking: an open and two positioned reads. A file whose
    /// header or trailer is bad is `SpoolError::Corrupt` and quarantined as by
    /// [`Spool::read`]. Files only (a delivery reads `active/<id>`).
    pub fn open_body(&self, state: QueueState, id: QueueId) -> Result<BodyReader, SpoolError> {
        let path = self.path_of(state, id);
        let result = entry::open_content(&path, id, self.inner.record_key());
        self.entry_result(state, id, path, result)
    }

    /// A scratch file for a transformed copy of a message that is too large to hold in
    /// memory (the 7-bit conversion; DKIM signing later): created in the spool's private
    /// `tmp/` (mode 0700, Tern's own), mode 0600, as an unnamed O_TMPFILE inode, so it
    /// disappears when the file is closed and when the process dies. Where the
    /// filesystem lacks O_TMPFILE it gets a fresh queue id as its name (created with
    /// `O_EXCL | O_NOFOLLOW`) and the name is removed at once; a crash between the two
    /// leaves a file that the next start removes with the other partial writes (event
    /// 3002). Blocking. Read-write spools only.
    pub fn spill_file(&self) -> Result<File, SpoolError> {
        if !self.inner.is_writable() {
            return Err(SpoolError::ReadOnly);
        }
        use std::os::unix::fs::PermissionsExt;
        let dir = self.inner.area_dir(Area::Tmp);
        let f = match sys::create_scratch(&dir) {
            Ok(Some(f)) => f,
            Ok(None) => {
                let path = self.inner.entry_path(Area::Tmp, QueueId::generate());
                let f = sys::create_new_rw(&path)
                    .map_err(|e| SpoolError::io("create", path.clone(), e))?;
                std::fs::remove_file(&path).map_err(|e| SpoolError::io("unlink", path, e))?;
                f
            }
            Err(e) => return Err(SpoolError::io("create spill file in", dir, e)),
        };
        // Exactly 0600 whatever the umask took away.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| SpoolError::io("chmod spill file in", dir, e))?;
        Ok(f)
    }

    /// Maps an entry read's error, quarantining a corrupt file in read-write mode.
    fn entry_result<T>(
        &self,
        state: QueueState,
        id: QueueId,
        path: PathBuf,
        result: Result<T, EntryError>,
    ) -> Result<T, SpoolError> {
        match result {
            Ok(v) => Ok(v),
            Err(EntryError::Vanished) => Err(SpoolError::NotFound),
            Err(EntryError::Io(op, e)) => Err(SpoolError::io(op, path, e)),
            Err(EntryError::Corrupt(reason)) => {
                if self.inner.may_quarantine(Some(id)) && state != QueueState::Corrupt {
                    let name = OsString::from(id.to_string());
                    if self.inner.quarantine(Area::State(state), &name, &reason)? {
                        self.inner.sync_after_quarantine(Area::State(state))?;
                        self.inner.forget_queued(state);
                    }
                }
                Err(SpoolError::Corrupt(reason))
            }
        }
    }

    /// Reads the envelope and at most `max_head` octets from the start of the content of
    /// one message, without reading the rest (an operator's view of its header section).
    /// The content checksum is not verified, so nothing is quarantined for it; a file
    /// whose layout or envelope is bad is `SpoolError::Corrupt` (left where it is: the
    /// queue quarantines it when it loads it). Blocking: three positioned reads.
    pub fn peek(
        &self,
        state: QueueState,
        id: QueueId,
        max_head: usize,
    ) -> Result<PeekedMessage, SpoolError> {
        if state == QueueState::Incoming
            && let Some(r) = self.inner.segments.lookup(id)
        {
            let blob = self.inner.read_resident(&r)?;
            let d = crate::format::decode(&blob, Some(id)).map_err(SpoolError::Corrupt)?;
            return Ok(PeekedMessage {
                head: d.content[..d.content.len().min(max_head)].to_vec(),
                envelope: d.envelope,
                file_size: r.loc.len(),
            });
        }
        let path = self.path_of(state, id);
        match entry::read_head(&path, id, max_head, self.inner.record_key()) {
            Ok((envelope, file_size, head)) => Ok(PeekedMessage {
                envelope,
                file_size,
                head,
            }),
            Err(EntryError::Vanished) => Err(SpoolError::NotFound),
            Err(EntryError::Io(op, e)) => Err(SpoolError::io(op, path, e)),
            Err(EntryError::Corrupt(reason)) => Err(SpoolError::Corrupt(reason)),
        }
    }

    /// Lists messages with their envelopes, reading only the trailer and envelope of each
    /// file. `None` lists every state including poison and corrupt. Blocking.
    ///
    /// Entries in `corrupt/` are listed with envelope `None` (names that are not a queue
    /// id, optionally followed by `.N`, are skipped). A file that fails to decode is, in
    /// read-write mode, quarantined (event 3003) and omitted; in read-only mode, and for a
    /// message the background recovery of a lazy open has yet to judge, listed as
    /// `Corrupt` with envelope `None` and left in place. Sorted by id, then state.
    pub fn list(&self, state: Option<QueueState>) -> Result<Vec<ListedMessage>, SpoolError> {
        let states: Vec<QueueState> = match state {
            Some(s) => vec![s],
            None => QueueState::ALL.to_vec(),
        };
        let mut out = Vec::new();
        for st in states {
            if st == QueueState::Corrupt {
                self.list_corrupt(&mut out)?;
            } else {
                self.list_state(st, &mut out)?;
            }
        }
        out.sort_by_key(|m| (m.id, m.state));
        // A message caught in the middle of a move (link, sync, unlink) is under two
        // names for a moment: list it once, in the state it is moving to (the later
        // state, as recovery decides). Quarantined copies are listed beside it.
        out.reverse();
        out.dedup_by(|later, kept| {
            later.id == kept.id
                && later.state != QueueState::Corrupt
                && kept.state != QueueState::Corrupt
        });
        out.reverse();
        Ok(out)
    }

    fn list_state(&self, st: QueueState, out: &mut Vec<ListedMessage>) -> Result<(), SpoolError> {
        let area = Area::State(st);
        let mut quarantined = false;
        for name in read_names(&self.inner.area_dir(area))? {
            let Some(id) = name_to_id(&name) else {
                if self.inner.may_quarantine(None) {
                    let reason = crate::CorruptReason::BadFileName(name.to_string_lossy().into());
                    quarantined |= self.inner.quarantine(area, &name, &reason)?;
                }
                continue;
            };
            let path = self.inner.entry_path(area, id);
            match entry::read_envelope(&path, id, self.inner.record_key()) {
                Ok((envelope, file_size)) => out.push(ListedMessage {
                    id,
                    state: st,
                    envelope: Some(envelope),
                    file_size,
                }),
                Err(EntryError::Vanished) => {}
                Err(EntryError::Io(op, e)) => return Err(SpoolError::io(op, path, e)),
                Err(EntryError::Corrupt(reason)) if self.inner.may_quarantine(Some(id)) => {
                    if self.inner.quarantine(area, &name, &reason)? {
                        self.inner.forget_queued(st);
                        quarantined = true;
                    }
                }
                Err(EntryError::Corrupt(_)) => out.push(ListedMessage {
                    id,
                    state: QueueState::Corrupt,
                    envelope: None,
                    file_size: path.symlink_metadata().map(|m| m.len()).unwrap_or(0),
                }),
            }
        }
        if quarantined {
            self.inner.sync_after_quarantine(area)?;
        }
        if st == QueueState::Incoming {
            self.list_residents(out)?;
        }
        Ok(())
    }

    /// The messages resident in segments (state `incoming`), for `list`.
    fn list_residents(&self, out: &mut Vec<ListedMessage>) -> Result<(), SpoolError> {
        for (id, r) in self.inner.segments.residents() {
            let blob = match self.inner.read_resident(&r) {
                Ok(b) => b,
                // Written out or removed meanwhile: listed from its file, or gone.
                Err(SpoolError::NotFound) => continue,
                Err(e) => return Err(e),
            };
            match crate::format::decode(&blob, Some(id)) {
                Ok(d) => out.push(ListedMessage {
                    id,
                    state: QueueState::Incoming,
                    envelope: Some(d.envelope),
                    file_size: r.loc.len(),
                }),
                Err(reason) if self.inner.may_quarantine(Some(id)) => {
                    self.inner.quarantine_resident(id, &blob, &reason)?;
                }
                Err(_) => out.push(ListedMessage {
                    id,
                    state: QueueState::Corrupt,
                    envelope: None,
                    file_size: r.loc.len(),
                }),
            }
        }
        Ok(())
    }

    fn list_corrupt(&self, out: &mut Vec<ListedMessage>) -> Result<(), SpoolError> {
        let dir = self.inner.area_dir(Area::State(QueueState::Corrupt));
        for name in read_names(&dir)? {
            let Some(id) = quarantine::quarantined_id(&name) else {
                continue;
            };
            let file_size = dir.join(&name).symlink_metadata().map(|m| m.len());
            if let Ok(file_size) = file_size {
                out.push(ListedMessage {
                    id,
                    state: QueueState::Corrupt,
                    envelope: None,
                    file_size,
                });
            }
        }
        Ok(())
    }
}
