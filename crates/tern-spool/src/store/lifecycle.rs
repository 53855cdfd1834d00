//! Moving messages between queue states, removing delivered ones, and their delivery
//! records.
//!
//! Invariants:
//! - A move never has a moment where the message is in no state directory: it is
//!   `link(src, dst)`, then a group-committed fsync of the destination directory, then
//!   `unlink(src)`. A crash (even a power loss on ext4 without a journal, where a rename's
//!   two directory blocks can reach the disk in either order) leaves the message in the
//!   destination, in the source, or in both; recovery keeps one name (see
//!   [`Inner::resolve_duplicates`]).
//! - Removing a delivered message retires its file (into the pool of reusable files, see
//!   `recycle`, or unlinked; its record frames go with it) first and unlinks a legacy
//!   record second, without a directory
//!   fsync: a crash can bring the message back (it is delivered again: the
//!   documented at-least-once window), never lose one that was not delivered.
//! - A record is a frame appended to the message's own file (`format::frame`): located
//!   with `frame::locate`, written with one `pwrite` at the end of the intact part (a
//!   torn tail is cut off), then `fdatasync`; no name changes, so no directory sync. The
//!   file is found under whichever state directory names it (all names of a message are
//!   one inode, so a move in progress does not matter). When `write_record` returns
//!   `Ok`, a crash cannot bring back an older record: the new frame is the last valid
//!   one. A legacy `records/<id>` (older versions) is read only when the file has no
//!   frame, and removed after the next frame is written (a frame always wins over it).
//!   A message still resident in a segment has no file: its record is written the old
//!   way (`tmp/`, fsync, rename over `records/<id>`, fsync `records/`).
//! - Only a read-write spool moves, removes or writes (`SpoolError::ReadOnly` otherwise).
//!
//! Trust: records read back are authenticated (frames) and validated by
//! `record::decode_json` / `record::decode`; a bad one is reported as
//! `SpoolError::Corrupt(BadRecord)` and the caller quarantines the message with
//! [`Spool::quarantine_message`].

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use std::os::unix::fs::FileExt;

use crate::error::{CorruptReason, SpoolError};
use crate::format::frame;
use crate::id::QueueId;
use crate::record::{self, DeliveryRecord};
use crate::state::QueueState;

use super::dirsync::DirSyncer;
use super::entry::{self, EntryError};
use super::{Area, Inner, RECORDS_DIR, Spool, name_to_id, read_names, sys};

/// Which state wins when recovery finds one message under two state directories (a move
/// cut short by a crash). The later states of the usual flow win, and the operator's
/// states (hold, poison) win over the scheduler's, so a crash never undoes an operator's
/// decision nor re-runs a message the poison check stopped.
pub(crate) const PRECEDENCE: [QueueState; 5] = [
    QueueState::Poison,
    QueueState::Hold,
    QueueState::Deferred,
    QueueState::Active,
    QueueState::Incoming,
];

impl Inner {
    pub(super) fn syncer_for(&self, state: QueueState) -> Result<&DirSyncer, SpoolError> {
        let w = self.writable.as_ref().ok_or(SpoolError::ReadOnly)?;
        if state == QueueState::Incoming {
            return Ok(&w.incoming);
        }
        w.moves.get(&state).ok_or(SpoolError::ReadOnly)
    }

    pub(crate) fn record_path(&self, id: QueueId) -> std::path::PathBuf {
        let mut p = self.dir.join(RECORDS_DIR);
        p.push(id.to_string());
        p
    }

