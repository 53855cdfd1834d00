//! The few system calls the standard library does not offer: flock, statvfs, rename
//! without replacing and a positioned gathering write, plus directory fsync and the
//! file-open policy for spool entries.
//!
//! Invariant: the `unsafe` blocks here only pass NUL-terminated paths built from `Path`
//! bytes, plain integers and borrowed `IoSlice`s (ABI-compatible with `iovec`) to libc,
//! and read back a struct the kernel filled in.
//!
//! Trust: paths come from the spool's own code (a configured directory joined with a
//! validated queue id or a name read from the directory).

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::DiskSpace;

fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Takes a non-blocking exclusive flock. `Ok(false)` when another open file description
/// (another process, or another `Spool` in this one) holds it.
pub(crate) fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: flock on a file descriptor we own; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// Free (for unprivileged users) and total bytes of the filesystem holding `path`.
pub(crate) fn disk_space(path: &Path) -> io::Result<DiskSpace> {
    let c = c_path(path)?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated string and `st` points to writable memory of
    // the right type; statvfs fills it in completely on success.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: rc == 0, so the kernel initialised the struct (and it was zeroed anyway).
    let st = unsafe { st.assume_init() };
    // The field types differ between targets (u32 on some 32-bit ones).
    #[allow(clippy::useless_conversion)]
    let (frsize, bavail, blocks) = (
        u64::from(st.f_frsize),
        u64::from(st.f_bavail),
        u64::from(st.f_blocks),
    );
    Ok(DiskSpace {
        available: bavail.saturating_mul(frsize),
        total: blocks.saturating_mul(frsize),
    })
}

/// Renames `from` to `to`, failing with `AlreadyExists` instead of replacing `to`.
/// Uses renameat2(RENAME_NOREPLACE); on filesystems without it, falls back to a check and
/// a rename, which is only racy against other writers of the same directory, and only the
/// lock holder writes.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let cf = c_path(from)?;
    let ct = c_path(to)?;
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            cf.as_ptr(),
            libc::AT_FDCWD,
            ct.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            if to.symlink_metadata().is_ok() {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            std::fs::rename(from, to)
        }
        _ => Err(err),
    }
}

/// Writes every byte of `bufs`, in order, to `file` at `offset` with `pwritev` (no copy
/// into one buffer), retrying after short writes and `EINTR`.
pub(crate) fn write_all_vectored_at(
    file: &File,
    mut bufs: &mut [io::IoSlice<'_>],
    mut offset: u64,
) -> io::Result<()> {
    /// At most this many slices per call (Linux's `IOV_MAX`).
    const IOV_MAX: usize = 1024;
    // Drops leading empty slices (and so a call with nothing to write).
    io::IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        let n = bufs.len().min(IOV_MAX);
        let at = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix; the first `n` slices
        // are valid borrowed buffers that outlive the call; the descriptor is open.
        let rc = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                bufs.as_ptr().cast::<libc::iovec>(),
                n as libc::c_int,
                at,
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        let written = usize::try_from(rc).unwrap_or(0);
        if written == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        offset += written as u64;
        io::IoSlice::advance_slices(&mut bufs, written);
    }
    Ok(())
}

/// fsyncs a directory, making the entries created, renamed or removed in it durable.
/// Follows a symbolic link (for directories an administrator configured, such as the
/// spool itself or a pickup directory); the spool's own subdirectories use
/// [`sync_subdir`].
pub fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// fsyncs one of the spool's own subdirectories, refusing to follow a symbolic link
/// (`ELOOP`) or to open anything but a directory (`ENOTDIR`).
pub(crate) fn sync_subdir(path: &Path) -> io::Result<()> {
    open_dir(path)?.sync_all()
}

/// Opens a directory for fsync or fchmod without following a symbolic link.
pub(crate) fn open_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// What a directory entry is, from `lstat` (a symbolic link is never followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// Nothing by that name.
    Missing,
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (wherever it points).
    Symlink,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A block or character device.
    Device,
}

impl EntryKind {
    /// For reasons and events: "a directory", "a FIFO"...
    pub(crate) fn describe(self) -> &'static str {
        match self {
            EntryKind::Missing => "missing",
            EntryKind::File => "a regular file",
            EntryKind::Dir => "a directory",
            EntryKind::Symlink => "a symbolic link",
            EntryKind::Fifo => "a FIFO (named pipe)",
            EntryKind::Socket => "a socket",
            EntryKind::Device => "a device node",
        }
    }

    fn of(meta: &std::fs::Metadata) -> EntryKind {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_file() {
            EntryKind::File
        } else if t.is_dir() {
            EntryKind::Dir
        } else if t.is_symlink() {
            EntryKind::Symlink
        } else if t.is_fifo() {
            EntryKind::Fifo
        } else if t.is_socket() {
            EntryKind::Socket
        } else {
            EntryKind::Device
        }
    }
}

