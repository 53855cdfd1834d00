//! The on-disk format of a message file: pure encode and decode, no I/O.
//!
//! # Layout, version 1
//!
//! All integers are little-endian. CRCs are CRC-32C (Castagnoli), as computed by the
//! `crc32c` crate, seed 0. A file is four sections, back to back, with no padding:
//!
//! ```text
//! offset              length        section
//! 0                   16            header
//! 16                  C             content  (opaque message bytes, C may be 0)
//! 16 + C              E             envelope (UTF-8 JSON of `Envelope`, 1 <= E <= 16 MiB)
//! 16 + C + E          56            trailer
//! file length = 16 + C + E + 56
//! ```
//!
//! Header (16 bytes):
//!
//! ```text
//! 0   8  magic   89 54 45 52 4E 4D 53 47   ("\x89TERNMSG")
//! 8   2  version (1)
//! 10  2  flags   (0; version 1 defines no flags)
//! 12  4  CRC-32C of header bytes 0..12
//! ```
//!
//! Trailer (56 bytes, the last 56 bytes of the file):
//!
//! ```text
//! 0   8  end magic  54 45 52 4E 2E 45 4E 44  ("TERN.END")
//! 8   2  version    (1, equal to the header's)
//! 10  2  flags      (0, equal to the header's)
//! 12  4  CRC-32C of the content section
//! 16  8  content offset   (must be 16)
//! 24  8  content length C
//! 32  8  envelope offset  (must be 16 + C)
//! 40  8  envelope length E (must be 1..=16 MiB)
//! 48  4  CRC-32C of the envelope section
//! 52  4  CRC-32C of trailer bytes 0..52
//! ```
//!
//! The header is written before the content is known, so it holds no lengths; the
//! trailer is written last and holds everything needed to find the envelope, which can
//! therefore be read with two positioned reads (trailer, then envelope) without touching
//! the content. The magic and version sit at the same offsets in every future version,
//! so a decoder checks magic, then version, and only then the rest, whose layout depends
//! on the version.
//!
//! # Decoding rules
//!
//! A file is valid only if, in this order: it is at least 72 bytes; the header magic,
//! version, CRC and flags are right; the trailer magic, version, CRC and flags are right
//! and equal to the header's; content offset is 16, envelope offset is content offset +
//! C, E is within bounds and 16 + C + E + 56 equals the file length (all with checked
//! arithmetic); the content CRC and the envelope CRC match; the envelope is JSON for an
//! `Envelope`; it passes `Envelope::validate` with the id from the file name; and its
//! `size` equals C.
//!
//! # Version 2: delivery-record frames after the trailer
//!
//! A message file is written once, as above, and never rewritten; what the queue learns
//! about it (the delivery record, `record::DeliveryRecord`) is appended after the trailer
//! as record frames (`frame.rs`):
//!
//! ```text
//! version-1 part (header | content | envelope | trailer)  = base bytes
//! frame | frame | ... | frame                             (zero or more)
//!   frame  = head (23) | JSON (L bytes, serde of DeliveryRecord) | footer (64)
//!   head   = "TERNRHD1" | queue id (15 ASCII bytes)
//!   footer = 0  8  magic "TERNRFR1"
//!            8  4  L (u32; at most record::MAX_RECORD_LEN)
//!            12 4  0
//!            16 8  base (u64: length of the version-1 part, where the frames start)
//!            24 8  offset of this frame (of its head; u64)
//!            32 16 MAC: keyed BLAKE3 (key derived from spool.key, `SpoolKey::for_records`,
//!                  its own context string) of: the file's version-1 trailer (56 bytes
//!                  at base - 56) | footer bytes 0..32 | head | JSON; first 16 bytes
//!            48 12 0
//!            60 4  CRC-32C of footer bytes 0..60 (a cheap first check; not a defence)
//! ```
//!
//! A file without frames is byte for byte a version-1 file: the header and trailer keep
//! version number 1 (the header is written before any frame exists and is never
//! rewritten), and "version 2" is the file with its frames. The last valid frame is the
//! record. Nothing between `base` and the last frame is ever read.
//!
//! **Finding the version-1 part** (`frame::locate`), for every reader (a file read for
//! delivery, the start's validation, a listing, the record): the trailer is no longer
//! simply the last 56 bytes. In order:
//!
//! 1. an authenticated frame ending exactly at the end of the file: its footer gives
//!    `base`, the trailer at `base - 56` is decoded against `base`, the MAC covers both;
//! 2. else a version-1 trailer ending exactly at the end of the file: no frame;
//! 3. else the tail is torn (a crash during an append): the search goes backwards from
//!    the end, at most one largest frame (`MAX_RECORD_LEN` + 64 bytes), and takes the
//!    nearest end that is either an authenticated frame, or a version-1 trailer followed
//!    by what a first append leaves (the head `TERNRHD1<id>` as far as it got, then
//!    zeros). The tail after that end is ignored, and cut off by the next write.
//!
//! Why nothing hostile is ever taken: a frame is accepted only when its MAC verifies, and
//! only the spool's key makes one; the MAC binds the queue id, the file's own trailer
//! (its content and envelope checksums and lengths), `base` and the frame's offset, so a
//! frame copied from another message, from an earlier occupant of a reused file (`free/`:
//! overwritten from offset 0 and cut to its new length, so none of its bytes survive
//! anyway) or to another place in the same file is refused. A version-1 trailer is found
//! without a key only in two places: at the very end of the file (what version 1 always
//! did), and in step 3, where the search starts at the end and stops at the first
//! acceptable end, which is the real end of the intact part: the bytes above it are a
//! prefix of our own append (the head; record JSON, in which serde_json never writes a
//! byte below 0x20 raw, while a trailer holds several: its content offset is `10 00 00
//! 00 00 00 00 00`; our footer, which starts with its own magic) or zeros (a filesystem
//! that kept a new length without its data), and none of these can hold a trailer. The
//! search therefore stops at the real end and never reaches the content, where a sender
//! can put anything. Only when the real end itself is damaged (bit rot; the file is
//! corrupt then anyway) can the search go lower; a trailer it finds there must be
//! followed by the head `TERNRHD1<id>` of this very message (the id is not known to the
//! sender while it sends the content) and must then pass every check of a version-1
//! file (lengths against `base`, header, both checksums, over content that starts with
//! Tern's own Received field, and the envelope with the id of the file name).
//!
//! **Writing a frame** (`Inner::append_record`): locate, then `pwrite` the frame at the
//! end of the intact part (over a torn tail, which is cut off: `ftruncate` when the file
//! was longer), then `fdatasync`. No name changes, so no directory sync. A crash during
//! the write leaves the previous record as the last valid frame.
//!
//! **Bound**: frames are never read but the last, so their total does not slow a read.
//! Once the frames would pass 64 KiB (`frame::COMPACT_AT`), a write that fits in front of
//! the last valid frame goes at `base` instead (written and synced while the old last
//! frame is still the last, then the file is cut just after it and synced again: a crash
//! between leaves the old record). A record is typically 0.5 to 5 KiB (a few recipients
//! with five history entries each), so a message deferred 50 times would otherwise carry
//! 25 to 250 KiB; with compaction its frames stay under 64 KiB plus about two records.
//!
//! Trust: input bytes are hostile. No length from the file is used before it is checked
//! against the real file length; nothing here indexes a slice with a value from the file
//! or allocates more than [`MAX_ENVELOPE_LEN`] because of one. `serde_json` bounds
//! nesting depth, so a hostile envelope cannot exhaust the stack.