    /// At open: a message present in several state directories keeps only the name in
    /// the state that comes first in [`PRECEDENCE`]. The other names are unlinked when
    /// they are hard links to the same file (left by a move cut short); a different file
    /// under the same id is not Tern's doing and is quarantined instead, never deleted.
    /// Entries that are not regular files are left to validation (which quarantines
    /// them). Returns how many entries were quarantined.
    ///
    /// `listed`: the states whose directories are read. Each other state is not read:
    /// only the ids found in the listed ones are looked up there (one lookup each), which
    /// finds every duplicate that involves a listed directory, since a directory cannot
    /// hold a name twice. A server start lists every state but `deferred/` (whose backlog
    /// is loaded in the background), and before its listeners only `active/` (bounded by
    /// `queue.max_active_messages`), the rest being left to the background recovery.
    /// `skip(id)`: ids left alone (messages this process made while the background
    /// recovery runs: a move of theirs in progress has two names legitimately).
    pub(crate) fn resolve_duplicates(
        &self,
        listed: &[QueueState],
        skip: &dyn Fn(QueueId) -> bool,
    ) -> Result<usize, SpoolError> {
        use std::os::unix::fs::MetadataExt;
        let mut seen: BTreeMap<QueueId, (QueueState, u64, u64)> = BTreeMap::new();
        let mut removed = 0;
        let mut quarantined = 0;
        let mut names_of: BTreeMap<QueueState, Vec<std::ffi::OsString>> = BTreeMap::new();
        for state in PRECEDENCE.into_iter().filter(|s| listed.contains(s)) {
            let mut names = read_names(&self.area_dir(Area::State(state)))?;
            names.retain(|n| name_to_id(n).is_some_and(|id| !skip(id)));
            names_of.insert(state, names);
        }
        let mut candidates: Vec<std::ffi::OsString> =
            names_of.values().flatten().cloned().collect();
        candidates.sort();
        candidates.dedup();
        for state in PRECEDENCE.into_iter().filter(|s| !listed.contains(s)) {
            let dir = self.area_dir(Area::State(state));
            let found: Vec<std::ffi::OsString> = candidates
                .iter()
                .filter(|n| {
                    !matches!(
                        sys::entry_kind(&dir.join(n)),
                        Ok((sys::EntryKind::Missing, _))
                    )
                })
                .cloned()
                .collect();
            names_of.insert(state, found);
        }
        for state in PRECEDENCE {
            let dir = self.area_dir(Area::State(state));
            for name in names_of.remove(&state).unwrap_or_default() {
                let Some(id) = name_to_id(&name) else {
                    continue;
                };
                let path = dir.join(&name);
                let meta = match sys::entry_kind(&path) {
                    Ok((sys::EntryKind::File, Some(m))) => m,
                    Ok(_) => continue,
                    Err(e) => return Err(SpoolError::io("stat", path, e)),
                };
                let Some((kept, dev, ino)) = seen.get(&id).copied() else {
                    seen.insert(id, (state, meta.dev(), meta.ino()));
                    continue;
                };
                if (meta.dev(), meta.ino()) != (dev, ino) {
                    let reason = CorruptReason::UnexpectedEntry(format!(
                        "a second file for message {id}, not a link to the one in {kept}/                          (which is kept)"
                    ));
                    let moved = super::quarantine::move_to_corrupt(
                        &self.dir,
                        &self.events,
                        Area::State(state),
                        &name,
                        &reason,
                        &super::quarantine::Extra::default(),
                    )?;
                    quarantined += usize::from(moved.is_some());
                    continue;
                }
                match std::fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(SpoolError::io("remove duplicate name", path, e)),
                }
            }
        }
        if removed + quarantined > 0 {
            for state in PRECEDENCE.into_iter().chain([QueueState::Corrupt]) {
                let dir = self.area_dir(Area::State(state));
                sys::sync_subdir(&dir).map_err(|e| SpoolError::io("fsync directory", dir, e))?;
            }
        }
        Ok(quarantined)
    }
}

/// The states whose directories hold message files that carry records, in the order
/// they are looked up (the usual places of a message that has records first).
const RECORD_STATES: [QueueState; 5] = [
    QueueState::Active,
    QueueState::Deferred,
    QueueState::Hold,
    QueueState::Poison,
    QueueState::Incoming,
];

