//! The segment scanner: classifies every byte of one segment file, in order, as records,
//! damage, the seal, or an unfinished tail. Pure: bytes come through `read_at`, nothing
//! is changed; recovery (`segment.rs`) decides what to do with the result.
//!
//! Trust rule (the reason for `Via`): a record is Tern's own when it is reached through
//! the chain of lengths from an anchor (offset 0, or a frame whose MAC verifies under
//! the spool key), or when its own MAC verifies. A record found by searching past
//! damage, or chained from such a record, may be bytes a client put inside a message
//! body (it can compute every CRC) and is marked `Via::Search`: recovery holds it for an
//! operator instead of queueing it.
//!
//! Invariants (checked by the proptest in `tests.rs`):
//! - The results account for every byte of the file exactly once, in order.
//! - A `Record` always holds a message file that passes `format::decode` with its id.
//! - A frame whose message file fails is skipped by its length only when the frame was
//!   reached from an anchor; otherwise the search goes on one byte later, so a forged
//!   frame cannot swallow the records after it.
//! - A seal counts only when reached from an anchor or authenticated; nothing after it
//!   is searched (Tern never writes after a seal).
//!
//! Memory: one message file (at most `MAX_BLOB`) and one search chunk at a time.

use std::io;

use crate::error::CorruptReason;
use crate::format;
use crate::id::QueueId;
use crate::store::key::SpoolKey;

use super::frame::{self, Frame, MAGIC_STEM, MAX_FRAME_LEN};

/// Bytes read at a time when searching past damage for the next frame.
const SEARCH_CHUNK: usize = 1024 * 1024;

/// How a record was reached (see the module header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// Through the chain of lengths from an anchor.
    Chain,
    /// Its own MAC verifies under the spool key (it is an anchor itself).
    Authenticated,
    /// Found by searching past damage (or chained from such a record), not authenticated.
    Search,
}

/// What is wrong with a stretch of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Damage {
    /// The bytes are not a record frame. `next`: where the search found the next frame
    /// (`None`: none before the end).
    NotAFrame { next: Option<u64> },
    /// A frame reached from an anchor, whose message file fails validation.
    BadRecord { id: QueueId, reason: CorruptReason },
    /// Bytes after the seal (Tern never writes there).
    AfterSeal,
}

impl Damage {
    /// For the `.reason` file: what the stretch `at..at+len` is.
    pub(crate) fn describe(&self, at: u64, len: u64) -> String {
        match self {
            Damage::NotAFrame { next: Some(n) } => format!(
                "offset {at} ({len} bytes): not a record frame (bad magic, checksum or \
                 layout); the next frame was found by searching, at offset {n}"
            ),
            Damage::NotAFrame { next: None } => format!(
                "offset {at} ({len} bytes, to the end): not a record frame (bad magic, \
                 checksum or layout), and no frame follows"
            ),
            Damage::BadRecord { id, reason } => format!(
                "offset {at} ({len} bytes): the record of message {id}: its frame is \
                 intact but its message file fails validation: {reason}"
            ),
            Damage::AfterSeal => format!(
                "offset {at} ({len} bytes, to the end): bytes after the segment's seal, \
                 where Tern never writes"
            ),
        }
    }
}

/// What a scan of one segment found, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    /// A complete, valid record: message `id`, whose frame is at `at` and whose file is
    /// `len` bytes at `blob_at`.
    Record {
        id: QueueId,
        at: u64,
        blob_at: u64,
        len: u64,
        via: Via,
    },
    /// Bytes `at..at+len` are not records.
    Damaged { at: u64, len: u64, what: Damage },
    /// The seal, at `at` (the last frame of a segment that takes no more appends).
    Seal { at: u64 },
    /// From `at` to the end: a record cut short, the start of a frame, or zeros: what a
    /// write interrupted by a crash leaves. Whether it may be cut is recovery's decision.
    /// `id`: the message whose record was cut short, when its frame is whole.
    Unfinished { at: u64, id: Option<QueueId> },
}

