//! Quarantine: moving a bad entry into `corrupt/`, with a `.reason` file beside it.
//!
//! The entry can be anything a directory holds (a file, a directory, a FIFO, a socket, a
//! device, a symbolic link): it is renamed, never opened and never followed, from any
//! spool directory (`Area`).
//!
//! Invariants:
//! - Nothing is ever deleted: the entry is renamed (never copied, never replaced) into
//!   `corrupt/` under its own name, or `<name>.1`, `<name>.2`... when that is taken, and a
//!   text file `<final name>.reason` says why. A name is only chosen when neither it nor
//!   its `.reason` file exists, and the rename itself refuses to replace (renameat2
//!   RENAME_NOREPLACE), so an older quarantined file is never overwritten.
//! - Every quarantine emits event 3003 with the file, the reason and the new name; its
//!   `queue_id` names a message only for a message entry (`<state>/<id>`) or a delivery
//!   record entry (`records/<id>`, quarantined as `<id>.record`).
//! - Quarantining a message that was written out of a segment that still exists logs it
//!   in the segment's `.out` first, so the segment never brings it back.
//! - A message's delivery record goes with it: quarantining `<state>/<id>` (at start, on
//!   a read, a listing, or a bad record) moves `records/<id>` to `corrupt/<id>.record`
//!   (`.record.1`... when taken). Left behind, it would be removed as an orphan at the
//!   next start, and with it the only account of which recipients already have the
//!   message, which an operator needs before releasing or repairing it.
//! - Only a read-write spool quarantines (callers check); the lock makes it the only
//!   writer of `corrupt/`.
//! - Durability is batched: callers fsync the source directory and `corrupt/` once after
//!   a batch ([`Inner::sync_after_quarantine`]). If the machine crashes first, the entry
//!   is back in its state directory and is simply quarantined again at the next start.
//!
//! Trust: `name` may be any bytes a directory can hold (it is used as one path component
//! only and shown lossily in events and reason files).

use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tern_events::{EventLog, catalog, fields};

use crate::error::{CorruptReason, SpoolError};
use crate::id::QueueId;
use crate::state::QueueState;

use super::{Area, Inner, RECORDS_DIR, name_to_id, sys};

/// Suffixes tried before giving up (a thousand copies of one name means something else
/// is wrong).
const MAX_SUFFIX: u32 = 1000;
/// Suffix of the sidecar that explains a quarantined file.
pub(crate) const REASON_SUFFIX: &str = ".reason";
/// Suffix of a delivery record quarantined with its message.
pub(crate) const RECORD_SUFFIX: &str = ".record";

/// What a quarantine adds to the reason file and event 3003 beyond the reason.
#[derive(Debug, Default)]
pub(crate) struct Extra<'a> {
    /// How the entry is named in the reason file and the event (default `<dir>/<name>`).
    pub(crate) shown: Option<&'a str>,
    /// More lines for the reason file (each ending in a newline).
    pub(crate) details: &'a str,
    /// Queue ids of damaged messages (a segment), comma-separated and bounded.
    pub(crate) damaged_ids: &'a str,
    /// Queue ids of messages written out (a segment), comma-separated and bounded.
    pub(crate) written_out_ids: &'a str,
}

