//! The policy cache on disk: `<data_dir>/mta-sts/<domain>.json`, one file per domain.
//!
//! - The directory is created with mode 0700 (set explicitly, whatever the umask); an
//!   existing one must be a real directory (not a link), owned by Tern's user and not
//!   writable by group or others, else the cache is kept in memory only.
//! - A file is written atomically: `<domain>.json.tmp` created new with mode 0600 and
//!   `O_NOFOLLOW`, written, `fsync`ed, renamed over `<domain>.json`, then the directory
//!   `fsync`ed.
//! - At start every `<domain>.json` is read back (opened with `O_NOFOLLOW`, at most
//!   [`MAX_FILE`] octets) and validated: the JSON's fields, the domain equal to the file
//!   name, the id's grammar, the policy text parsed again by the same strict parser, the
//!   fetch time not in the future. An expired one is deleted; a bad one (or a link, or
//!   not a regular file) is moved aside as `<name>.bad-<unix ms>` and reported, never
//!   fatal. Leftover `.tmp` files are deleted. At most `max` entries are loaded.
//!
//! Files are written and read on the blocking pool by the caller (`service.rs`).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::Entry;
use crate::policy::{is_domain, parse_policy};

/// The largest cache file read (a 64 KiB policy escaped in JSON fits).
pub const MAX_FILE: u64 = 512 * 1024;
/// Name of the directory under the data directory.
pub const DIR_NAME: &str = "mta-sts";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    format: u32,
    domain: String,
    id: String,
    fetched_at: u64,
    policy: String,
}

/// A file moved aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// The file.
    pub path: PathBuf,
    /// What was wrong.
    pub reason: String,
    /// Where it went (`None`: the rename failed too).
    pub moved_to: Option<PathBuf>,
}

/// What loading found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Valid, unexpired entries.
    pub entries: Vec<Entry>,
    /// Expired files deleted.
    pub expired: usize,
    /// Bad files moved aside.
    pub quarantined: Vec<Quarantined>,
}

