//! Reading one spool entry from disk: just the envelope (two positioned reads), the whole
//! message, or a full validation that streams large content through a bounded buffer.
//!
//! Every reader first finds the file's version-1 part with `format::frame::locate` (a
//! file may end with delivery-record frames, or with a frame torn by a crash), so the
//! trailer it uses is the one at the end of that part, never just the last 56 bytes.
//!
//! Invariants: allocation is bounded by the real file length (whole reads) or by
//! `format::MAX_ENVELOPE_LEN` (envelope reads); [`verify`] never holds more than
//! [`STREAM_CHUNK`] bytes of a large file at once.
//!
//! Trust: the file is hostile; all interpretation is delegated to `format`. I/O errors
//! are sorted into "this file is bad" (quarantine) and "the system is in trouble"
//! (report), see `sys::is_entry_fault`: quarantining the whole queue because the process
//! ran out of file descriptors would be a disaster.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::envelope::Envelope;
use crate::error::CorruptReason;
use crate::format::frame::{self, LastFrame, Layout, LocateError};
use crate::format::{self, HEADER_LEN, MIN_FILE_LEN};
use crate::id::QueueId;

use super::key::SpoolKey;
use super::{StoredMessage, sys};

/// Files up to this size are validated with one read; larger ones are streamed.
const WHOLE_READ_MAX: u64 = 1024 * 1024;
/// Chunk size for streaming validation of large files.
const STREAM_CHUNK: usize = 256 * 1024;

