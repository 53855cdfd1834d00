//! The pickup service's work on the directory itself: find units, claim them, read them,
//! move the unusable ones to badmail, remove the queued ones. Blocking; called through
//! `spawn_blocking` by the service.
//!
//! A unit is a plain message file (format `headers`) or a pair `<stem>.env` +
//! `<stem>.eml` (format `envelope`). Claiming renames the unit's files from the pickup
//! directory into `.claimed/` (envelope file first), without replacing anything, so the
//! writer may reuse a name at once and Tern never removes a file it has not read.
//!
//! What a file left in `.claimed/` means (the pickup service processes `.claimed/` first
//! on every scan, so this is also the recovery after a crash):
//! - a plain file, or a complete pair: claimed and not yet queued, or queued and not yet
//!   removed (the duplicate window): processed again;
//! - a lone `.env`: the crash came between claiming it and its `.eml` (which is then
//!   still in the pickup directory and is claimed now), or between removing the `.eml`
//!   and the `.env` of a queued pair (then the `.eml` is nowhere and the `.env` is
//!   removed);
//! - a lone `.eml`: its envelope file was removed by someone else: badmail.
//!
//! Directories (checked once, at start, by [`Dirs::prepare`]): the pickup directory,
//! `.claimed/` and `badmail/` are opened with `O_NOFOLLOW | O_DIRECTORY` (created 0700
//! when missing) and must be directories owned by Tern; the pickup directory's parent
//! must be owned by root or Tern and not writable by others unless sticky. Looser modes
//! are tightened ([`pickup_mode`] for the pickup directory, 0700 for the two others) and
//! reported; anything else refuses the start. Why paths are then enough (no descriptors
//! kept): `.claimed` and `badmail` are Tern's entries in a directory that is sticky or
//! writable by Tern only, so nobody else can rename, remove or replace them; the pickup
//! directory itself is an entry of a directory only root or Tern can write. The names
//! keep resolving to the directories checked for the life of the process.
//!
//! Trust: names are validated (a name outside `[A-Za-z0-9._+=,@%~-]`, or longer than
//! 200 octets, or not UTF-8 goes to badmail under a generated name); only regular files
//! with exactly one link are read (a hard link to someone else's file is never read),
//! opened without following symlinks and without blocking on a FIFO; sizes are capped
//! before and while reading.

use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::durable::{
    ENV_SUFFIX, IoFailure, MSG_SUFFIX, TMP_PREFIX, publish, rename_noreplace, sync_dir,
};

/// Name of the directory of claimed files, inside the pickup directory.
pub const CLAIMED_DIR: &str = ".claimed";
/// Name of the directory of unusable files, inside the pickup directory.
pub const BADMAIL_DIR: &str = "badmail";
/// Longest file name taken.
const MAX_NAME: usize = 200;

/// The pickup directory and its two subdirectories.
#[derive(Debug, Clone)]
pub(crate) struct Dirs {
    pub pickup: PathBuf,
    pub claimed: PathBuf,
    pub badmail: PathBuf,
}

impl Dirs {
    pub(crate) fn new(pickup: &Path) -> Dirs {
        Dirs {
            pickup: pickup.to_path_buf(),
            claimed: pickup.join(CLAIMED_DIR),
            badmail: pickup.join(BADMAIL_DIR),
        }
    }

    /// Creates the three directories when missing and checks them (see the module
    /// header, "Directories"); returns the modes it tightened. `uid` is Tern's.
    pub(crate) fn prepare(&self, uid: u32) -> Result<Vec<ModeFix>, DirProblem> {
        let mut fixes = Vec::new();
        if let Some(parent) = self.pickup.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| DirProblem::io(parent, "create", e))?;
            check_parent(parent, uid)?;
        }
        let pickup = open_own_dir(&self.pickup, None, uid, pickup_mode, &mut fixes)?;
        for sub in [&self.claimed, &self.badmail] {
            open_own_dir(sub, Some(&pickup), uid, |_| 0o700, &mut fixes)?;
        }
        Ok(fixes)
    }
}