/// `lstat`: what `path` is, without following it, with its metadata when it exists.
pub(crate) fn entry_kind(path: &Path) -> io::Result<(EntryKind, Option<std::fs::Metadata>)> {
    match path.symlink_metadata() {
        Ok(m) => Ok((EntryKind::of(&m), Some(m))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((EntryKind::Missing, None)),
        Err(e) => Err(e),
    }
}

/// The error [`open_regular`] gives for something that is not a regular file (a FIFO, a
/// directory, a device...); see [`is_not_regular`].
#[derive(Debug)]
struct NotRegular(EntryKind);

impl std::fmt::Display for NotRegular {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not a regular file ({})", self.0.describe())
    }
}

impl std::error::Error for NotRegular {}

/// Whether `e` says the entry is not a regular file (from [`open_regular`], or the
/// kernel refusing a symbolic link, a directory, a socket or a device).
pub(crate) fn is_not_regular(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<NotRegular>())
        || matches!(
            e.raw_os_error(),
            Some(libc::ELOOP)
                | Some(libc::EISDIR)
                | Some(libc::ENXIO)
                | Some(libc::ENODEV)
                | Some(libc::EOPNOTSUPP)
        )
}

/// Opens a spool file, for reading or for reading and writing: never follows a symbolic
/// link (O_NOFOLLOW), never blocks on a FIFO (O_NONBLOCK, which changes nothing for
/// regular files), closes on exec (std sets O_CLOEXEC), and checks with `fstat` that what
/// was opened is a regular file; anything else is an error for which [`is_not_regular`]
/// holds. The caller should `lstat` first where opening a device could have effects.
pub(crate) fn open_regular(path: &Path, write: bool) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other(NotRegular(EntryKind::of(&meta))));
    }
    Ok(f)
}

/// Opens (creating it with mode 0600 if missing) a spool file for appending, with the
/// guarantees of [`open_regular`]: never through a link, never blocking on a FIFO, and a
/// regular file or an error for which [`is_not_regular`] holds.
pub(crate) fn open_append(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other(NotRegular(EntryKind::of(&meta))));
    }
    Ok(f)
}

/// Opens a spool entry for reading: [`open_regular`] read-only.
pub(crate) fn open_entry(path: &Path) -> io::Result<File> {
    open_regular(path, false)
}

/// Creates a new file for writing, failing if anything exists by that name (O_EXCL, which
/// also never follows a symbolic link); mode 0600 because it holds mail.
pub(crate) fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Sets a directory's mode to exactly 0700 (through a descriptor, never following a
/// link), whatever the umask was when it was created or who created it. Only called on
/// directories this process owns.
pub(crate) fn restrict_dir(dir: &File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if dir.metadata()?.permissions().mode() & 0o7777 != 0o700 {
        dir.set_permissions(std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// The effective user id of this process.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// Marks `dir` as the top of a directory hierarchy (`chattr +T`, FS_TOPDIR_FL), so ext4's
/// Orlov allocator spreads its subdirectories over fresh block groups. Each queue directory
/// then allocates its files' inodes in a group of its own: on ext4, inode allocation in a
/// crowded group scans (and checks for recent deletion) every free candidate, which
/// measured 130-670 µs per message here against 14-18 µs in a fresh group
/// (docs/BENCHMARKS.md). Only affects directories created afterwards. Best effort:
/// filesystems without the flag (or without the ioctl) are left as they are.
pub(crate) fn mark_top_directory(dir: &Path) {
    use std::os::fd::AsRawFd;
    /// FS_TOPDIR_FL from <linux/fs.h>.
    const FS_TOPDIR_FL: libc::c_long = 0x0002_0000;
    let Ok(f) = File::open(dir) else { return };
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one long into `flags`, which outlives the call; the
    // descriptor is open.
    if unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) } != 0 {
        return;
    }
    if flags & FS_TOPDIR_FL == 0 {
        flags |= FS_TOPDIR_FL;
        // SAFETY: FS_IOC_SETFLAGS reads one long from `flags`; the descriptor is open.
        let _ = unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) };
    }
}