impl Inner {
    /// Opens message `id`'s own file (any of its names: they are one inode), for reading
    /// or for reading and writing; `None` when no state directory has it.
    pub(crate) fn open_message_file(
        &self,
        id: QueueId,
        write: bool,
    ) -> Result<Option<(std::fs::File, std::path::PathBuf)>, SpoolError> {
        for state in RECORD_STATES {
            let path = self.entry_path(Area::State(state), id);
            match sys::open_regular(&path, write) {
                Ok(f) => return Ok(Some((f, path))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // Not a file: validation quarantines it; the message is not there.
                Err(e) if sys::is_not_regular(&e) => {}
                Err(e) => return Err(SpoolError::io("open", path, e)),
            }
        }
        Ok(None)
    }

    /// Appends `record` as a frame to its message's own file (module header). `false`
    /// when the message has no file of its own.
    pub(crate) fn append_record(&self, record: &DeliveryRecord) -> Result<bool, SpoolError> {
        let id = record.id;
        let key = self.record_key().ok_or(SpoolError::ReadOnly)?;
        let json = record::encode_json(record);
        let Some((file, path)) = self.open_message_file(id, true)? else {
            return Ok(false);
        };
        let appended = append_frame(&file, &path, key, record, &json)?;
        if appended {
            // The frame wins over a legacy record from now on; removing it is tidiness,
            // so a failure here does not fail the write (the start check removes it).
            let _ = std::fs::remove_file(self.record_path(id));
        }
        Ok(appended)
    }
}

/// Appends `record` (encoded as `json`) as a frame authenticated with `key` to the
/// message file `file` (named `path` in errors), then `fdatasync`s it (see the module
/// header). `Ok(false)` when the file vanished meanwhile.
pub(crate) fn append_frame(
    file: &std::fs::File,
    path: &std::path::Path,
    key: &super::key::SpoolKey,
    record: &DeliveryRecord,
    json: &[u8],
) -> Result<bool, SpoolError> {
    let id = record.id;
    {
        let len = file
            .metadata()
            .map_err(|e| SpoolError::io("stat", path, e))?
            .len();
        let layout = match entry::layout_of(file, id, Some(key)) {
            Ok(l) => l,
            Err(EntryError::Vanished) => return Ok(false),
            Err(EntryError::Corrupt(reason)) => return Err(SpoolError::Corrupt(reason)),
            Err(EntryError::Io(op, e)) => return Err(SpoolError::io(op, path, e)),
        };
        let too_large = || {
            SpoolError::Corrupt(CorruptReason::BadRecord(
                "record larger than the limit".into(),
            ))
        };
        let frame_len = frame::frame_len(json.len());
        let plan = frame::plan_write(&layout, frame_len);
        let bytes = frame::encode_frame(
            key,
            id,
            &layout.trailer_bytes,
            layout.base,
            plan.offset,
            json,
        )
        .ok_or_else(too_large)?;
        let io_err = |op: &'static str| {
            let path = path.to_path_buf();
            move |e| SpoolError::io(op, path, e)
        };
        file.write_all_at(&bytes, plan.offset)
            .map_err(io_err("write record frame"))?;
        if plan.compact {
            // The new frame is durable in front of the old last frame (still the one a
            // reader finds) before the cut makes it the last.
            file.sync_data().map_err(io_err("fdatasync"))?;
        }
        if plan.new_len < len || plan.compact {
            file.set_len(plan.new_len).map_err(io_err("truncate"))?;
        }
        // The next attempt is also the file's modification time, so the backlog's load
        // schedules the message without opening it (`backlog.rs`). A hint only: the
        // frame stays the truth, and a time this sync does not carry makes the attempt
        // come early, never late (so failing to set it does not fail the write).
        if let Some(due) = record.next_attempt_micros.and_then(due_time) {
            let _ = file.set_times(std::fs::FileTimes::new().set_modified(due));
        }
        file.sync_data().map_err(io_err("fdatasync"))?;
        Ok(true)
    }
}

/// `micros` since the Unix epoch as a file time; `None` before the epoch.
fn due_time(micros: i64) -> Option<std::time::SystemTime> {
    let micros = u64::try_from(micros).ok()?;
    std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_micros(micros))
}