/// Why an entry could not be used.
#[derive(Debug)]
pub(crate) enum EntryError {
    /// The file is gone (moved or removed since the directory was read).
    Vanished,
    /// The file is bad.
    Corrupt(CorruptReason),
    /// The system failed; says what was being done.
    Io(&'static str, io::Error),
}

impl From<CorruptReason> for EntryError {
    fn from(r: CorruptReason) -> Self {
        EntryError::Corrupt(r)
    }
}

fn classify(op: &'static str) -> impl FnOnce(io::Error) -> EntryError {
    move |e| {
        if e.kind() == io::ErrorKind::NotFound {
            EntryError::Vanished
        } else if e.kind() == io::ErrorKind::UnexpectedEof {
            EntryError::Corrupt(CorruptReason::Truncated)
        } else if sys::is_not_regular(&e) {
            EntryError::Corrupt(CorruptReason::NotAFile)
        } else if sys::is_entry_fault(&e) {
            EntryError::Corrupt(CorruptReason::Unreadable(e.to_string()))
        } else {
            EntryError::Io(op, e)
        }
    }
}

/// Opens an entry (never following a link, never blocking on a FIFO); refuses anything
/// but a regular file. Returns the file and its length.
fn open(path: &Path) -> Result<(File, u64), EntryError> {
    let f = sys::open_entry(path).map_err(classify("open"))?;
    let meta = f.metadata().map_err(classify("stat"))?;
    if !meta.is_file() {
        return Err(CorruptReason::NotAFile.into());
    }
    Ok((f, meta.len()))
}

/// Finds the version-1 part and the last record frame (see `format::frame`).
fn layout<R: frame::ReadAt + ?Sized>(
    f: &R,
    len: u64,
    id: QueueId,
    key: Option<&SpoolKey>,
) -> Result<Layout, EntryError> {
    match frame::locate(f, len, id, key) {
        Ok(l) => Ok(l),
        Err(LocateError::Corrupt(r)) => Err(r.into()),
        Err(LocateError::Io(e)) => Err(classify("read")(e)),
    }
}

/// [`layout`] of an open file of `len` bytes (its length when the caller looked). A
/// record write may change the length meanwhile: an append makes it longer (the old
/// bytes stay as they were), a compaction cuts the old frames off, so a read past the new
/// end fails. Such a failure is retried with the new length (a few times), never taken
/// for damage.
fn file_layout(
    f: &File,
    len: u64,
    id: QueueId,
    key: Option<&SpoolKey>,
) -> Result<Layout, EntryError> {
    let mut len = len;
    for _ in 0..3 {
        let result = layout(f, len, id, key);
        if result.is_ok() {
            return result;
        }
        let now = f.metadata().map_err(classify("stat"))?.len();
        if now == len {
            return result;
        }
        len = now;
    }
    layout(f, len, id, key)
}

/// The version-1 part of an open file and its last record frame (no content read).
pub(crate) fn layout_of(
    f: &File,
    id: QueueId,
    key: Option<&SpoolKey>,
) -> Result<Layout, EntryError> {
    let len = f.metadata().map_err(classify("stat"))?.len();
    file_layout(f, len, id, key)
}

fn read_envelope_section(
    f: &File,
    t: &format::Trailer,
    id: QueueId,
) -> Result<Envelope, EntryError> {
    // decode_trailer bounded envelope_len by MAX_ENVELOPE_LEN.
    let n = usize::try_from(t.envelope_len).map_err(|_| CorruptReason::Truncated)?;
    let mut buf = vec![0u8; n];
    f.read_exact_at(&mut buf, t.envelope_offset)
        .map_err(classify("read"))?;
    Ok(format::decode_envelope(&buf, t, Some(id))?)
}

/// Reads and validates only the envelope: trailer, then envelope section. The content
/// checksum is not verified. Returns the envelope and the file length.
pub(crate) fn read_envelope(
    path: &Path,
    id: QueueId,
    key: Option<&SpoolKey>,
) -> Result<(Envelope, u64), EntryError> {
    let (f, len) = open(path)?;
    let t = file_layout(&f, len, id, key)?.trailer;
    let env = read_envelope_section(&f, &t, id)?;
    Ok((env, len))
}

/// Reads the envelope and at most `max` octets from the start of the content (for an
/// operator's view of the header). The content checksum is not verified. Returns the
/// envelope, the file length and the octets read.
pub(crate) fn read_head(
    path: &Path,
    id: QueueId,
    max: usize,
    key: Option<&SpoolKey>,
) -> Result<(Envelope, u64, Vec<u8>), EntryError> {
    let (f, len) = open(path)?;
    let t = file_layout(&f, len, id, key)?.trailer;
    let env = read_envelope_section(&f, &t, id)?;
    // decode_trailer checked that the content lies inside the file.
    let n = usize::try_from(t.content_len).map_or(max, |c| c.min(max));
    let mut head = vec![0u8; n];
    f.read_exact_at(&mut head, t.content_offset)
        .map_err(classify("read"))?;
    Ok((env, len, head))
}

/// Reads `len` bytes (the file length from fstat) into `buf`; a file that is longer or
/// shorter than it said is reported as truncated.
fn read_whole(f: &File, len: u64, buf: &mut Vec<u8>) -> Result<(), EntryError> {
    buf.clear();
    let mut reader = f.take(len.saturating_add(1));
    reader.read_to_end(buf).map_err(classify("read"))?;
    if buf.len() as u64 != len {
        return Err(CorruptReason::Truncated.into());
    }
    Ok(())
}

/// Reads the whole message and validates everything.
pub(crate) fn read_full(
    path: &Path,
    id: QueueId,
    key: Option<&SpoolKey>,
) -> Result<StoredMessage, EntryError> {
    let (f, len) = open(path)?;
    // Check the layout before allocating for the content.
    let base = file_layout(&f, len, id, key)?.base;
    let cap = usize::try_from(base).map_err(|_| CorruptReason::Truncated)?;
    let mut buf = vec![0u8; cap];
    f.read_exact_at(&mut buf, 0).map_err(classify("read"))?;
    let decoded = format::decode(&buf, Some(id))?;
    let envelope = decoded.envelope;
    let content_end = HEADER_LEN.saturating_add(decoded.content.len());
    buf.truncate(content_end);
    buf.drain(..HEADER_LEN.min(buf.len()));
    Ok(StoredMessage {
        envelope,
        body: buf,
    })
}

/// Validates everything about an entry (header, trailer, both checksums, envelope)
/// without keeping the content. `buf` is scratch space reused between calls.
pub(crate) fn verify(
    path: &Path,
    id: QueueId,
    buf: &mut Vec<u8>,
    key: Option<&SpoolKey>,
) -> Result<(), EntryError> {
    verify_envelope(path, id, buf, key).map(|_| ())
}

/// [`verify`], returning the envelope and the last record frame (the deferred
/// backlog's load needs both, from one read of a small file).
pub(crate) fn verify_envelope(
    path: &Path,
    id: QueueId,
    buf: &mut Vec<u8>,
    key: Option<&SpoolKey>,
) -> Result<(Envelope, Option<LastFrame>), EntryError> {
    let (f, mut len) = open(path)?;
    if len <= WHOLE_READ_MAX {
        // A record write may change the length while the file is read (see
        // `file_layout`): read again with the new length.
        let mut tries = 0;
        while let Err(e) = read_whole(&f, len, buf) {
            let now = f.metadata().map_err(classify("stat"))?.len();
            tries += 1;
            if now == len || tries > 3 {
                return Err(e);
            }
            len = now;
        }
        let l = layout(buf.as_slice(), len, id, key)?;
        let v1 = usize::try_from(l.base)
            .ok()
            .and_then(|b| buf.get(..b))
            .ok_or(CorruptReason::Truncated)?;
        return Ok((format::decode(v1, Some(id))?.envelope, l.last));
    }
    let mut h = [0u8; HEADER_LEN];
    f.read_exact_at(&mut h, 0).map_err(classify("read"))?;
    let header = format::decode_header(&h)?;
    let l = file_layout(&f, len, id, key)?;
    format::check_header_matches(&header, &l.trailer)?;
    stream_checked(&f, &l.trailer, buf, &mut |_| {})?;
    Ok((read_envelope_section(&f, &l.trailer, id)?, l.last))
}

/// Reads and validates the envelope, then streams the content through `visit` in pieces
/// of at most [`STREAM_CHUNK`] octets, verifying its checksum at the end. Memory is one
/// piece whatever the size. A checksum failure is reported after the last piece was
/// visited: the caller must not act on what it saw before this returns `Ok`.
pub(crate) fn scan(
    path: &Path,
    id: QueueId,
    buf: &mut Vec<u8>,
    visit: &mut dyn FnMut(&[u8]),
    key: Option<&SpoolKey>,
) -> Result<Envelope, EntryError> {
    let (f, len) = open(path)?;
    let mut h = [0u8; HEADER_LEN];
    if len < MIN_FILE_LEN {
        return Err(CorruptReason::Truncated.into());
    }
    f.read_exact_at(&mut h, 0).map_err(classify("read"))?;
    let header = format::decode_header(&h)?;
    let t = file_layout(&f, len, id, key)?.trailer;
    format::check_header_matches(&header, &t)?;
    let envelope = read_envelope_section(&f, &t, id)?;
    stream_checked(&f, &t, buf, visit)?;
    Ok(envelope)
}

/// Reads the content section described by `t` in pieces of at most [`STREAM_CHUNK`]
/// octets (one piece of memory in `buf` whatever the size), handing each to `visit`,
/// and checks its checksum after the last: on `Err`, what `visit` saw must not be used.
fn stream_checked(
    f: &File,
    t: &format::Trailer,
    buf: &mut Vec<u8>,
    visit: &mut dyn FnMut(&[u8]),
) -> Result<(), EntryError> {
    buf.clear();
    buf.resize(STREAM_CHUNK, 0);
    let mut crc = 0u32;
    let mut offset = t.content_offset;
    let mut left = t.content_len;
    while left > 0 {
        let n = usize::try_from(left).map_or(STREAM_CHUNK, |l| l.min(STREAM_CHUNK));
        let chunk = buf.get_mut(..n).ok_or(CorruptReason::Truncated)?;
        f.read_exact_at(chunk, offset).map_err(classify("read"))?;
        crc = crc32c::crc32c_append(crc, chunk);
        visit(chunk);
        offset = offset.saturating_add(n as u64);
        left = left.saturating_sub(n as u64);
    }
    format::check_content_crc(crc, t)?;
    Ok(())
}

/// Opens an entry for streaming its content: header and trailer checked, the content
/// checked while it is read (see `body.rs`).
pub(crate) fn open_content(
    path: &Path,
    id: QueueId,
    key: Option<&SpoolKey>,
) -> Result<super::body::BodyReader, EntryError> {
    let (f, len) = open(path)?;
    if len < MIN_FILE_LEN {
        return Err(CorruptReason::Truncated.into());
    }
    let mut h = [0u8; HEADER_LEN];
    f.read_exact_at(&mut h, 0).map_err(classify("read"))?;
    let header = format::decode_header(&h)?;
    let t = file_layout(&f, len, id, key)?.trailer;
    format::check_header_matches(&header, &t)?;
    Ok(super::body::BodyReader::new(
        f,
        t.content_offset,
        t.content_len,
        t.content_crc,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record write that cut the file (a compaction) between the reader's `fstat` and
    /// its reads: the reader's length is stale and a read past the new end fails. That
    /// is retried with the new length, not reported as damage (the backlog load would
    /// quarantine a good message).
    #[test]
    fn a_length_changed_by_a_record_write_is_read_again_not_taken_for_damage() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let id = QueueId::generate();
        let content = b"Subject: x\r\n\r\nhello\r\n";
        let env = crate::testutil::envelope(id, content.len() as u64, 1);
        let file = format::encode(content, &env).unwrap_or_default();
        let path = dir.path().join(id.to_string());
        std::fs::write(&path, &file).unwrap_or_else(|e| panic!("{e}"));
        let (f, len) = open(&path).unwrap_or_else(|e| panic!("{e:?}"));
        let stale = len + 4096;
        assert!(
            layout(&f, stale, id, None).is_err(),
            "the stale length alone fails"
        );
        let l = file_layout(&f, stale, id, None).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(l.base, len);
        let mut buf = Vec::new();
        assert!(verify_envelope(&path, id, &mut buf, None).is_ok());
    }
}