/// A directory whose mode Tern tightened at start (event 6010).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModeFix {
    pub dir: PathBuf,
    pub old: u32,
    pub new: u32,
}

/// Why a pickup directory cannot be used: the service does not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {why}", path.display())]
pub(crate) struct DirProblem {
    pub path: PathBuf,
    pub why: String,
}

impl DirProblem {
    fn io(path: &Path, op: &str, e: impl std::fmt::Display) -> DirProblem {
        DirProblem {
            path: path.to_path_buf(),
            why: format!("cannot {op} it: {e}"),
        }
    }
}

/// The mode the pickup directory must have, from the mode it has: the owner has
/// everything; the group and others never read (list) it; a class that may write (to
/// submit) keeps `wx`, and then the sticky bit is set so nobody removes or renames what
/// is not theirs; a class that may not write gets nothing. So 0700 and 1733 (the
/// documented modes) stay, 0755 becomes 0700, 0777 or 0733 become 1733, 0770 becomes
/// 1730.
pub(crate) fn pickup_mode(mode: u32) -> u32 {
    let mut out = 0o700 | (mode & 0o2000);
    for shift in [3, 0] {
        if (mode >> shift) & 0o2 != 0 {
            out |= 0o3 << shift;
        }
    }
    if out & 0o022 != 0 {
        out |= 0o1000;
    }
    out
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// The parent of the pickup directory must be owned by root or Tern and not writable by
/// others (unless sticky), so nobody else can swap the pickup directory.
fn check_parent(parent: &Path, uid: u32) -> Result<(), DirProblem> {
    let m = std::fs::metadata(parent).map_err(|e| DirProblem::io(parent, "stat", e))?;
    let mode = m.mode() & 0o7777;
    if m.uid() != 0 && m.uid() != uid {
        return Err(DirProblem {
            path: parent.to_path_buf(),
            why: format!(
                "the directory holding the pickup directory is owned by uid {}, neither root nor Tern (uid {uid}); refusing to start",
                m.uid()
            ),
        });
    }
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(DirProblem {
            path: parent.to_path_buf(),
            why: format!(
                "the directory holding the pickup directory is writable by its group or others (mode {mode:o}) without the sticky bit; refusing to start"
            ),
        });
    }
    Ok(())
}

/// Opens (creating it 0700 when missing) one of the pickup service's directories without
/// following a link, checks that it is a directory owned by Tern, and tightens its mode
/// to `wanted(mode)` when it differs.
fn open_own_dir(
    path: &Path,
    parent: Option<&OwnedFd>,
    uid: u32,
    wanted: impl Fn(u32) -> u32,
    fixes: &mut Vec<ModeFix>,
) -> Result<OwnedFd, DirProblem> {
    let name: &Path = match parent {
        Some(_) => Path::new(path.file_name().unwrap_or_default()),
        None => path,
    };
    let open = || match parent {
        Some(p) => rustix::fs::openat(p, name, DIR_FLAGS, Mode::empty()),
        None => rustix::fs::open(name, DIR_FLAGS, Mode::empty()),
    };
    let mut created = false;
    let fd = match open() {
        Ok(fd) => fd,
        Err(Errno::NOENT) => {
            let made = match parent {
                Some(p) => rustix::fs::mkdirat(p, name, Mode::from_raw_mode(0o700)),
                None => rustix::fs::mkdir(name, Mode::from_raw_mode(0o700)),
            };
            match made {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(DirProblem::io(path, "create", std::io::Error::from(e))),
            }
            created = true;
            open().map_err(|e| refusal(path, e))?
        }
        Err(e) => return Err(refusal(path, e)),
    };
    let st = rustix::fs::fstat(&fd)
        .map_err(|e| DirProblem::io(path, "stat", std::io::Error::from(e)))?;
    if st.st_uid != uid {
        return Err(DirProblem {
            path: path.to_path_buf(),
            why: format!(
                "owned by uid {}, not by Tern (uid {uid}); refusing to start (give it to Tern's user, or remove it and let Tern create it)",
                st.st_uid
            ),
        });
    }
    let mode = st.st_mode & 0o7777;
    let want = if created { 0o700 } else { wanted(mode) };
    if mode != want {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(want))
            .map_err(|e| DirProblem::io(path, "chmod", std::io::Error::from(e)))?;
        if !created {
            fixes.push(ModeFix {
                dir: path.to_path_buf(),
                old: mode,
                new: want,
            });
        }
    }
    Ok(fd)
}

