//! Walking a directory path component by component, holding directory file descriptors,
//! so that no symbolic link a local user could have made redirects what Tern writes.
//!
//! [`Walker::walk`] starts at `/` (or at a directory already walked) and opens each
//! component with `openat(dir, name, O_DIRECTORY | O_NOFOLLOW)`. A missing component is
//! created with `mkdirat` (mode 0700, set again with `fchmod` so the umask plays no
//! part), opened again without following links, and its parent is fsynced. What the walk
//! returns is an open descriptor of the directory reached: renaming or replacing any
//! entry of the path afterwards changes nothing for the caller, who works with
//! `openat`/`renameat` relative to it.
//!
//! The link rule (docs/LOCAL.md, "Mailbox paths"): a symbolic link met on the way is
//! followed only when nobody but root or Tern could have made it: the link itself is
//! owned by root or by Tern's uid, and the directory that holds it is owned by root or by
//! Tern and writable by neither its group nor others. Such a link is read (`readlinkat`)
//! and the walk goes on with its target (an absolute target restarts at `/`), at most
//! [`MAX_LINKS`] links per walk, like the kernel. Any other link refuses the walk, with the
//! component and the reason. `..` goes to the parent of the directory actually reached,
//! as the kernel does.
//!
//! Trust: the path comes from the operator's configuration (or a safe name derived from
//! a local part); every directory on it may belong to someone else, and the walk trusts
//! nothing it did not check through the descriptor it holds. Blocking: call it from a
//! blocking thread.
//!
//! Races: a directory created by someone else between our failed `openat` and our
//! `mkdirat` is simply opened (bounded retries); a link swapped in after an `openat`
//! does not matter, since the descriptor is kept.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

/// Most symbolic links followed in one walk (the kernel's limit).
pub(crate) const MAX_LINKS: usize = 40;
/// Mode of the directories a walk creates.
pub(crate) const NEW_DIR_MODE: u32 = 0o700;
/// Times a component that appears and disappears under us is tried again.
const MAX_RETRIES: usize = 8;

/// Why a walk stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WalkError {
    /// The path is refused by the link rule (or a component is not a directory).
    #[error("{}: {why}", at.display())]
    Refused {
        /// The component, as walked (links replaced by their targets).
        at: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A component does not exist and the walk was not allowed to create it.
    #[error("{}: no such directory", at.display())]
    Missing {
        /// The missing component.
        at: PathBuf,
    },
    /// A system call failed.
    #[error("{step} {}: {source}", at.display())]
    Io {
        /// `open`, `create`, `stat`, `readlink`, `sync`.
        step: &'static str,
        /// The component.
        at: PathBuf,
        /// What the system said.
        source: io::Error,
    },
}

/// A directory reached by a walk.
#[derive(Debug)]
pub(crate) struct WalkedDir {
    /// Open on the directory (`O_PATH | O_DIRECTORY`: a base for `*at` calls; see
    /// [`reopen`] to read or sync it).
    pub fd: OwnedFd,
    /// Its `fstat`.
    pub stat: Stat,
    /// The path walked, links followed replaced by their targets (for messages).
    pub path: PathBuf,
    /// Device and inode of every directory from the start of the walk to this one:
    /// the directories the path really goes through.
    pub chain: Vec<(u64, u64)>,
    /// Whether this walk created this directory.
    pub created: bool,
}

/// Walks paths for a process running as `uid` (Tern's effective uid).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Walker {
    /// Tern's uid: links it owns are trusted, like root's.
    pub uid: u32,
}

/// How each component is opened: `O_PATH` needs only search permission on the parent,
/// not read permission on the directory (a home directory of mode 0711 can be walked, as
/// by path), and the descriptor still serves as the base of the next `openat`.
const WALK_FLAGS: OFlags = OFlags::PATH
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// How a directory that must be read or synced is opened again through its `O_PATH`
/// descriptor (`openat(fd, ".")`: the same directory, whatever happened to its name).
const READ_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);

/// Opens the directory behind a walk's descriptor for reading (to list or fsync it).
pub(crate) fn reopen(d: &WalkedDir) -> Result<OwnedFd, WalkError> {
    rustix::fs::openat(&d.fd, ".", READ_FLAGS, Mode::empty()).map_err(io_err("open", &d.path))
}

fn io_err(step: &'static str, at: &Path) -> impl FnOnce(Errno) -> WalkError {
    let at = at.to_path_buf();
    move |e| WalkError::Io {
        step,
        at,
        source: e.into(),
    }
}

/// The components of `path` to walk: names and `..` (`.` and the root are dropped).
fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// Whether the mode lets the group or others write.
pub(crate) fn writable_by_others(mode: u32) -> bool {
    mode & 0o022 != 0
}

impl Walker {
    /// A walker for this process.
    pub(crate) fn current() -> Walker {
        Walker {
            uid: rustix::process::geteuid().as_raw(),
        }
    }

