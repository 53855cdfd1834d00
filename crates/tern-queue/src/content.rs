//! A message's content while it is being delivered: it stays on disk.
//!
//! The message task never loads a body. Its load ([`scan`]) streams the content once
//! through a bounded buffer (the spool verifies its checksum on the way) and keeps only
//! what the queue needs to decide without it, the [`ContentFacts`]: its length, whether
//! it is 7-bit, its line ends (a Maildir file's name carries its sizes), and a bounded
//! start, the header section (at most [`HEAD_MAX`] octets) and [`BODY_KEPT`] octets
//! after it, for what reads the header section (the hop count, a bounce's returned
//! headers; fault injection in test builds looks for its markers there). Each delivery opens the content again and streams it
//! ([`open_async`], or `Spool::open_body` in a blocking thread), checked again as it
//! goes: a copy that changed since the load is never delivered whole (see
//! `tern_spool::BodyReader`).
//!
//! Where content must be held to be transformed, memory is bounded too: a bounce's
//! returned message is read only up to `queue.bounce_max_full_size` ([`read_for_dsn`]),
//! and a 7-bit conversion larger than [`SPILL_OVER`] is written to a spill file in the
//! spool's private `tmp/` and streamed from there (`attempt.rs`, docs/CONVERSION.md).
//!
//! Memory per loaded message: the envelope and at most [`HEAD_MAX`] octets of the
//! start (a few KiB for ordinary headers), whatever the message size; per delivery: the reader's 64 KiB piece.
//!
//! Trust: the content is hostile; everything here is bounded by the constants above and
//! by lengths the spool checked.

use std::io::Read;

use tern_local::{ContentShape, ShapeCounter};
use tern_spool::{AsyncBodyReader, Envelope, QueueId, QueueState, Spool, SpoolError};

/// Most octets of the start of the content kept with a loaded message: its header
/// section up to this size (`tern-dsn` returns at most 64 KiB of headers)...
pub(crate) const HEAD_MAX: usize = 128 * 1024;

/// ...and at most this much of the body after it, so that `max_active_messages` loaded
/// messages with ordinary headers cost a few KiB each.
pub(crate) const BODY_KEPT: usize = 8 * 1024;

/// A converted copy larger than this is written to a spill file instead of being held
/// in memory while it is sent.
pub(crate) const SPILL_OVER: usize = 1024 * 1024;

/// What a message task knows of a content without holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentFacts {
    /// Length in octets (the envelope's `size`).
    pub len: u64,
    /// No octet above 0x7F.
    pub seven_bit: bool,
    /// Length and line ends, for Maildir file names.
    pub shape: ContentShape,
    /// The start of the content: the header section (at most [`HEAD_MAX`] octets) and
    /// at most [`BODY_KEPT`] octets after it; all of a small content.
    pub head: Vec<u8>,
}

impl ContentFacts {
    /// The facts of a content held whole (tests, messages built in memory).
    pub fn of(content: &[u8]) -> ContentFacts {
        let mut b = FactsBuilder::default();
        b.feed(content);
        b.finish()
    }

    /// Whether `head` is the whole content.
    pub fn head_is_whole(&self) -> bool {
        self.head.len() as u64 == self.len
    }
}

#[derive(Default)]
struct FactsBuilder {
    eight_bit: bool,
    shape: ShapeCounter,
    head: Vec<u8>,
    /// Where the empty line that ends the header section starts, once seen.
    header_end: Option<usize>,
}

impl FactsBuilder {
    /// How long `head` may grow.
    fn cap(&self) -> usize {
        self.header_end
            .map_or(HEAD_MAX, |end| end.saturating_add(BODY_KEPT).min(HEAD_MAX))
    }

    fn feed(&mut self, piece: &[u8]) {
        self.eight_bit = self.eight_bit || piece.iter().any(|b| *b >= 0x80);
        self.shape.feed(piece);
        let room = self.cap().saturating_sub(self.head.len());
        if room == 0 {
            return;
        }
        // Look for the empty line from just before the new octets only.
        let from = self.head.len().saturating_sub(2);
        self.head
            .extend_from_slice(piece.get(..room.min(piece.len())).unwrap_or_default());
        if self.header_end.is_none() {
            self.header_end = if self.head.starts_with(b"\r\n") || self.head.starts_with(b"\n") {
                Some(0)
            } else {
                let new = self.head.get(from..).unwrap_or_default();
                new.windows(2)
                    .position(|w| w == b"\n\n")
                    .or_else(|| new.windows(3).position(|w| w == b"\n\r\n"))
                    .map(|p| from.saturating_add(p).saturating_add(1))
            };
            let cap = self.cap();
            self.head.truncate(cap);
        }
    }