impl Spool {
    /// Moves message `id` from `from` to `to` (see the module header for how a crash is
    /// survived). `SpoolError::NotFound` if it is not in `from`. Moving into or out of
    /// `corrupt/` is not a move (see [`Spool::quarantine_message`]).
    pub async fn move_to(
        &self,
        id: QueueId,
        from: QueueState,
        to: QueueState,
    ) -> Result<(), SpoolError> {
        if from == to {
            return Ok(());
        }
        if from == QueueState::Corrupt || to == QueueState::Corrupt {
            return Err(SpoolError::NotFound);
        }
        let inner = &self.inner;
        let _noted = super::Noted::begin(inner);
        if from == QueueState::Incoming
            && let Some(r) = inner.segments.lookup(id)
        {
            return self.write_out(id, r, to).await;
        }
        let syncer = inner.syncer_for(to)?;
        let src = inner.entry_path(Area::State(from), id);
        let dst = inner.entry_path(Area::State(to), id);
        match std::fs::hard_link(&src, &dst) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(SpoolError::NotFound),
            // A name left by an earlier move cut short: same file, carry on.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(SpoolError::io("link", dst, e)),
        }
        // In both directories now: a listing may see it twice until the unlink.
        inner.note_change();
        syncer
            .sync()
            .await
            .map_err(|e| SpoolError::io("fsync directory", syncer.path().clone(), e))?;
        match std::fs::remove_file(&src) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(SpoolError::io("unlink", src, e)),
        }
        match (from.is_queued(), to.is_queued()) {
            (true, false) => inner.forget_queued(from),
            (false, true) => {
                inner.queued.fetch_add(1, Ordering::AcqRel);
            }
            _ => {}
        }
        Ok(())
    }

    /// Removes a message that needs nothing more (delivered, or bounced and its bounce
    /// queued), with its record. Not synced: see the module header. The file operations
    /// run on the blocking pool: when the file cannot go to the reuse pool, freeing its
    /// inode on ext4 without a journal waits for a disk write.
    pub async fn remove(&self, state: QueueState, id: QueueId) -> Result<(), SpoolError> {
        if !self.inner.is_writable() {
            return Err(SpoolError::ReadOnly);
        }
        let inner = Arc::clone(&self.inner);
        let done = tokio::task::spawn_blocking(move || -> Result<(), SpoolError> {
            let _noted = super::Noted::begin(&inner);
            // A segment that still holds the message (resident, or its copy from before
            // it was written out) must not bring it back: log it out first.
            let resident = state == QueueState::Incoming && inner.segments.lookup(id).is_some();
            inner.segments.gone(id)?;
            if !resident && !inner.retire(state, id)? {
                return Err(SpoolError::NotFound);
            }
            inner.forget_queued(state);
            let rec = inner.record_path(id);
            match std::fs::remove_file(&rec) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(SpoolError::io("unlink", rec, e)),
            }
        })
        .await;
        done.unwrap_or_else(|e| Err(SpoolError::BlockingTask(e.to_string())))
    }

    /// Makes `record` the message's delivery record, durably (see the module header):
    /// a record frame appended to the message's own file, `fdatasync`ed; then a legacy
    /// `records/<id>` left by an older version is removed (the frame wins over it
    /// anyway). A message that has no file of its own yet (resident in a segment) is the
    /// one case that still gets a `records/<id>` file (see docs/SPOOL.md). A message
    /// file whose version-1 part cannot be found is `SpoolError::Corrupt`.
    pub async fn write_record(&self, record: &DeliveryRecord) -> Result<(), SpoolError> {
        let w = self.inner.writable.as_ref().ok_or(SpoolError::ReadOnly)?;
        let inner = Arc::clone(&self.inner);
        let rec = record.clone();
        let appended = tokio::task::spawn_blocking(move || inner.append_record(&rec))
            .await
            .unwrap_or_else(|e| Err(SpoolError::BlockingTask(e.to_string())))?;
        if appended {
            return Ok(());
        }
        if self.inner.segments.lookup(record.id).is_none() {
            return Err(SpoolError::NotFound);
        }
        self.write_legacy_record(record).await?;
        w.records
            .sync()
            .await
            .map_err(|e| SpoolError::io("fsync directory", w.records.path().clone(), e))
    }

    /// The old way, kept for a message without a file of its own: `records/<id>`
    /// replaced atomically (tmp, fsync, rename; the caller fsyncs `records/`).
    async fn write_legacy_record(&self, record: &DeliveryRecord) -> Result<(), SpoolError> {
        let inner = &self.inner;
        let bytes = record::encode(record);
        let tmp = inner
            .area_dir(Area::Tmp)
            .join(format!("{}.record", record.id));
        let dst = inner.record_path(record.id);
        let (tmp_c, dst_c) = (tmp.clone(), dst.clone());
        let written = tokio::task::spawn_blocking(move || -> Result<(), SpoolError> {
            let _ = std::fs::remove_file(&tmp_c);
            let mut f = sys::create_new(&tmp_c).map_err(|e| SpoolError::io("create", &tmp_c, e))?;
            f.write_all(&bytes)
                .and_then(|()| f.sync_data())
                .map_err(|e| SpoolError::io("write", &tmp_c, e))?;
            std::fs::rename(&tmp_c, &dst_c).map_err(|e| SpoolError::io("rename", &dst_c, e))
        })
        .await;
        match written {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(SpoolError::BlockingTask(e.to_string()))
            }
        }
    }

    /// The message's delivery record, or `None` when it has none yet. Blocking (an open
    /// and three positioned reads). The record is the last valid frame of the message's
    /// own file, found under whichever state directory holds it (all its names are one
    /// inode); without a frame, a legacy `records/<id>` from an older version. A record
    /// that fails validation, or a message file whose version-1 part cannot be found,
    /// is `SpoolError::Corrupt`; a legacy record that is not a regular file is
    /// `CorruptReason::RecordNotAFile`.
    pub fn read_record(&self, id: QueueId) -> Result<Option<DeliveryRecord>, SpoolError> {
        // A message moving (link, then unlink) between two of these lookups could be
        // missed once: look twice before deciding it has no file.
        for _ in 0..2 {
            if let Some((file, path)) = self.inner.open_message_file(id, false)? {
                let layout = match entry::layout_of(&file, id, self.inner.record_key()) {
                    Ok(l) => l,
                    Err(EntryError::Vanished) => continue,
                    Err(EntryError::Corrupt(reason)) => return Err(SpoolError::Corrupt(reason)),
                    Err(EntryError::Io(op, e)) => return Err(SpoolError::io(op, path, e)),
                };
                return match layout.last {
                    Some(last) => record::decode_json(&last.json, id)
                        .map(Some)
                        .map_err(SpoolError::Corrupt),
                    None => self.read_legacy_record(id),
                };
            }
            if self.inner.segments.lookup(id).is_some() {
                break;
            }
        }
        self.read_legacy_record(id)
    }

    /// A legacy record file, `records/<id>` (written by older versions, and for a
    /// message still resident in a segment), or `None`.
    pub(crate) fn read_legacy_record(
        &self,
        id: QueueId,
    ) -> Result<Option<DeliveryRecord>, SpoolError> {
        let path = self.inner.record_path(id);
        // Never through a link, never blocking on a FIFO, a regular file only: anything
        // else is not a record, and the caller holds the message
        // (`Spool::hold_without_record`) instead of failing on it for ever.
        let file = match sys::open_entry(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if sys::is_not_regular(&e) => {
                return Err(SpoolError::Corrupt(CorruptReason::RecordNotAFile));
            }
            Err(e) => return Err(SpoolError::io("read", path, e)),
        };
        // Bounded: never read more than a record may hold, whatever the file says.
        let mut bytes = Vec::new();
        let limit = record::MAX_RECORD_LEN as u64 + 1;
        std::io::Read::read_to_end(&mut std::io::Read::take(file, limit), &mut bytes)
            .map_err(|e| SpoolError::io("read", &path, e))?;
        record::decode(&bytes, id)
            .map(Some)
            .map_err(SpoolError::Corrupt)
    }

    /// Quarantines message `id` from `state` with `reason` (event 3003), and its record
    /// beside it as `<name>.record`. Never deletes. Returns `false` if the message was no
    /// longer there.
    pub fn quarantine_message(
        &self,
        state: QueueState,
        id: QueueId,
        reason: &CorruptReason,
    ) -> Result<bool, SpoolError> {
        let inner = &self.inner;
        if !inner.is_writable() {
            return Err(SpoolError::ReadOnly);
        }
        if state == QueueState::Incoming
            && let Some(r) = inner.segments.lookup(id)
        {
            let blob = inner.read_resident(&r)?;
            inner.quarantine_resident(id, &blob, reason)?;
            return Ok(true);
        }
        let name = OsString::from(id.to_string());
        // `quarantine` takes the record along (see `quarantine`).
        let moved = inner.quarantine(Area::State(state), &name, reason)?;
        if moved {
            inner.forget_queued(state);
            inner.sync_after_quarantine(Area::State(state))?;
        }
        Ok(moved)
    }
}