/// Positioned reads of the segment being scanned.
pub(crate) type ReadAt<'a> = dyn FnMut(u64, &mut [u8]) -> io::Result<()> + 'a;

struct Scanner<'a, 'r> {
    read_at: &'a mut ReadAt<'r>,
    file_len: u64,
    seg: QueueId,
    key: Option<&'a SpoolKey>,
    blob: Vec<u8>,
}

/// A frame at some offset, with its raw bytes and (for a record whose file is within
/// the segment and valid) whether the file validated.
struct AtFrame {
    frame: Frame,
    raw: [u8; MAX_FRAME_LEN],
}

/// Scans segment `seg` of `file_len` bytes (see the module header). `key`: the spool's
/// key, if it has one.
pub(crate) fn scan(
    read_at: &mut ReadAt<'_>,
    file_len: u64,
    seg: QueueId,
    key: Option<&SpoolKey>,
) -> io::Result<Vec<Found>> {
    let mut s = Scanner {
        read_at,
        file_len,
        seg,
        key,
        blob: Vec::new(),
    };
    s.run()
}

impl Scanner<'_, '_> {
    fn frame_at(&mut self, at: u64) -> io::Result<Option<AtFrame>> {
        let left = self.file_len.saturating_sub(at);
        let have = usize::try_from(left.min(MAX_FRAME_LEN as u64)).unwrap_or(0);
        let mut raw = [0u8; MAX_FRAME_LEN];
        let buf = raw.get_mut(..have).unwrap_or_default();
        (self.read_at)(at, buf)?;
        Ok(frame::decode(buf, self.seg, at).map(|frame| AtFrame { frame, raw }))
    }

    /// Reads the message file of the record whose frame is at `at` into `self.blob`;
    /// `false` when it would run past the end of the segment.
    fn read_blob(&mut self, at: u64, f: Frame, len: u32) -> io::Result<bool> {
        let blob_at = at.saturating_add(f.len());
        if blob_at.saturating_add(u64::from(len)) > self.file_len {
            return Ok(false);
        }
        self.blob.resize(usize::try_from(len).unwrap_or(0), 0);
        (self.read_at)(blob_at, &mut self.blob)?;
        Ok(true)
    }

    fn authentic(&self, raw: &[u8], blob: &[u8]) -> bool {
        self.key
            .is_some_and(|k| frame::authentic(raw, self.seg, blob, k))
    }