/// Moves `<area>/<name>` of the spool at `spool` into `corrupt/` (see the module header),
/// without opening or following it; returns the name it got there, or `None` when it
/// vanished meanwhile. A message entry (`<state>/<id>`) takes its delivery record along;
/// a delivery record entry (`records/<id>`) is named `<id>.record` there.
pub(crate) fn move_to_corrupt(
    spool: &Path,
    events: &EventLog,
    from: Area,
    name: &OsStr,
    reason: &CorruptReason,
    extra: &Extra<'_>,
) -> Result<Option<String>, SpoolError> {
    let src = area_path(spool, from).join(name);
    let corrupt = spool.join(QueueState::Corrupt.as_str());
    let default_shown = from.show(name);
    let shown = extra.shown.unwrap_or(&default_shown);
    // The message this entry belongs to, for the tracking log.
    let queue_id = match from {
        Area::State(_) | Area::Records => name_to_id(name),
        _ => None,
    };
    let base: OsString = match (from, queue_id) {
        (Area::Records, Some(id)) => format!("{id}{RECORD_SUFFIX}").into(),
        _ => name.to_os_string(),
    };
    for n in 0..=MAX_SUFFIX {
        let mut candidate = base.clone();
        if n > 0 {
            candidate.push(format!(".{n}"));
        }
        let dst = corrupt.join(&candidate);
        let reason_path = reason_path_for(&dst);
        if dst.symlink_metadata().is_ok() || reason_path.symlink_metadata().is_ok() {
            continue;
        }
        match sys::rename_noreplace(&src, &dst) {
            Ok(()) => {
                write_reason(events, &reason_path, shown, reason, extra.details);
                let record = match (from, queue_id) {
                    (Area::State(_), Some(id)) => quarantine_record(spool, id)?,
                    _ => None,
                };
                let moved_to = format!("corrupt/{}", candidate.to_string_lossy());
                events.emit(
                    &catalog::SPOOL_CORRUPT,
                    fields!(
                        "file" => shown,
                        "reason" => reason,
                        "moved_to" => &moved_to,
                        "record" => record.as_deref().unwrap_or("none"),
                        "queue_id" => queue_id.map(|id| id.to_string()).unwrap_or_default(),
                        "damaged_ids" => extra.damaged_ids,
                        "written_out_ids" => extra.written_out_ids,
                    ),
                );
                tern_metrics::get().quarantined.inc();
                return Ok(Some(candidate.to_string_lossy().into_owned()));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SpoolError::io("quarantine", src, e)),
        }
    }
    Err(SpoolError::io(
        "quarantine",
        src,
        io::Error::other("no free name in corrupt/"),
    ))
}

fn area_path(spool: &Path, area: Area) -> PathBuf {
    match area {
        Area::Root => spool.to_path_buf(),
        _ => spool.join(area.rel()),
    }
}

/// Moves `records/<id>`, if there is one, to `corrupt/<id>.record` (or the first free
/// `<id>.record.N`); returns the new name. Never replaces anything.
fn quarantine_record(spool: &Path, id: QueueId) -> Result<Option<String>, SpoolError> {
    let rec = spool.join(RECORDS_DIR).join(id.to_string());
    let corrupt = spool.join(QueueState::Corrupt.as_str());
    for n in 0..=MAX_SUFFIX {
        let candidate = if n == 0 {
            format!("{id}{RECORD_SUFFIX}")
        } else {
            format!("{id}{RECORD_SUFFIX}.{n}")
        };
        match sys::rename_noreplace(&rec, &corrupt.join(&candidate)) {
            Ok(()) => return Ok(Some(format!("corrupt/{candidate}"))),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SpoolError::io("quarantine record", rec, e)),
        }
    }
    Err(SpoolError::io(
        "quarantine record",
        rec,
        io::Error::other("no free name in corrupt/"),
    ))
}

/// Best effort: a missing reason file loses an explanation that event 3003 also
/// carries, so failing to write it must not stop recovery.
fn write_reason(
    events: &EventLog,
    path: &Path,
    shown: &str,
    reason: &CorruptReason,
    details: &str,
) {
    let now = tern_watchdog::clock::unix_ms() / 1000;
    let written = sys::create_new(path).and_then(|mut f| {
        writeln!(f, "file: {shown}")?;
        writeln!(f, "reason: {reason}")?;
        writeln!(f, "quarantined_at_unix: {now}")?;
        f.write_all(details.as_bytes())
    });
    if let Err(e) = written {
        events.emit(
            &catalog::SPOOL_IO_ERROR,
            fields!("file" => path.display(), "op" => "write reason", "error" => e),
        );
    }
}

