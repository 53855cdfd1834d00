//! The greylist's file: `<data_dir>/greylist.json`, so that a restart does not greylist
//! again every sender that already passed.
//!
//! Format (version 1), JSON lines:
//! ```text
//! {"format":"tern-greylist","version":1,"saved":<unix ms>}
//! {"t":"<32 hex digits>","first":<ms>,"last":<ms>,"passed":<bool>}      one per triplet
//! {"n":"<network base address>","last":<ms>}                             one per network
//! {"end":<entries>,"crc32c":<CRC32C of every byte before this line>}
//! ```
//!
//! Writing: a temporary file in the same directory (`greylist.json.tmp`, an old one
//! removed first, opened with `O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600 set explicitly
//! whatever the umask), written, `fsync`ed, renamed over the file, and the directory
//! `fsync`ed: the file is always the old one or the new one, whole.
//!
//! Reading trusts nothing: the file is opened with `O_NOFOLLOW | O_NONBLOCK`, must be a
//! regular file of at most [`MAX_FILE`] octets, and every line is checked (the header,
//! each entry's fields and times, the count and the checksum). A file that fails any
//! check is moved aside to `greylist.json.corrupt-<unix ms>` (kept for an operator,
//! never deleted) and the greylist starts empty: never fatal. Entries already expired
//! under the policy of the start are dropped; the tables' bounds hold while loading.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::PoisonError;

use serde::{Deserialize, Serialize};

use crate::greylist::{Entry, MemoryGreylist, Policy, TripletKey, network};

/// The file's name in the data directory.
pub const FILE_NAME: &str = "greylist.json";
/// Largest file read (about 5 million entries).
pub const MAX_FILE: u64 = 512 * 1024 * 1024;
/// Longest line read.
const MAX_LINE: usize = 256;

/// Why a greylist file was not loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// It could not be opened or read (other than not existing).
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// It is not what Tern writes; moved aside to `moved_to` (when the move worked).
    #[error("{path} is not a valid greylist file ({reason}); moved to {moved_to:?}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
        /// Where it went.
        moved_to: Option<PathBuf>,
    },
}

/// What a load found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Triplets loaded.
    pub triplets: usize,
    /// Networks loaded.
    pub networks: usize,
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    saved: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    Triplet {
        t: String,
        first: u64,
        last: u64,
        passed: bool,
    },
    Network {
        n: IpAddr,
        last: u64,
    },
    End {
        end: u64,
        crc32c: u32,
    },
}

fn hex(key: &TripletKey) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<TripletKey> {
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut key = [0u8; 16];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(key)
}

impl MemoryGreylist {
    /// Writes the live entries to `dir/greylist.json` (module header) if anything
    /// changed since the last save; returns whether it wrote. The tables' lock is held
    /// only while the entries are copied, never during I/O.
    pub fn save(&self, dir: &Path, now_ms: u64) -> std::io::Result<bool> {
        let mut body = Vec::new();
        {
            let mut t = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
            if !t.dirty {
                return Ok(false);
            }
            t.dirty = false;
            let header = Header {
                format: "tern-greylist".into(),
                version: 1,
                saved: now_ms,
            };
            let mut count = 0u64;
            let mut push = |line: &dyn erased::Json| {
                body.extend_from_slice(line.json().as_bytes());
                body.push(b'\n');
            };
            push(&header);
            for (key, e, _) in t.triplets.live(now_ms) {
                push(&Line::Triplet {
                    t: hex(key),
                    first: e.first,
                    last: e.last,
                    passed: e.passed,
                });
                count += 1;
            }
            for (net, last, _) in t.networks.live(now_ms) {
                push(&Line::Network {
                    n: *net,
                    last: *last,
                });
                count += 1;
            }
            let crc = crc32c::crc32c(&body);
            let end = Line::End {
                end: count,
                crc32c: crc,
            };
            body.extend_from_slice(end.json().as_bytes());
            body.push(b'\n');
        }
        let result = write_atomically(dir, &body);
        if result.is_err() {
            // Try again at the next save.
            self.tables
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .dirty = true;
        }
        result.map(|()| true)
    }

