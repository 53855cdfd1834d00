//! Adoption: a running spool takes over another node's spool (`tern spool adopt`,
//! docs/cluster/adopt.md), and the two small files that fence a spool that was adopted.
//!
//! Files in a spool directory (mode 0600, written atomically: tmp, fsync, rename, fsync):
//! - `node`: the cluster node that runs on this spool, `{"name": "...", "id": N}`,
//!   written by a cluster node at each start ([`write_node`]), read by the adopter to
//!   know whose spool it takes over ([`read_node`]).
//! - `adopted`: the fence marker ([`AdoptMarker`]), written by the adopter before it
//!   moves anything; a server refuses to start on a spool that has one ([`read_marker`]).
//!
//! Invariants of [`Spool::adopt`]:
//! - The foreign spool is opened read-write ([`Spool::open`]): its `flock` is held for the
//!   whole adoption (a live node holding it makes the adoption fail with
//!   `SpoolError::Locked`, and its node cannot start on it meanwhile), and it is
//!   recovered exactly as a start would do it, under its own key (the segments a kill
//!   left, names left twice, every file validated, damaged ones quarantined there).
//! - The marker is durable in the foreign spool before the first message moves.
//! - A message is written here durably, in its state, with its record re-authenticated
//!   under THIS spool's key (one file in `tmp/`, `fdatasync`ed, linked into its state
//!   directory, the directory fsynced) before it is removed there. A kill between the two
//!   leaves it in both spools: a rerun finds it here already (same id: the same message,
//!   ids are unique in a cluster) and only removes it there. A kill before the link
//!   leaves a partial `tmp/<id>`, removed at the next start like any unfinished write.
//! - Messages that were `active` there crashed with their node: their crash count goes
//!   up by one (as a start counts them) and they land in `deferred/`, due at once, or in
//!   `poison/` at the threshold.
//! - `corrupt/` entries are copied into this spool's `corrupt/` under their own names
//!   (never read as mail, never replacing a name taken here), then removed there; those
//!   that cannot be copied stay there.
//! - Nothing is logged per message here; the caller emits one event per adoption.
//!
//! Trust: the foreign spool is another node's disk: its files are validated by the
//! same recovery and readers as this spool's own; `node` and `adopted` are read bounded
//! (4 KiB), without following links, and parsed strictly.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use tern_events::EventLog;

use crate::error::SpoolError;
use crate::id::QueueId;
use crate::record::{self, DeliveryRecord};
use crate::state::QueueState;

use super::{Area, RecoveryReport, Spool, read_names, sys};

/// Name of the node file in a spool directory.
pub const NODE_FILE: &str = "node";
/// Name of the adoption marker in a spool directory.
pub const ADOPTED_FILE: &str = "adopted";
/// Most bytes read from `node` or `adopted`.
const SMALL_FILE_MAX: u64 = 4096;
/// Longest node name kept from a foreign file.
const NAME_MAX: usize = 63;

/// The states messages are adopted from, in order (`incoming` last: the ones the dead
/// node had not started on).
const ADOPTED_STATES: [QueueState; 5] = [
    QueueState::Active,
    QueueState::Deferred,
    QueueState::Hold,
    QueueState::Poison,
    QueueState::Incoming,
];

/// The cluster node that runs on a spool (its `node` file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolNode {
    /// The node's name (`cluster.node_name`).
    pub name: String,
    /// The node's number (`cluster.node_id`).
    pub id: u16,
}

/// The fence marker left in an adopted spool (its `adopted` file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdoptMarker {
    /// The node that adopted it (its name, or its host name outside a cluster).
    pub by: String,
    /// When the adoption started, microseconds since the Unix epoch.
    pub at_micros: i64,
    /// The node whose spool it was, when its `node` file said.
    #[serde(default)]
    pub node: Option<String>,
}

