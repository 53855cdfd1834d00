//! Errors of the spool: what went wrong, and what an SMTP server should answer.
//!
//! [`SpoolError`] is what the public API returns; [`CorruptReason`] says why a file on disk
//! is not a valid message and is what ends up in a quarantine `.reason` file and in
//! event 3003. Neither carries message content, so both are safe to log.

use std::io;
use std::path::PathBuf;

use crate::envelope::EnvelopeError;
use crate::format::EncodeError;

/// A failure of a spool operation.
///
/// For the SMTP server, every variant that can come out of `MessageWriter::write` or
/// `MessageWriter::commit` means the message was NOT accepted; unless a variant says
/// otherwise, answer `451 4.3.0` (local error, try again later). The client sees only the
/// reply, never the details, which go to the event log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// A system call on the spool failed (disk full, I/O error, permissions...).
    /// SMTP: `451 4.3.0`. The message names the path and includes the operating system's
    /// error, which is therefore not also given as `source()`: an error chain (`tern:
    /// opening spool ...: ...`) would print it twice.
    #[error("spool {op} {}: {error}", path.display())]
    Io {
        /// What was being done ("create", "fdatasync", "rename", ...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        error: io::Error,
    },
    /// Another process holds `spool.lock`: a second server on the same spool. Only from
    /// `Spool::open`; the server must not start.
    #[error("the spool is locked by another process")]
    Locked,
    /// The operation writes, but the spool was opened with `Spool::open_read_only`.
    /// SMTP: `451 4.3.0` (a configuration mistake, not the client's fault).
    #[error("the spool is open read-only")]
    ReadOnly,
    /// No message with that id in that state (it may have moved on). Not reachable from a
    /// session; a tool reports it as "no such message".
    #[error("no such message in the spool")]
    NotFound,
    /// The file failed validation. `Spool::read` and `Spool::list` quarantine it first
    /// in read-write mode. Not reachable from a session; a tool reports it.
    #[error("corrupt spool file: {0}")]
    Corrupt(CorruptReason),
    /// The envelope given to `MessageWriter::commit` carries another message's id: a bug
    /// in the caller. SMTP: `451 4.3.0`.
    #[error("the envelope's id is not the writer's id")]
    IdMismatch,
    /// `Envelope::size` given to `commit` is not the number of content bytes written: a
    /// bug in the caller, which must set `size = written()`. SMTP: `451 4.3.0`.
    #[error("envelope size {envelope} does not match {written} content bytes written")]
    SizeMismatch {
        /// `Envelope::size` as given.
        envelope: u64,
        /// `MessageWriter::written()`.
        written: u64,
    },
    /// The envelope given to `commit` fails `Envelope::validate`; it would be quarantined
    /// as corrupt at the next start, so it is refused now. SMTP: `451 4.3.0` (the session
    /// should have refused the bad address earlier).
    #[error("invalid envelope: {0}")]
    InvalidEnvelope(EnvelopeError),
    /// The serialized envelope exceeds `format::MAX_ENVELOPE_LEN` (tens of thousands of
    /// recipients). Retrying cannot help. SMTP: `552 5.3.4` (message too big for system).
    #[error("envelope of {len} bytes exceeds the limit")]
    EnvelopeTooLarge {
        /// Serialized length.
        len: u64,
    },
    /// An earlier `write` on this writer failed or was cancelled, so its content is
    /// incomplete; the message must be abandoned. SMTP: `451 4.3.0`.
    #[error("the message writer is unusable after an earlier failed or cancelled write")]
    WriterBroken,
    /// The blocking task doing the I/O panicked or was cancelled by a runtime shutdown.
    /// SMTP: `451 4.3.0`.
    #[error("spool I/O task failed: {0}")]
    BlockingTask(String),
    /// The recovery a lazy open left to the background (`Spool::finish_recovery`) failed
    /// or was stopped, so what it had to check first is not done: the deferred backlog is
    /// not loaded (`Spool::load_deferred`) before the next start. Not reachable from a
    /// session.
    #[error("the spool's recovery at start did not finish; the rest waits for the next start")]
    RecoveryUnfinished,
    /// `Spool::adopt` was given a path it must not take over: not a directory, not a
    /// Tern spool (no `spool.key` and queue directories), or this spool itself. Nothing
    /// was touched. Not reachable from a session.
    #[error("cannot adopt: {0}")]
    NotASpool(String),
}

impl SpoolError {
    /// Builds [`SpoolError::Io`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        SpoolError::Io {
            op,
            path: path.into(),
            error: source,
        }
    }
}

impl From<EncodeError> for SpoolError {
    fn from(e: EncodeError) -> Self {
        match e {
            EncodeError::SizeMismatch { envelope, content } => SpoolError::SizeMismatch {
                envelope,
                written: content,
            },
            EncodeError::InvalidEnvelope(e) => SpoolError::InvalidEnvelope(e),
            EncodeError::EnvelopeTooLarge(len) => SpoolError::EnvelopeTooLarge { len },
        }
    }
}

