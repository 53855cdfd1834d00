//! Delivery into a Maildir (D. J. Bernstein's format, as Dovecot, Courier and mutt read
//! it).
//!
//! One delivery:
//! 1. create `<maildir>/{tmp,new,cur}` when missing (mode 0700; the new directories'
//!    parents are fsynced so they survive a crash);
//! 2. with a quota, add up the sizes of `new/` and `cur/` (the `S=` size in a file name
//!    when there is one, else the file's length) and refuse a message that does not fit;
//! 3. write `Return-Path:` and `Delivered-To:`, then the message with LF line ends (the
//!    Maildir convention; CRLF in the spool), to `tmp/<unique>`, created exclusively;
//! 4. fsync the file, rename it to `new/<unique>`, fsync `new/`.
//!
//! Unique names follow the format's rule "time, unique part, host":
//! `<seconds>.M<microseconds>P<pid>Q<n>.<host>,S=<size>,W=<size with CRLF>` (the
//! `Q` counter makes names unique within a process; Dovecot's `S=`/`W=` sizes spare
//! readers a stat). `/` and `:` in the host name are written `\057` and `\072`.
//!
//! Invariants: a file appears in `new/` only complete and synced (rename is atomic); a
//! failure at any step removes the file from `tmp/` (best effort: a crash can leave
//! one there, which readers ignore and Dovecot cleans after 36 hours). Duplicate
//! window: a crash after the rename and before the queue records the delivery delivers
//! again at the next attempt.
//!
//! Races: the quota is checked before writing without a lock, so concurrent deliveries
//! to one mailbox can pass it together (a soft quota, like Maildir++).
//!
//! Trust: the path comes from the directory, which only builds it from the
//! configuration and safe names; the envelope values written into the header fields
//! were validated by the spool (no control characters). All I/O here is blocking: call
//! it from a blocking thread.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Deliveries made by this process, for the `Q` part of unique names.
static DELIVERIES: AtomicU64 = AtomicU64::new(0);

/// Why a Maildir delivery failed. Every variant but [`MaildirError::OverQuota`] is
/// temporary.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MaildirError {
    /// A step failed with an I/O error (permissions, disk full, a file where a
    /// directory should be). Reply `451 4.3.0`, or `452 4.3.1` when the disk is full,
    /// `452 4.2.2` when the user's filesystem quota is exhausted.
    #[error("{step} {path}: {source}")]
    Io {
        /// What was being done: `create`, `write`, `sync`, `rename`, `read`.
        step: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The message does not fit in the mailbox's quota. Reply `452 4.2.2` or
    /// `552 5.2.2`, as configured.
    #[error("mailbox {path} is over quota ({used} bytes used, message {size}, quota {limit})")]
    OverQuota {
        /// The Maildir.
        path: PathBuf,
        /// Bytes in `new/` and `cur/`.
        used: u64,
        /// The message as it would be stored.
        size: u64,
        /// The quota.
        limit: u64,
    },
}

impl MaildirError {
    /// The SMTP code and enhanced status of a temporary failure (not over quota).
    pub fn temporary_status(&self) -> (u16, &'static str) {
        match self {
            MaildirError::Io { source, .. } => match source.raw_os_error() {
                Some(libc::ENOSPC) => (452, "4.3.1"),
                Some(libc::EDQUOT) => (452, "4.2.2"),
                _ => (451, "4.3.0"),
            },
            MaildirError::OverQuota { .. } => (452, "4.2.2"),
        }
    }