/// The hook of [`AdoptOptions::fenced`].
pub type FenceHook = Arc<dyn Fn(Option<&SpoolNode>) + Send + Sync>;
/// The hook of [`AdoptOptions::fault`] (tests).
pub type FaultHook = Arc<dyn Fn(&'static str) -> Result<(), SpoolError> + Send + Sync>;

/// What [`Spool::adopt`] is told.
#[derive(Clone, Default)]
pub struct AdoptOptions {
    /// This node's name, written in the marker.
    pub by: String,
    /// Crash count at which a message is poisoned (`queue.poison_threshold`).
    pub poison_threshold: u32,
    /// Called once the foreign spool is locked and its marker durable, before any
    /// message moves, with its node (from its `node` file): the caller records the fence
    /// elsewhere (the cluster's Redis). Blocking is fine: this runs on the caller's
    /// blocking thread.
    pub fenced: Option<FenceHook>,
    /// Tests only: called at each step ("marker", "placed", "removed", "corrupt"); an
    /// `Err` stops the adoption there, as a kill would (nothing undone).
    #[doc(hidden)]
    pub fault: Option<FaultHook>,
}

impl std::fmt::Debug for AdoptOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdoptOptions")
            .field("by", &self.by)
            .field("poison_threshold", &self.poison_threshold)
            .field("fenced", &self.fenced.is_some())
            .finish_non_exhaustive()
    }
}

/// One adopted message, for the queue to schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptedMessage {
    /// Its queue id (unchanged).
    pub id: QueueId,
    /// The state it was in there.
    pub from: QueueState,
    /// The state it is in here.
    pub state: QueueState,
    /// Its next attempt (deferred), microseconds since the Unix epoch; `None`: now.
    pub next_attempt_micros: Option<i64>,
    /// It was here already (written by an interrupted adoption, removed there now): the
    /// queue may not know it yet.
    pub again: bool,
}

/// What [`Spool::adopt`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptReport {
    /// The foreign spool (absolute).
    pub from: PathBuf,
    /// Its node, from its `node` file (`None` when it had none or a bad one).
    pub node: Option<SpoolNode>,
    /// What its recovery found (before anything moved).
    pub recovery: RecoveryReport,
    /// Messages adopted, per state they were in there.
    pub counts: BTreeMap<QueueState, usize>,
    /// Messages found here already (the repeat of an interrupted adoption): removed
    /// there only.
    pub already_here: usize,
    /// `active` messages counted as crashed (poisoned ones included).
    pub crashed: usize,
    /// Of those, poisoned (their count reached the threshold).
    pub poisoned: usize,
    /// Entries of its `corrupt/` copied here.
    pub corrupt_moved: usize,
    /// Entries left in its `corrupt/` (not regular files, or a name taken here).
    pub corrupt_left: usize,
    /// Every message adopted, those found here already too (`again`).
    pub adopted: Vec<AdoptedMessage>,
}

impl AdoptReport {
    /// Messages adopted from `state`.
    pub fn count(&self, state: QueueState) -> usize {
        self.counts.get(&state).copied().unwrap_or(0)
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SpoolError + 'a {
    move |e| SpoolError::io(op, path, e)
}

/// Reads a small file of the spool directory without following links; `None` if absent.
fn read_small(dir: &Path, name: &str) -> Result<Option<Vec<u8>>, SpoolError> {
    let path = dir.join(name);
    let file = match sys::open_entry(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SpoolError::io("open", path, e)),
    };
    let mut bytes = Vec::new();
    file.take(SMALL_FILE_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err("read", &path))?;
    if bytes.len() as u64 > SMALL_FILE_MAX {
        return Err(SpoolError::io(
            "read",
            path,
            io::Error::new(io::ErrorKind::InvalidData, "larger than 4 KiB"),
        ));
    }
    Ok(Some(bytes))
}

/// Writes a small file of the spool directory atomically and durably, mode 0600.
fn write_small(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), SpoolError> {
    let tmp = dir.join(format!(".{name}.new"));
    let dst = dir.join(name);
    let _ = std::fs::remove_file(&tmp);
    let mut f = sys::create_new(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io_err("write", &tmp))?;
    std::fs::rename(&tmp, &dst).map_err(io_err("rename", &dst))?;
    sys::sync_dir(dir).map_err(io_err("fsync directory", dir))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

/// The node file of the spool at `dir`: `Ok(None)` when there is none; a file that does
/// not parse, or names an invalid node, is `Ok(None)` too (the adoption then fences by
/// the marker only).
pub fn read_node(dir: &Path) -> Result<Option<SpoolNode>, SpoolError> {
    let Some(bytes) = read_small(dir, NODE_FILE)? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice::<SpoolNode>(&bytes)
        .ok()
        .filter(|n| valid_name(&n.name) && (1..=1023).contains(&n.id)))
}