/// Creates an unnamed file in `dir` (O_TMPFILE): the inode exists, but no name points to
/// it until [`link_tmpfile`], and the kernel frees it if the process dies first. The
/// directory's lock is not taken while the inode is allocated, so concurrent creations do
/// not serialise on it. `Ok(None)` when the filesystem does not support O_TMPFILE.
pub(crate) fn create_tmpfile(dir: &Path) -> io::Result<Option<File>> {
    open_tmpfile(dir, false)
}

/// A scratch file in `dir` for reading and writing, mode 0600: an unnamed O_TMPFILE
/// inode when the filesystem has it (`Ok(None)` otherwise, as [`create_tmpfile`]).
pub(crate) fn create_scratch(dir: &Path) -> io::Result<Option<File>> {
    open_tmpfile(dir, true)
}

/// An unnamed O_TMPFILE inode in `dir`, mode 0600, write-only or (`read`) read-write;
/// `Ok(None)` when the filesystem does not support O_TMPFILE.
fn open_tmpfile(dir: &Path, read: bool) -> io::Result<Option<File>> {
    match OpenOptions::new()
        .read(read)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
    {
        Ok(f) => Ok(Some(f)),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// A new file at `path` for reading and writing, mode 0600, never through a link.
pub(crate) fn create_new_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Gives an O_TMPFILE file its name `to` (in the directory it was created in). Fails with
/// `AlreadyExists` rather than replacing a file.
pub(crate) fn link_tmpfile(file: &File, to: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let ct = c_path(to)?;
    let fd = file.as_raw_fd();
    // The /proc path works without privileges; AT_EMPTY_PATH is the fallback when /proc is
    // not mounted (it needs CAP_DAC_READ_SEARCH).
    let proc_path = CString::new(format!("/proc/self/fd/{fd}"))
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            libc::AT_FDCWD,
            ct.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOENT) {
        return Err(err);
    }
    let empty = CString::default();
    // SAFETY: `fd` is open for the duration of the call; the paths are valid C strings.
    let rc = unsafe {
        libc::linkat(
            fd,
            empty.as_ptr(),
            libc::AT_FDCWD,
            ct.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether an error opening or reading an entry belongs to the file (so the entry is
/// corrupt) rather than to the process or the system (so the operation should fail).
pub(crate) fn is_entry_fault(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EUCLEAN))
        || is_not_regular(e)
        || e.kind() == io::ErrorKind::UnexpectedEof
}

/// `syncfs(2)`: every dirty inode and data block of the filesystem that holds `fs`.
pub(crate) fn syncfs(fs: &File) -> io::Result<()> {
    // SAFETY: syncfs(2) on a valid open descriptor; no memory is passed.
    if unsafe { libc::syncfs(fs.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// On ext4 (the filesystem of this project's machines and CI) the spool directory is
    /// marked FS_TOPDIR_FL; elsewhere the mark is documented as a no-op.
    #[test]
    fn vectored_write_lands_every_slice_in_order_past_iov_max() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let file = File::options().write(true).open(&path).unwrap();
        // 3000 slices (past IOV_MAX), some empty, of varying lengths.
        let parts: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| vec![(i % 251) as u8; (i % 7) as usize])
            .collect();
        let mut slices: Vec<io::IoSlice<'_>> = parts.iter().map(|p| io::IoSlice::new(p)).collect();
        write_all_vectored_at(&file, &mut slices, 4).unwrap();
        let expected: Vec<u8> = b"0123"
            .iter()
            .copied()
            .chain(parts.iter().flatten().copied())
            .collect();
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len(), expected.len().max(10));
        assert_eq!(&got[..expected.len()], expected.as_slice());
        // Nothing at all to write is not an error.
        write_all_vectored_at(&file, &mut [], 0).unwrap();
    }

    #[test]
    fn spool_directory_is_marked_top_of_hierarchy_on_ext4() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        // SAFETY: statfs fills the struct; the path is a valid C string.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        let path = c_path(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(unsafe { libc::statfs(path.as_ptr(), &mut st) }, 0);
        const EXT4_SUPER_MAGIC: libc::c_long = 0xEF53;
        if st.f_type as libc::c_long != EXT4_SUPER_MAGIC {
            eprintln!(
                "not ext4 (f_type {:#x}): FS_TOPDIR_FL not checked",
                st.f_type
            );
            return;
        }
        mark_top_directory(dir.path());
        let f = File::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let mut flags: libc::c_long = 0;
        // SAFETY: as in `mark_top_directory`.
        assert_eq!(
            unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) },
            0
        );
        assert_ne!(flags & 0x0002_0000, 0, "FS_TOPDIR_FL not set");
    }
}
