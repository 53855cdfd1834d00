//! Delivery-record frames appended to a message file (format version 2), and how a
//! reader finds the version-1 part and the last record in a file that may end with
//! frames, or with a frame torn by a crash. No I/O of its own: the file is read through
//! [`ReadAt`] (a `File`, or bytes in memory).
//!
//! The layout and the argument for the search are in the module header of `format`
//! ("Version 2: delivery-record frames after the trailer"). In short:
//!
//! - a frame is `head(23) | JSON | footer(64)`, the head being `TERNRHD1` and the queue
//!   id; the footer's MAC (keyed BLAKE3 with a key derived from `spool.key`) covers the
//!   56 bytes of the file's own version-1 trailer, the footer's first 32 bytes (lengths,
//!   `base`, the frame's own offset), the head and the JSON, so only this spool can make
//!   one, for this message, at this place;
//! - [`locate`] tries, in order: an authenticated frame ending at the end of the file;
//!   a version-1 trailer ending there (a file with no frame); and only then (a torn tail)
//!   searches backwards, at most one largest frame, for the nearest authenticated frame
//!   or version-1 trailer (the trailer only when the bytes after it are what a first
//!   append leaves: a prefix of the head, then zeros).
//!
//! Invariants: nothing is allocated or read because of a length from the file before it
//! is checked against the file's real length and [`MAX_FRAME_JSON`]; the search reads
//! [`SCAN_CHUNK`] bytes at a time, never the whole window at once.

use std::io;

use crate::error::CorruptReason;
use crate::id::QueueId;
use crate::record::MAX_RECORD_LEN;
use crate::store::key::{MAC_LEN, SpoolKey};

use super::{MIN_FILE_LEN, TRAILER_LEN, TRAILER_MAGIC, Trailer, decode_trailer};

/// Magic at the start of a frame footer.
pub const FRAME_MAGIC: [u8; 8] = *b"TERNRFR1";
/// Magic at the start of a frame (followed by the queue id).
pub const HEAD_MAGIC: [u8; 8] = *b"TERNRHD1";
/// Length of a frame's head: [`HEAD_MAGIC`] and the queue id (15 ASCII bytes).
pub const HEAD_LEN: usize = 8 + 15;
/// Length of a frame footer.
pub const FOOTER_LEN: usize = 64;

/// The length of a frame carrying `json_len` bytes of JSON.
pub fn frame_len(json_len: usize) -> u64 {
    (HEAD_LEN + json_len + FOOTER_LEN) as u64
}
/// Largest record JSON a frame carries (the record's own bound).
pub const MAX_FRAME_JSON: u64 = MAX_RECORD_LEN as u64;
/// When the frames of a file (including the one being written) would pass this many
/// bytes, the next write compacts (see [`plan_write`]).
pub const COMPACT_AT: u64 = 64 * 1024;
/// Bytes read at a time by the backwards search of a torn tail.
pub const SCAN_CHUNK: usize = 64 * 1024;

/// Random-access reads of a message file.
pub trait ReadAt {
    /// Fills `buf` from `offset`; `UnexpectedEof` when the source is shorter.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for std::fs::File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|s| s.checked_add(buf.len()).map(|e| (s, e)))
            .and_then(|(s, e)| self.get(s..e))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// Why [`locate`] failed.
#[derive(Debug)]
pub enum LocateError {
    /// The file has no usable version-1 part (the reason of the plain version-1 check).
    Corrupt(CorruptReason),
    /// A read failed.
    Io(io::Error),
}

impl From<io::Error> for LocateError {
    fn from(e: io::Error) -> Self {
        LocateError::Io(e)
    }
}

/// The last valid frame of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastFrame {
    /// Offset of its head (where the frame starts).
    pub offset: u64,
    /// The record's JSON (authenticated; still to be decoded by `record::decode_json`).
    pub json: Vec<u8>,
}

/// What [`locate`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The version-1 trailer, decoded against `base`.
    pub trailer: Trailer,
    /// Its raw bytes (the MAC of every frame of this file covers them).
    pub trailer_bytes: [u8; TRAILER_LEN],
    /// Length of the version-1 part: where the frames start.
    pub base: u64,
    /// End of the intact part: `base`, or the end of the last valid frame. Less than the
    /// file length only when the tail is torn; the next write starts here.
    pub end: u64,
    /// The last valid frame, if any.
    pub last: Option<LastFrame>,
}