/// Records in the spool at `dir` which cluster node runs on it (mode 0600, atomic).
pub fn write_node(dir: &Path, node: &SpoolNode) -> Result<(), SpoolError> {
    let mut bytes = serde_json::to_vec(node).unwrap_or_default();
    bytes.push(b'\n');
    write_small(dir, NODE_FILE, &bytes)
}

/// The adoption marker of the spool at `dir`, if it has one. A marker that does not
/// parse still fences: it is reported with `by` set to `"(unreadable marker)"`.
pub fn read_marker(dir: &Path) -> Result<Option<AdoptMarker>, SpoolError> {
    let Some(bytes) = read_small(dir, ADOPTED_FILE)? else {
        return Ok(None);
    };
    Ok(Some(
        serde_json::from_slice::<AdoptMarker>(&bytes)
            .ok()
            .filter(|m| m.by.len() <= 255 && m.node.as_ref().is_none_or(|n| n.len() <= 255))
            .unwrap_or(AdoptMarker {
                by: "(unreadable marker)".into(),
                at_micros: 0,
                node: None,
            }),
    ))
}

/// Removes the adoption marker of the spool at `dir` (`tern spool unfence`); `false`
/// when there was none. Refused (`Locked`) while a process holds the spool's lock.
pub fn remove_marker(dir: &Path) -> Result<bool, SpoolError> {
    if Spool::lock_holder(dir)?.is_some() {
        return Err(SpoolError::Locked);
    }
    let path = dir.join(ADOPTED_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(SpoolError::io("unlink", path, e)),
    }
    sys::sync_dir(dir).map_err(io_err("fsync directory", dir))?;
    Ok(true)
}

/// Why a path cannot be adopted (before anything is touched).
fn refuse(what: &str) -> SpoolError {
    SpoolError::NotASpool(what.to_string())
}

