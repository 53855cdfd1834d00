//! The crash-evidence files in the spool directory (formats in [`crate::crash`]):
//! `probe` (the probe journal, with `probe.new` while a new header is written) and
//! `last-gasp` (the record a dying process writes from its signal handler).
//!
//! Durability: a journal header is written to `probe.new`, fdatasynced, renamed over
//! `probe`, and the spool directory fsynced; an appended entry is fdatasynced before the
//! call returns when the caller asks (a `probe` entry, so that it is on disk before the
//! probe it announces starts; the last `done` of a group).
//! The last-gasp file is only truncated and handed out; what a dying process writes into
//! it survives the process (the kernel keeps the pages), not a power loss, which leaves
//! no last gasp anyway.
//!
//! Trust: these names are Tern's own. Anything by these names that is not a regular file
//! (a directory, FIFO, link...) is moved to `corrupt/` with a reason (event 3003), never
//! opened or followed, and reads as no evidence. Reads are bounded.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::crash::{
    GASP_LINE_LEN, JournalEntry, JournalState, LastGasp, MAX_GASP_LINES, MAX_JOURNAL_LEN, Suspect,
    journal_header, parse_gasps, parse_journal,
};
use crate::error::{CorruptReason, SpoolError};

use super::quarantine::{Extra, move_to_corrupt};
use super::sys::{self, EntryKind};
use super::{Area, Spool};

/// The probe journal.
pub(crate) const PROBE_FILE: &str = "probe";
/// A new probe journal's header being written.
pub(crate) const PROBE_NEW_FILE: &str = "probe.new";
/// The last-gasp record.
pub(crate) const GASP_FILE: &str = "last-gasp";

/// What the previous run's probe journal says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalRead {
    /// There is none (a new spool, or one used by a version without probes).
    Missing,
    /// It exists but cannot be used; the text says why.
    Unusable(String),
    /// Its content.
    Read(JournalState),
}

/// What the spool holds about how the previous run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashEvidence {
    /// The probe journal.
    pub journal: JournalRead,
    /// The lines of the last-gasp record (of any run: the caller keeps the journal's).
    pub gasps: Vec<LastGasp>,
}

/// The open probe journal of this run. Its methods block (one append and one
/// `fdatasync` each); the mutex guards only the file and is never held across an await.
#[derive(Debug)]
pub struct ProbeJournal {
    path: PathBuf,
    file: Mutex<File>,
}

impl ProbeJournal {
    /// Appends `entry`; with `sync`, makes it (and every entry before it) durable before
    /// returning.
    pub fn append(&self, entry: &JournalEntry, sync: bool) -> Result<(), SpoolError> {
        let bytes = entry.encode();
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let mut f: &File = &file;
        f.write_all(&bytes)
            .and_then(|()| if sync { f.sync_data() } else { Ok(()) })
            .map_err(|e| SpoolError::io("append to", &self.path, e))
    }
}

impl Spool {
    /// Reads the probe journal and the last-gasp record left by the previous run.
    /// Blocking; bounded reads. An entry by either name that is not a regular file is
    /// quarantined (read-write spool) and reads as missing.
    pub fn crash_evidence(&self) -> Result<CrashEvidence, SpoolError> {
        let journal = match self.read_own_file(PROBE_FILE, MAX_JOURNAL_LEN)? {
            None => JournalRead::Missing,
            Some(bytes) => match parse_journal(&bytes) {
                Ok(state) => JournalRead::Read(state),
                Err(why) => JournalRead::Unusable(why),
            },
        };
        let gasps = self
            .read_own_file(GASP_FILE, GASP_LINE_LEN * MAX_GASP_LINES)?
            .map(|bytes| parse_gasps(&bytes))
            .unwrap_or_default();
        Ok(CrashEvidence { journal, gasps })
    }