/// A decoded (not yet authenticated) footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Footer {
    json_len: u64,
    base: u64,
    offset: u64,
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)?.try_into().ok().map(u32::from_le_bytes)
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)?.try_into().ok().map(u64::from_le_bytes)
}

/// The footer's first 32 bytes: magic, JSON length, 0, base, offset.
fn footer_head(json_len: u32, base: u64, offset: u64) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[0..8].copy_from_slice(&FRAME_MAGIC);
    h[8..12].copy_from_slice(&json_len.to_le_bytes());
    h[16..24].copy_from_slice(&base.to_le_bytes());
    h[24..32].copy_from_slice(&offset.to_le_bytes());
    h
}

/// A frame's head for message `id`: [`HEAD_MAGIC`] and the id.
fn frame_head(id: QueueId) -> Vec<u8> {
    let mut h = HEAD_MAGIC.to_vec();
    h.extend_from_slice(id.to_string().as_bytes());
    h
}

/// Encodes one frame for message `id`, to be written at `offset` of a file whose
/// version-1 part is `base` bytes long and ends with `trailer`. `key` is the record key
/// (`SpoolKey::for_records`). `None` if the JSON is larger than [`MAX_FRAME_JSON`].
pub fn encode_frame(
    key: &SpoolKey,
    id: QueueId,
    trailer: &[u8; TRAILER_LEN],
    base: u64,
    offset: u64,
    json: &[u8],
) -> Option<Vec<u8>> {
    if json.len() as u64 > MAX_FRAME_JSON {
        return None;
    }
    let len = u32::try_from(json.len()).ok()?;
    let mut out = Vec::with_capacity(HEAD_LEN + json.len() + FOOTER_LEN);
    out.extend_from_slice(&frame_head(id));
    out.extend_from_slice(json);
    let foot = footer_head(len, base, offset);
    let tag = key.mac(&[trailer, &foot, &out]);
    let body_len = out.len();
    out.extend_from_slice(&foot);
    out.extend_from_slice(&tag);
    out.extend_from_slice(&[0u8; 12]);
    let crc = crc32c::crc32c(out.get(body_len..).unwrap_or_default());
    out.extend_from_slice(&crc.to_le_bytes());
    Some(out)
}

/// Checks a footer's structure (magic, CRC, zeros, lengths) for a frame ending at `end`.
fn decode_footer(b: &[u8; FOOTER_LEN], end: u64) -> Option<Footer> {
    if b[0..8] != FRAME_MAGIC || crc32c::crc32c(&b[0..60]) != le_u32(b, 60)? {
        return None;
    }
    if le_u32(b, 12)? != 0 || b[48..60].iter().any(|&x| x != 0) {
        return None;
    }
    let json_len = u64::from(le_u32(b, 8)?);
    let base = le_u64(b, 16)?;
    let offset = le_u64(b, 24)?;
    let frame_end = offset
        .checked_add(HEAD_LEN as u64)?
        .checked_add(json_len)?
        .checked_add(FOOTER_LEN as u64)?;
    if json_len > MAX_FRAME_JSON || frame_end != end || base < MIN_FILE_LEN || offset < base {
        return None;
    }
    Some(Footer {
        json_len,
        base,
        offset,
    })
}

/// The frame ending exactly at `end`, if there is one there and it is authentic.
fn frame_ending_at<R: ReadAt + ?Sized>(
    r: &R,
    end: u64,
    id: QueueId,
    key: &SpoolKey,
) -> Result<Option<Layout>, io::Error> {
    let Some(at) = end.checked_sub(FOOTER_LEN as u64) else {
        return Ok(None);
    };
    let mut b = [0u8; FOOTER_LEN];
    r.read_exact_at(&mut b, at)?;
    let Some(f) = decode_footer(&b, end) else {
        return Ok(None);
    };
    let mut tb = [0u8; TRAILER_LEN];
    // decode_footer checked base >= MIN_FILE_LEN > TRAILER_LEN.
    r.read_exact_at(&mut tb, f.base.saturating_sub(TRAILER_LEN as u64))?;
    let Ok(trailer) = decode_trailer(&tb, f.base) else {
        return Ok(None);
    };
    // Bounded by MAX_FRAME_JSON and by the file (the footer ends at `end`).
    let n = usize::try_from(f.json_len).map_err(|_| io::ErrorKind::InvalidData)?;
    let mut body = vec![0u8; HEAD_LEN + n];
    r.read_exact_at(&mut body, f.offset)?;
    if body.get(..HEAD_LEN) != Some(frame_head(id).as_slice())
        || !key.verify(&[&tb, &b[0..32], &body], &b[32..32 + MAC_LEN])
    {
        return Ok(None);
    }
    let json = body.split_off(HEAD_LEN);
    Ok(Some(Layout {
        trailer,
        trailer_bytes: tb,
        base: f.base,
        end,
        last: Some(LastFrame {
            offset: f.offset,
            json,
        }),
    }))
}