use crate::envelope::{Envelope, EnvelopeError};
use crate::error::{CorruptReason, Section};
use crate::id::QueueId;

pub(crate) mod frame;
#[cfg(test)]
mod tests;

/// Header magic: `\x89TERNMSG`. The high first byte catches 7-bit mangling.
pub const MAGIC: [u8; 8] = *b"\x89TERNMSG";
/// Trailer magic.
pub const TRAILER_MAGIC: [u8; 8] = *b"TERN.END";
/// The version number in the header and trailer of every message file (a file with
/// record frames after its trailer, "version 2", keeps it: see the module header).
pub const VERSION: u16 = 1;
/// Length of the header.
pub const HEADER_LEN: usize = 16;
/// Length of the trailer.
pub const TRAILER_LEN: usize = 56;
/// The shortest possible file (empty content, empty envelope would still be invalid).
pub const MIN_FILE_LEN: u64 = (HEADER_LEN + TRAILER_LEN) as u64;
/// Largest envelope section accepted, in bytes.
pub const MAX_ENVELOPE_LEN: u64 = 16 * 1024 * 1024;

/// The decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format version.
    pub version: u16,
    /// Flag bits.
    pub flags: u16,
}

/// The decoded trailer. After [`decode_trailer`] succeeds, the offsets and lengths are
/// consistent with each other and with the file length it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// Format version.
    pub version: u16,
    /// Flag bits.
    pub flags: u16,
    /// CRC-32C of the content.
    pub content_crc: u32,
    /// Offset of the content (always [`HEADER_LEN`]).
    pub content_offset: u64,
    /// Length of the content.
    pub content_len: u64,
    /// Offset of the envelope.
    pub envelope_offset: u64,
    /// Length of the envelope, at most [`MAX_ENVELOPE_LEN`].
    pub envelope_len: u64,
    /// CRC-32C of the envelope.
    pub envelope_crc: u32,
}