    fn trusted_uid(&self, uid: u32) -> bool {
        uid == 0 || uid == self.uid
    }

    fn root() -> Result<WalkedDir, WalkError> {
        let at = Path::new("/");
        let fd = rustix::fs::open(at, WALK_FLAGS, Mode::empty()).map_err(io_err("open", at))?;
        let stat = rustix::fs::fstat(&fd).map_err(io_err("stat", at))?;
        Ok(WalkedDir {
            chain: vec![(stat.st_dev, stat.st_ino)],
            fd,
            stat,
            path: at.to_path_buf(),
            created: false,
        })
    }

    /// Whether a link whose `lstat` is `link`, in the directory whose `fstat` is `dir`,
    /// may be followed; the reason when not.
    fn check_link(&self, dir: &Stat, link: &Stat) -> Result<(), String> {
        if !self.trusted_uid(link.st_uid) {
            return Err(format!(
                "a symbolic link owned by uid {} (only links owned by root or by Tern's uid {} are followed)",
                link.st_uid, self.uid
            ));
        }
        if !self.trusted_uid(dir.st_uid) {
            return Err(format!(
                "a symbolic link in a directory owned by uid {} (links are followed only in directories of root or Tern's uid {})",
                dir.st_uid, self.uid
            ));
        }
        if writable_by_others(dir.st_mode) {
            return Err(format!(
                "a symbolic link in a directory writable by its group or others (mode {:o})",
                dir.st_mode & 0o7777
            ));
        }
        Ok(())
    }

    /// Walks `path`: absolute from `/`, relative from `from` (required then). With
    /// `create`, missing directories are made (see the module header).
    pub(crate) fn walk(
        &self,
        from: Option<&WalkedDir>,
        path: &Path,
        create: bool,
    ) -> Result<WalkedDir, WalkError> {
        let mut cur = match from {
            Some(d) if !path.is_absolute() => {
                let fd = rustix::fs::openat(&d.fd, ".", WALK_FLAGS, Mode::empty())
                    .map_err(io_err("open", &d.path))?;
                WalkedDir {
                    fd,
                    stat: d.stat,
                    path: d.path.clone(),
                    chain: d.chain.clone(),
                    created: d.created,
                }
            }
            _ => {
                if !path.is_absolute() {
                    return Err(WalkError::Refused {
                        at: path.to_path_buf(),
                        why: "not an absolute path".into(),
                    });
                }
                Walker::root()?
            }
        };
        let mut pending: VecDeque<OsString> = components(path).into();
        let mut links = 0usize;
        let mut retries = 0usize;
        while let Some(name) = pending.pop_front() {
            if name == ".." {
                let fd = rustix::fs::openat(&cur.fd, "..", WALK_FLAGS, Mode::empty())
                    .map_err(io_err("open", &cur.path))?;
                let stat = rustix::fs::fstat(&fd).map_err(io_err("stat", &cur.path))?;
                cur.path.pop();
                if cur.chain.len() > 1 {
                    cur.chain.pop();
                } else {
                    cur.chain = vec![(stat.st_dev, stat.st_ino)];
                }
                cur.fd = fd;
                cur.stat = stat;
                cur.created = false;
                continue;
            }
            let at = cur.path.join(&name);
            match rustix::fs::openat(&cur.fd, name.as_os_str(), WALK_FLAGS, Mode::empty()) {
                Ok(fd) => {
                    let stat = rustix::fs::fstat(&fd).map_err(io_err("stat", &at))?;
                    cur.chain.push((stat.st_dev, stat.st_ino));
                    cur = WalkedDir {
                        fd,
                        stat,
                        path: at,
                        chain: std::mem::take(&mut cur.chain),
                        created: false,
                    };
                }
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    let st =
                        rustix::fs::statat(&cur.fd, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
                            .map_err(io_err("stat", &at))?;
                    if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
                        return Err(WalkError::Refused {
                            at,
                            why: "not a directory".into(),
                        });
                    }
                    self.check_link(&cur.stat, &st)
                        .map_err(|why| WalkError::Refused {
                            at: at.clone(),
                            why,
                        })?;
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(WalkError::Refused {
                            at,
                            why: format!("more than {MAX_LINKS} symbolic links"),
                        });
                    }
                    let target = rustix::fs::readlinkat(&cur.fd, name.as_os_str(), Vec::new())
                        .map_err(io_err("readlink", &at))?;
                    let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
                    if target.is_absolute() {
                        cur = Walker::root()?;
                    }
                    for c in components(&target).into_iter().rev() {
                        pending.push_front(c);
                    }
                }
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(
                        &cur.fd,
                        name.as_os_str(),
                        Mode::from_raw_mode(NEW_DIR_MODE),
                    ) {
                        Ok(()) => {}
                        Err(Errno::EXIST) if retries < MAX_RETRIES => {
                            // Made by someone else meanwhile: open (and judge) it.
                            retries += 1;
                            pending.push_front(name);
                            continue;
                        }
                        Err(e) => return Err(io_err("create", &at)(e)),
                    }
                    let fd = match rustix::fs::openat(
                        &cur.fd,
                        name.as_os_str(),
                        WALK_FLAGS,
                        Mode::empty(),
                    ) {
                        Ok(fd) => fd,
                        Err(Errno::LOOP | Errno::NOTDIR) => {
                            return Err(WalkError::Refused {
                                at,
                                why: "replaced by something else right after it was created".into(),
                            });
                        }
                        Err(e) => return Err(io_err("open", &at)(e)),
                    };
                    // Ours and 0700 at most: it can be opened to set its mode exactly.
                    let rd = rustix::fs::openat(&fd, ".", READ_FLAGS, Mode::empty())
                        .map_err(io_err("open", &at))?;
                    rustix::fs::fchmod(&rd, Mode::from_raw_mode(NEW_DIR_MODE))
                        .map_err(io_err("chmod", &at))?;
                    let stat = rustix::fs::fstat(&fd).map_err(io_err("stat", &at))?;
                    // The new entry lives in its parent: sync it so it survives a crash.
                    let parent = rustix::fs::openat(&cur.fd, ".", READ_FLAGS, Mode::empty())
                        .map_err(io_err("open", &cur.path))?;
                    rustix::fs::fsync(&parent).map_err(io_err("sync", &cur.path))?;
                    cur.chain.push((stat.st_dev, stat.st_ino));
                    cur = WalkedDir {
                        fd,
                        stat,
                        path: at,
                        chain: std::mem::take(&mut cur.chain),
                        created: true,
                    };
                }
                Err(Errno::NOENT) => return Err(WalkError::Missing { at }),
                Err(e) => return Err(io_err("open", &at)(e)),
            }
        }
        Ok(cur)
    }
}

