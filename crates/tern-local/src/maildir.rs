//! Delivery into a Maildir (D. J. Bernstein's format, as Dovecot, Courier and mutt read
//! it).
//!
//! One delivery:
//! 1. walk to the Maildir from `/` with directory descriptors (`dirwalk`: `openat` with
//!    `O_NOFOLLOW`, only links that root or Tern made are followed) and open its `tmp`,
//!    `new` and `cur` the same way, creating what is missing (mode 0700, set explicitly;
//!    the parents of new directories are fsynced). Each of the four must be a real
//!    directory, writable by its group at most (never by everyone), and owned by Tern or
//!    by the owner of the Maildir directory; none of them, and no directory above the
//!    Maildir, may be one of the [`Guard`]'s protected directories (the pickup directory,
//!    the spool). Anything else is [`MaildirError::Unsafe`]: the mail stays queued;
//! 2. with a quota, add up the sizes of `new/` and `cur/` (the `S=` size in a file name
//!    when there is one, else the file's length), read through the descriptors, and
//!    refuse a message that does not fit;
//! 3. write `Return-Path:` and `Delivered-To:`, then the message with LF line ends (the
//!    Maildir convention; CRLF in the spool), to `tmp/<unique>`, created with
//!    `openat(tmp, name, O_CREAT | O_EXCL | O_NOFOLLOW, 0600)`. The content is streamed
//!    ([`Maildir::deliver_from`]): read and written 64 KiB at a time, a CRLF split
//!    between two pieces still becoming one LF, so memory is bounded whatever the size;
//!    its [`ContentShape`] (length, line ends), known beforehand, gives the sizes in the
//!    name. A read error (the spool's integrity check failing) or a content that is not
//!    the length announced fails the delivery before the rename;
//! 4. fsync the file, `renameat` it from `tmp` to `new` (both descriptors), fsync `new`.
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
//! again at the next attempt. Every write goes to the directories that were checked:
//! the owner of a Maildir (or anyone who can write its parent) may rename, replace or
//! link its entries at any moment, and the descriptors held make that harmless.
//!
//! Races: the quota is checked before writing without a lock, so concurrent deliveries
//! to one mailbox can pass it together (a soft quota, like Maildir++).
//!
//! Trust: the path comes from the directory, which only builds it from the
//! configuration and safe names; the directories on it may belong to local users, who
//! are untrusted (see step 1). The envelope values written into the header fields were
//! validated by the spool (no control characters). All I/O here is blocking: call it
//! from a blocking thread.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::dirwalk::{WalkError, WalkedDir, Walker, identity, reopen};

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
    /// The Maildir, or a directory on the way to it, breaks the rules of step 1 (an
    /// untrusted symbolic link, a directory writable by everyone or owned by a third
    /// user, one of Tern's own directories). Nothing was written. Reply `451 4.3.0`:
    /// the mail stays queued until the operator or the mailbox owner fixes it.
    #[error("mailbox {}: {}: {reason}", maildir.display(), component.display())]
    Unsafe {
        /// The Maildir.
        maildir: PathBuf,
        /// The offending component (links followed replaced by their targets).
        component: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The Maildir does not exist yet and this delivery may not create one (the limit
    /// of new mailboxes per message was reached). Reply `452 4.5.3`: the recipient is
    /// tried again later, when the mailbox is created.
    #[error("mailbox {} does not exist and no more new mailboxes may be created for this message", path.display())]
    NewMailboxLimit {
        /// The Maildir.
        path: PathBuf,
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
            MaildirError::Unsafe { .. } => (451, "4.3.0"),
            MaildirError::NewMailboxLimit { .. } => (452, "4.5.3"),
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

/// What a Maildir's file name needs to know of a content before it is written: its
/// length and its line ends. Computed in one pass over the content, which may come in
/// pieces ([`ShapeCounter`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContentShape {
    /// Octets.
    pub len: u64,
    /// CRLF pairs (each becomes one LF in the Maildir file).
    pub crlf: u64,
    /// LF octets (each ends a line).
    pub lf: u64,
}

impl ContentShape {
    /// The shape of a content held whole.
    pub fn of(content: &[u8]) -> ContentShape {
        let mut c = ShapeCounter::default();
        c.feed(content);
        c.shape()
    }
}

/// Counts a [`ContentShape`] over pieces of a content; a CRLF split between two pieces
/// counts once.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShapeCounter {
    shape: ContentShape,
    last_cr: bool,
}

impl ShapeCounter {
    /// Takes in the next piece.
    pub fn feed(&mut self, piece: &[u8]) {
        self.shape.len = self.shape.len.saturating_add(piece.len() as u64);
        for &b in piece {
            if b == b'\n' {
                self.shape.lf = self.shape.lf.saturating_add(1);
                if self.last_cr {
                    self.shape.crlf = self.shape.crlf.saturating_add(1);
                }
            }
            self.last_cr = b == b'\r';
        }
    }

    /// The shape of everything fed so far.
    pub fn shape(&self) -> ContentShape {
        self.shape
    }
}

/// A message to stream into a Maildir with [`Maildir::deliver_from`]: the envelope
/// values for the two header fields and the shape of the content.
#[derive(Debug, Clone, Copy)]
pub struct Streamed<'a> {
    /// Reverse path without brackets; empty for `<>`.
    pub return_path: &'a str,
    /// The final recipient address.
    pub delivered_to: &'a str,
    /// The content's length and line ends (the content read must match it).
    pub shape: ContentShape,
}