/// Why an envelope cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// `Envelope::size` is not the content length.
    #[error("envelope size {envelope} but content is {content} bytes")]
    SizeMismatch {
        /// `Envelope::size`.
        envelope: u64,
        /// Content length.
        content: u64,
    },
    /// The envelope fails `Envelope::validate` against its own id.
    #[error("invalid envelope: {0}")]
    InvalidEnvelope(EnvelopeError),
    /// The JSON is longer than [`MAX_ENVELOPE_LEN`].
    #[error("envelope of {0} bytes exceeds the limit")]
    EnvelopeTooLarge(u64),
}

/// A decoded file: the envelope and a view of the content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// The validated envelope.
    pub envelope: Envelope,
    /// The content bytes (checksum verified).
    pub content: &'a [u8],
}

fn u16_at<const N: usize>(b: &[u8; N], at: usize) -> u16 {
    let mut out = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        out.copy_from_slice(s);
    }
    u16::from_le_bytes(out)
}

fn u32_at<const N: usize>(b: &[u8; N], at: usize) -> u32 {
    let mut out = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        out.copy_from_slice(s);
    }
    u32::from_le_bytes(out)
}

fn u64_at<const N: usize>(b: &[u8; N], at: usize) -> u64 {
    let mut out = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        out.copy_from_slice(s);
    }
    u64::from_le_bytes(out)
}

/// The header every version-1 file starts with.
pub fn encode_header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h[10..12].copy_from_slice(&0u16.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..12]);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Decodes and checks a header; `bytes` must be exactly [`HEADER_LEN`] long.
pub fn decode_header(bytes: &[u8]) -> Result<Header, CorruptReason> {
    let h: &[u8; HEADER_LEN] = bytes.try_into().map_err(|_| CorruptReason::Truncated)?;
    if h[0..8] != MAGIC {
        return Err(CorruptReason::BadMagic);
    }
    let version = u16_at(h, 8);
    if version != VERSION {
        return Err(CorruptReason::UnsupportedVersion(version));
    }
    if crc32c::crc32c(&h[0..12]) != u32_at(h, 12) {
        return Err(CorruptReason::ChecksumMismatch {
            section: Section::Header,
        });
    }
    let flags = u16_at(h, 10);
    if flags != 0 {
        return Err(CorruptReason::UnsupportedFlags(flags));
    }
    Ok(Header { version, flags })
}