/// Device and inode of an operator's directory (following links: the operator named
/// it), or `None` when it does not exist.
pub(crate) fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    fn walker() -> Walker {
        Walker::current()
    }

    #[test]
    fn missing_directories_are_created_0700_under_any_umask() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b/c");
        let w = walker().walk(None, &p, true).unwrap();
        assert!(w.created);
        for sub in ["a", "a/b", "a/b/c"] {
            let m = std::fs::metadata(d.path().join(sub)).unwrap();
            assert_eq!(m.mode() & 0o7777, 0o700, "{sub}");
        }
        assert_eq!(w.path, p);
        let again = walker().walk(None, &p, false).unwrap();
        assert!(!again.created);
        assert_eq!(again.chain, w.chain);
        assert!(matches!(
            walker().walk(None, &d.path().join("x/y"), false),
            Err(WalkError::Missing { .. })
        ));
    }

    #[test]
    fn an_untrusted_link_is_refused_and_a_trusted_one_followed() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        symlink(&real, d.path().join("link")).unwrap();
        // Made by this process (root or Tern) in a directory nobody else writes: followed.
        let w = walker().walk(None, &d.path().join("link"), false).unwrap();
        assert_eq!(w.path, real);
        // A relative target with `..` works too.
        std::fs::create_dir(real.join("sub")).unwrap();
        symlink("../real/sub", real.join("up")).unwrap();
        let w = walker().walk(None, &real.join("up"), false).unwrap();
        assert_eq!(
            w.stat.st_ino,
            std::fs::metadata(real.join("sub")).unwrap().ino()
        );
        // The same link owned by another uid is refused...
        let strange = Walker { uid: 4242 };
        if walker().uid == 0 {
            rustix::fs::chownat(
                rustix::fs::CWD,
                d.path().join("link"),
                Some(rustix::fs::Uid::from_raw(65534)),
                None,
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .unwrap();
            let e = walker()
                .walk(None, &d.path().join("link"), false)
                .unwrap_err();
            assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        }
        // ... and so is any link in a directory writable by others.
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = walker().walk(None, &real.join("up"), false);
        assert!(e.is_ok(), "real/ is not writable by others: {e:?}");
        let e = strange
            .walk(None, &d.path().join("link"), false)
            .unwrap_err();
        assert!(matches!(e, WalkError::Refused { .. }), "{e}");
    }

    #[test]
    fn a_file_on_the_way_is_refused_and_link_loops_end() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"x").unwrap();
        let e = walker()
            .walk(None, &d.path().join("f/x"), true)
            .unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        symlink(d.path().join("l2"), d.path().join("l1")).unwrap();
        symlink(d.path().join("l1"), d.path().join("l2")).unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = walker().walk(None, &d.path().join("l1"), true).unwrap_err();
        assert!(e.to_string().contains("more than 40"), "{e}");
    }
}