    fn io(step: &'static str, path: &Path, source: io::Error) -> MaildirError {
        MaildirError::Io {
            step,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What to deliver: the envelope values for the two header fields and the content as
/// stored in the spool (CRLF lines).
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// Reverse path without brackets; empty for `<>`.
    pub return_path: &'a str,
    /// The final recipient address.
    pub delivered_to: &'a str,
    /// The content.
    pub content: &'a [u8],
}

/// One Maildir.
#[derive(Debug, Clone)]
pub struct Maildir {
    path: PathBuf,
}

impl Maildir {
    /// The Maildir at `path` (nothing is touched yet).
    pub fn new(path: impl Into<PathBuf>) -> Maildir {
        Maildir { path: path.into() }
    }

    /// Its directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the Maildir and its `tmp`, `new` and `cur` when missing.
    pub fn create(&self) -> Result<(), MaildirError> {
        let mut created = Vec::new();
        let mut missing = Vec::new();
        let mut p = self.path.as_path();
        while !p.as_os_str().is_empty() && !p.exists() {
            missing.push(p.to_path_buf());
            match p.parent() {
                Some(parent) => p = parent,
                None => break,
            }
        }
        for dir in missing.iter().rev() {
            make_dir(dir)?;
            created.push(dir.clone());
        }
        for sub in ["tmp", "new", "cur"] {
            let dir = self.path.join(sub);
            if !dir.is_dir() {
                make_dir(&dir)?;
                created.push(dir);
            }
        }
        // Each new directory's entry lives in its parent: sync those parents.
        let mut parents: Vec<&Path> = created.iter().filter_map(|d| d.parent()).collect();
        parents.sort();
        parents.dedup();
        for parent in parents {
            sync_dir(parent)?;
        }
        Ok(())
    }

    /// Bytes used by the messages in `new/` and `cur/`.
    pub fn usage(&self) -> Result<u64, MaildirError> {
        let mut total = 0u64;
        for sub in ["new", "cur"] {
            let dir = self.path.join(sub);
            let entries = fs::read_dir(&dir).map_err(|e| MaildirError::io("read", &dir, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| MaildirError::io("read", &dir, e))?;
                let name = entry.file_name();
                let size = match name.to_str().and_then(size_from_name) {
                    Some(s) => s,
                    // Vanished meanwhile (moved to cur/, expunged): not counted.
                    None => entry.metadata().map_or(0, |m| m.len()),
                };
                total = total.saturating_add(size);
            }
        }
        Ok(total)
    }

    /// Delivers one message (see the module header); returns the file's name in `new/`.
    pub fn deliver(&self, msg: &Message<'_>, quota: Option<u64>) -> Result<String, MaildirError> {
        self.create()?;
        let header = format!(
            "Return-Path: <{}>\nDelivered-To: {}\n",
            msg.return_path, msg.delivered_to
        );
        let lf_content = lf_size(msg.content);
        let size = (header.len() as u64).saturating_add(lf_content);
        let lines = header
            .bytes()
            .chain(msg.content.iter().copied())
            .filter(|b| *b == b'\n')
            .count() as u64;
        let crlf_size = size.saturating_add(lines);
        if let Some(limit) = quota {
            let used = self.usage()?;
            if used.saturating_add(size) > limit {
                return Err(MaildirError::OverQuota {
                    path: self.path.clone(),
                    used,
                    size,
                    limit,
                });
            }
        }
        let (name, tmp, file) = self.create_tmp(size, crlf_size)?;
        let result = write_and_sync(file, header.as_bytes(), msg.content, &tmp).and_then(|()| {
            let new = self.path.join("new").join(&name);
            fs::rename(&tmp, &new).map_err(|e| MaildirError::io("rename", &tmp, e))?;
            sync_dir(&self.path.join("new"))
        });
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map(|()| name)
    }

    /// Creates `tmp/<unique>` exclusively, trying new names on a collision.
    fn create_tmp(
        &self,
        size: u64,
        crlf_size: u64,
    ) -> Result<(String, PathBuf, File), MaildirError> {
        let mut last = None;
        for _ in 0..8 {
            let name = unique_name(SystemTime::now(), &host_name(), size, crlf_size);
            let tmp = self.path.join("tmp").join(&name);
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
            {
                Ok(f) => return Ok((name, tmp, f)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(MaildirError::io("create", &tmp, e)),
            }
        }
        let e = last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists));
        Err(MaildirError::io("create", &self.path.join("tmp"), e))
    }
}

fn make_dir(dir: &Path) -> Result<(), MaildirError> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(MaildirError::io("create", dir, e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), MaildirError> {
    tern_spool::fs::sync_dir(dir).map_err(|e| MaildirError::io("sync", dir, e))
}

fn write_and_sync(
    file: File,
    header: &[u8],
    content: &[u8],
    path: &Path,
) -> Result<(), MaildirError> {
    let mut out = BufWriter::with_capacity(64 * 1024, file);
    let io = |e| MaildirError::io("write", path, e);
    out.write_all(header).map_err(io)?;
    write_lf(&mut out, content).map_err(io)?;
    let file = out
        .into_inner()
        .map_err(|e| MaildirError::io("write", path, e.into_error()))?;
    file.sync_all()
        .map_err(|e| MaildirError::io("sync", path, e))
}

/// Writes `content` with every CRLF turned into LF (a lone CR is kept).
fn write_lf(out: &mut impl Write, content: &[u8]) -> io::Result<()> {
    let mut start = 0;
    let mut i = 0;
    while i + 1 < content.len() {
        if content.get(i) == Some(&b'\r') && content.get(i + 1) == Some(&b'\n') {
            out.write_all(content.get(start..i).unwrap_or_default())?;
            start = i + 1;
            i += 2;
        } else {
            i += 1;
        }
    }
    out.write_all(content.get(start..).unwrap_or_default())
}

/// The length of `content` once written by [`write_lf`].
fn lf_size(content: &[u8]) -> u64 {
    let crlf = content.windows(2).filter(|w| w == b"\r\n").count();
    (content.len() - crlf) as u64
}

/// The host part of unique names: the system's name with `/` and `:` escaped.
fn host_name() -> String {
    let name = gethostname::gethostname().to_string_lossy().into_owned();
    let name = if name.is_empty() {
        "localhost".to_owned()
    } else {
        name
    };
    name.replace('/', "\\057").replace(':', "\\072")
}

/// A unique file name (see the module header).
pub(crate) fn unique_name(now: SystemTime, host: &str, size: u64, crlf_size: u64) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let n = DELIVERIES.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}.M{}P{}Q{}.{host},S={size},W={crlf_size}",
        since.as_secs(),
        since.subsec_micros(),
        std::process::id(),
        n
    )
}

/// The `S=<size>` of a Maildir file name (in the part after the host), if any.
fn size_from_name(name: &str) -> Option<u64> {
    let info = name.split_once(':').map_or(name, |(base, _)| base);
    info.split(',')
        .skip(1)
        .find_map(|field| field.strip_prefix("S="))
        .and_then(|s| s.parse().ok())
}

#[cfg(test)]
mod tests;