impl Spool {
    /// Takes over the spool at `foreign` (module header): every message in every state,
    /// with its record and crash count, written here durably before it is removed there;
    /// its `corrupt/` entries copied into this one's. Blocking (reads every message):
    /// run it on a blocking thread. Refused: this spool's own directory, a directory
    /// that is not a Tern spool (`NotASpool`), one another process holds (`Locked`), a
    /// read-only spool here. Rerun after an interruption, it completes the adoption.
    pub fn adopt(
        &self,
        foreign: &Path,
        opts: &AdoptOptions,
        events: EventLog,
    ) -> Result<AdoptReport, SpoolError> {
        let inner = &self.inner;
        if !inner.is_writable() {
            return Err(SpoolError::ReadOnly);
        }
        let fault = |step: &'static str| match &opts.fault {
            Some(f) => f(step),
            None => Ok(()),
        };
        let from = std::path::absolute(foreign).map_err(io_err("resolve", foreign))?;
        let meta = std::fs::metadata(&from).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => refuse("no such directory"),
            _ => SpoolError::io("stat", &from, e),
        })?;
        let own = std::fs::metadata(&inner.dir).map_err(io_err("stat", &inner.dir))?;
        {
            use std::os::unix::fs::MetadataExt;
            if (meta.dev(), meta.ino()) == (own.dev(), own.ino()) {
                return Err(refuse("it is this node's own spool"));
            }
        }
        if !meta.is_dir() {
            return Err(refuse("not a directory"));
        }
        // A Tern spool has its key and its state directories; never create a spool
        // where there was none.
        let looks_like_spool = sys::entry_kind(&from.join(super::key::KEY_FILE))
            .is_ok_and(|(k, _)| k == sys::EntryKind::File)
            && QueueState::ALL.iter().all(|s| {
                sys::entry_kind(&from.join(s.as_str())).is_ok_and(|(k, _)| k == sys::EntryKind::Dir)
            });
        if !looks_like_spool {
            return Err(refuse("no spool.key and queue directories there"));
        }
        // The lock for the whole adoption, and the recovery a start would do.
        let (there, recovery) = Spool::open(&from, events)?;
        let node = read_node(&from)?;
        let marker = AdoptMarker {
            by: opts.by.clone(),
            at_micros: tern_watchdog::clock::unix_micros(),
            node: node.as_ref().map(|n| n.name.clone()),
        };
        // An earlier (interrupted) adoption's marker is kept: it says when it began.
        if read_marker(&from)?.is_none() {
            let mut bytes = serde_json::to_vec(&marker).unwrap_or_default();
            bytes.push(b'\n');
            write_small(&from, ADOPTED_FILE, &bytes)?;
        }
        if let Some(f) = &opts.fenced {
            f(node.as_ref());
        }
        fault("marker")?;
        let mut report = AdoptReport {
            from: from.clone(),
            node,
            recovery,
            counts: BTreeMap::new(),
            already_here: 0,
            crashed: 0,
            poisoned: 0,
            corrupt_moved: 0,
            corrupt_left: 0,
            adopted: Vec::new(),
        };
        for state in ADOPTED_STATES {
            for listed in there.list(Some(state))? {
                if listed.state != state {
                    continue;
                }
                self.adopt_one(&there, listed.id, state, opts, &mut report, &fault)?;
            }
            let dir = there.inner.area_dir(Area::State(state));
            sys::sync_subdir(&dir).map_err(io_err("fsync directory", &dir))?;
        }
        self.adopt_corrupt(&there, &mut report, &fault)?;
        drop(there);
        // What a retired segment or a delivered file left for reuse is not mail.
        let free = from.join(super::FREE_DIR);
        for name in read_names(&free)? {
            let _ = std::fs::remove_file(free.join(name));
        }
        Ok(report)
    }

    /// Adopts message `id` from `state` of `there` (module header).
    fn adopt_one(
        &self,
        there: &Spool,
        id: QueueId,
        state: QueueState,
        opts: &AdoptOptions,
        report: &mut AdoptReport,
        fault: &dyn Fn(&'static str) -> Result<(), SpoolError>,
    ) -> Result<(), SpoolError> {
        let here_already = self.find(
            id,
            &[
                QueueState::Incoming,
                QueueState::Active,
                QueueState::Deferred,
                QueueState::Hold,
                QueueState::Poison,
            ],
        );
        if let Some(here) = here_already {
            report.already_here += 1;
            report.adopted.push(AdoptedMessage {
                id,
                from: state,
                state: here,
                next_attempt_micros: self
                    .read_record(id)
                    .ok()
                    .flatten()
                    .and_then(|r| r.next_attempt_micros),
                again: true,
            });
        } else {
            let msg = match there.read(state, id) {
                Ok(m) => m,
                // Quarantined there by the read: its `corrupt/` entry follows below.
                Err(SpoolError::Corrupt(_)) | Err(SpoolError::NotFound) => return Ok(()),
                Err(e) => return Err(e),
            };
            let record = match there.read_record(id) {
                Ok(r) => r,
                Err(SpoolError::Corrupt(reason)) => {
                    // Its record is bad: quarantined there with it, never guessed.
                    there.quarantine_message(state, id, &reason)?;
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            let (to, record) = match state {
                QueueState::Active => {
                    let mut rec = record
                        .unwrap_or_else(|| DeliveryRecord::new(id, msg.envelope.recipients.len()));
                    rec.crashes = rec.crashes.saturating_add(1);
                    rec.next_attempt_micros = None;
                    report.crashed += 1;
                    let poisoned =
                        opts.poison_threshold > 0 && rec.crashes >= opts.poison_threshold;
                    if poisoned {
                        report.poisoned += 1;
                        (QueueState::Poison, Some(rec))
                    } else {
                        (QueueState::Deferred, Some(rec))
                    }
                }
                other => (other, record),
            };
            let bytes = crate::format::encode(&msg.body, &msg.envelope).map_err(|e| {
                SpoolError::io("encode", &report.from, io::Error::other(e.to_string()))
            })?;
            self.place(id, to, &bytes, record.as_ref())?;
            report.adopted.push(AdoptedMessage {
                id,
                from: state,
                state: to,
                next_attempt_micros: record.as_ref().and_then(|r| r.next_attempt_micros),
                again: false,
            });
            *report.counts.entry(state).or_insert(0) += 1;
            fault("placed")?;
        }
        there.forget(state, id)?;
        fault("removed")
    }

    /// Writes message `id` into `state` here, durably, with `record` as its first frame
    /// (module header).
    fn place(
        &self,
        id: QueueId,
        state: QueueState,
        bytes: &[u8],
        record: Option<&DeliveryRecord>,
    ) -> Result<(), SpoolError> {
        let inner = &self.inner;
        let _noted = super::Noted::begin(inner);
        let tmp = inner.entry_path(Area::Tmp, id);
        let _ = std::fs::remove_file(&tmp);
        let file = sys::create_new_rw(&tmp).map_err(io_err("create", &tmp))?;
        let written = (|| {
            file.write_all_at(bytes, 0).map_err(io_err("write", &tmp))?;
            file.sync_data().map_err(io_err("fdatasync", &tmp))?;
            if let Some(rec) = record {
                let key = inner.record_key().ok_or(SpoolError::ReadOnly)?;
                let json = record::encode_json(rec);
                super::lifecycle::append_frame(&file, &tmp, key, rec, &json)?;
            }
            file.sync_all().map_err(io_err("fsync", &tmp))?;
            let dst = inner.entry_path(Area::State(state), id);
            std::fs::hard_link(&tmp, &dst).map_err(io_err("link", &dst))?;
            let dir = inner.area_dir(Area::State(state));
            sys::sync_subdir(&dir).map_err(io_err("fsync directory", &dir))
        })();
        let _ = std::fs::remove_file(&tmp);
        written?;
        if state.is_queued() {
            inner.queued.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Removes message `id` from `state` of this spool (an adopted spool), with its
    /// legacy record; not synced (the caller fsyncs each state directory after it).
    fn forget(&self, state: QueueState, id: QueueId) -> Result<(), SpoolError> {
        let inner = &self.inner;
        let _noted = super::Noted::begin(inner);
        let resident = state == QueueState::Incoming && inner.segments.lookup(id).is_some();
        inner.segments.gone(id)?;
        if !resident {
            let path = inner.entry_path(Area::State(state), id);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(SpoolError::io("unlink", path, e)),
            }
        }
        inner.forget_queued(state);
        let rec = inner.record_path(id);
        match std::fs::remove_file(&rec) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SpoolError::io("unlink", rec, e)),
        }
    }

    /// Copies the entries of `there`'s `corrupt/` into this one's (module header).
    fn adopt_corrupt(
        &self,
        there: &Spool,
        report: &mut AdoptReport,
        fault: &dyn Fn(&'static str) -> Result<(), SpoolError>,
    ) -> Result<(), SpoolError> {
        let src_dir = there.inner.area_dir(Area::State(QueueState::Corrupt));
        let dst_dir = self.inner.area_dir(Area::State(QueueState::Corrupt));
        let mut names: Vec<OsString> = read_names(&src_dir)?;
        names.sort();
        for name in names {
            let src = src_dir.join(&name);
            let dst = dst_dir.join(&name);
            let mut input = match sys::open_entry(&src) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(_) => {
                    report.corrupt_left += 1;
                    continue;
                }
            };
            let len = input.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
            let copied = match sys::create_new(&dst) {
                Ok(mut out) => io::copy(&mut input, &mut out)
                    .and_then(|_| out.sync_all())
                    .map(|()| true)
                    .map_err(io_err("copy", &dst))?,
                // Copied by an interrupted run (same length), or another entry here.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    std::fs::symlink_metadata(&dst).is_ok_and(|m| m.is_file() && m.len() == len)
                }
                Err(e) => return Err(SpoolError::io("create", dst, e)),
            };
            if !copied {
                report.corrupt_left += 1;
                continue;
            }
            sys::sync_subdir(&dst_dir).map_err(io_err("fsync directory", &dst_dir))?;
            fault("corrupt")?;
            std::fs::remove_file(&src).map_err(io_err("unlink", &src))?;
            report.corrupt_moved += 1;
        }
        sys::sync_subdir(&src_dir).map_err(io_err("fsync directory", &src_dir))
    }
}
