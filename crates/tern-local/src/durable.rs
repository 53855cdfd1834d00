//! Durable writes into directories shared with other programs.
//!
//! A file is written under a temporary name (`.tern-<final name>.tmp`, hidden: every
//! reader of Tern's directories ignores names that start with a dot), `fdatasync`ed,
//! renamed to its final name, and the directory is fsynced. So a final name always holds
//! a complete file, and once the call returns the name survives a crash or power loss.
//!
//! Pairs (an envelope file and a message file with one stem, see `envfile`): the
//! envelope file is published first and the message file last, then the directory is
//! synced once. A reader that takes a pair only when its `.eml` is there therefore
//! always finds the `.env` beside it.
//!
//! Known races: a pair written again under the same stem (the drop transport after a
//! crash) replaces each file atomically; a reader between the two renames sees the new
//! envelope with the old message, which are the same message. A crash leaves at most the
//! temporary files, which the next write of the same stem truncates and reuses.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Names Tern writes before they are complete start with this (and end in `.tmp`).
pub(crate) const TMP_PREFIX: &str = ".tern-";
/// Suffix of an envelope file.
pub(crate) const ENV_SUFFIX: &str = ".env";
/// Suffix of the message file of a pair.
pub(crate) const MSG_SUFFIX: &str = ".eml";

/// A failed system call with what it was doing and on which path.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub(crate) struct IoFailure {
    pub op: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

impl IoFailure {
    pub(crate) fn at(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> IoFailure {
        let path = path.to_path_buf();
        move |source| IoFailure { op, path, source }
    }
}

/// The temporary name of `final_name`.
pub(crate) fn tmp_name(final_name: &str) -> String {
    format!("{TMP_PREFIX}{final_name}.tmp")
}

/// Opens `path` for writing from scratch (created or truncated), never through a symlink,
/// with exactly `mode` (set with `fchmod`, so the umask plays no part).
pub(crate) fn create_truncated(path: &Path, mode: u32) -> io::Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(f)
}

pub(crate) use tern_spool::fs::{rename_noreplace, sync_dir};

/// Writes `bytes` to `dir/.tern-<name>.tmp`, syncs it and renames it to `dir/<name>`
/// (replacing a file of that name). The directory is not synced.
pub(crate) fn publish(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<(), IoFailure> {
    let mut bytes = bytes;
    publish_from(dir, name, &mut bytes, mode)
}

/// [`publish`] with the bytes read from `content`, 64 KiB at a time (memory bounded
/// whatever the size). A read error leaves the final name untouched and removes the
/// temporary file.
pub(crate) fn publish_from(
    dir: &Path,
    name: &str,
    content: &mut dyn Read,
    mode: u32,
) -> Result<(), IoFailure> {
    let tmp = dir.join(tmp_name(name));
    let mut f = create_truncated(&tmp, mode).map_err(IoFailure::at("create", &tmp))?;
    let mut piece = vec![0u8; 64 * 1024];
    loop {
        let n = match content.read(&mut piece) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                drop(f);
                let _ = std::fs::remove_file(&tmp);
                return Err(IoFailure::at("read the content for", &tmp)(e));
            }
        };
        f.write_all(piece.get(..n).unwrap_or_default())
            .map_err(IoFailure::at("write", &tmp))?;
    }
    f.sync_data().map_err(IoFailure::at("fdatasync", &tmp))?;
    drop(f);
    let to = dir.join(name);
    std::fs::rename(&tmp, &to).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        IoFailure::at("rename", &to)(e)
    })
}

/// The final paths of a written pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairPaths {
    /// `<dir>/<stem>.env`.
    pub envelope: PathBuf,
    /// `<dir>/<stem>.eml`.
    pub message: PathBuf,
}

/// Writes an envelope file and a message file: envelope first, message last, each
/// synced and renamed, then one sync of `dir`. On error, no final name written by this
/// call holds a partial file (temporary files may remain; see the module header).
#[cfg(test)]
pub(crate) fn write_pair(
    dir: &Path,
    stem: &str,
    envelope: &[u8],
    content: &[u8],
    mode: u32,
) -> Result<PairPaths, IoFailure> {
    let mut content = content;
    write_pair_from(dir, stem, envelope, &mut content, mode)
}

/// [`write_pair`] with the message read from `content` (see [`publish_from`]).
pub(crate) fn write_pair_from(
    dir: &Path,
    stem: &str,
    envelope: &[u8],
    content: &mut dyn Read,
    mode: u32,
) -> Result<PairPaths, IoFailure> {
    let env_name = format!("{stem}{ENV_SUFFIX}");
    let msg_name = format!("{stem}{MSG_SUFFIX}");
    publish(dir, &env_name, envelope, mode)?;
    publish_from(dir, &msg_name, content, mode)?;
    sync_dir(dir).map_err(IoFailure::at("fsync", dir))?;
    Ok(PairPaths {
        envelope: dir.join(env_name),
        message: dir.join(msg_name),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_published_envelope_first_and_without_temporary_files() {
        let d = tempfile::tempdir().unwrap();
        let paths =
            write_pair(d.path(), "ABC", b"{}\n", b"Subject: x\r\n\r\nhi\r\n", 0o640).unwrap();
        assert_eq!(std::fs::read(&paths.envelope).unwrap(), b"{}\n");
        assert_eq!(
            std::fs::read(&paths.message).unwrap(),
            b"Subject: x\r\n\r\nhi\r\n"
        );
        let mut names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["ABC.eml", "ABC.env"]);
        // Written again: replaced, still no temporary left.
        write_pair(d.path(), "ABC", b"{\"a\":1}\n", b"x\r\n", 0o640).unwrap();
        assert_eq!(std::fs::read(&paths.message).unwrap(), b"x\r\n");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 2);
    }

    #[test]
    fn rename_noreplace_never_replaces() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        let e = rename_noreplace(&a, &b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&b).unwrap(), b"b");
        std::fs::remove_file(&b).unwrap();
        rename_noreplace(&a, &b).unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"a");
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_path() {
        let d = tempfile::tempdir().unwrap();
        let gone = d.path().join("gone");
        let e = write_pair(&gone, "X", b"{}", b"x", 0o640).unwrap_err();
        assert_eq!(e.op, "create");
        assert!(e.path.starts_with(&gone));
    }
}
