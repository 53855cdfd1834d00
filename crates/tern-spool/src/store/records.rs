//! Delivery record entries at start, and a record that is not a record.
//!
//! `records/` is legacy: older versions wrote every record there, this one writes records
//! as frames in the message file (`format::frame`) and writes `records/<id>` (a regular
//! file renamed into place) only for a message still resident in a segment. At start every entry of `records/` is checked without being opened:
//! - a name that is not a queue id is quarantined (event 3003);
//! - an entry that is not a regular file (a directory, FIFO, symbolic link, socket,
//!   device) cannot tell which recipients already have its message. It is moved to
//!   `corrupt/<id>.record` with a reason, and its message is held (`hold/`) for an
//!   operator, never sent again on its own (event 3010). `tern queue release <id>` then
//!   sends it to every recipient as if never attempted. A message already in `hold/` or
//!   `poison/` stays there; a record without a message, or whose message carries a
//!   valid record frame in its own file (the frame wins over any legacy file), is only
//!   set aside.
//! - a regular file whose message is in no queue state is an orphan (its message was
//!   removed just before a crash) and is removed.
//!
//! The same set-aside runs while Tern runs when reading a record finds such an entry
//! (`Spool::read_record` answers `CorruptReason::RecordNotAFile`; the queue calls
//! [`Spool::hold_without_record`]), so a message never fails forever on its record.
//!
//! Invariant: nothing here deletes anything but a regular record file whose message is
//! gone; a message is moved to `hold/` by link, fsync of `hold/`, unlink (or, resident in
//! a segment, written out as `hold/<id>` before the segment forgets it).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::Arc;

use tern_events::{catalog, fields};

use crate::error::{CorruptReason, SpoolError};
use crate::id::QueueId;
use crate::state::QueueState;

use super::lifecycle::PRECEDENCE;
use super::quarantine::Extra;
use super::sys::{self, EntryKind};
use super::{Area, Inner, RECORDS_DIR, Spool, name_to_id, read_names};

impl Inner {
    /// At start, after the state directories and the segments were recovered (see the
    /// module header). `counts` is adjusted for messages moved to `hold/`. Returns how
    /// many entries were quarantined.
    pub(crate) fn recover_records(
        &self,
        counts: &mut BTreeMap<QueueState, usize>,
    ) -> Result<usize, SpoolError> {
        let dir = self.dir.join(RECORDS_DIR);
        let mut quarantined = 0;
        for name in read_names(&dir)? {
            let path = dir.join(&name);
            let (kind, _) = sys::entry_kind(&path).map_err(|e| SpoolError::io("stat", &path, e))?;
            let Some(id) = name_to_id(&name) else {
                let reason = CorruptReason::UnexpectedEntry(format!(
                    "{} named {:?} in records/, where Tern keeps only <queue id> records",
                    kind.describe(),
                    name.to_string_lossy()
                ));
                quarantined += usize::from(self.quarantine(Area::Records, &name, &reason)?);
                continue;
            };
            match kind {
                EntryKind::Missing => {}
                EntryKind::File => {
                    if !self.message_exists(id) {
                        match std::fs::remove_file(&path) {
                            Ok(()) => {}
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                            Err(e) => return Err(SpoolError::io("remove orphan record", path, e)),
                        }
                    }
                }
                other => {
                    let (moved, from) = self.set_aside_record(id, other)?;
                    quarantined += usize::from(moved);
                    if let Some(from) = from
                        && self.hold_at_start(id, from)?
                    {
                        if let Some(n) = counts.get_mut(&from) {
                            *n = n.saturating_sub(1);
                        }
                        *counts.entry(QueueState::Hold).or_insert(0) += 1;
                    }
                }
            }
        }
        if quarantined > 0 {
            self.sync_after_quarantine(Area::Records)?;
        }
        Ok(quarantined)
    }

    /// Whether message `id` is resident in a segment or has a file in a queue state.
    pub(crate) fn message_exists(&self, id: QueueId) -> bool {
        self.segments.lookup(id).is_some()
            || PRECEDENCE.iter().any(|s| {
                self.entry_path(Area::State(*s), id)
                    .symlink_metadata()
                    .is_ok()
            })
    }

    /// Whether message `id` has a file of its own whose last record frame is valid: its
    /// record is there, and a legacy `records/<id>` entry says nothing more.
    pub(crate) fn has_frame(&self, id: QueueId) -> bool {
        matches!(
            self.open_message_file(id, false),
            Ok(Some((f, _))) if super::entry::layout_of(&f, id, self.record_key())
                .is_ok_and(|l| l.last.is_some())
        )
    }

    /// Where message `id` is, among the states it may be held from (`None`: in `hold/`,
    /// `poison/`, nowhere, or it has a record frame of its own).
    fn holdable_state(&self, id: QueueId) -> Option<QueueState> {
        if self.has_frame(id) {
            return None;
        }
        if self.segments.lookup(id).is_some() {
            return Some(QueueState::Incoming);
        }
        if [QueueState::Hold, QueueState::Poison].iter().any(|s| {
            self.entry_path(Area::State(*s), id)
                .symlink_metadata()
                .is_ok()
        }) {
            return None;
        }
        [
            QueueState::Incoming,
            QueueState::Active,
            QueueState::Deferred,
        ]
        .into_iter()
        .find(|s| {
            self.entry_path(Area::State(*s), id)
                .symlink_metadata()
                .is_ok()
        })
    }

