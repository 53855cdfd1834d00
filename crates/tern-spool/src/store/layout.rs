//! The spool's own tree, checked at open before anything in it is used: the lock file,
//! the key file and every subdirectory are what Tern made, or are set aside.
//!
//! Rules (docs/SPOOL.md, "Unexpected entries"):
//! - The spool directory itself is the administrator's choice (it may be reached through
//!   a symbolic link), but it must belong to Tern's user: a spool someone else owns is
//!   refused (an error at open, like a missing permission), and Tern's own is set to
//!   mode 0700.
//! - `spool.lock` must be a regular file. Anything else by that name (a directory, a
//!   FIFO, a link) is renamed aside in the spool directory before the lock is taken (the
//!   only change made without the lock), then quarantined once the lock is held.
//! - Every subdirectory (`corrupt`, `tmp`, the states, `records`, `free`, `segments`,
//!   `alloc`, `alloc/00..15`) must be a directory, not a link, owned by Tern's user; its
//!   mode is set to 0700. Anything else by that name is moved into `corrupt/` with a
//!   reason (event 3003) and a new directory is created; `corrupt/` itself is first
//!   renamed aside in the spool directory, then quarantined into the new `corrupt/`.
//! - Other names in the spool directory itself are left untouched and reported once per
//!   start (event 3011): an administrator's notes beside the queue are not mail.
//!
//! Trust: nothing here is opened except through `O_NOFOLLOW | O_NONBLOCK` (or
//! `O_DIRECTORY` for directories) with a type check; entries set aside are renamed,
//! never opened, never followed, never deleted.

use std::ffi::OsString;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use tern_events::{EventLog, catalog, fields};

use crate::error::{CorruptReason, SpoolError};
use crate::state::QueueState;

use super::evidence::{GASP_FILE, PROBE_FILE, PROBE_NEW_FILE};
use super::key::KEY_FILE;
use super::quarantine::{Extra, move_to_corrupt};
use super::sys::{self, EntryKind};
use super::{Area, LOCK_FILE};

/// Suffix of an entry renamed aside in the spool directory, waiting to be quarantined.
const SET_ASIDE: &str = ".set-aside";
/// Most names listed in event 3011.
const MAX_NAMES_IN_EVENT: usize = 20;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SpoolError + 'a {
    move |e| SpoolError::io(op, path, e)
}

/// A name no entry has, for setting `name` aside in the spool directory.
fn aside_name(name: &str) -> OsString {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{name}.{nanos}{SET_ASIDE}").into()
}

/// Checks the spool directory itself: it must belong to this process's user; its mode
/// becomes 0700.
pub(crate) fn check_root(dir: &Path) -> Result<(), SpoolError> {
    let meta = std::fs::metadata(dir).map_err(io_err("stat", dir))?;
    if !meta.is_dir() {
        return Err(SpoolError::io(
            "open",
            dir,
            io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    if meta.uid() != sys::euid() {
        return Err(SpoolError::io(
            "check owner of",
            dir,
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "the spool directory belongs to uid {}, not to Tern's user (uid {}); \
                     another user could change the queue",
                    meta.uid(),
                    sys::euid()
                ),
            ),
        ));
    }
    let f = File::open(dir).map_err(io_err("open", dir))?;
    sys::restrict_dir(&f).map_err(io_err("chmod", dir))
}

/// Before the lock is taken: if `spool.lock` exists and is not a regular file, renames
/// it aside (see the module header) and returns the new name and what it was.
pub(crate) fn clear_lock_path(dir: &Path) -> Result<Option<(OsString, String)>, SpoolError> {
    let path = dir.join(LOCK_FILE);
    match sys::entry_kind(&path).map_err(io_err("stat", &path))? {
        (EntryKind::Missing | EntryKind::File, _) => Ok(None),
        (kind, _) => {
            let aside = aside_name(LOCK_FILE);
            sys::rename_noreplace(&path, &dir.join(&aside)).map_err(io_err("rename", &path))?;
            Ok(Some((aside, format!("spool.lock was {}", kind.describe()))))
        }
    }
}

/// Opens (creating it, mode 0600) the lock file: never through a link, never blocking,
/// a regular file only.
pub(crate) fn open_lock(dir: &Path) -> Result<File, SpoolError> {
    let path = dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(io_err("open", &path))?;
    let meta = f.metadata().map_err(io_err("stat", &path))?;
    if !meta.is_file() {
        return Err(SpoolError::io(
            "open",
            &path,
            io::Error::other("not a regular file"),
        ));
    }
    Ok(f)
}

/// Opens the lock file of a spool for a look (no creation): `None` when there is none or
/// it is not a regular file.
pub(crate) fn open_lock_read(dir: &Path) -> Result<Option<File>, SpoolError> {
    let path = dir.join(LOCK_FILE);
    match sys::open_regular(&path, false) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound || sys::is_not_regular(&e) => Ok(None),
        Err(e) => Err(SpoolError::io("open", path, e)),
    }
}