/// Why a directory could not be opened: a link or not a directory is refused by name.
fn refusal(path: &Path, e: Errno) -> DirProblem {
    let link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    let why = match e {
        Errno::LOOP | Errno::NOTDIR if link => {
            "is a symbolic link; refusing to start (it must be a real directory owned by Tern)"
                .to_owned()
        }
        Errno::LOOP | Errno::NOTDIR => "is not a directory; refusing to start".to_owned(),
        other => format!("cannot open it: {}", std::io::Error::from(other)),
    };
    DirProblem {
        path: path.to_path_buf(),
        why,
    }
}

/// A claimed unit, its files in `.claimed/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unit {
    /// A message file whose envelope comes from its headers.
    Plain(String),
    /// `<stem>.env` and `<stem>.eml`.
    Pair(String),
}

impl Unit {
    pub(crate) fn name(&self) -> String {
        match self {
            Unit::Plain(n) => n.clone(),
            Unit::Pair(s) => format!("{s}{MSG_SUFFIX}"),
        }
    }

    pub(crate) fn format(&self) -> &'static str {
        match self {
            Unit::Plain(_) => "headers",
            Unit::Pair(_) => "envelope",
        }
    }

    fn files(&self) -> Vec<OsString> {
        match self {
            Unit::Plain(n) => vec![n.into()],
            Unit::Pair(s) => vec![
                format!("{s}{ENV_SUFFIX}").into(),
                format!("{s}{MSG_SUFFIX}").into(),
            ],
        }
    }
}

/// A file (or pair) that cannot be used, and where it is now.
#[derive(Debug, Clone)]
pub(crate) struct Bad {
    /// The directory holding `files` (the pickup directory or `.claimed/`).
    pub dir: PathBuf,
    /// Its files there.
    pub files: Vec<OsString>,
    /// The name shown in the reason file and the event.
    pub shown: String,
    /// Base name in badmail (`None`: generated).
    pub base: Option<String>,
    pub format: &'static str,
    pub reason: String,
}

impl Bad {
    pub(crate) fn unit(dirs: &Dirs, unit: &Unit, reason: String) -> Bad {
        let base = match unit {
            Unit::Plain(n) | Unit::Pair(n) => n.clone(),
        };
        Bad {
            dir: dirs.claimed.clone(),
            files: unit.files(),
            shown: unit.name(),
            base: Some(base),
            format: unit.format(),
            reason,
        }
    }
}

/// What one collection found.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    /// Claimed units, `.claimed/` leftovers first.
    pub units: Vec<Unit>,
    /// Entries to move to badmail.
    pub bad: Vec<Bad>,
    /// Units that were in `.claimed/` before this scan.
    pub leftovers: usize,
    /// Lone envelope files of queued pairs removed from `.claimed/`.
    pub finished_leftovers: usize,
    /// Failures on the directory itself.
    pub errors: Vec<IoFailure>,
}

/// Limits of one collection.
pub(crate) struct Limits {
    pub max_units: usize,
    pub orphan_after: Duration,
}

fn valid_name(n: &str) -> bool {
    (1..=MAX_NAME).contains(&n.len())
        && !n.starts_with('.')
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+=,@%~-".contains(&b))
}

fn age(meta: &std::fs::Metadata) -> Duration {
    meta.modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or_default()
}

fn is_regular(p: &Path) -> bool {
    p.symlink_metadata().is_ok_and(|m| m.file_type().is_file())
}

/// Names in `dir`, at most `max`, in the order the directory gives them.
fn names(dir: &Path, max: usize) -> Result<Vec<OsString>, IoFailure> {
    let rd = std::fs::read_dir(dir).map_err(IoFailure::at("read", dir))?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(IoFailure::at("read", dir))?;
        out.push(e.file_name());
        if out.len() >= max {
            break;
        }
    }
    Ok(out)
}