/// The states an administrator may release a message from.
pub const RELEASABLE: [QueueState; 2] = [QueueState::Poison, QueueState::Hold];

/// The states an administrator may delete a message from while the server runs: the
/// ones no task is working on (`incoming/` may hold a commit in progress and `active/` a
/// delivery in progress).
pub const DELETABLE: [QueueState; 4] = [
    QueueState::Deferred,
    QueueState::Hold,
    QueueState::Poison,
    QueueState::Corrupt,
];

impl Spool {
    /// Where message `id` is among `states`, if anywhere (first match).
    pub fn find(&self, id: QueueId, states: &[QueueState]) -> Option<QueueState> {
        states.iter().copied().find(|s| {
            (*s == QueueState::Incoming && self.inner.segments.lookup(id).is_some())
                || self
                    .inner
                    .entry_path(Area::State(*s), id)
                    .symlink_metadata()
                    .is_ok()
        })
    }

    /// An administrator's release (`tern queue release`): message `id` leaves `poison/`
    /// or `hold/` for `deferred/`, with its crash count reset and no retry time, so the
    /// queue tries it at once. The record is written before the move, so a crash between
    /// the two leaves a poisoned message whose count says zero: releasing it again is
    /// all it takes. Returns the state it came from; `NotFound` if it is in neither.
    pub async fn release(&self, id: QueueId) -> Result<QueueState, SpoolError> {
        let from = self.find(id, &RELEASABLE).ok_or(SpoolError::NotFound)?;
        if let Some(mut rec) = self.read_record(id)? {
            rec.crashes = 0;
            rec.next_attempt_micros = None;
            self.write_record(&rec).await?;
        }
        self.move_to(id, from, QueueState::Deferred).await?;
        Ok(from)
    }