    /// Moves the record entry of message `id` (not a regular file: `kind`) to
    /// `corrupt/<id>.record` with a reason, and emits event 3010. Returns whether it
    /// moved, and the state the message should be held from.
    fn set_aside_record(
        &self,
        id: QueueId,
        kind: EntryKind,
    ) -> Result<(bool, Option<QueueState>), SpoolError> {
        let from = self.holdable_state(id);
        let reason = CorruptReason::UnexpectedEntry(format!(
            "the delivery record of message {id} is {}, not a regular file; the message {}",
            kind.describe(),
            match from {
                Some(s) => format!("was held (it was in {s}/)"),
                None => "was left where it was (held, poisoned, gone, or its own file \
                         carries its record)"
                    .into(),
            }
        ));
        let name = id.to_string();
        let moved =
            self.quarantine_with(Area::Records, name.as_ref(), &reason, &Extra::default())?;
        self.events.emit(
            &catalog::SPOOL_RECORD_SET_ASIDE,
            fields!(
                "queue_id" => id,
                "kind" => kind.describe(),
                "moved_to" => moved.as_deref().map(|m| format!("corrupt/{m}")).unwrap_or_default(),
                "held_from" => from.map_or("none", QueueState::as_str),
            ),
        );
        Ok((moved.is_some(), from))
    }

    /// At start (blocking): moves message `id` from `from` to `hold/` (a resident one
    /// is written out there). Returns whether it moved.
    fn hold_at_start(&self, id: QueueId, from: QueueState) -> Result<bool, SpoolError> {
        let dst = self.entry_path(Area::State(QueueState::Hold), id);
        let hold_dir = self.area_dir(Area::State(QueueState::Hold));
        let sync_hold = || {
            sys::sync_subdir(&hold_dir).map_err(|e| SpoolError::io("fsync directory", &hold_dir, e))
        };
        if from == QueueState::Incoming
            && let Some(r) = self.segments.lookup(id)
        {
            let blob = self.read_resident(&r)?;
            if !self.write_out_file(id, &blob, QueueState::Hold)? {
                return Ok(false);
            }
            sync_hold()?;
            if let Some(seg) = self.segments.taken(id) {
                self.segments.retire(seg);
            }
            return Ok(true);
        }
        let src = self.entry_path(Area::State(from), id);
        match std::fs::hard_link(&src, &dst) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(SpoolError::io("link", dst, e)),
        }
        sync_hold()?;
        match std::fs::remove_file(&src) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(SpoolError::io("unlink", src, e)),
        }
        Ok(true)
    }

    /// Writes message `id` (its whole file) out as a durable `<to>/<id>`: through
    /// `tmp/<id>` (created exclusively, mode 0600), fsynced, renamed without replacing.
    /// `Ok(false)` when `<to>/<id>` already exists. The caller syncs `<to>/`.
    pub(crate) fn write_out_file(
        &self,
        id: QueueId,
        blob: &[u8],
        to: QueueState,
    ) -> Result<bool, SpoolError> {
        let dst = self.entry_path(Area::State(to), id);
        if dst.symlink_metadata().is_ok() {
            return Ok(false);
        }
        let tmp = self.entry_path(Area::Tmp, id);
        let mut f = sys::create_new(&tmp).map_err(|e| SpoolError::io("create", &tmp, e))?;
        let written = f
            .write_all(blob)
            .and_then(|()| f.sync_all())
            .and_then(|()| sys::rename_noreplace(&tmp, &dst));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(SpoolError::io("write out", dst, e));
        }
        Ok(true)
    }
}

impl Spool {
    /// While Tern runs: message `id`, in `from`, has a delivery record that is not a
    /// regular file (`Spool::read_record` answered `CorruptReason::RecordNotAFile`). The
    /// record entry goes to `corrupt/<id>.record` and the message to `hold/` (event 3010),
    /// see the module header. The caller owns the message (no other task moves it).
    /// Returns whether the message was held.
    pub async fn hold_without_record(
        &self,
        id: QueueId,
        from: QueueState,
    ) -> Result<bool, SpoolError> {
        let inner = Arc::clone(&self.inner);
        if !inner.is_writable() {
            return Err(SpoolError::ReadOnly);
        }
        let task = Arc::clone(&inner);
        // Gone or a file again meanwhile (someone repaired it): the message is held all
        // the same, since the caller has stopped processing it.
        tokio::task::spawn_blocking(move || {
            let path = task.record_path(id);
            let (kind, _) = sys::entry_kind(&path).map_err(|e| SpoolError::io("stat", path, e))?;
            if matches!(kind, EntryKind::Missing | EntryKind::File) {
                return Ok(());
            }
            if task.set_aside_record(id, kind)?.0 {
                task.sync_after_quarantine(Area::Records)?;
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|e| Err(SpoolError::BlockingTask(e.to_string())))?;
        if matches!(from, QueueState::Hold | QueueState::Poison) {
            return Ok(false);
        }
        self.move_to(id, from, QueueState::Hold).await?;
        Ok(true)
    }
}