/// Content pieces read and written at a time.
const PIECE: usize = 64 * 1024;

/// Tern's own directories, which no Maildir may be, or lie in: anything written there
/// would be read by Tern again (the pickup directory would queue it). Built by the binary
/// from its configuration (docs/LOCAL.md, "Mailbox paths").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guard {
    /// The protected directories (compared by device and inode at each delivery).
    pub protected: Vec<PathBuf>,
}

/// How one delivery may proceed.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// Quota in bytes, if any.
    pub quota: Option<u64>,
    /// Whether a Maildir that does not exist yet may be created.
    pub may_create: bool,
    /// The protected directories.
    pub guard: &'a Guard,
}

/// A delivery made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The file's name in `new/`.
    pub file: String,
    /// Whether the Maildir directory was created by this delivery.
    pub created: bool,
}

/// A Maildir opened and checked: descriptors of the four directories.
struct Opened {
    root: WalkedDir,
    tmp: WalkedDir,
    new: WalkedDir,
    cur: WalkedDir,
    /// `new` opened for reading, to fsync it after the rename.
    new_sync: OwnedFd,
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

    fn unsafe_at(&self, component: PathBuf, reason: String) -> MaildirError {
        MaildirError::Unsafe {
            maildir: self.path.clone(),
            component,
            reason,
        }
    }

    fn walk_error(&self, e: WalkError) -> MaildirError {
        match e {
            WalkError::Refused { at, why } => self.unsafe_at(at, why),
            WalkError::Missing { at } => {
                MaildirError::io("open", &at, io::Error::from(io::ErrorKind::NotFound))
            }
            WalkError::Io { step, at, source } => MaildirError::Io {
                step,
                path: at,
                source,
            },
        }
    }

    /// Opens (creating what is missing when `create`) and checks the Maildir (step 1).
    fn open(&self, walker: &Walker, create: bool, guard: &Guard) -> Result<Opened, MaildirError> {
        let abs =
            std::path::absolute(&self.path).map_err(|e| MaildirError::io("open", &self.path, e))?;
        let root = match walker.walk(None, &abs, false) {
            Ok(d) => d,
            Err(WalkError::Missing { .. }) if !create => {
                return Err(MaildirError::NewMailboxLimit {
                    path: self.path.clone(),
                });
            }
            Err(WalkError::Missing { .. }) => walker
                .walk(None, &abs, true)
                .map_err(|e| self.walk_error(e))?,
            Err(e) => return Err(self.walk_error(e)),
        };
        let owner = root.stat.st_uid;
        self.check(walker, &root, owner)?;
        let sub = |name: &str| -> Result<WalkedDir, MaildirError> {
            let d = walker
                .walk(Some(&root), Path::new(name), true)
                .map_err(|e| self.walk_error(e))?;
            self.check(walker, &d, owner)?;
            Ok(d)
        };
        let (tmp, new, cur) = (sub("tmp")?, sub("new")?, sub("cur")?);
        let protected: Vec<(u64, u64, &PathBuf)> = guard
            .protected
            .iter()
            .filter_map(|p| identity(p).map(|(dev, ino)| (dev, ino, p)))
            .collect();
        let walked = root.chain.iter().map(|id| (id, &root.path)).chain(
            [&tmp, &new, &cur]
                .into_iter()
                .flat_map(|d| d.chain.last().map(|id| (id, &d.path))),
        );
        for (id, at) in walked {
            if let Some((_, _, p)) = protected.iter().find(|(dev, ino, _)| (*dev, *ino) == *id) {
                return Err(self.unsafe_at(
                    at.clone(),
                    format!(
                        "the path goes through {}, one of Tern's own directories",
                        p.display()
                    ),
                ));
            }
        }
        let new_sync = reopen(&new).map_err(|e| self.walk_error(e))?;
        Ok(Opened {
            root,
            tmp,
            new,
            cur,
            new_sync,
        })
    }