/// Whether `meta` is a directory Tern may use: not a link, owned by this process's user.
fn usable_dir(kind: EntryKind, meta: Option<&std::fs::Metadata>) -> Result<(), String> {
    match (kind, meta) {
        (EntryKind::Dir, Some(m)) if m.uid() == sys::euid() => Ok(()),
        (EntryKind::Dir, Some(m)) => Err(format!(
            "a directory owned by uid {}, not by Tern's user",
            m.uid()
        )),
        (kind, _) => Err(format!("{}, not a directory", kind.describe())),
    }
}

/// After the lock is taken: every subdirectory is a usable directory with mode 0700,
/// anything else by its name quarantined; entries set aside before the lock (`aside`)
/// are quarantined too. Returns how many entries were quarantined.
pub(crate) fn check_dirs(
    dir: &Path,
    events: &EventLog,
    aside: Option<(OsString, String)>,
) -> Result<usize, SpoolError> {
    let mut builder = DirBuilder::new();
    builder.mode(0o700);
    let mut pending: Vec<(OsString, String)> = aside.into_iter().collect();
    let mut quarantined = 0;
    for area in Area::subdirectories() {
        let path = dir.join(area.rel());
        let (kind, meta) = sys::entry_kind(&path).map_err(io_err("stat", &path))?;
        if kind != EntryKind::Missing
            && let Err(why) = usable_dir(kind, meta.as_ref())
        {
            let name = area.rel();
            if area == Area::State(QueueState::Corrupt) {
                // Not into itself: aside first, into the new corrupt/ below.
                let aside = aside_name(&name);
                sys::rename_noreplace(&path, &dir.join(&aside)).map_err(io_err("rename", &path))?;
                pending.push((aside, format!("{name} was {why}")));
            } else {
                let (parent, leaf) = match area {
                    Area::AllocSlot(_) => (Area::Alloc, name.rsplit('/').next().unwrap_or("")),
                    _ => (Area::Root, name.as_str()),
                };
                let reason = CorruptReason::UnexpectedEntry(format!(
                    "{name} is {why}; a new directory was made in its place"
                ));
                let moved = move_to_corrupt(
                    dir,
                    events,
                    parent,
                    leaf.as_ref(),
                    &reason,
                    &Extra::default(),
                )?;
                quarantined += usize::from(moved.is_some());
            }
        }
        match builder.create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(SpoolError::io("create directory", &path, e)),
        }
        let f = sys::open_dir(&path).map_err(io_err("open", &path))?;
        sys::restrict_dir(&f).map_err(io_err("chmod", &path))?;
    }
    for (aside, why) in pending {
        let reason = CorruptReason::UnexpectedEntry(why);
        let moved = move_to_corrupt(dir, events, Area::Root, &aside, &reason, &Extra::default())?;
        quarantined += usize::from(moved.is_some());
    }
    if quarantined > 0 {
        sys::sync_subdir(&dir.join(QueueState::Corrupt.as_str()))
            .map_err(io_err("fsync directory", dir))?;
    }
    sys::sync_dir(dir).map_err(io_err("fsync directory", dir))?;
    Ok(quarantined)
}

/// Reports (event 3011, once per start) the names in the spool directory that Tern does
/// not use; they are left alone.
pub(crate) fn report_unknown(dir: &Path, events: &EventLog) -> Result<(), SpoolError> {
    let known: Vec<String> = Area::subdirectories()
        .into_iter()
        .map(Area::rel)
        .filter(|r| !r.contains('/'))
        .chain(
            [
                LOCK_FILE,
                KEY_FILE,
                PROBE_FILE,
                PROBE_NEW_FILE,
                GASP_FILE,
                super::adopt::NODE_FILE,
                super::adopt::ADOPTED_FILE,
            ]
            .map(String::from),
        )
        .collect();
    let mut unknown: Vec<String> = super::read_names(dir)?
        .into_iter()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !known.contains(n))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort();
    let count = unknown.len();
    unknown.truncate(MAX_NAMES_IN_EVENT);
    events.emit(
        &catalog::SPOOL_UNKNOWN_ENTRIES,
        fields!("dir" => dir.display(), "count" => count, "names" => unknown.join(",")),
    );
    Ok(())
}