    /// An administrator's hold: message `id` leaves `deferred/` for `hold/`, where the
    /// queue never schedules it until it is released. The caller makes sure no task is
    /// processing it (the queue's scheduler does, see `tern_queue`). Its record is kept as
    /// it is. Returns the state it came from; `NotFound` if it is not deferred.
    pub async fn hold(&self, id: QueueId) -> Result<QueueState, SpoolError> {
        let from = self
            .find(id, &[QueueState::Deferred])
            .ok_or(SpoolError::NotFound)?;
        self.move_to(id, from, QueueState::Hold).await?;
        Ok(from)
    }

    /// An administrator's delete (`tern queue delete`): message `id` and its record are
    /// removed from one of [`DELETABLE`]; from `corrupt/` its reason file and quarantined
    /// record go too. The only way a message leaves the spool undelivered and unbounced,
    /// so only an operator does it. Returns the state it was in.
    pub async fn delete(&self, id: QueueId) -> Result<QueueState, SpoolError> {
        if !self.inner.is_writable() {
            return Err(SpoolError::ReadOnly);
        }
        let state = self.find(id, &DELETABLE).ok_or(SpoolError::NotFound)?;
        let inner = Arc::clone(&self.inner);
        let done = tokio::task::spawn_blocking(move || -> Result<(), SpoolError> {
            let path = inner.entry_path(Area::State(state), id);
            let mut doomed = vec![path.clone()];
            if state == QueueState::Corrupt {
                let dir = inner.area_dir(Area::State(QueueState::Corrupt));
                let name = id.to_string();
                for n in read_names(&dir)? {
                    let s = n.to_string_lossy();
                    if s != name && s.starts_with(&name) {
                        doomed.push(dir.join(&n));
                    }
                }
            } else {
                // Logged out of a segment that may still hold a copy (see `segment`).
                inner.segments.gone(id)?;
                doomed.push(inner.record_path(id));
            }
            for p in &doomed {
                match std::fs::remove_file(p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(SpoolError::io("unlink", p, e)),
                }
            }
            inner.forget_queued(state);
            let dir = inner.area_dir(Area::State(state));
            sys::sync_dir(&dir).map_err(|e| SpoolError::io("fsync directory", dir, e))
        })
        .await;
        done.unwrap_or_else(|e| Err(SpoolError::BlockingTask(e.to_string())))?;
        Ok(state)
    }
}