    /// Makes a new probe journal for run `run` (started at `started_micros`) with the
    /// suspect `line`, durably (see the module header), and opens it for appending. It
    /// replaces the previous run's journal, so the caller must have counted what that one
    /// says first. Blocking.
    pub fn start_probe_journal(
        &self,
        run: u64,
        started_micros: i64,
        line: &[Suspect],
    ) -> Result<ProbeJournal, SpoolError> {
        if !self.inner.is_writable() {
            return Err(SpoolError::ReadOnly);
        }
        let dir = self.inner.area_dir(Area::Root);
        self.set_aside_unless_file(PROBE_FILE)?;
        self.set_aside_unless_file(PROBE_NEW_FILE)?;
        let tmp = dir.join(PROBE_NEW_FILE);
        let path = dir.join(PROBE_FILE);
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(SpoolError::io("unlink", &tmp, e)),
        }
        let mut file = sys::create_new(&tmp).map_err(|e| SpoolError::io("create", &tmp, e))?;
        file.write_all(&journal_header(run, started_micros, line))
            .and_then(|()| file.sync_data())
            .map_err(|e| SpoolError::io("write", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| SpoolError::io("rename", &path, e))?;
        sys::sync_dir(&dir).map_err(|e| SpoolError::io("fsync directory", &dir, e))?;
        Ok(ProbeJournal {
            path,
            file: Mutex::new(file),
        })
    }

    /// Opens the last-gasp record for this run's signal handler, emptied, mode 0600 (set
    /// explicitly, whatever the umask or an earlier mode). The previous run's lines must
    /// have been read first. Blocking.
    pub fn open_last_gasp(&self) -> Result<File, SpoolError> {
        if !self.inner.is_writable() {
            return Err(SpoolError::ReadOnly);
        }
        self.set_aside_unless_file(GASP_FILE)?;
        let path = self.inner.area_dir(Area::Root).join(GASP_FILE);
        let io = |op| {
            let path = path.clone();
            move |e| SpoolError::io(op, path, e)
        };
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .map_err(io("open"))?;
        let meta = file.metadata().map_err(io("stat"))?;
        if !meta.is_file() {
            return Err(SpoolError::io(
                "open",
                &path,
                io::Error::other("not a regular file"),
            ));
        }
        if meta.permissions().mode() & 0o7777 != 0o600 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io("chmod"))?;
        }
        Ok(file)
    }

    /// `<spool>/<name>`'s bytes (at most `limit`, more is cut), `None` when there is no
    /// regular file by that name.
    fn read_own_file(&self, name: &str, limit: usize) -> Result<Option<Vec<u8>>, SpoolError> {
        if !self.set_aside_unless_file(name)? {
            return Ok(None);
        }
        let path = self.inner.area_dir(Area::Root).join(name);
        let file = match sys::open_regular(&path, false) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if sys::is_not_regular(&e) => return Ok(None),
            Err(e) => return Err(SpoolError::io("open", path, e)),
        };
        let mut bytes = Vec::new();
        file.take(limit as u64)
            .read_to_end(&mut bytes)
            .map_err(|e| SpoolError::io("read", &path, e))?;
        Ok(Some(bytes))
    }

    /// Whether `<spool>/<name>` is a regular file. Anything else by that name is moved to
    /// `corrupt/` (read-write spool) and `false` returned, as for nothing at all.
    fn set_aside_unless_file(&self, name: &str) -> Result<bool, SpoolError> {
        let dir = self.inner.area_dir(Area::Root);
        let path = dir.join(name);
        let (kind, _) = sys::entry_kind(&path).map_err(|e| SpoolError::io("stat", &path, e))?;
        match kind {
            EntryKind::File => Ok(true),
            EntryKind::Missing => Ok(false),
            other if self.inner.is_writable() => {
                let reason = CorruptReason::UnexpectedEntry(format!(
                    "{name} is {}, not a regular file",
                    other.describe()
                ));
                move_to_corrupt(
                    &dir,
                    &self.inner.events,
                    Area::Root,
                    name.as_ref(),
                    &reason,
                    &Extra::default(),
                )?;
                sync_corrupt(&dir)?;
                Ok(false)
            }
            _ => Ok(false),
        }
    }
}