/// A version-1 trailer ending at `end` (a file of `end` bytes with no frame).
fn trailer_ending_at<R: ReadAt + ?Sized>(
    r: &R,
    end: u64,
) -> Result<Result<Layout, CorruptReason>, io::Error> {
    if end < MIN_FILE_LEN {
        return Ok(Err(CorruptReason::Truncated));
    }
    let mut tb = [0u8; TRAILER_LEN];
    r.read_exact_at(&mut tb, end - TRAILER_LEN as u64)?;
    Ok(decode_trailer(&tb, end).map(|trailer| Layout {
        trailer,
        trailer_bytes: tb,
        base: end,
        end,
        last: None,
    }))
}

/// Whether the bytes from `from` to `len` can be a torn first append to a file without
/// frames: their first bytes (up to [`HEAD_LEN`]) are a prefix of the first frame's head
/// (`TERNRHD1` and the queue id), then zeros (a filesystem that extended the file without
/// writing all of its data).
fn torn_after<R: ReadAt + ?Sized>(
    r: &R,
    from: u64,
    len: u64,
    id: QueueId,
) -> Result<bool, io::Error> {
    let prefix = frame_head(id);
    let n = usize::try_from(len.saturating_sub(from)).map_or(prefix.len(), |n| n.min(prefix.len()));
    let mut b = vec![0u8; n];
    r.read_exact_at(&mut b, from)?;
    // Our bytes as far as they got, then zeros (or nothing).
    let ours = b.iter().zip(&prefix).take_while(|(x, y)| x == y).count();
    Ok(b.get(ours..)
        .is_some_and(|rest| rest.iter().all(|&x| x == 0)))
}

/// Finds the version-1 part and the last valid record frame of message `id`'s file of
/// `len` bytes (see the module header for the order). `key`: the record key; without
/// one (a read-only spool that cannot read `spool.key`) frames are not recognised.
pub fn locate<R: ReadAt + ?Sized>(
    r: &R,
    len: u64,
    id: QueueId,
    key: Option<&SpoolKey>,
) -> Result<Layout, LocateError> {
    if len < MIN_FILE_LEN {
        return Err(LocateError::Corrupt(CorruptReason::Truncated));
    }
    if let Some(key) = key
        && let Some(found) = frame_ending_at(r, len, id, key)?
    {
        return Ok(found);
    }
    let reason = match trailer_ending_at(r, len)? {
        Ok(found) => return Ok(found),
        Err(reason) => reason,
    };
    match search_back(r, len, id, key)? {
        Some(found) => Ok(found),
        None => Err(LocateError::Corrupt(reason)),
    }
}