    fn run(&mut self) -> io::Result<Vec<Found>> {
        let mut out = Vec::new();
        let mut at = 0u64;
        let mut anchored = true;
        while at < self.file_len {
            match self.frame_at(at)? {
                Some(AtFrame {
                    frame: f @ Frame::Record { id, len, .. },
                    raw,
                }) => {
                    if !self.read_blob(at, f, len)? {
                        // The frame is whole but its record runs past the end.
                        out.push(Found::Unfinished { at, id: Some(id) });
                        return Ok(out);
                    }
                    let blob_at = at + f.len();
                    let end = blob_at + u64::from(len);
                    match format::decode(&self.blob, Some(id)) {
                        Ok(_) => {
                            let via = if anchored {
                                Via::Chain
                            } else if self.authentic(&raw, &self.blob) {
                                anchored = true;
                                Via::Authenticated
                            } else {
                                Via::Search
                            };
                            out.push(Found::Record {
                                id,
                                at,
                                blob_at,
                                len: u64::from(len),
                                via,
                            });
                            at = end;
                            continue;
                        }
                        Err(reason) if anchored => {
                            out.push(Found::Damaged {
                                at,
                                len: end - at,
                                what: Damage::BadRecord { id, reason },
                            });
                            at = end;
                            continue;
                        }
                        // Not from an anchor: its length is not to be trusted.
                        Err(_) => {}
                    }
                }
                Some(AtFrame {
                    frame: Frame::Seal,
                    raw,
                }) if anchored || self.authentic(&raw, &[]) => {
                    out.push(Found::Seal { at });
                    let end = at + Frame::Seal.len();
                    if end < self.file_len {
                        out.push(Found::Damaged {
                            at: end,
                            len: self.file_len - end,
                            what: Damage::AfterSeal,
                        });
                    }
                    return Ok(out);
                }
                _ => {}
            }
            // No usable frame here: search for the next one.
            match self.next_frame(at.saturating_add(1))? {
                Some(next) => {
                    out.push(Found::Damaged {
                        at,
                        len: next - at,
                        what: Damage::NotAFrame { next: Some(next) },
                    });
                    at = next;
                    anchored = false;
                }
                None if self.tail_is_unfinished(at)? => {
                    out.push(Found::Unfinished { at, id: None });
                    return Ok(out);
                }
                None => {
                    out.push(Found::Damaged {
                        at,
                        len: self.file_len - at,
                        what: Damage::NotAFrame { next: None },
                    });
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// Whether the bytes from `at` to the end are an unfinished write: all zeros, or
    /// fewer bytes than a frame that start like one.
    fn tail_is_unfinished(&mut self, at: u64) -> io::Result<bool> {
        let left = self.file_len - at;
        if left < MAX_FRAME_LEN as u64 {
            let mut first = [0u8; MAX_FRAME_LEN];
            let n = usize::try_from(left).unwrap_or(0);
            let buf = first.get_mut(..n).unwrap_or_default();
            (self.read_at)(at, buf)?;
            if frame::is_frame_prefix(buf) {
                return Ok(true);
            }
        }
        let mut buf = vec![0u8; SEARCH_CHUNK];
        let mut pos = at;
        while pos < self.file_len {
            let n = usize::try_from((self.file_len - pos).min(SEARCH_CHUNK as u64)).unwrap_or(0);
            let chunk = buf.get_mut(..n).unwrap_or_default();
            (self.read_at)(pos, chunk)?;
            if chunk.iter().any(|b| *b != 0) {
                return Ok(false);
            }
            pos += n as u64;
        }
        Ok(true)
    }

    /// Whether a frame at `at` is one the search may stop at: a record whose message file
    /// lies within the segment and validates, or an authenticated seal.
    fn usable_from_search(&mut self, at: u64) -> io::Result<bool> {
        match self.frame_at(at)? {
            Some(AtFrame {
                frame: f @ Frame::Record { id, len, .. },
                ..
            }) => Ok(self.read_blob(at, f, len)? && format::decode(&self.blob, Some(id)).is_ok()),
            Some(AtFrame {
                frame: Frame::Seal,
                raw,
            }) => Ok(self.authentic(&raw, &[])),
            None => Ok(false),
        }
    }

    /// The offset of the next usable frame at or after `from`, if any.
    fn next_frame(&mut self, from: u64) -> io::Result<Option<u64>> {
        let mut buf = vec![0u8; SEARCH_CHUNK + MAGIC_STEM.len()];
        let mut pos = from;
        while pos.saturating_add(MAGIC_STEM.len() as u64) <= self.file_len {
            let n = usize::try_from((self.file_len - pos).min(buf.len() as u64)).unwrap_or(0);
            let chunk = buf.get_mut(..n).unwrap_or_default();
            (self.read_at)(pos, chunk)?;
            let candidates: Vec<u64> = chunk
                .windows(MAGIC_STEM.len())
                .enumerate()
                .filter(|(_, w)| *w == MAGIC_STEM)
                .map(|(i, _)| pos + i as u64)
                .collect();
            for c in candidates {
                if self.usable_from_search(c)? {
                    return Ok(Some(c));
                }
            }
            // The last bytes may start a magic that the next read completes.
            pos += (n.saturating_sub(MAGIC_STEM.len() - 1)).max(1) as u64;
        }
        Ok(None)
    }
}
