//! Reading a credential file (the passwd-file, the sender-login map) the way the key
//! files are read: never through a symbolic link, only a regular file, owned by root or
//! by Tern's own user, with no permission bits for others and no write bit for the
//! group, in a directory others cannot write (unless it is sticky), and bounded in
//! size.
//!
//! Race: the checks are made on the open descriptor (`fstat`), so the file read is the
//! file checked. The directory check is by path; a directory others can write is refused
//! anyway, so nobody but its owners can swap the file between the two.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a credential file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// It could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A symbolic link stands at the path (never followed).
    #[error("{0}: is a symbolic link (refused; name the file itself)")]
    Link(PathBuf),
    /// Not a regular file.
    #[error("{0}: not a regular file")]
    NotRegular(PathBuf),
    /// Readable or writable by others, or writable by its group.
    #[error("{path}: mode {mode:04o} gives access to others (use 0600 or 0640)")]
    Mode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Owned by a user other than root or Tern's.
    #[error("{path}: owned by uid {uid}, neither root nor Tern's user")]
    Owner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// Its directory may be written by others.
    #[error("{0}: others may write its directory")]
    Directory(PathBuf),
    /// Larger than the limit.
    #[error("{path}: larger than {limit} octets")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
}

/// Reads a credential file after the checks in the module header; at most `limit`
/// octets.
pub fn read_private(path: &Path, limit: u64) -> Result<String, FileError> {
    read_checked(path, limit, 0o027)
}

/// Reads a policy file that is not secret (the sender-login map): the same checks, but
/// others may read it (nobody but its owner and root may write it).
pub fn read_protected(path: &Path, limit: u64) -> Result<String, FileError> {
    read_checked(path, limit, 0o022)
}

fn read_checked(path: &Path, limit: u64, refused_bits: u32) -> Result<String, FileError> {
    let io = |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(FileError::Link(path.to_path_buf()));
        }
        Err(e) => return Err(io(e)),
    };
    check(path, &f, refused_bits)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dmeta = std::fs::metadata(dir).map_err(io)?;
    if dmeta.mode() & 0o002 != 0 && dmeta.mode() & 0o1000 == 0 {
        return Err(FileError::Directory(path.to_path_buf()));
    }
    let mut text = String::new();
    f.take(limit + 1).read_to_string(&mut text).map_err(io)?;
    if text.len() as u64 > limit {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(text)
}

/// Reads the 32-octet secret at `path`, or makes it (random, mode 0600, synced) when the
/// file does not exist. An existing file must pass the credential-file checks (no link,
/// regular, owner, no access for group or others) and hold exactly 32 octets.
pub fn load_or_create_secret(path: &Path) -> Result<[u8; 32], FileError> {
    use std::io::Write;
    let io = |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(mut f) => {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret).map_err(|e| io(std::io::Error::other(e.to_string())))?;
            f.write_all(&secret).map_err(io)?;
            f.sync_all().map_err(io)?;
            return Ok(secret);
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(FileError::Link(path.to_path_buf()));
        }
        Err(e) => return Err(io(e)),
    };
    check(path, &f, 0o077)?;
    let mut secret = [0u8; 32];
    let mut rest = Vec::new();
    let mut reader = f.take(33);
    reader.read_exact(&mut secret).map_err(io)?;
    reader.read_to_end(&mut rest).map_err(io)?;
    if !rest.is_empty() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the secret must be exactly 32 octets",
        )));
    }
    Ok(secret)
}

fn check(path: &Path, f: &File, refused_bits: u32) -> Result<(), FileError> {
    let meta = f.metadata().map_err(|source| FileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(FileError::NotRegular(path.to_path_buf()));
    }
    let mode = meta.mode() & 0o7777;
    if mode & refused_bits != 0 {
        return Err(FileError::Mode {
            path: path.to_path_buf(),
            mode,
        });
    }
    let me = effective_uid();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(FileError::Owner {
            path: path.to_path_buf(),
            uid: meta.uid(),
        });
    }
    Ok(())
}

/// The process's effective user id, read from `/proc/self` (no unsafe code here).
fn effective_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_secret_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("auth.key");
        let a = load_or_create_secret(&p).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load_or_create_secret(&p).unwrap(), a);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            load_or_create_secret(&p),
            Err(FileError::Mode { .. })
        ));
        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(matches!(
            load_or_create_secret(&link),
            Err(FileError::Link(_))
        ));
    }

    #[test]
    fn modes_links_and_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("users");
        std::fs::write(&p, "alice:{PLAIN}x\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(read_private(&p, 1000).unwrap(), "alice:{PLAIN}x\n");
        assert!(matches!(
            read_private(&p, 4),
            Err(FileError::TooLarge { .. })
        ));
        for bad in [0o644, 0o604, 0o660, 0o602] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(bad)).unwrap();
            assert!(
                matches!(read_private(&p, 1000), Err(FileError::Mode { .. })),
                "{bad:o}"
            );
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(matches!(read_private(&link, 1000), Err(FileError::Link(_))));
        assert!(matches!(
            read_private(dir.path(), 1000),
            Err(FileError::NotRegular(_)) | Err(FileError::Mode { .. })
        ));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            read_private(&p, 1000),
            Err(FileError::Directory(_))
        ));
    }
}