/// The torn-tail search: candidate ends from `len - 1` down to one largest frame
/// before `len`, nearest first; the first authenticated frame, or version-1 trailer
/// followed by what a torn append leaves, wins.
fn search_back<R: ReadAt + ?Sized>(
    r: &R,
    len: u64,
    id: QueueId,
    key: Option<&SpoolKey>,
) -> Result<Option<Layout>, io::Error> {
    let floor = len
        .saturating_sub(MAX_FRAME_JSON + (HEAD_LEN + FOOTER_LEN) as u64)
        .max(MIN_FILE_LEN);
    // Candidate ends in (lo, hi], read as the bytes [lo - FOOTER_LEN, hi).
    let mut hi = len - 1;
    let mut buf = Vec::new();
    while hi >= floor {
        let lo = hi.saturating_sub(SCAN_CHUNK as u64).max(floor - 1);
        let start = lo + 1 - FOOTER_LEN as u64;
        let n = usize::try_from(hi - start).map_err(|_| io::ErrorKind::InvalidData)?;
        buf.clear();
        buf.resize(n, 0);
        r.read_exact_at(&mut buf, start)?;
        // (end, is a frame) for each magic whose structure ends in (lo, hi].
        let mut ends: Vec<(u64, bool)> = Vec::new();
        for (i, w) in buf.windows(8).enumerate() {
            let at = start + i as u64;
            let end = if w == FRAME_MAGIC {
                (at + FOOTER_LEN as u64, true)
            } else if w == TRAILER_MAGIC {
                (at + TRAILER_LEN as u64, false)
            } else {
                continue;
            };
            if end.0 > lo && end.0 <= hi {
                ends.push(end);
            }
        }
        ends.sort_unstable_by(|a, b| b.cmp(a));
        for (end, is_frame) in ends {
            if is_frame {
                if let Some(key) = key
                    && let Some(found) = frame_ending_at(r, end, id, key)?
                {
                    return Ok(Some(found));
                }
            } else if let Ok(found) = trailer_ending_at(r, end)?
                && torn_after(r, end, len, id)?
            {
                return Ok(Some(found));
            }
        }
        if lo < floor {
            break;
        }
        hi = lo;
    }
    Ok(None)
}

/// Where the next frame goes and what to do around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WritePlan {
    /// Offset of the new frame.
    pub offset: u64,
    /// The file's length once the frame is written (the file is cut to it when longer).
    pub new_len: u64,
    /// The frame is written over the old frames at `base`, in front of the last valid
    /// frame (which stays intact), synced, and only then is the file cut to `new_len`.
    pub compact: bool,
}

/// Decides where a frame of `frame_len` bytes goes in a file of `len` bytes laid out as
/// `layout`: at the intact end (cutting off a torn tail), or, once the frames would pass
/// [`COMPACT_AT`], at `base` if it fits before the last valid frame (compaction).
pub fn plan_write(layout: &Layout, frame_len: u64) -> WritePlan {
    let frames = layout
        .end
        .saturating_sub(layout.base)
        .saturating_add(frame_len);
    if frames > COMPACT_AT
        && let Some(last) = &layout.last
        && layout.base.saturating_add(frame_len) <= last.offset
    {
        return WritePlan {
            offset: layout.base,
            new_len: layout.base + frame_len,
            compact: true,
        };
    }
    WritePlan {
        offset: layout.end,
        new_len: layout.end.saturating_add(frame_len),
        compact: false,
    }
}

#[cfg(test)]
mod tests {
    //! Frames: round trip, last frame wins, torn tails at every byte, forgeries in the
    //! content, frames of a previous occupant, compaction. These model the writer of
    //! `Inner::append_record` on bytes in memory.

    use super::*;
    use crate::envelope::RecipientStatus;
    use crate::format::encode;
    use crate::record::{DeliveryRecord, decode_json, encode_json};
    use crate::testutil::envelope;

    fn key() -> SpoolKey {
        SpoolKey::for_tests(7).for_records()
    }

    fn message(content: &[u8]) -> (QueueId, Vec<u8>) {
        let id = QueueId::generate();
        let env = envelope(id, content.len() as u64, 2);
        (id, encode(content, &env).unwrap_or_default())
    }

    fn record(id: QueueId, attempts: u32) -> DeliveryRecord {
        let mut r = DeliveryRecord::new(id, 2);
        r.attempts = attempts;
        r.recipients[0].status = RecipientStatus::Deferred {
            reply: format!("451 try {attempts}"),
        };
        r
    }

    fn find(file: &[u8], id: QueueId, key: &SpoolKey) -> Result<Layout, LocateError> {
        locate(file, file.len() as u64, id, Some(key))
    }

    /// What `append_record` does, in memory: plan, encode, write, cut.
    fn append(file: &mut Vec<u8>, id: QueueId, key: &SpoolKey, rec: &DeliveryRecord) {
        let layout = find(file, id, key).unwrap_or_else(|e| panic!("{e:?}"));
        let json = encode_json(rec);
        let plan = plan_write(&layout, frame_len(json.len()));
        let frame = encode_frame(
            key,
            id,
            &layout.trailer_bytes,
            layout.base,
            plan.offset,
            &json,
        )
        .unwrap_or_default();
        let at = plan.offset as usize;
        if file.len() < at + frame.len() {
            file.resize(at + frame.len(), 0);
        }
        file[at..at + frame.len()].copy_from_slice(&frame);
        file.truncate(plan.new_len as usize);
    }