/// fsyncs `corrupt/` and the spool directory after a move between them.
fn sync_corrupt(dir: &Path) -> Result<(), SpoolError> {
    let corrupt = dir.join(crate::QueueState::Corrupt.as_str());
    sys::sync_subdir(&corrupt).map_err(|e| SpoolError::io("fsync directory", &corrupt, e))?;
    sys::sync_dir(dir).map_err(|e| SpoolError::io("fsync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::QueueId;
    use crate::crash::gasp_line;
    use tern_events::EventLog;

    fn open() -> (tempfile::TempDir, Spool) {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(&dir.path().join("spool"), EventLog::discard()).unwrap();
        (dir, spool)
    }

    #[test]
    fn a_new_spool_has_no_evidence() {
        let (_d, spool) = open();
        let ev = spool.crash_evidence().unwrap();
        assert_eq!(ev.journal, JournalRead::Missing);
        assert!(ev.gasps.is_empty());
    }

    #[test]
    fn journal_entries_and_gasps_are_read_back_by_the_next_start() {
        let (_d, spool) = open();
        let line = [QueueId::generate(), QueueId::generate()];
        let suspects: Vec<Suspect> = line
            .iter()
            .map(|&id| Suspect { id, max_group: 64 })
            .collect();
        let j = spool.start_probe_journal(9, 1234, &suspects).unwrap();
        j.append(&JournalEntry::Probe(vec![line[0]]), true).unwrap();
        let gasp = spool.open_last_gasp().unwrap();
        use std::os::unix::fs::FileExt;
        gasp.write_all_at(&gasp_line(9, 6, Some(line[0].to_ascii())), 0)
            .unwrap();
        let ev = spool.crash_evidence().unwrap();
        let JournalRead::Read(state) = ev.journal else {
            panic!("{:?}", ev.journal);
        };
        assert_eq!(state.run, 9);
        assert_eq!(state.probing, [line[0]].into());
        assert_eq!(state.group_size, 1);
        assert_eq!(ev.gasps.len(), 1);
        assert_eq!(ev.gasps[0].id, Some(line[0]));
        // The next run empties the record and replaces the journal.
        drop(spool.open_last_gasp().unwrap());
        spool.start_probe_journal(10, 5678, &[]).unwrap();
        let ev = spool.crash_evidence().unwrap();
        assert!(ev.gasps.is_empty());
        let JournalRead::Read(state) = ev.journal else {
            panic!()
        };
        assert_eq!((state.run, state.line.len()), (10, 0));
    }

    #[test]
    fn evidence_files_that_are_not_files_are_set_aside() {
        let (d, spool) = open();
        let root = d.path().join("spool");
        std::fs::create_dir(root.join(PROBE_FILE)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join(GASP_FILE)).unwrap();
        let ev = spool.crash_evidence().unwrap();
        assert_eq!(ev.journal, JournalRead::Missing);
        assert!(ev.gasps.is_empty());
        let corrupt: Vec<String> = std::fs::read_dir(root.join("corrupt"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(corrupt.iter().any(|n| n == PROBE_FILE), "{corrupt:?}");
        assert!(corrupt.iter().any(|n| n == GASP_FILE), "{corrupt:?}");
        // And the files are made anew, 0600.
        spool.start_probe_journal(1, 0, &[]).unwrap();
        let g = spool.open_last_gasp().unwrap();
        assert_eq!(g.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        let p = std::fs::metadata(root.join(PROBE_FILE)).unwrap();
        assert_eq!(p.permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_damaged_journal_is_unusable_not_fatal() {
        let (d, spool) = open();
        std::fs::write(d.path().join("spool").join(PROBE_FILE), b"rubbish\n").unwrap();
        assert!(matches!(
            spool.crash_evidence().unwrap().journal,
            JournalRead::Unusable(_)
        ));
    }
}