    /// The ownership and mode rule of step 1 for one of the four directories.
    fn check(&self, walker: &Walker, d: &WalkedDir, owner: u32) -> Result<(), MaildirError> {
        let mode = d.stat.st_mode & 0o7777;
        if mode & 0o002 != 0 {
            return Err(self.unsafe_at(
                d.path.clone(),
                format!("writable by everyone (mode {mode:o})"),
            ));
        }
        let uid = d.stat.st_uid;
        if uid != walker.uid && uid != owner {
            return Err(self.unsafe_at(
                d.path.clone(),
                format!(
                    "owned by uid {uid}, neither Tern (uid {}) nor the owner of the Maildir (uid {owner})",
                    walker.uid
                ),
            ));
        }
        Ok(())
    }

    /// Creates the Maildir and its `tmp`, `new` and `cur` when missing (and checks them).
    pub fn create(&self) -> Result<(), MaildirError> {
        self.open(&Walker::current(), true, &Guard::default())
            .map(|_| ())
    }

    /// Bytes used by the messages in `new/` and `cur/` (the Maildir is created when
    /// missing).
    pub fn usage(&self) -> Result<u64, MaildirError> {
        let opened = self.open(&Walker::current(), true, &Guard::default())?;
        usage(&opened)
    }

    /// Delivers one message (see the module header), creating the Maildir when missing,
    /// with nothing protected; returns the file's name in `new/`.
    pub fn deliver(&self, msg: &Message<'_>, quota: Option<u64>) -> Result<String, MaildirError> {
        let guard = Guard::default();
        self.deliver_with(
            msg,
            &Options {
                quota,
                may_create: true,
                guard: &guard,
            },
        )
        .map(|d| d.file)
    }

    /// Delivers one message held in memory (see the module header).
    pub fn deliver_with(
        &self,
        msg: &Message<'_>,
        options: &Options<'_>,
    ) -> Result<Delivered, MaildirError> {
        let streamed = Streamed {
            return_path: msg.return_path,
            delivered_to: msg.delivered_to,
            shape: ContentShape::of(msg.content),
        };
        let mut content = msg.content;
        self.deliver_from(&streamed, &mut content, options)
    }

    /// Delivers one message whose content is read from `content` (see the module
    /// header, step 3): it must yield exactly `msg.shape.len` octets.
    pub fn deliver_from(
        &self,
        msg: &Streamed<'_>,
        content: &mut dyn Read,
        options: &Options<'_>,
    ) -> Result<Delivered, MaildirError> {
        let walker = Walker::current();
        let opened = self.open(&walker, options.may_create, options.guard)?;
        let file = self.write(&opened, msg, content, options.quota)?;
        Ok(Delivered {
            file,
            created: opened.root.created,
        })
    }

    /// Steps 2 to 4, into a Maildir opened and checked.
    fn write(
        &self,
        opened: &Opened,
        msg: &Streamed<'_>,
        content: &mut dyn Read,
        quota: Option<u64>,
    ) -> Result<String, MaildirError> {
        let header = format!(
            "Return-Path: <{}>\nDelivered-To: {}\n",
            msg.return_path, msg.delivered_to
        );
        let lf_content = msg.shape.len.saturating_sub(msg.shape.crlf);
        let size = (header.len() as u64).saturating_add(lf_content);
        let header_lines = header.bytes().filter(|b| *b == b'\n').count() as u64;
        let lines = header_lines.saturating_add(msg.shape.lf);
        let crlf_size = size.saturating_add(lines);
        if let Some(limit) = quota {
            let used = usage(opened)?;
            if used.saturating_add(size) > limit {
                return Err(MaildirError::OverQuota {
                    path: self.path.clone(),
                    used,
                    size,
                    limit,
                });
            }
        }
        let (name, file) = create_tmp(&opened.tmp, size, crlf_size)?;
        let tmp_path = opened.tmp.path.join(&name);
        let result = write_and_sync(
            File::from(file),
            header.as_bytes(),
            content,
            msg.shape.len,
            &tmp_path,
        )
        .and_then(|()| {
            rustix::fs::renameat(&opened.tmp.fd, name.as_str(), &opened.new.fd, name.as_str())
                .map_err(|e| MaildirError::io("rename", &tmp_path, e.into()))?;
            rustix::fs::fsync(&opened.new_sync)
                .map_err(|e| MaildirError::io("sync", &opened.new.path, e.into()))
        });
        if result.is_err() {
            let _ = rustix::fs::unlinkat(&opened.tmp.fd, name.as_str(), AtFlags::empty());
        }
        result.map(|()| name)
    }
}