    fn attempts(layout: &Layout, id: QueueId) -> Option<u32> {
        layout.last.as_ref().map(|f| {
            decode_json(&f.json, id)
                .map(|r| r.attempts)
                .unwrap_or(u32::MAX)
        })
    }

    #[test]
    fn a_file_without_frames_is_a_version_1_file() {
        let (id, file) = message(b"Subject: x\r\n\r\nhello\r\n");
        let l = find(&file, id, &key()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            (l.base, l.end, l.last.is_none()),
            (file.len() as u64, l.base, true)
        );
        assert!(crate::format::decode(&file, Some(id)).is_ok());
    }

    #[test]
    fn frames_round_trip_and_the_last_one_wins() {
        let (id, mut file) = message(b"Subject: x\r\n\r\nhello\r\n");
        let base = file.len() as u64;
        let k = key();
        for n in 1..=5 {
            append(&mut file, id, &k, &record(id, n));
            let l = find(&file, id, &k).unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(attempts(&l, id), Some(n));
            assert_eq!((l.base, l.end), (base, file.len() as u64));
            // The version-1 part is untouched and still decodes on its own.
            assert!(crate::format::decode(&file[..base as usize], Some(id)).is_ok());
        }
    }

    #[test]
    fn a_torn_frame_at_every_byte_keeps_the_previous_record() {
        let (id, v1) = message(b"Subject: torn\r\n\r\nbody\r\n");
        let k = key();
        // The first frame torn: no record. The third torn: the second.
        let mut one = v1.clone();
        append(&mut one, id, &k, &record(id, 1));
        let mut two = one.clone();
        append(&mut two, id, &k, &record(id, 2));
        let mut three = two.clone();
        append(&mut three, id, &k, &record(id, 3));
        for (before, after, want) in [(&v1, &one, None), (&two, &three, Some(2))] {
            for cut in before.len()..after.len() {
                for zeros in [false, true] {
                    // A prefix of the append, or the whole length with the rest zeros
                    // (a filesystem that kept the new length but not all the data).
                    let mut torn = after[..cut].to_vec();
                    if zeros {
                        torn.resize(after.len(), 0);
                    }
                    let l = find(&torn, id, &k)
                        .unwrap_or_else(|e| panic!("cut {cut} zeros {zeros}: {e:?}"));
                    assert_eq!(attempts(&l, id), want, "cut {cut} zeros {zeros}");
                    assert_eq!(l.end, before.len() as u64, "cut {cut} zeros {zeros}");
                    // The next write cuts the torn bytes off and is found.
                    let mut again = torn.clone();
                    append(&mut again, id, &k, &record(id, 9));
                    let l = find(&again, id, &k).unwrap_or_else(|e| panic!("{e:?}"));
                    assert_eq!(attempts(&l, id), Some(9), "cut {cut}");
                    assert_eq!(again.len() as u64, l.end);
                }
            }
        }
    }

