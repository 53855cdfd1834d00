//! Filesystems a test mounts for itself (a small tmpfs to fill, one remounted
//! read-only), each unmounted by its guard's `Drop`, also when the test fails.
//!
//! Tests run as root (scripts/test.sh); a mount that cannot be made fails the test with
//! the command's output, never skips it. The mount point is a directory inside a
//! temporary directory the guard owns, so nothing outside the test is touched. Drop
//! order matters: declare the guard before the server that uses it, so the server stops
//! (its `Drop` runs first) before the filesystem goes away.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::try_run;

/// A tmpfs mounted on a fresh directory; unmounted (lazily if still busy) on drop.
pub struct TmpfsMount {
    /// The mount point.
    pub path: PathBuf,
    mounted: bool,
    // Declared last: removed after the unmount in `Drop`.
    _root: tempfile::TempDir,
}

impl TmpfsMount {
    /// Mounts a tmpfs of `size_bytes` (rounded up to pages by the kernel) with extra
    /// mount `options` (e.g. `"mode=0700"`).
    pub fn new(size_bytes: u64, options: &str) -> TmpfsMount {
        let root = tempfile::Builder::new()
            .prefix("tern-test-mnt-")
            .tempdir()
            .expect("create temporary directory");
        let path = root.path().join("fs");
        std::fs::create_dir(&path).expect("create mount point");
        let mut opts = format!("size={size_bytes}");
        if !options.is_empty() {
            opts.push(',');
            opts.push_str(options);
        }
        mount_cmd(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &opts, "tern-test"])
                .arg(&path),
        );
        TmpfsMount {
            path,
            mounted: true,
            _root: root,
        }
    }

    /// Mounts a tmpfs on `mount_point`, an existing empty directory the test made (e.g.
    /// the spool directory inside a data directory).
    pub fn at(mount_point: &Path, size_bytes: u64) -> TmpfsMount {
        let root = tempfile::Builder::new()
            .prefix("tern-test-mnt-")
            .tempdir()
            .expect("create temporary directory");
        mount_cmd(
            Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size_bytes},mode=0700"),
                    "tern-test",
                ])
                .arg(mount_point),
        );
        TmpfsMount {
            path: mount_point.to_path_buf(),
            mounted: true,
            _root: root,
        }
    }

    /// Remounts it read-only (`mount -o remount,ro`): even root cannot write to it then.
    pub fn remount_read_only(&self) {
        mount_cmd(
            Command::new("mount")
                .args(["-o", "remount,ro"])
                .arg(&self.path),
        );
    }

    /// Remounts it read-write.
    pub fn remount_read_write(&self) {
        mount_cmd(
            Command::new("mount")
                .args(["-o", "remount,rw"])
                .arg(&self.path),
        );
    }

    /// Free bytes (statvfs `f_bavail`, which on tmpfs is what root can use too).
    pub fn available(&self) -> u64 {
        available_bytes(&self.path)
    }
}

/// Free bytes of the filesystem holding `path`, for any user (statvfs `f_bavail`).
pub fn available_bytes(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
    // SAFETY: statvfs(3) writes into the zeroed struct we pass; `c` is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    assert_eq!(
        rc,
        0,
        "statvfs {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    st.f_bavail.saturating_mul(st.f_frsize)
}

fn mount_cmd(cmd: &mut Command) {
    let out = try_run(cmd, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{} (the scenario tests run as root: scripts/test.sh)",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        let plain = try_run(
            Command::new("umount").arg(&self.path),
            Duration::from_secs(30),
        );
        if !plain.is_ok_and(|o| o.status.success()) {
            // Still busy (a child that outlived its test): detach it now, freed when idle.
            let _ = try_run(
                Command::new("umount").arg("-l").arg(&self.path),
                Duration::from_secs(30),
            );
        }
        self.mounted = false;
    }
}