/// Encodes a trailer (the caller supplies consistent figures).
pub fn encode_trailer(t: &Trailer) -> [u8; TRAILER_LEN] {
    let mut b = [0u8; TRAILER_LEN];
    b[0..8].copy_from_slice(&TRAILER_MAGIC);
    b[8..10].copy_from_slice(&t.version.to_le_bytes());
    b[10..12].copy_from_slice(&t.flags.to_le_bytes());
    b[12..16].copy_from_slice(&t.content_crc.to_le_bytes());
    b[16..24].copy_from_slice(&t.content_offset.to_le_bytes());
    b[24..32].copy_from_slice(&t.content_len.to_le_bytes());
    b[32..40].copy_from_slice(&t.envelope_offset.to_le_bytes());
    b[40..48].copy_from_slice(&t.envelope_len.to_le_bytes());
    b[48..52].copy_from_slice(&t.envelope_crc.to_le_bytes());
    let crc = crc32c::crc32c(&b[0..52]);
    b[52..56].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes the trailer of a file of `file_len` bytes and checks that its offsets and
/// lengths describe exactly that file. `bytes` must be the last [`TRAILER_LEN`] bytes.
pub fn decode_trailer(bytes: &[u8], file_len: u64) -> Result<Trailer, CorruptReason> {
    if file_len < MIN_FILE_LEN {
        return Err(CorruptReason::Truncated);
    }
    let b: &[u8; TRAILER_LEN] = bytes.try_into().map_err(|_| CorruptReason::Truncated)?;
    if b[0..8] != TRAILER_MAGIC {
        return Err(CorruptReason::MissingTrailer);
    }
    let version = u16_at(b, 8);
    if version != VERSION {
        return Err(CorruptReason::UnsupportedVersion(version));
    }
    if crc32c::crc32c(&b[0..52]) != u32_at(b, 52) {
        return Err(CorruptReason::ChecksumMismatch {
            section: Section::Trailer,
        });
    }
    let t = Trailer {
        version,
        flags: u16_at(b, 10),
        content_crc: u32_at(b, 12),
        content_offset: u64_at(b, 16),
        content_len: u64_at(b, 24),
        envelope_offset: u64_at(b, 32),
        envelope_len: u64_at(b, 40),
        envelope_crc: u32_at(b, 48),
    };
    if t.flags != 0 {
        return Err(CorruptReason::UnsupportedFlags(t.flags));
    }
    if t.content_offset != HEADER_LEN as u64 {
        return Err(CorruptReason::LengthMismatch(
            "content offset is not after the header",
        ));
    }
    if t.content_offset.checked_add(t.content_len) != Some(t.envelope_offset) {
        return Err(CorruptReason::LengthMismatch(
            "envelope offset is not after the content",
        ));
    }
    if t.envelope_len > MAX_ENVELOPE_LEN {
        return Err(CorruptReason::EnvelopeTooLarge(t.envelope_len));
    }
    if t.envelope_len == 0 {
        return Err(CorruptReason::LengthMismatch("empty envelope section"));
    }
    let end = t
        .envelope_offset
        .checked_add(t.envelope_len)
        .and_then(|e| e.checked_add(TRAILER_LEN as u64));
    if end != Some(file_len) {
        return Err(CorruptReason::LengthMismatch(
            "sections do not add up to the file length",
        ));
    }
    Ok(t)
}

/// Checks that a header (already decoded) and a trailer belong together.
pub fn check_header_matches(h: &Header, t: &Trailer) -> Result<(), CorruptReason> {
    if h.version != t.version || h.flags != t.flags {
        return Err(CorruptReason::HeaderTrailerMismatch);
    }
    Ok(())
}

/// Checks a content CRC computed by the caller (incrementally, for large files).
pub fn check_content_crc(crc: u32, t: &Trailer) -> Result<(), CorruptReason> {
    if crc != t.content_crc {
        return Err(CorruptReason::ChecksumMismatch {
            section: Section::Content,
        });
    }
    Ok(())
}

/// Decodes and validates the envelope section. With `expected = Some(id)` (the id from
/// the file name), the envelope must carry that id; `None` only checks the envelope
/// against its own id (fuzzing, tools looking at a stray file).
pub fn decode_envelope(
    bytes: &[u8],
    t: &Trailer,
    expected: Option<QueueId>,
) -> Result<Envelope, CorruptReason> {
    if bytes.len() as u64 != t.envelope_len {
        return Err(CorruptReason::Truncated);
    }
    if crc32c::crc32c(bytes) != t.envelope_crc {
        return Err(CorruptReason::ChecksumMismatch {
            section: Section::Envelope,
        });
    }
    let env: Envelope =
        serde_json::from_slice(bytes).map_err(|e| CorruptReason::BadJson(e.to_string()))?;
    env.validate(expected.unwrap_or(env.id))?;
    if env.size != t.content_len {
        return Err(CorruptReason::EnvelopeSizeMismatch {
            envelope: env.size,
            content: t.content_len,
        });
    }
    Ok(env)
}

/// Decodes a whole file held in memory, checking everything listed in the module header.
pub fn decode(file: &[u8], expected: Option<QueueId>) -> Result<Decoded<'_>, CorruptReason> {
    let len = file.len() as u64;
    if len < MIN_FILE_LEN {
        return Err(CorruptReason::Truncated);
    }
    let header = decode_header(file.get(..HEADER_LEN).ok_or(CorruptReason::Truncated)?)?;
    let tail_at = file
        .len()
        .checked_sub(TRAILER_LEN)
        .ok_or(CorruptReason::Truncated)?;
    let t = decode_trailer(file.get(tail_at..).ok_or(CorruptReason::Truncated)?, len)?;
    check_header_matches(&header, &t)?;
    let content = section(file, t.content_offset, t.content_len)?;
    check_content_crc(crc32c::crc32c(content), &t)?;
    let env_bytes = section(file, t.envelope_offset, t.envelope_len)?;
    let envelope = decode_envelope(env_bytes, &t, expected)?;
    Ok(Decoded { envelope, content })
}