/// Claims `name` from the pickup directory. `Ok(false)`: it is gone (taken by its
/// writer again, or claimed already).
fn claim(dirs: &Dirs, name: &str) -> Result<bool, IoFailure> {
    let to = dirs.claimed.join(name);
    match rename_noreplace(&dirs.pickup.join(name), &to) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(IoFailure::at("claim", &to)(e)),
    }
}

/// Claims the pair `stem`: envelope first. `Ok(false)` when its envelope is gone.
fn claim_pair(dirs: &Dirs, stem: &str) -> Result<bool, IoFailure> {
    if !claim(dirs, &format!("{stem}{ENV_SUFFIX}"))? {
        return Ok(false);
    }
    // If the message is gone now, the lone `.env` is sorted out by the next scan.
    claim(dirs, &format!("{stem}{MSG_SUFFIX}"))
}

/// Finds and claims up to `max_units` units: the leftovers in `.claimed/`, then new
/// files in the pickup directory. Syncs both directories once if anything was claimed.
pub(crate) fn collect(dirs: &Dirs, limits: &Limits) -> Collected {
    let mut c = Collected::default();
    let mut claimed_any = false;
    collect_claimed(dirs, limits, &mut c, &mut claimed_any);
    c.leftovers = c.units.len();
    if c.units.len() < limits.max_units {
        collect_new(dirs, limits, &mut c, &mut claimed_any);
    }
    if claimed_any {
        for d in [&dirs.pickup, &dirs.claimed] {
            if let Err(e) = sync_dir(d) {
                c.errors.push(IoFailure::at("fsync", d)(e));
            }
        }
    }
    c
}