    /// Loads `dir/greylist.json` into an empty greylist (module header). No file:
    /// `Ok` with nothing loaded. A corrupt file is moved aside and reported; the greylist
    /// stays empty.
    pub fn load(&self, dir: &Path, policy: &Policy, now_ms: u64) -> Result<Loaded, LoadError> {
        let path = dir.join(FILE_NAME);
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::default()),
            // A symbolic link (ELOOP) is not ours: aside with it.
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(quarantine(&path, "a symbolic link".into(), now_ms));
            }
            Err(source) => return Err(LoadError::Io { path, source }),
        };
        let meta = file.metadata().map_err(|source| LoadError::Io {
            path: path.clone(),
            source,
        })?;
        if !meta.is_file() {
            return Err(quarantine(&path, "not a regular file".into(), now_ms));
        }
        if meta.len() > MAX_FILE {
            return Err(quarantine(
                &path,
                format!("larger than {MAX_FILE} octets"),
                now_ms,
            ));
        }
        match read_entries(file, policy, now_ms) {
            Ok((triplets, networks)) => {
                let mut t = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
                let loaded = Loaded {
                    triplets: triplets.len(),
                    networks: networks.len(),
                };
                for (key, e) in triplets {
                    t.triplets.insert(key, e, e.expires(policy), now_ms);
                }
                for (net, last) in networks {
                    t.networks
                        .insert(net, last, last.saturating_add(policy.expire_ms), now_ms);
                }
                Ok(loaded)
            }
            Err(reason) => Err(quarantine(&path, reason, now_ms)),
        }
    }
}

type Entries = (Vec<(TripletKey, Entry)>, Vec<(IpAddr, u64)>);

/// Lines of the file with the checksum of everything before each.
struct Lines {
    reader: BufReader<std::io::Take<File>>,
    crc: u32,
}

impl Lines {
    /// The next line without its `\n`, and the checksum of the bytes before it.
    fn next(&mut self) -> Result<Option<(Vec<u8>, u32)>, String> {
        let mut line = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("read error: {e}"))?;
        if n == 0 {
            return Ok(None);
        }
        if line.pop() != Some(b'\n') {
            return Err("a line is too long or unterminated".into());
        }
        let before = self.crc;
        self.crc = crc32c::crc32c_append(self.crc, &line);
        self.crc = crc32c::crc32c_append(self.crc, b"\n");
        Ok(Some((line, before)))
    }
}

/// Reads and checks every line; the reason of the first failure.
fn read_entries(file: File, policy: &Policy, now_ms: u64) -> Result<Entries, String> {
    let mut lines = Lines {
        reader: BufReader::new(file.take(MAX_FILE)),
        crc: 0,
    };
    let (first, _) = lines.next()?.ok_or("empty file")?;
    let header: Header = serde_json::from_slice(&first).map_err(|_| "no header line")?;
    if header.format != "tern-greylist" || header.version != 1 {
        return Err(format!(
            "format {} version {} unknown",
            header.format, header.version
        ));
    }
    // Times may not lie in the future of the save by more than a day (clock steps).
    let latest = header.saved.saturating_add(86_400_000);
    let mut triplets = Vec::new();
    let mut networks = Vec::new();
    let mut count = 0u64;
    loop {
        let Some((text, crc_before)) = lines.next()? else {
            return Err("no end line (cut short)".into());
        };
        let which = count + 1;
        let parsed: Line =
            serde_json::from_slice(&text).map_err(|_| format!("entry {which} does not parse"))?;
        match parsed {
            Line::Triplet {
                t,
                first,
                last,
                passed,
            } => {
                let key = unhex(&t).ok_or_else(|| format!("entry {which}: bad key"))?;
                if first > last || last > latest {
                    return Err(format!("entry {which}: impossible times"));
                }
                let e = Entry {
                    first,
                    last,
                    passed,
                };
                if e.expires(policy) > now_ms {
                    triplets.push((key, e));
                }
            }
            Line::Network { n, last } => {
                if network(n) != n || last > latest {
                    return Err(format!("entry {which}: bad network"));
                }
                if last.saturating_add(policy.expire_ms) > now_ms {
                    networks.push((n, last));
                }
            }
            Line::End { end, crc32c } => {
                if end != count {
                    return Err(format!("{count} entries where the end line says {end}"));
                }
                if crc32c != crc_before {
                    return Err("checksum mismatch".into());
                }
                if lines.next()?.is_some() {
                    return Err("data after the end line".into());
                }
                return Ok((triplets, networks));
            }
        }
        count += 1;
    }
}

/// Moves `path` aside (never deletes it) and says so.
fn quarantine(path: &Path, reason: String, now_ms: u64) -> LoadError {
    let to = path.with_file_name(format!("{FILE_NAME}.corrupt-{now_ms}"));
    let moved_to = std::fs::rename(path, &to).ok().map(|()| to);
    LoadError::Corrupt {
        path: path.to_path_buf(),
        reason,
        moved_to,
    }
}

