//! Opening the log files Tern owns: never through a link, mode 0600 whatever the umask.
//!
//! The event log and the tracking log name senders, recipients and clients, so only
//! Tern's own user may read them. A file is created with mode 0600 and opened with
//! `O_NOFOLLOW`, so a symbolic link planted under its name is refused, not followed; an
//! existing file must be a regular file, and a looser mode left by an older version (which
//! created these files under the umask, often 0644) is tightened to 0600 on open. The
//! tracking directory is created with mode 0700 and tightened the same way.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of the log files.
pub const FILE_MODE: u32 = 0o600;
/// Mode of the tracking directory.
pub const DIR_MODE: u32 = 0o700;

/// Opens `path` for appending (created when missing), refusing links and anything but a
/// regular file, and makes its mode [`FILE_MODE`].
pub fn open_append(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| name_link_error(e, path))?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    if meta.mode() & 0o7777 != FILE_MODE {
        file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    }
    Ok(file)
}

/// Creates `dir` (mode [`DIR_MODE`]) when missing; an existing one must be a real
/// directory (not a link) and gets mode [`DIR_MODE`].
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    match std::fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.file_type().is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory (a link or a file)", dir.display()),
        ));
    }
    // Explicit, whatever the umask was when it was made.
    if meta.mode() & 0o7777 != DIR_MODE {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// `ELOOP` from `O_NOFOLLOW` means a link stands where the file should be: say so.
fn name_link_error(e: io::Error, path: &Path) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is a symbolic link; refusing to follow it",
                path.display()
            ),
        )
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn created_0600_whatever_the_umask_and_tightened_when_looser() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events.jsonl");
        let old = rustix::process::umask(rustix::fs::Mode::empty());
        let f = open_append(&p);
        rustix::process::umask(old);
        drop(f.unwrap());
        assert_eq!(mode(&p), 0o600);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(open_append(&p).unwrap());
        assert_eq!(mode(&p), 0o600);
    }

    #[test]
    fn a_link_in_place_of_the_file_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"not tern's").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        let p = dir.path().join("events.jsonl");
        std::os::unix::fs::symlink(&target, &p).unwrap();
        let e = open_append(&p).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read(&target).unwrap(), b"not tern's");
        assert_eq!(mode(&target), 0o644);
        // A dangling link is refused too (O_CREAT would otherwise create its target).
        let dangling = dir.path().join("tracking.jsonl");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(open_append(&dangling).is_err());
        assert!(!dir.path().join("nowhere").exists());
    }

    #[test]
    fn a_fifo_in_place_of_the_file_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events.jsonl");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &p,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        // Without a reader the open itself fails (ENXIO); with one it would be refused
        // by the type check. Either way it returns at once instead of blocking.
        assert!(open_append(&p).is_err());
    }

    #[test]
    fn directory_created_0700_tightened_and_links_refused() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("tracking");
        ensure_dir(&t).unwrap();
        assert_eq!(mode(&t), 0o700);
        std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_dir(&t).unwrap();
        assert_eq!(mode(&t), 0o700);
        let l = dir.path().join("linked");
        std::os::unix::fs::symlink(&t, &l).unwrap();
        assert!(ensure_dir(&l).is_err());
    }
}