    fn finish(self) -> ContentFacts {
        let shape = self.shape.shape();
        ContentFacts {
            len: shape.len,
            seven_bit: !self.eight_bit,
            shape,
            head: self.head,
        }
    }
}

/// A message as its task loads it: envelope and content facts.
pub(crate) struct Scanned {
    pub envelope: Envelope,
    pub facts: ContentFacts,
}

/// Loads a message without keeping its content (see the module header). Blocking. A
/// corrupt file is quarantined by the spool and `SpoolError::Corrupt` returned.
pub(crate) fn scan(spool: &Spool, state: QueueState, id: QueueId) -> Result<Scanned, SpoolError> {
    let mut b = FactsBuilder::default();
    let envelope = spool.scan(state, id, &mut |piece| b.feed(piece))?;
    Ok(Scanned {
        envelope,
        facts: b.finish(),
    })
}

/// Opens the content of the message in `state` for an async delivery.
pub(crate) async fn open_async(
    spool: &Spool,
    state: QueueState,
    id: QueueId,
) -> Result<AsyncBodyReader, SpoolError> {
    let sp = spool.clone();
    let reader = crate::last_gasp::spawn_blocking(move || sp.open_body(state, id))
        .await
        .map_err(|e| SpoolError::BlockingTask(e.to_string()))??;
    reader
        .into_async()
        .map_err(|e| SpoolError::io("seek", spool.path_of(state, id), e))
}

/// Reads the whole content when it is at most `max` octets (checked against its
/// checksum); `Ok(None)` when it is longer. Blocking. For a conversion's input or a
/// bounce's full return, both bounded by the caller.
pub(crate) fn read_whole(
    spool: &Spool,
    state: QueueState,
    id: QueueId,
    max: u64,
) -> Result<Option<Vec<u8>>, SpoolError> {
    let mut reader = spool.open_body(state, id)?;
    if reader.len() > max {
        return Ok(None);
    }
    let cap = usize::try_from(reader.len()).unwrap_or(0);
    let mut out = Vec::with_capacity(cap);
    reader
        .read_to_end(&mut out)
        .map_err(|e| body_error(spool, state, id, e))?;
    Ok(Some(out))
}

/// Maps a read error of a body reader: an integrity failure is corruption (the message
/// task quarantines the file at its next load), anything else an I/O error.
pub(crate) fn body_error(
    spool: &Spool,
    state: QueueState,
    id: QueueId,
    e: std::io::Error,
) -> SpoolError {
    match tern_spool::BodyError::from_io(&e) {
        Some(b) => SpoolError::Corrupt(b.reason()),
        None => SpoolError::io("read", spool.path_of(state, id), e),
    }
}

/// What a bounce returns of the original: the whole content when RET=FULL may return it
/// (`Some(len <= max_full)`), else the head, which holds the header section. Blocking.
pub(crate) fn read_for_dsn(
    spool: &Spool,
    state: QueueState,
    id: QueueId,
    facts: &ContentFacts,
    full_wanted: bool,
    max_full: usize,
) -> Result<(Vec<u8>, bool), SpoolError> {
    if facts.head_is_whole() {
        return Ok((facts.head.clone(), true));
    }
    if full_wanted && facts.len <= max_full as u64 {
        return match read_whole(spool, state, id, max_full as u64)? {
            Some(all) => Ok((all, true)),
            None => Ok((facts.head.clone(), false)),
        };
    }
    Ok((facts.head.clone(), false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_in_pieces_are_the_facts_of_the_whole() {
        let mut content = b"Received: x\r\nSubject: \xc3\xa9\r\n\r\n".to_vec();
        content.extend(std::iter::repeat_n(b'a', HEAD_MAX + 10));
        let whole = ContentFacts::of(&content);
        for size in [1, 2, 3, 1000] {
            let mut b = FactsBuilder::default();
            for piece in content.chunks(size) {
                b.feed(piece);
            }
            assert_eq!(b.finish(), whole, "pieces of {size}");
        }
        // The header section and 8 KiB of the body.
        assert_eq!(whole.head.len(), 26 + BODY_KEPT);
        assert!(whole.head.starts_with(b"Received: x\r\nSubject"));
        // No end of the header section: HEAD_MAX.
        let endless = vec![b'h'; HEAD_MAX * 2];
        assert_eq!(ContentFacts::of(&endless).head.len(), HEAD_MAX);
        let blank_first = ContentFacts::of(&[b"\r\n".as_slice(), &[b'b'; 20_000]].concat());
        assert_eq!(blank_first.head.len(), BODY_KEPT);
        assert!(!whole.seven_bit);
        assert!(!whole.head_is_whole());
        assert_eq!(whole.len, content.len() as u64);
        let small = ContentFacts::of(b"a\r\n");
        assert!(small.seven_bit && small.head_is_whole());
    }
}