/// The cache directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Creates or checks `<data_dir>/mta-sts` (module header).
    pub fn open(data_dir: &Path) -> std::io::Result<Store> {
        let dir = data_dir.join(DIR_NAME);
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let meta = std::fs::symlink_metadata(&dir)?;
        let refuse = |why: &str| Err(std::io::Error::other(format!("{}: {why}", dir.display())));
        if !meta.file_type().is_dir() {
            return refuse("not a directory (or a symbolic link)");
        }
        if meta.uid() != rustix::process::geteuid().as_raw() {
            return refuse("owned by another user");
        }
        if meta.mode() & 0o022 != 0 {
            return refuse("writable by group or others");
        }
        Ok(Store { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, domain: &str) -> PathBuf {
        self.dir.join(format!("{domain}.json"))
    }

    /// Writes `entry` atomically (module header).
    pub fn save(&self, entry: &Entry) -> std::io::Result<()> {
        if !is_domain(&entry.domain) {
            return Err(std::io::Error::other("not a domain name"));
        }
        let body = serde_json::to_vec(&OnDisk {
            format: 1,
            domain: entry.domain.clone(),
            id: entry.id.clone(),
            fetched_at: entry.fetched_at,
            policy: entry.text.clone(),
        })
        .map_err(std::io::Error::other)?;
        let tmp = self.dir.join(format!("{}.json.tmp", entry.domain));
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(&body)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, self.path(&entry.domain))?;
        File::open(&self.dir)?.sync_all()
    }

    /// Deletes `domain`'s file (evicted or withdrawn).
    pub fn remove(&self, domain: &str) -> std::io::Result<()> {
        if !is_domain(domain) {
            return Ok(());
        }
        match std::fs::remove_file(self.path(domain)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Reads the directory back (module header).
    pub fn load(&self, now: u64, max: usize, max_policy_bytes: usize) -> std::io::Result<Loaded> {
        let mut out = Loaded::default();
        let now_ms = now.saturating_mul(1000);
        for item in std::fs::read_dir(&self.dir)? {
            let Ok(item) = item else { continue };
            let name = item.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            let path = item.path();
            if name.ends_with(".json.tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Some(domain) = name.strip_suffix(".json") else {
                continue;
            };
            if out.entries.len() >= max {
                break;
            }
            match read_one(&path, domain, now, max_policy_bytes) {
                Ok(Some(entry)) => out.entries.push(entry),
                Ok(None) => {
                    out.expired += 1;
                    let _ = std::fs::remove_file(&path);
                }
                Err(reason) => {
                    let to = path.with_file_name(format!("{name}.bad-{now_ms}"));
                    let moved_to = std::fs::rename(&path, &to).ok().map(|()| to);
                    out.quarantined.push(Quarantined {
                        path,
                        reason,
                        moved_to,
                    });
                }
            }
        }
        Ok(out)
    }
}

/// One file: `Ok(None)` when expired.
fn read_one(
    path: &Path,
    domain: &str,
    now: u64,
    max_policy_bytes: usize,
) -> Result<Option<Entry>, String> {
    if !is_domain(domain) || domain.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("the file name is not a lowercase domain name".into());
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                "a symbolic link".to_string()
            } else {
                e.to_string()
            }
        })?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_FILE {
        return Err(format!("larger than {MAX_FILE} octets"));
    }
    let mut body = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut body)
        .map_err(|e| e.to_string())?;
    let d: OnDisk = serde_json::from_slice(&body).map_err(|e| format!("not a cache file: {e}"))?;
    if d.format != 1 {
        return Err(format!("unknown format {}", d.format));
    }
    if d.domain != domain {
        return Err(format!("holds {:?}, not {domain}", d.domain));
    }
    if d.id.is_empty() || d.id.len() > 32 || !d.id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("bad id".into());
    }
    if d.policy.len() > max_policy_bytes {
        return Err("policy larger than max_policy_bytes".into());
    }
    if d.fetched_at > now.saturating_add(300) {
        return Err("fetched in the future".into());
    }
    let policy = parse_policy(d.policy.as_bytes()).map_err(|e| format!("policy: {e}"))?;
    let entry = Entry {
        domain: d.domain,
        id: d.id,
        policy,
        text: d.policy,
        fetched_at: d.fetched_at,
    };
    Ok(entry.valid_at(now).then_some(entry))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(domain: &str, fetched_at: u64) -> Entry {
        let text =
            format!("version: STSv1\r\nmode: enforce\r\nmx: mx.{domain}\r\nmax_age: 1000\r\n");
        Entry {
            domain: domain.into(),
            id: "abc1".into(),
            policy: parse_policy(text.as_bytes()).unwrap(),
            text,
            fetched_at,
        }
    }

    #[test]
    fn saved_0600_in_0700_and_read_back_the_same() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let meta = std::fs::metadata(store.dir()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        let e = entry("example.com", 100);
        store.save(&e).unwrap();
        let meta = std::fs::metadata(store.dir().join("example.com.json")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let loaded = store.load(200, 10, 65536).unwrap();
        assert_eq!(loaded.entries, vec![e]);
        // Expired: deleted, not quarantined.
        let loaded = store.load(2000, 10, 65536).unwrap();
        assert_eq!((loaded.entries.len(), loaded.expired), (0, 1));
        assert!(!store.dir().join("example.com.json").exists());
    }

    #[test]
    fn bad_files_are_moved_aside_and_the_rest_loads() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        store.save(&entry("good.test", 100)).unwrap();
        let dir = store.dir().to_path_buf();
        std::fs::write(dir.join("garbage.test.json"), b"{not json").unwrap();
        let other = serde_json::to_vec(&OnDisk {
            format: 1,
            domain: "victim.test".into(),
            id: "a".into(),
            fetched_at: 100,
            policy: entry("victim.test", 100).text,
        })
        .unwrap();
        std::fs::write(dir.join("wrong.test.json"), other).unwrap();
        let bad_policy = serde_json::to_vec(&OnDisk {
            format: 1,
            domain: "badpolicy.test".into(),
            id: "a".into(),
            fetched_at: 100,
            policy: "version: STSv1\nmode: enforce\nmax_age: 10\n".into(),
        })
        .unwrap();
        std::fs::write(dir.join("badpolicy.test.json"), bad_policy).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("link.test.json")).unwrap();
        std::fs::write(dir.join("left.test.json.tmp"), b"x").unwrap();
        let loaded = store.load(200, 10, 65536).unwrap();
        assert_eq!(loaded.entries.len(), 1, "{:?}", loaded.quarantined);
        assert_eq!(loaded.entries[0].domain, "good.test");
        assert_eq!(loaded.quarantined.len(), 4, "{:?}", loaded.quarantined);
        assert!(loaded.quarantined.iter().all(|q| q.moved_to.is_some()));
        assert!(!dir.join("left.test.json.tmp").exists());
        // Nothing is left to quarantine the second time.
        let again = store.load(200, 10, 65536).unwrap();
        assert_eq!((again.entries.len(), again.quarantined.len()), (1, 0));
    }

    #[test]
    fn a_directory_others_can_write_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(DIR_NAME);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(Store::open(tmp.path()).is_err());
        std::fs::remove_dir(&dir).unwrap();
        std::os::unix::fs::symlink(tmp.path(), &dir).unwrap();
        assert!(Store::open(tmp.path()).is_err());
    }
}