impl Inner {
    /// Moves `<area>/<name>` into `corrupt/` and records why. Returns `false` when the
    /// entry vanished meanwhile (moved on by its owner), `true` when it was moved. The
    /// caller adjusts the queued count and later calls `sync_after_quarantine`.
    pub(crate) fn quarantine(
        &self,
        from: Area,
        name: &OsStr,
        reason: &CorruptReason,
    ) -> Result<bool, SpoolError> {
        self.quarantine_with(from, name, reason, &Extra::default())
            .map(|moved| moved.is_some())
    }

    /// `quarantine`, naming the entry `shown` in the reason file and event 3003.
    pub(crate) fn quarantine_shown(
        &self,
        from: Area,
        name: &OsStr,
        reason: &CorruptReason,
        shown: &str,
    ) -> Result<bool, SpoolError> {
        let extra = Extra {
            shown: Some(shown),
            ..Extra::default()
        };
        self.quarantine_with(from, name, reason, &extra)
            .map(|moved| moved.is_some())
    }

    /// [`move_to_corrupt`] for this spool: the name the entry got in `corrupt/`. A
    /// message that left a segment that still exists is logged out of it first, so the
    /// segment never brings it back.
    pub(crate) fn quarantine_with(
        &self,
        from: Area,
        name: &OsStr,
        reason: &CorruptReason,
        extra: &Extra<'_>,
    ) -> Result<Option<String>, SpoolError> {
        let moved = move_to_corrupt(&self.dir, &self.events, from, name, reason, extra)?;
        if moved.is_some() {
            self.note_change();
        }
        if moved.is_some()
            && let (Area::State(s), Some(id)) = (from, name_to_id(name))
            && s != QueueState::Incoming
        {
            self.segments.gone_if_taken(id);
        }
        Ok(moved)
    }

    /// Makes a batch of quarantines durable: fsyncs `corrupt/`, the source directory and
    /// `records/` (records travel with their messages).
    pub(crate) fn sync_after_quarantine(&self, from: Area) -> Result<(), SpoolError> {
        let dirs = [
            self.area_dir(Area::State(QueueState::Corrupt)),
            self.area_dir(from),
            self.dir.join(RECORDS_DIR),
        ];
        for dir in dirs {
            let synced = if dir == self.dir {
                sys::sync_dir(&dir)
            } else {
                sys::sync_subdir(&dir)
            };
            synced.map_err(|e| SpoolError::io("fsync directory", dir, e))?;
        }
        Ok(())
    }
}

/// `<dst>.reason`.
fn reason_path_for(dst: &Path) -> PathBuf {
    let mut s: OsString = dst.as_os_str().to_os_string();
    s.push(REASON_SUFFIX);
    PathBuf::from(s)
}

/// The queue id of a quarantined message file: `<id>` or `<id>.<digits>`. Reason files
/// and names that are not ids give `None`.
pub(crate) fn quarantined_id(name: &OsStr) -> Option<QueueId> {
    let s = name.to_str()?;
    let (id, suffix) = match s.split_once('.') {
        Some((id, suffix)) => (id, Some(suffix)),
        None => (s, None),
    };
    if let Some(suffix) = suffix
        && (suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    QueueId::parse(id).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantined_names() {
        let id = QueueId::generate();
        let s = id.to_string();
        assert_eq!(quarantined_id(OsStr::new(&s)), Some(id));
        assert_eq!(quarantined_id(OsStr::new(&format!("{s}.1"))), Some(id));
        assert_eq!(quarantined_id(OsStr::new(&format!("{s}.12"))), Some(id));
        assert_eq!(quarantined_id(OsStr::new(&format!("{s}.reason"))), None);
        assert_eq!(quarantined_id(OsStr::new(&format!("{s}.1.reason"))), None);
        assert_eq!(quarantined_id(OsStr::new(&format!("{s}."))), None);
        assert_eq!(quarantined_id(OsStr::new("junk")), None);
    }
}