/// A part of a message file, named in checksum errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The fixed header at the start.
    Header,
    /// The message content.
    Content,
    /// The JSON envelope.
    Envelope,
    /// The fixed trailer at the end.
    Trailer,
}

impl std::fmt::Display for Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Section::Header => "header",
            Section::Content => "content",
            Section::Envelope => "envelope",
            Section::Trailer => "trailer",
        })
    }
}

/// Why a spool entry is not a valid message. One variant per way a file can be bad.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptReason {
    /// Shorter than a header plus a trailer, or a section ends past the end of the file.
    #[error("file is truncated")]
    Truncated,
    /// The file does not start with the format's magic bytes: not a Tern message file.
    #[error("bad magic at start of file")]
    BadMagic,
    /// The last bytes are not a trailer: typically a write cut short.
    #[error("no trailer at end of file")]
    MissingTrailer,
    /// A format version this build does not know.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u16),
    /// Flag bits this version does not define.
    #[error("unsupported flags {0:#06x}")]
    UnsupportedFlags(u16),
    /// Header and trailer disagree about the version or flags.
    #[error("header and trailer disagree")]
    HeaderTrailerMismatch,
    /// A checksum does not match its section.
    #[error("{section} checksum mismatch")]
    ChecksumMismatch {
        /// The section whose checksum failed.
        section: Section,
    },
    /// Offsets and lengths in the trailer do not add up (the text says which).
    #[error("section lengths do not add up: {0}")]
    LengthMismatch(&'static str),
    /// The envelope section claims more than `format::MAX_ENVELOPE_LEN` bytes.
    #[error("envelope section of {0} bytes exceeds the limit")]
    EnvelopeTooLarge(u64),
    /// The envelope section is not valid JSON for an `Envelope` (serde_json's message).
    #[error("envelope is not valid JSON: {0}")]
    BadJson(String),
    /// The envelope parsed but fails `Envelope::validate` (e.g. id not the file's id).
    #[error("invalid envelope: {0}")]
    BadEnvelope(#[from] EnvelopeError),
    /// `Envelope::size` is not the content length.
    #[error("envelope size {envelope} but content is {content} bytes")]
    EnvelopeSizeMismatch {
        /// `Envelope::size`.
        envelope: u64,
        /// Content section length.
        content: u64,
    },
    /// A name in a state directory that is not a queue id.
    #[error("file name {0:?} is not a queue id")]
    BadFileName(String),
    /// A directory, symlink, socket or device where a message file should be.
    #[error("not a regular file")]
    NotAFile,
    /// Reading the file failed with an error that belongs to the file (EIO), not to the
    /// process (EMFILE, ENOMEM), which would be reported as [`SpoolError::Io`] instead.
    #[error("unreadable: {0}")]
    Unreadable(String),
    /// The message's delivery record (`records/<id>`) failed validation (the text says
    /// how). The message is quarantined with it: without its record Tern cannot tell
    /// which recipients already have the message.
    #[error("bad delivery record: {0}")]
    BadRecord(String),
    /// The message's delivery record (`records/<id>`) is not a regular file (a
    /// directory, FIFO, symbolic link, socket or device). It cannot say which recipients
    /// already have the message, so the message is held (`Spool::hold_without_record`),
    /// never sent again on its own.
    #[error("the delivery record is not a regular file")]
    RecordNotAFile,
    /// Something in one of Tern's spool directories that Tern did not make: a directory,
    /// FIFO, socket, device or symbolic link where Tern keeps files, or a name Tern does
    /// not use (the text says what and where).
    #[error("unexpected entry: {0}")]
    UnexpectedEntry(String),
    /// A segment with damage (the text summarises it; its `.reason` file lists every
    /// damage with its offset, and every message concerned).
    #[error("segment damaged: {0}")]
    DamagedSegment(String),
    /// The spool key file could not be used (the text says why); a new key replaced it.
    #[error("unusable spool key: {0}")]
    BadKey(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_error_names_its_path_and_cause_once_in_a_chain() {
        let e = SpoolError::io(
            "open",
            "/var/spool/tern/spool.lock",
            io::Error::from_raw_os_error(libc::EROFS),
        );
        let shown = e.to_string();
        assert!(shown.contains("/var/spool/tern/spool.lock"), "{shown}");
        assert!(shown.contains("Read-only file system"), "{shown}");
        // What `{:#}` of an error chain prints: the message, then every source.
        let mut chain = shown.clone();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            chain.push_str(&format!(": {s}"));
            source = s.source();
        }
        assert_eq!(chain.matches("Read-only file system").count(), 1, "{chain}");
    }
}