fn section(file: &[u8], offset: u64, len: u64) -> Result<&[u8], CorruptReason> {
    let start = usize::try_from(offset).map_err(|_| CorruptReason::Truncated)?;
    let end = offset
        .checked_add(len)
        .and_then(|e| usize::try_from(e).ok())
        .ok_or(CorruptReason::Truncated)?;
    file.get(start..end).ok_or(CorruptReason::Truncated)
}

/// Everything that follows the content: the envelope section and the trailer, for
/// content of `content_len` bytes whose CRC-32C is `content_crc`. The envelope must be
/// valid against its own id and its `size` must equal `content_len`, so that every file
/// this writes decodes.
pub fn encode_tail(
    content_len: u64,
    content_crc: u32,
    envelope: &Envelope,
) -> Result<Vec<u8>, EncodeError> {
    if envelope.size != content_len {
        return Err(EncodeError::SizeMismatch {
            envelope: envelope.size,
            content: content_len,
        });
    }
    envelope
        .validate(envelope.id)
        .map_err(EncodeError::InvalidEnvelope)?;
    let mut out = serde_json::to_vec(envelope)
        // Serializing these plain structs cannot fail; report it as oversize if it does.
        .map_err(|_| EncodeError::EnvelopeTooLarge(u64::MAX))?;
    let envelope_len = out.len() as u64;
    if envelope_len > MAX_ENVELOPE_LEN {
        return Err(EncodeError::EnvelopeTooLarge(envelope_len));
    }
    let content_offset = HEADER_LEN as u64;
    let envelope_offset = content_offset
        .checked_add(content_len)
        .ok_or(EncodeError::EnvelopeTooLarge(u64::MAX))?;
    let trailer = Trailer {
        version: VERSION,
        flags: 0,
        content_crc,
        content_offset,
        content_len,
        envelope_offset,
        envelope_len,
        envelope_crc: crc32c::crc32c(&out),
    };
    out.extend_from_slice(&encode_trailer(&trailer));
    Ok(out)
}

/// Encodes a whole file in memory.
pub fn encode(content: &[u8], envelope: &Envelope) -> Result<Vec<u8>, EncodeError> {
    let tail = encode_tail(content.len() as u64, crc32c::crc32c(content), envelope)?;
    let mut out = Vec::with_capacity(HEADER_LEN + content.len() + tail.len());
    out.extend_from_slice(&encode_header());
    out.extend_from_slice(content);
    out.extend_from_slice(&tail);
    Ok(out)
}