/// Bytes used by the messages in `new/` and `cur/`, read through the descriptors.
fn usage(opened: &Opened) -> Result<u64, MaildirError> {
    let mut total = 0u64;
    for dir in [&opened.new, &opened.cur] {
        let fd = reopen(dir).map_err(|e| match e {
            WalkError::Io { source, .. } => MaildirError::io("read", &dir.path, source),
            other => MaildirError::io("read", &dir.path, io::Error::other(other.to_string())),
        })?;
        let entries =
            rustix::fs::Dir::new(fd).map_err(|e| MaildirError::io("read", &dir.path, e.into()))?;
        for entry in entries {
            let entry = entry.map_err(|e| MaildirError::io("read", &dir.path, e.into()))?;
            let name = entry.file_name();
            if matches!(name.to_bytes(), b"." | b"..") {
                continue;
            }
            let size = match name.to_str().ok().and_then(size_from_name) {
                Some(s) => s,
                // Vanished meanwhile (moved to cur/, expunged): not counted.
                None => rustix::fs::statat(&dir.fd, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_or(0, |st| u64::try_from(st.st_size).unwrap_or(0)),
            };
            total = total.saturating_add(size);
        }
    }
    Ok(total)
}

/// Creates `tmp/<unique>` exclusively (never through a link), trying new names on a
/// collision.
fn create_tmp(
    tmp: &WalkedDir,
    size: u64,
    crlf_size: u64,
) -> Result<(String, OwnedFd), MaildirError> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut last = None;
    for _ in 0..8 {
        let name = unique_name(SystemTime::now(), &host_name(), size, crlf_size);
        match rustix::fs::openat(&tmp.fd, name.as_str(), flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => {
                let path = tmp.path.join(&name);
                if let Err(e) = rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o600)) {
                    let _ = rustix::fs::unlinkat(&tmp.fd, name.as_str(), AtFlags::empty());
                    return Err(MaildirError::io("chmod", &path, e.into()));
                }
                return Ok((name, fd));
            }
            Err(Errno::EXIST) => last = Some(io::Error::from(io::ErrorKind::AlreadyExists)),
            Err(e) => return Err(MaildirError::io("create", &tmp.path.join(&name), e.into())),
        }
    }
    let e = last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists));
    Err(MaildirError::io("create", &tmp.path, e))
}

fn write_and_sync(
    file: File,
    header: &[u8],
    content: &mut dyn Read,
    len: u64,
    path: &Path,
) -> Result<(), MaildirError> {
    let mut out = BufWriter::with_capacity(PIECE, file);
    let io = |e| MaildirError::io("write", path, e);
    out.write_all(header).map_err(io)?;
    let mut piece = vec![0u8; PIECE];
    let mut lf = LfWriter::default();
    let mut total = 0u64;
    loop {
        let n = match content.read(&mut piece) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(MaildirError::io("read the content for", path, e)),
        };
        total = total.saturating_add(n as u64);
        lf.write(&mut out, piece.get(..n).unwrap_or_default())
            .map_err(io)?;
    }
    if total != len {
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the content is {total} octets, {len} were announced"),
        );
        return Err(MaildirError::io("read the content for", path, e));
    }
    lf.finish(&mut out).map_err(io)?;
    let file = out
        .into_inner()
        .map_err(|e| MaildirError::io("write", path, e.into_error()))?;
    file.sync_all()
        .map_err(|e| MaildirError::io("sync", path, e))
}

/// Writes a content given in pieces with every CRLF turned into LF (a lone CR is kept),
/// also when the CR ends one piece and the LF starts the next.
#[derive(Debug, Default)]
struct LfWriter {
    /// The last piece ended with a CR not yet written.
    pending_cr: bool,
}

impl LfWriter {
    fn write(&mut self, out: &mut impl Write, piece: &[u8]) -> io::Result<()> {
        let mut piece = piece;
        if std::mem::take(&mut self.pending_cr) && !piece.starts_with(b"\n") {
            out.write_all(b"\r")?;
        }
        if let Some(head) = piece.strip_suffix(b"\r") {
            self.pending_cr = true;
            piece = head;
        }
        let mut start = 0;
        let mut i = 0;
        while i + 1 < piece.len() {
            if piece.get(i) == Some(&b'\r') && piece.get(i + 1) == Some(&b'\n') {
                out.write_all(piece.get(start..i).unwrap_or_default())?;
                start = i + 1;
                i += 2;
            } else {
                i += 1;
            }
        }
        out.write_all(piece.get(start..).unwrap_or_default())
    }

    fn finish(self, out: &mut impl Write) -> io::Result<()> {
        if self.pending_cr {
            out.write_all(b"\r")?;
        }
        Ok(())
    }
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