fn write_atomically(dir: &Path, body: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
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
    // Explicitly, whatever the umask.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(body)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(FILE_NAME))?;
    File::open(dir)?.sync_all()
}

/// Serialising lines of different types through one closure.
mod erased {
    pub(super) trait Json {
        fn json(&self) -> String;
    }

    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> String {
            serde_json::to_string(self).unwrap_or_default()
        }
    }
}
use erased::Json as _;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::greylist::Verdict;

    const P: Policy = Policy {
        delay_ms: 300_000,
        window_ms: 172_800_000,
        expire_ms: 3_024_000_000,
    };
    const T0: u64 = 1_800_000_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn filled() -> MemoryGreylist {
        let g = MemoryGreylist::default();
        g.decide_now(ip("192.0.2.1"), "a@x", "b@y", &P, T0);
        g.decide_now(ip("192.0.2.1"), "a@x", "b@y", &P, T0 + P.delay_ms);
        g.decide_now(ip("198.51.100.7"), "c@x", "d@y", &P, T0 + 1);
        g
    }

    #[test]
    fn saved_and_loaded_the_same_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let g = filled();
        assert!(g.save(dir.path(), T0 + P.delay_ms).unwrap());
        assert!(
            !g.save(dir.path(), T0 + P.delay_ms).unwrap(),
            "nothing changed"
        );
        let meta = std::fs::metadata(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let back = MemoryGreylist::default();
        let loaded = back.load(dir.path(), &P, T0 + P.delay_ms + 1).unwrap();
        assert_eq!(
            loaded,
            Loaded {
                triplets: 2,
                networks: 1
            }
        );
        let now = T0 + P.delay_ms + 2;
        assert_eq!(
            back.decide_now(ip("192.0.2.9"), "new@x", "new@y", &P, now),
            Verdict::NetworkAllowed
        );
        assert!(matches!(
            back.decide_now(ip("198.51.100.7"), "c@x", "d@y", &P, now),
            Verdict::Passed { .. }
        ));
        // Entries expired by the time of the load are dropped.
        let later = MemoryGreylist::default();
        let loaded = later.load(dir.path(), &P, T0 + P.window_ms + 10).unwrap();
        assert_eq!(
            loaded,
            Loaded {
                triplets: 1,
                networks: 1
            }
        );
        // No file: nothing, no error.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            MemoryGreylist::default()
                .load(empty.path(), &P, T0)
                .unwrap(),
            Loaded::default()
        );
    }

    #[test]
    fn a_failed_save_is_tried_again() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("not-there");
        let g = filled();
        assert!(g.save(&missing, T0).is_err());
        std::fs::create_dir(&missing).unwrap();
        assert!(
            g.save(&missing, T0).unwrap(),
            "still dirty after the failure"
        );
        assert!(missing.join(FILE_NAME).exists());
    }

    #[test]
    fn a_damaged_file_is_moved_aside_never_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let g = filled();
        g.save(dir.path(), T0 + P.delay_ms).unwrap();
        let path = dir.path().join(FILE_NAME);
        let good = std::fs::read(&path).unwrap();
        let damages: Vec<(&str, Vec<u8>)> = vec![
            ("flipped byte", {
                let mut b = good.clone();
                let i = b.iter().position(|c| *c == b'f').unwrap();
                b[i] = b'e';
                b
            }),
            ("cut short", good[..good.len() / 2].to_vec()),
            ("trailing junk", [good.clone(), b"{}\n".to_vec()].concat()),
            ("not json", b"hello\n".to_vec()),
            ("empty", Vec::new()),
            ("long line", vec![b'x'; 10_000]),
        ];
        for (what, bytes) in damages {
            std::fs::write(&path, &bytes).unwrap();
            let back = MemoryGreylist::default();
            let err = back.load(dir.path(), &P, T0).unwrap_err();
            let LoadError::Corrupt {
                moved_to: Some(to), ..
            } = &err
            else {
                panic!("{what}: {err}");
            };
            assert!(to.exists() && !path.exists(), "{what}");
            assert_eq!(back.sizes(), (0, 0), "{what}");
            std::fs::remove_file(to).unwrap();
        }
        // A symbolic link is not followed.
        std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
        let err = MemoryGreylist::default()
            .load(dir.path(), &P, T0)
            .unwrap_err();
        assert!(matches!(err, LoadError::Corrupt { .. }), "{err}");
        assert!(std::fs::symlink_metadata(&path).is_err());
    }
}