    #[test]
    fn forged_frames_and_trailers_in_the_content_are_not_accepted() {
        let k = key();
        let wrong = SpoolKey::for_tests(8).for_records();
        // A sender who knows the format (and could guess the id) but not the key: its
        // content holds a fake version-1 trailer, the bytes a torn append starts with,
        // and frames made with another key, for this id and a plausible base.
        let id = QueueId::generate();
        let mut content = b"Subject: forged\r\n\r\n".to_vec();
        let fake_trailer = crate::format::encode_trailer(&Trailer {
            version: crate::format::VERSION,
            flags: 0,
            content_crc: 0,
            content_offset: crate::format::HEADER_LEN as u64,
            content_len: 1,
            envelope_offset: crate::format::HEADER_LEN as u64 + 1,
            envelope_len: 10,
            envelope_crc: 0,
        });
        content.extend_from_slice(&fake_trailer);
        content.extend_from_slice(frame_head(id).as_slice());
        let forged = encode_frame(
            &wrong,
            id,
            &fake_trailer,
            200,
            300,
            &encode_json(&record(id, 77)),
        )
        .unwrap_or_default();
        content.extend_from_slice(&forged);
        let env = envelope(id, content.len() as u64, 2);
        let mut file = encode(&content, &env).unwrap_or_default();
        let base = file.len() as u64;
        let l = find(&file, id, &k).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((l.base, attempts(&l, id)), (base, None));
        // A forged frame at the very end, and the same torn: never taken.
        let trailer: [u8; TRAILER_LEN] = file[file.len() - TRAILER_LEN..]
            .try_into()
            .unwrap_or([0; 56]);
        let at_end = encode_frame(
            &wrong,
            id,
            &trailer,
            base,
            base,
            &encode_json(&record(id, 66)),
        )
        .unwrap_or_default();
        let mut with = file.clone();
        with.extend_from_slice(&at_end);
        for cut in base as usize..=with.len() {
            let l = find(&with[..cut], id, &k).unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!((l.base, attempts(&l, id)), (base, None), "cut {cut}");
        }
        // A genuine record, then a torn tail: the search stops at the genuine frame and
        // never reaches the forgeries in the content.
        append(&mut file, id, &k, &record(id, 1));
        let end = file.len();
        file.extend_from_slice(&at_end[..at_end.len() / 2]);
        let l = find(&file, id, &k).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            (l.base, l.end as usize, attempts(&l, id)),
            (base, end, Some(1))
        );
        // Without the key (a read-only spool that cannot read it) no frame counts.
        let l = locate(file.as_slice(), file.len() as u64, id, None);
        assert!(matches!(l, Ok(Layout { last: None, .. })), "{l:?}");
    }

    #[test]
    fn a_frame_of_a_previous_occupant_or_another_place_is_not_accepted() {
        let k = key();
        // The previous occupant of a reused file: its frames, appended after the new
        // message's bytes (a stale writer), or found after a longer old file.
        let (old_id, mut old) = message(&vec![b'o'; 3000]);
        append(&mut old, old_id, &k, &record(old_id, 4));
        let old_frame =
            old[old.len() - frame_len(encode_json(&record(old_id, 4)).len()) as usize..].to_vec();
        let (id, new) = message(b"Subject: new\r\n\r\nnew\r\n");
        let mut stale = new.clone();
        stale.extend_from_slice(&old_frame);
        let l = find(&stale, id, &k);
        assert!(!matches!(l, Ok(Layout { last: Some(_), .. })), "{l:?}");
        // Same id, another file (another trailer): not accepted either.
        let (_, mut other) = message(b"Subject: other\r\n\r\nother\r\n");
        let mut mine = new.clone();
        append(&mut mine, id, &k, &record(id, 1));
        let frame = mine[new.len()..].to_vec();
        other.extend_from_slice(&frame);
        let l = find(&other, id, &k);
        assert!(!matches!(l, Ok(Layout { last: Some(_), .. })), "{l:?}");
        // The frame moved to another offset of its own file (a second copy appended).
        let mut moved = mine.clone();
        append(&mut moved, id, &k, &record(id, 2));
        moved.extend_from_slice(&frame);
        let l = find(&moved, id, &k).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            attempts(&l, id),
            Some(2),
            "the copy is not taken as the last frame"
        );
    }

    #[test]
    fn frames_are_compacted_past_the_bound_and_a_cut_short_compaction_is_harmless() {
        let k = key();
        let (id, mut file) = message(b"Subject: many\r\n\r\nmany\r\n");
        let base = file.len();
        let mut big = record(id, 0);
        big.last_error = Some("x".repeat(10_000));
        for n in 1..=40 {
            big.attempts = n;
            let before = file.clone();
            append(&mut file, id, &k, &big);
            let l = find(&file, id, &k).unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(attempts(&l, id), Some(n));
            assert!(
                (file.len() - base) as u64 <= COMPACT_AT + 2 * frame_len(10_200),
                "frames stay bounded: {}",
                file.len() - base
            );
            // A compaction cut short (its frame written in front, the cut not done):
            // the previous record is still the one found.
            let lb = find(&before, id, &k).unwrap_or_else(|e| panic!("{e:?}"));
            if (file.len() as u64) < lb.end {
                let mut half = before.clone();
                half[base..file.len()].copy_from_slice(&file[base..]);
                let l = find(&half, id, &k).unwrap_or_else(|e| panic!("{e:?}"));
                assert_eq!(attempts(&l, id), Some(n - 1));
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn locate_never_panics_on_any_tail(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let (id, mut file) = message(b"Subject: p\r\n\r\np\r\n");
            file.extend_from_slice(&tail);
            let _ = find(&file, id, &key());
        }
    }
}
