//! The segment codec and scanner on bytes in memory.

use proptest::prelude::*;

use super::*;
use crate::testutil::envelope;

/// A valid message file for a new id, with `n` content bytes.
fn blob(n: usize) -> (QueueId, Vec<u8>) {
    let id = QueueId::generate();
    let content: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    let env = envelope(id, n as u64, 1);
    let file = format::encode(&content, &env).unwrap_or_else(|e| panic!("{e}"));
    (id, file)
}

fn record(id: QueueId, file: &[u8]) -> Vec<u8> {
    let mut r = encode_frame(id, u32::try_from(file.len()).unwrap_or(0)).to_vec();
    r.extend_from_slice(file);
    r
}

fn scan_bytes(bytes: &[u8]) -> Vec<Found> {
    let mut read_at = |at: u64, buf: &mut [u8]| -> io::Result<()> {
        let at = usize::try_from(at).map_err(io::Error::other)?;
        let src = bytes
            .get(at..at + buf.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    };
    scan(&mut read_at, bytes.len() as u64).unwrap_or_else(|e| panic!("{e}"))
}

fn segment_of(n: usize) -> (Vec<QueueId>, Vec<u8>) {
    let mut ids = Vec::new();
    let mut seg = Vec::new();
    for i in 0..n {
        let (id, file) = blob(100 + i * 37);
        seg.extend_from_slice(&record(id, &file));
        ids.push(id);
    }
    (ids, seg)
}

fn record_ids(found: &[Found]) -> Vec<QueueId> {
    found
        .iter()
        .filter_map(|f| match f {
            Found::Record { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

#[test]
fn a_frame_round_trips_and_any_changed_byte_is_refused() {
    let id = QueueId::generate();
    let f = encode_frame(id, 4096);
    assert_eq!(decode_frame(&f), Some((id, 4096)));
    for i in 0..FRAME_LEN {
        let mut bad = f;
        bad[i] ^= 0x01;
        assert_eq!(decode_frame(&bad), None, "byte {i} changed");
    }
    // Lengths outside what a record may hold are refused even with a good checksum.
    assert_eq!(decode_frame(&encode_frame(id, 10)), None);
    let huge = u32::try_from(MAX_BLOB + 1).unwrap_or(u32::MAX);
    assert_eq!(decode_frame(&encode_frame(id, huge)), None);
}

#[test]
fn a_whole_segment_scans_to_its_records_in_order() {
    let (ids, seg) = segment_of(5);
    let found = scan_bytes(&seg);
    assert_eq!(record_ids(&found), ids);
    assert_eq!(found.len(), 5);
    // Each record's location holds exactly its message file.
    for f in &found {
        let Found::Record { id, blob_at, len } = f else {
            unreachable!()
        };
        let at = usize::try_from(*blob_at).unwrap_or(0);
        let file = &seg[at..at + usize::try_from(*len).unwrap_or(0)];
        assert!(format::decode(file, Some(*id)).is_ok());
    }
    assert!(scan_bytes(&[]).is_empty());
}

#[test]
fn a_write_cut_anywhere_in_the_last_record_is_unfinished() {
    let (ids, seg) = segment_of(3);
    let (_, last) = blob(500);
    let last_id = QueueId::generate();
    let whole = [seg.clone(), record(last_id, &last)].concat();
    for cut in (seg.len() + 1)..whole.len() {
        let found = scan_bytes(&whole[..cut]);
        assert_eq!(record_ids(&found), ids, "cut at {cut}");
        assert_eq!(
            found.last(),
            Some(&Found::Unfinished {
                at: seg.len() as u64
            }),
            "cut at {cut}"
        );
    }
}

#[test]
fn a_zeroed_tail_is_unfinished() {
    let (ids, mut seg) = segment_of(2);
    let at = seg.len() as u64;
    seg.extend_from_slice(&[0u8; 9000]);
    let found = scan_bytes(&seg);
    assert_eq!(record_ids(&found), ids);
    assert_eq!(found.last(), Some(&Found::Unfinished { at }));
}

#[test]
fn damage_in_the_middle_is_reported_and_the_records_after_it_are_found() {
    let (ids, mut seg) = segment_of(4);
    let first_len = FRAME_LEN + blob_len(&seg, 0);
    // Break the second record's content: its frame is fine, its file fails its CRC.
    let second_content = first_len + FRAME_LEN + format::HEADER_LEN + 3;
    seg[second_content] ^= 0xff;
    let found = scan_bytes(&seg);
    assert_eq!(record_ids(&found), [ids[0], ids[2], ids[3]]);
    assert!(matches!(
        found[1],
        Found::Damaged { at, .. } if at == first_len as u64
    ));
    // Break the third record's frame: the scan searches past it to the fourth.
    let (ids, mut seg) = segment_of(4);
    let third = FRAME_LEN * 2 + blob_len(&seg, 0) + blob_len(&seg, 1);
    seg[third + 2] ^= 0xff;
    let found = scan_bytes(&seg);
    assert_eq!(record_ids(&found), [ids[0], ids[1], ids[3]]);
    assert!(matches!(found[2], Found::Damaged { at, .. } if at == third as u64));
}

#[test]
fn garbage_at_the_end_is_damage_not_an_unfinished_write() {
    let (ids, mut seg) = segment_of(2);
    let at = seg.len() as u64;
    seg.extend_from_slice(b"this is not a record at all, and it is long enough");
    let found = scan_bytes(&seg);
    assert_eq!(record_ids(&found), ids);
    assert!(matches!(found.last(), Some(Found::Damaged { at: a, .. }) if *a == at));
}

/// Length of the `i`-th record's file in a segment built by `segment_of`.
fn blob_len(seg: &[u8], i: usize) -> usize {
    let mut at = 0;
    for _ in 0..i {
        let (_, len) = decode_frame(&seg[at..]).unwrap_or_else(|| panic!("frame at {at}"));
        at += FRAME_LEN + len as usize;
    }
    let (_, len) = decode_frame(&seg[at..]).unwrap_or_else(|| panic!("frame at {at}"));
    len as usize
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever bytes are changed, the scan never panics, never reports a record that
    /// fails validation, and accounts for every byte exactly once, in order.
    #[test]
    fn any_damage_is_accounted_for(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let (_, mut seg) = segment_of(4);
        for (i, x) in &flips {
            let i = i.index(seg.len());
            seg[i] ^= x;
        }
        let end = cut.index(seg.len() + 1);
        let bytes = &seg[..end];
        let found = scan_bytes(bytes);
        let mut at = 0u64;
        for f in &found {
            match f {
                Found::Record { id, blob_at, len } => {
                    prop_assert_eq!(*blob_at, at + FRAME_LEN as u64);
                    let s = usize::try_from(*blob_at).unwrap_or(0);
                    let file = &bytes[s..s + usize::try_from(*len).unwrap_or(0)];
                    prop_assert!(format::decode(file, Some(*id)).is_ok());
                    at = blob_at + len;
                }
                Found::Damaged { at: a, len, .. } => {
                    prop_assert_eq!(*a, at);
                    prop_assert!(*len > 0);
                    at += len;
                }
                Found::Unfinished { at: a } => {
                    prop_assert_eq!(*a, at);
                    at = bytes.len() as u64;
                }
            }
        }
        prop_assert_eq!(at, bytes.len() as u64);
    }
}
