//! The spool's side of segment mode (`segment`): reading a resident message, writing
//! one out as a file of its own when it leaves `incoming`, quarantining one, and the
//! segment part of recovery.
//!
//! Invariants:
//! - A message is written out (file synced, named, its directory synced) before the
//!   segment forgets it (`Segments::taken`), so there is no moment when it is in neither.
//! - Everything that removes a message for good logs it in its segment's `.out` first
//!   (`Segments::gone`), so recovery never brings back a message that left.

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;

use crate::error::{CorruptReason, SpoolError};
use crate::id::QueueId;
use crate::state::QueueState;

use super::quarantine::quarantined_id;
use super::segment::{Resident, SegmentReport};
use super::writer::TmpFile;
use super::{Area, Inner, Spool, name_to_id, read_names, sys};

impl Inner {
    /// Ids that have a file of their own in a state directory or in `corrupt/`.
    pub(crate) fn file_ids(&self) -> Result<HashSet<QueueId>, SpoolError> {
        let mut ids = HashSet::new();
        for state in QueueState::ALL {
            for name in read_names(&self.area_dir(Area::State(state)))? {
                let id = if state == QueueState::Corrupt {
                    quarantined_id(&name)
                } else {
                    name_to_id(&name)
                };
                ids.extend(id);
            }
        }
        Ok(ids)
    }

    /// The whole file of a resident message.
    pub(crate) fn read_resident(&self, r: &Resident) -> Result<Vec<u8>, SpoolError> {
        r.read()
            .map_err(|e| SpoolError::io("read", self.segments.dir(), e))
    }

    /// Copies a resident message that failed validation into `corrupt/<id>` (or the
    /// first free `<id>.N`) with a reason (event 3003), through `tmp/` and the same
    /// `quarantine` as a file, then logs it out of its segment.
    pub(crate) fn quarantine_resident(
        &self,
        id: QueueId,
        blob: &[u8],
        reason: &CorruptReason,
    ) -> Result<(), SpoolError> {
        let name = id.to_string();
        let tmp = self.entry_path(Area::Tmp, id);
        let written = sys::create_new(&tmp).and_then(|mut f| {
            f.write_all(blob)?;
            f.sync_all()
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(SpoolError::io("write", tmp, e));
        }
        let shown = format!("{}/ (message {id})", super::segment::SEGMENTS_DIR);
        if !self.quarantine_shown(Area::Tmp, name.as_ref(), reason, &shown)? {
            return Err(SpoolError::NotFound);
        }
        self.sync_after_quarantine(Area::Tmp)?;
        if self.segments.gone(id)? {
            self.forget_queued(QueueState::Incoming);
        }
        Ok(())
    }

    /// At open, before the state directories are validated: scans the segments, writes
    /// out the readable records of damaged ones (to `incoming/`, or `hold/` past a
    /// resync), quarantines those, cuts
    /// unfinished tails, and indexes the resident messages (see `segment`).
    pub(crate) fn recover_segments(&self) -> Result<SegmentReport, SpoolError> {
        let ids = self.file_ids()?;
        let has_file = |id| ids.contains(&id);
        let scanned = self.segments.scan_all(&has_file)?;
        let write_out = |id: QueueId, blob: &[u8], to: QueueState| -> Result<(), SpoolError> {
            let dst = self.entry_path(Area::State(to), id);
            if dst.symlink_metadata().is_ok() {
                return Ok(());
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
            Ok(())
        };
        let quarantine = |name: &std::ffi::OsStr, reason: &CorruptReason| {
            let moved = self.quarantine(Area::Segments, name, reason)?;
            if moved {
                for state in [QueueState::Incoming, QueueState::Hold] {
                    let dir = self.area_dir(Area::State(state));
                    sys::sync_dir(&dir).map_err(|e| SpoolError::io("fsync directory", &dir, e))?;
                }
                self.sync_after_quarantine(Area::Segments)?;
            }
            Ok(moved)
        };
        self.segments
            .recover(scanned, &self.events, &write_out, &quarantine)
    }
}

impl Spool {
    /// `move_to` for a message resident in a segment: writes it out as `to/<id>` (a
    /// delivered message's file when the pool has one, else a new inode), fdatasyncs it,
    /// links it, fsyncs it, waits for the group-committed fsync of `to/`, and only then
    /// drops it from the segment.
    pub(crate) async fn write_out(
        &self,
        id: QueueId,
        r: Resident,
        to: QueueState,
    ) -> Result<(), SpoolError> {
        let inner = Arc::clone(&self.inner);
        let syncer = self.inner.syncer_for(to)?;
        let task_inner = Arc::clone(&inner);
        let done = tokio::task::spawn_blocking(move || -> Result<Option<_>, SpoolError> {
            let inner = task_inner;
            let dst = inner.entry_path(Area::State(to), id);
            if dst.symlink_metadata().is_ok() {
                // Written out before, by a move that failed after its link.
                return Ok(None);
            }
            let blob = inner.read_resident(&r)?;
            let placement = inner.use_tmpfile().then(|| inner.placement_dir());
            let mut tmp = TmpFile::create(
                &inner,
                placement.as_deref(),
                inner.entry_path(Area::Tmp, id),
            )?;
            tmp.write_all(&blob)?;
            tmp.finish(&dst)?;
            Ok(tmp.free_name())
        })
        .await
        .unwrap_or_else(|e| Err(SpoolError::BlockingTask(e.to_string())))?;
        let synced = syncer.sync().await;
        if let Some(free) = done {
            let _ = std::fs::remove_file(free);
        }
        synced.map_err(|e| SpoolError::io("fsync directory", syncer.path().clone(), e))?;
        if let Some(seg) = inner.segments.taken(id) {
            // Its last resident left: unlink it (blocking I/O, off the async workers).
            let segments = Arc::clone(&inner.segments);
            let _ = tokio::task::spawn_blocking(move || segments.retire(seg)).await;
        }
        if !to.is_queued() {
            inner.forget_queued(QueueState::Incoming);
        }
        Ok(())
    }
}
