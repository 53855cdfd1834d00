//! Quarantine: moving a bad entry into `corrupt/`, with a `.reason` file beside it.
//!
//! Invariants:
//! - Nothing is ever deleted: the entry is renamed (never copied, never replaced) into
//!   `corrupt/` under its own name, or `<name>.1`, `<name>.2`... when that is taken, and a
//!   text file `<final name>.reason` says why. A name is only chosen when neither it nor
//!   its `.reason` file exists, and the rename itself refuses to replace (renameat2
//!   RENAME_NOREPLACE), so an older quarantined file is never overwritten.
//! - Every quarantine emits event 3003 with the file, the reason and the new name.
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

use tern_events::{catalog, fields};

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
        let shown = format!("{}/{}", from.dir_name(), name.to_string_lossy());
        self.quarantine_shown(from, name, reason, &shown)
    }

    /// `quarantine`, naming the entry `shown` in the reason file and event 3003.
    pub(crate) fn quarantine_shown(
        &self,
        from: Area,
        name: &OsStr,
        reason: &CorruptReason,
        shown: &str,
    ) -> Result<bool, SpoolError> {
        let src = self.area_dir(from).join(name);
        let corrupt = self.area_dir(Area::State(QueueState::Corrupt));
        for n in 0..=MAX_SUFFIX {
            let mut candidate = name.to_os_string();
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
                    self.write_reason(&reason_path, shown, reason);
                    let record = match (from, name_to_id(name)) {
                        (Area::State(_), Some(id)) => self.quarantine_record(id)?,
                        _ => None,
                    };
                    self.events.emit(
                        &catalog::SPOOL_CORRUPT,
                        fields!(
                            "file" => shown,
                            "reason" => reason,
                            "moved_to" => format!("corrupt/{}", candidate.to_string_lossy()),
                            "record" => record.as_deref().unwrap_or("none"),
                            "queue_id" => name_to_id(name).map(|id| id.to_string()).unwrap_or_default(),
                        ),
                    );
                    tern_metrics::get().quarantined.inc();
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(SpoolError::io("quarantine", src, e)),
            }
        }
        Err(SpoolError::io(
            "quarantine",
            src,
            io::Error::other("no free name in corrupt/"),
        ))
    }

    /// Moves `records/<id>`, if there is one, to `corrupt/<id>.record` (or the first free
    /// `<id>.record.N`); returns the new name. Never replaces anything.
    fn quarantine_record(&self, id: QueueId) -> Result<Option<String>, SpoolError> {
        let rec = self.record_path(id);
        let corrupt = self.area_dir(Area::State(QueueState::Corrupt));
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
    fn write_reason(&self, path: &Path, shown: &str, reason: &CorruptReason) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let written = sys::create_new(path).and_then(|mut f| {
            writeln!(f, "file: {shown}")?;
            writeln!(f, "reason: {reason}")?;
            writeln!(f, "quarantined_at_unix: {now}")
        });
        if let Err(e) = written {
            self.events.emit(
                &catalog::SPOOL_IO_ERROR,
                fields!("file" => path.display(), "op" => "write reason", "error" => e),
            );
        }
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
            sys::sync_dir(&dir).map_err(|e| SpoolError::io("fsync directory", dir, e))?;
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
