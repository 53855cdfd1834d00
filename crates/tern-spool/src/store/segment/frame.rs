//! Segment frames: what precedes each record, and the seal that ends a segment.
//!
//! Version 1 (written before 2026-12; still read, never written):
//!
//! ```text
//! 0   8  "TERNSEG1"
//! 8  15  queue id (ASCII)
//! 23  1  0
//! 24  4  message file length, u32 LE
//! 28  4  CRC-32C of bytes 0..28, u32 LE
//! ```
//!
//! Version 2 (written now), 64 bytes:
//!
//! ```text
//! 0   8  "TERNSEG2"
//! 8   1  kind: 1 record, 2 seal
//! 9   3  0
//! 12 15  record: the message's queue id; seal: the segment's own id (ASCII)
//! 27  1  0
//! 28  4  record: message file length, u32 LE; seal: 0
//! 32  8  offset of this frame in its segment, u64 LE
//! 40 16  MAC: keyed BLAKE3 (the spool key, `key`) of the segment id, bytes 0..40 and
//!        the BLAKE3 digest of the message file (of nothing, for a seal); first 16 bytes
//! 56  4  0
//! 60  4  CRC-32C of bytes 0..60, u32 LE
//! ```
//!
//! A seal is written at the end of a segment that takes no more appends: when it
//! reaches its size limit, at a clean stop, and by recovery for every segment it keeps.
//! Nothing is ever written after a seal.
//!
//! Trust: a frame is decoded from bytes on disk or from bytes a client sent (inside a
//! message body): the CRC only catches accidents, the offset and segment id only
//! catch misplaced copies. Only a MAC that verifies under this spool's key shows a
//! frame is Tern's own.

use crate::format;
use crate::id::QueueId;
use crate::store::key::{MAC_LEN, SpoolKey};

/// Magic of a version-1 frame.
pub(crate) const V1_MAGIC: [u8; 8] = *b"TERNSEG1";
/// Bytes in a version-1 frame.
pub(crate) const V1_LEN: usize = 32;
/// Magic of a version-2 frame.
pub(crate) const V2_MAGIC: [u8; 8] = *b"TERNSEG2";
/// Bytes in a version-2 frame.
pub(crate) const V2_LEN: usize = 64;
/// The longest frame.
pub(crate) const MAX_FRAME_LEN: usize = V2_LEN;
/// The bytes all frame magics start with (to search for frames quickly).
pub(crate) const MAGIC_STEM: &[u8; 7] = b"TERNSEG";

const KIND_RECORD: u8 = 1;
const KIND_SEAL: u8 = 2;
/// Bytes of a version-2 frame covered by its MAC (with the segment id and the file).
const MAC_COVERS: usize = 40;

/// Largest message file a record may hold: a message that stayed in memory
/// (`MessageWriter::BUFFER_LIMIT`) and the largest envelope, with header and trailer.
pub(crate) const MAX_BLOB: u64 = 256 * 1024 + format::MAX_ENVELOPE_LEN + format::MIN_FILE_LEN;

/// A decoded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame {
    /// The start of a record: message `id`, whose file of `len` bytes follows the frame.
    Record {
        /// The message.
        id: QueueId,
        /// Length of its message file.
        len: u32,
        /// 1 or 2.
        version: u8,
    },
    /// The seal: the segment ends here.
    Seal,
}

impl Frame {
    /// Bytes the frame itself takes.
    pub(crate) fn len(self) -> u64 {
        match self {
            Frame::Record { version: 1, .. } => V1_LEN as u64,
            _ => V2_LEN as u64,
        }
    }
}

/// The digest of a message file that a frame's MAC covers (BLAKE3, unkeyed: computed by
/// the session that wrote the file, off the commit thread).
pub(crate) type Digest = [u8; 32];

/// [`Digest`] of `blob`.
pub(crate) fn digest(blob: &[u8]) -> Digest {
    *blake3::hash(blob).as_bytes()
}

/// The version-2 frame for a record of message `id` whose file is `blob`, at offset `at`
/// of segment `seg`.
pub(crate) fn encode_record(
    seg: QueueId,
    at: u64,
    id: QueueId,
    blob: &[u8],
    key: &SpoolKey,
) -> [u8; V2_LEN] {
    let len = u32::try_from(blob.len()).unwrap_or(u32::MAX);
    encode_v2(seg, at, KIND_RECORD, id, len, &digest(blob), key)
}

/// [`encode_record`] with the file's digest already computed: what the commit thread
/// does (a constant cost per record, whatever its size).
pub(crate) fn encode_record_with(
    seg: QueueId,
    at: u64,
    id: QueueId,
    len: u32,
    digest: &Digest,
    key: &SpoolKey,
) -> [u8; V2_LEN] {
    encode_v2(seg, at, KIND_RECORD, id, len, digest, key)
}

/// The seal of segment `seg`, at offset `at` (its records end there).
pub(crate) fn encode_seal(seg: QueueId, at: u64, key: &SpoolKey) -> [u8; V2_LEN] {
    encode_v2(seg, at, KIND_SEAL, seg, 0, &digest(&[]), key)
}