fn collect_claimed(dirs: &Dirs, limits: &Limits, c: &mut Collected, claimed_any: &mut bool) {
    let list = match names(&dirs.claimed, limits.max_units.saturating_mul(2).max(2)) {
        Ok(l) => l,
        Err(e) => {
            c.errors.push(e);
            return;
        }
    };
    for os in list {
        let Some(name) = os.to_str() else {
            c.bad.push(bad_name(&dirs.claimed, os));
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        if let Some(stem) = name.strip_suffix(ENV_SUFFIX) {
            let msg = format!("{stem}{MSG_SUFFIX}");
            if is_regular(&dirs.claimed.join(&msg)) {
                push_unit(c, Unit::Pair(stem.to_owned()));
            } else if is_regular(&dirs.pickup.join(&msg)) {
                match claim(dirs, &msg) {
                    Ok(true) => {
                        *claimed_any = true;
                        push_unit(c, Unit::Pair(stem.to_owned()));
                    }
                    Ok(false) => {}
                    Err(e) => c.errors.push(e),
                }
            } else {
                // The rest of a pair that was queued: its message file went first.
                let p = dirs.claimed.join(name);
                match std::fs::remove_file(&p) {
                    Ok(()) => c.finished_leftovers += 1,
                    Err(e) => c.errors.push(IoFailure::at("remove", &p)(e)),
                }
            }
        } else if let Some(stem) = name.strip_suffix(MSG_SUFFIX) {
            if !is_regular(&dirs.claimed.join(format!("{stem}{ENV_SUFFIX}"))) {
                c.bad.push(Bad {
                    dir: dirs.claimed.clone(),
                    files: vec![os.clone()],
                    shown: name.to_owned(),
                    base: Some(stem.to_owned()),
                    format: "envelope",
                    reason: format!(
                        "its envelope file {stem}{ENV_SUFFIX} was removed after it was claimed"
                    ),
                });
            }
            // Otherwise the pair was listed with its `.env`.
        } else {
            push_unit(c, Unit::Plain(name.to_owned()));
        }
        if c.units.len() >= limits.max_units {
            return;
        }
    }
}

fn push_unit(c: &mut Collected, u: Unit) {
    if !c.units.contains(&u) {
        c.units.push(u);
    }
}

fn bad_name(dir: &Path, os: OsString) -> Bad {
    let shown = format!("{:?}", os.to_string_lossy());
    Bad {
        dir: dir.to_path_buf(),
        files: vec![os],
        shown: shown.clone(),
        base: None,
        format: "unknown",
        reason: format!(
            "the name {shown} is not accepted (at most {MAX_NAME} characters from A-Z a-z 0-9 . _ + = , @ % ~ -)"
        ),
    }
}

fn collect_new(dirs: &Dirs, limits: &Limits, c: &mut Collected, claimed_any: &mut bool) {
    // Waiting halves of pairs are looked at but not taken: look a little further.
    let look = limits.max_units.saturating_mul(4).saturating_add(16);
    let list = match names(&dirs.pickup, look) {
        Ok(l) => l,
        Err(e) => {
            c.errors.push(e);
            return;
        }
    };
    for os in list {
        if c.units.len() >= limits.max_units {
            return;
        }
        let path = dirs.pickup.join(&os);
        let Ok(meta) = path.symlink_metadata() else {
            continue; // gone meanwhile
        };
        let lossy = os.to_string_lossy();
        if lossy.starts_with('.') {
            remove_stale_temporary(&path, &lossy, &meta, limits);
            continue;
        }
        if meta.is_dir() {
            continue; // badmail/, or a directory someone made: not ours to judge
        }
        let Some(name) = os.to_str().filter(|n| valid_name(n)) else {
            c.bad.push(bad_name(&dirs.pickup, os.clone()));
            continue;
        };
        if !meta.file_type().is_file() {
            c.bad.push(Bad {
                dir: dirs.pickup.clone(),
                files: vec![os.clone()],
                shown: name.to_owned(),
                base: Some(name.to_owned()),
                format: "unknown",
                reason: "not a regular file (a symlink, FIFO, socket or device is never read)"
                    .into(),
            });
            continue;
        }
        let (stem, partner, is_env) = if let Some(s) = name.strip_suffix(ENV_SUFFIX) {
            (s, format!("{s}{MSG_SUFFIX}"), true)
        } else if let Some(s) = name.strip_suffix(MSG_SUFFIX) {
            (s, format!("{s}{ENV_SUFFIX}"), false)
        } else {
            match claim(dirs, name) {
                Ok(true) => {
                    *claimed_any = true;
                    push_unit(c, Unit::Plain(name.to_owned()));
                }
                Ok(false) => {}
                Err(e) => c.errors.push(e),
            }
            continue;
        };
        if is_regular(&dirs.pickup.join(&partner)) {
            match claim_pair(dirs, stem) {
                Ok(true) => {
                    *claimed_any = true;
                    push_unit(c, Unit::Pair(stem.to_owned()));
                }
                Ok(false) => {}
                Err(e) => c.errors.push(e),
            }
        } else if age(&meta) >= limits.orphan_after {
            let waited = limits.orphan_after.as_secs();
            let reason = if is_env {
                format!("envelope file without its message file {partner} for {waited} s")
            } else {
                format!(
                    "message file without its envelope file {partner} for {waited} s (a message whose envelope comes from its headers needs a name not ending in .eml)"
                )
            };
            c.bad.push(Bad {
                dir: dirs.pickup.clone(),
                files: vec![os.clone()],
                shown: name.to_owned(),
                base: Some(stem.to_owned()),
                format: "envelope",
                reason,
            });
        }
    }
}

/// A writer's temporary file (`.tern-*.tmp`) left behind by a crash: removed once it is
/// older than the orphan limit. Other hidden names belong to other writers: left alone.
fn remove_stale_temporary(path: &Path, name: &str, meta: &std::fs::Metadata, limits: &Limits) {
    if name.starts_with(TMP_PREFIX)
        && name.ends_with(".tmp")
        && meta.file_type().is_file()
        && age(meta) >= limits.orphan_after
    {
        let _ = std::fs::remove_file(path);
    }
}

/// What reading a claimed file gave.
pub(crate) enum FileRead {
    Bytes {
        bytes: Vec<u8>,
        uid: u32,
    },
    TooBig(u64),
    NotRegular,
    /// More than one name: possibly someone else's file, never read.
    Linked(u64),
    Gone,
}

/// Reads a file without following symlinks, at most `limit` octets.
pub(crate) fn read_bounded(path: &Path, limit: u64) -> Result<FileRead, IoFailure> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(FileRead::Gone),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(FileRead::NotRegular),
        Err(e) => return Err(IoFailure::at("open", path)(e)),
    };
    let meta = file.metadata().map_err(IoFailure::at("stat", path))?;
    if !meta.file_type().is_file() {
        return Ok(FileRead::NotRegular);
    }
    if meta.nlink() != 1 {
        return Ok(FileRead::Linked(meta.nlink()));
    }
    if meta.len() > limit {
        return Ok(FileRead::TooBig(meta.len()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(IoFailure::at("read", path))?;
    if bytes.len() as u64 > limit {
        return Ok(FileRead::TooBig(bytes.len() as u64));
    }
    Ok(FileRead::Bytes {
        bytes,
        uid: meta.uid(),
    })
}

/// Removes a queued unit from `.claimed/` (for a pair, the message file first: see the
/// module header).
pub(crate) fn remove_unit(dirs: &Dirs, unit: &Unit) -> Result<(), IoFailure> {
    let mut files = unit.files();
    files.reverse();
    for f in files {
        let p = dirs.claimed.join(&f);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(IoFailure::at("remove", &p)(e)),
        }
    }
    Ok(())
}

/// Moves a bad entry to badmail with its `.reason` file; returns the path of the moved
/// file (the message file for a pair) in badmail.
pub(crate) fn to_badmail(dirs: &Dirs, bad: &Bad) -> Result<PathBuf, IoFailure> {
    let base = bad
        .base
        .clone()
        .unwrap_or_else(|| format!("invalid-name-{}", tern_watchdog::clock::unix_micros()));
    // A pair keeps its suffixes under the new base; anything else is named the base.
    let target = |b: &str, f: &OsStr| -> OsString {
        let f = f.to_string_lossy();
        match bad.format {
            "envelope" if f.ends_with(ENV_SUFFIX) => format!("{b}{ENV_SUFFIX}").into(),
            "envelope" if f.ends_with(MSG_SUFFIX) => format!("{b}{MSG_SUFFIX}").into(),
            _ => b.into(),
        }
    };
    // A free base name: the original, else with `.1`, `.2`, ... appended.
    let mut chosen = base.clone();
    for n in 1..=1000u32 {
        let taken = bad
            .files
            .iter()
            .map(|f| dirs.badmail.join(target(&chosen, f)))
            .chain([dirs.badmail.join(format!("{chosen}.reason"))])
            .any(|p| p.symlink_metadata().is_ok());
        if !taken {
            break;
        }
        chosen = format!("{base}.{n}");
    }
    let mut main = dirs.badmail.join(&chosen);
    for f in &bad.files {
        let to = dirs.badmail.join(target(&chosen, f));
        match rename_noreplace(&bad.dir.join(f), &to) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(IoFailure::at("move to badmail", &to)(e)),
        }
        if !to.to_string_lossy().ends_with(ENV_SUFFIX) {
            main = to;
        }
    }
    let text = format!(
        "file: {}\nformat: {}\nreason: {}\ntime: {}\n",
        bad.shown,
        bad.format,
        bad.reason,
        crate::envfile::rfc3339(tern_watchdog::clock::unix_micros())
    );
    publish(
        &dirs.badmail,
        &format!("{chosen}.reason"),
        text.as_bytes(),
        0o640,
    )?;
    sync_dir(&dirs.badmail).map_err(IoFailure::at("fsync", &dirs.badmail))?;
    Ok(main)
}

/// Syncs `.claimed/` after removals, so a queued file cannot come back after a power loss
/// (the duplicate window of a power loss is one scan).
pub(crate) fn sync_claimed(dirs: &Dirs) -> Result<(), IoFailure> {
    sync_dir(&dirs.claimed).map_err(IoFailure::at("fsync", &dirs.claimed))
}
