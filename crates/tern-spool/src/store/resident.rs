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

use super::quarantine::Extra;
use super::segment::{Resident, SegmentReport};
use super::writer::TmpFile;
use super::{Area, Inner, Spool, name_to_id, read_names, sys};

impl Inner {
    /// Ids that have a regular file of their own in a state directory (a read-only
    /// spool's view: nothing is validated).
    pub(crate) fn file_ids(&self) -> Result<HashSet<QueueId>, SpoolError> {
        let mut ids = HashSet::new();
        for state in QueueState::ALL {
            if state == QueueState::Corrupt {
                continue;
            }
            let dir = self.area_dir(Area::State(state));
            for name in read_names(&dir)? {
                if let Some(id) = name_to_id(&name)
                    && dir
                        .join(&name)
                        .symlink_metadata()
                        .is_ok_and(|m| m.is_file())
                {
                    ids.insert(id);
                }
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

    /// At open, after the state directories were validated (`valid`: the ids with a
    /// valid file of their own): quarantines unexpected entries of `segments/`, scans
    /// the segments, writes out the readable records of damaged ones (to `incoming/`,
    /// or `hold/` when found only by searching), quarantines those, cuts the unfinished
    /// tail of the newest unsealed one, seals the rest, and indexes the resident
    /// messages (see `segment`).
    /// `only`: the segments there at a background start (`Segments::prepare_background`);
    /// `None`: every segment.
    pub(crate) fn recover_segments(
        &self,
        has_file: &dyn Fn(QueueId) -> bool,
        only: Option<&HashSet<QueueId>>,
    ) -> Result<SegmentReport, SpoolError> {
        let (scanned, unexpected) = self.segments.scan_all(has_file, true, only)?;
        let mut set_aside = 0;
        for (name, why) in unexpected {
            let reason = CorruptReason::UnexpectedEntry(why);
            set_aside += usize::from(self.quarantine(Area::Segments, &name, &reason)?);
        }
        if set_aside > 0 {
            self.sync_after_quarantine(Area::Segments)?;
        }
        let write_out = |id: QueueId, blob: &[u8], to: QueueState| -> Result<bool, SpoolError> {
            self.write_out_file(id, blob, to)
        };
        let quarantine = |name: &std::ffi::OsStr,
                          reason: &CorruptReason,
                          details: &str,
                          damaged_ids: &str,
                          written_out_ids: &str| {
            // The messages written out are durable before the segment leaves.
            for state in [QueueState::Incoming, QueueState::Hold] {
                let dir = self.area_dir(Area::State(state));
                sys::sync_subdir(&dir).map_err(|e| SpoolError::io("fsync directory", &dir, e))?;
            }
            let extra = Extra {
                shown: None,
                details,
                damaged_ids,
                written_out_ids,
            };
            let moved = self.quarantine_with(Area::Segments, name, reason, &extra)?;
            if moved.is_some() {
                self.sync_after_quarantine(Area::Segments)?;
            }
            Ok(moved)
        };
        let mut report = self
            .segments
            .recover(scanned, &self.events, &write_out, &quarantine)?;
        report.quarantined += set_aside;
        Ok(report)
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
        // A file in `to/` and still resident: a listing may see it twice until `taken`.
        inner.note_change();
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