fn encode_v2(
    seg: QueueId,
    at: u64,
    kind: u8,
    id: QueueId,
    len: u32,
    digest: &Digest,
    key: &SpoolKey,
) -> [u8; V2_LEN] {
    let mut f = [0u8; V2_LEN];
    f[..8].copy_from_slice(&V2_MAGIC);
    f[8] = kind;
    f[12..27].copy_from_slice(id.to_string().as_bytes());
    f[28..32].copy_from_slice(&len.to_le_bytes());
    f[32..40].copy_from_slice(&at.to_le_bytes());
    let seg_text = seg.to_string();
    let mac = key.mac(&[seg_text.as_bytes(), &f[..MAC_COVERS], digest]);
    f[40..40 + MAC_LEN].copy_from_slice(&mac);
    let crc = crc32c::crc32c(&f[..60]);
    f[60..].copy_from_slice(&crc.to_le_bytes());
    f
}

/// The version-1 frame for a record of `blob_len` bytes (tests: segments written by
/// earlier versions).
#[cfg(test)]
pub(crate) fn encode_v1(id: QueueId, blob_len: u32) -> [u8; V1_LEN] {
    let mut f = [0u8; V1_LEN];
    f[..8].copy_from_slice(&V1_MAGIC);
    f[8..23].copy_from_slice(id.to_string().as_bytes());
    f[24..28].copy_from_slice(&blob_len.to_le_bytes());
    let crc = crc32c::crc32c(&f[..28]);
    f[28..].copy_from_slice(&crc.to_le_bytes());
    f
}

/// Decodes the frame at the start of `bytes`, found at offset `at` of segment `seg`;
/// `None` when these bytes are not a frame there (bad magic, CRC, reserved bytes, a
/// length a record may not have, a version-2 frame that says it is elsewhere or a seal
/// of another segment).
pub(crate) fn decode(bytes: &[u8], seg: QueueId, at: u64) -> Option<Frame> {
    match bytes.get(..8)? {
        m if m == V1_MAGIC => decode_v1(bytes),
        m if m == V2_MAGIC => decode_v2(bytes, seg, at),
        _ => None,
    }
}

fn le32(b: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

fn id_at(b: &[u8]) -> Option<QueueId> {
    QueueId::parse(std::str::from_utf8(b).ok()?).ok()
}

fn blob_len_ok(len: u32) -> bool {
    u64::from(len) <= MAX_BLOB && u64::from(len) >= format::MIN_FILE_LEN
}

fn decode_v1(bytes: &[u8]) -> Option<Frame> {
    let f = bytes.get(..V1_LEN)?;
    if f.get(23) != Some(&0) || crc32c::crc32c(f.get(..28)?) != le32(f.get(28..32)?)? {
        return None;
    }
    let id = id_at(f.get(8..23)?)?;
    let len = le32(f.get(24..28)?)?;
    blob_len_ok(len).then_some(Frame::Record {
        id,
        len,
        version: 1,
    })
}

fn decode_v2(bytes: &[u8], seg: QueueId, at: u64) -> Option<Frame> {
    let f = bytes.get(..V2_LEN)?;
    if crc32c::crc32c(f.get(..60)?) != le32(f.get(60..64)?)? {
        return None;
    }
    let zeros = [f.get(9..12)?, f.get(27..28)?, f.get(56..60)?];
    if zeros.iter().any(|z| z.iter().any(|b| *b != 0)) {
        return None;
    }
    if u64::from_le_bytes(f.get(32..40)?.try_into().ok()?) != at {
        return None;
    }
    let id = id_at(f.get(12..27)?)?;
    let len = le32(f.get(28..32)?)?;
    match *f.get(8)? {
        KIND_RECORD if blob_len_ok(len) => Some(Frame::Record {
            id,
            len,
            version: 2,
        }),
        KIND_SEAL if len == 0 && id == seg => Some(Frame::Seal),
        _ => None,
    }
}

/// Whether the version-2 frame `raw` (as decoded by [`decode`] for segment `seg`) carries
/// a MAC that verifies under `key` for the message file `blob` (empty for a seal).
/// Version-1 frames have none.
pub(crate) fn authentic(raw: &[u8], seg: QueueId, blob: &[u8], key: &SpoolKey) -> bool {
    let (Some(head), Some(tag)) = (raw.get(..MAC_COVERS), raw.get(40..40 + MAC_LEN)) else {
        return false;
    };
    raw.get(..8) == Some(V2_MAGIC.as_slice())
        && key.verify(&[seg.to_string().as_bytes(), head, &digest(blob)], tag)
}

/// Whether `bytes` (fewer than a whole frame) could be the start of a frame: a write cut
/// short inside a frame.
pub(crate) fn is_frame_prefix(bytes: &[u8]) -> bool {
    [(&V1_MAGIC, V1_LEN), (&V2_MAGIC, V2_LEN)]
        .iter()
        .any(|(magic, len)| {
            let n = bytes.len().min(magic.len());
            bytes.len() < *len && bytes.get(..n) == magic.get(..n)
        })
}
