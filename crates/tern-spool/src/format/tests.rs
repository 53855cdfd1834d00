//! Tests of the pure codec: round trips, every rejection rule, and properties over
//! arbitrary content, envelopes and bytes.

use proptest::prelude::*;

use super::*;
use crate::testutil::{arb_envelope, envelope, reseal};

fn sample(content: &[u8]) -> (QueueId, Vec<u8>) {
    let id = QueueId::generate();
    let env = envelope(id, content.len() as u64, 2);
    let file = encode(content, &env).unwrap_or_default();
    (id, file)
}

fn set_u16(file: &mut [u8], at: usize, v: u16) {
    if let Some(s) = file.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

#[test]
fn round_trip_keeps_content_and_envelope() {
    let content = b"Received: by test\r\n\r\nhello\r\n".to_vec();
    let (id, file) = sample(&content);
    assert_eq!(
        file.len(),
        HEADER_LEN + content.len() + TRAILER_LEN + {
            let t = decode_trailer(&file[file.len() - TRAILER_LEN..], file.len() as u64);
            t.map(|t| t.envelope_len as usize).unwrap_or(0)
        }
    );
    let d = decode(&file, Some(id)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.content, &content[..]);
    assert_eq!(d.envelope, envelope(id, content.len() as u64, 2));
}

#[test]
fn empty_content_is_valid() {
    let (id, file) = sample(b"");
    assert!(decode(&file, Some(id)).is_ok());
}

#[test]
fn header_rules() {
    let (id, file) = sample(b"x");
    let mut f = file.clone();
    f[0] = b'X';
    assert_eq!(decode(&f, Some(id)), Err(CorruptReason::BadMagic));

    let mut f = file.clone();
    set_u16(&mut f, 8, 2);
    let tl = f.len() - TRAILER_LEN;
    set_u16(&mut f, tl + 8, 2);
    reseal(&mut f);
    assert_eq!(
        decode(&f, Some(id)),
        Err(CorruptReason::UnsupportedVersion(2))
    );

    let mut f = file.clone();
    f[12] ^= 1;
    assert_eq!(
        decode(&f, Some(id)),
        Err(CorruptReason::ChecksumMismatch {
            section: Section::Header
        })
    );

    let mut f = file.clone();
    set_u16(&mut f, 10, 4);
    reseal(&mut f);
    assert_eq!(
        decode(&f, Some(id)),
        Err(CorruptReason::UnsupportedFlags(4))
    );
}

#[test]
fn trailer_rules() {
    let (id, file) = sample(b"some content");
    let tl = file.len() - TRAILER_LEN;

    let mut f = file.clone();
    f[tl] = 0;
    assert_eq!(decode(&f, Some(id)), Err(CorruptReason::MissingTrailer));

    let mut f = file.clone();
    f[tl + 30] ^= 0x40;
    assert_eq!(
        decode(&f, Some(id)),
        Err(CorruptReason::ChecksumMismatch {
            section: Section::Trailer
        })
    );

    // A self-consistent trailer claiming a longer content section.
    let mut f = file.clone();
    let clen = u64::from_le_bytes(f[tl + 24..tl + 32].try_into().unwrap_or([0; 8]));
    f[tl + 24..tl + 32].copy_from_slice(&(clen + 1).to_le_bytes());
    reseal(&mut f);
    assert!(matches!(
        decode(&f, Some(id)),
        Err(CorruptReason::LengthMismatch(_))
    ));

    // Huge lengths must be rejected by checked arithmetic, not overflow.
    let mut f = file.clone();
    f[tl + 24..tl + 32].copy_from_slice(&u64::MAX.to_le_bytes());
    reseal(&mut f);
    assert!(matches!(
        decode(&f, Some(id)),
        Err(CorruptReason::LengthMismatch(_))
    ));

    let mut f = file.clone();
    f[tl + 40..tl + 48].copy_from_slice(&(MAX_ENVELOPE_LEN + 1).to_le_bytes());
    reseal(&mut f);
    assert_eq!(
        decode(&f, Some(id)),
        Err(CorruptReason::EnvelopeTooLarge(MAX_ENVELOPE_LEN + 1))
    );
}

#[test]
fn section_checksums() {
    let (id, file) = sample(b"0123456789");
    let mut f = file.clone();
    f[HEADER_LEN + 3] ^= 1;
    assert_eq!(
        decode(&f, Some(id)),
        Err(CorruptReason::ChecksumMismatch {
            section: Section::Content
        })
    );
    let mut f = file.clone();
    f[HEADER_LEN + 10 + 5] ^= 1;
    assert_eq!(
        decode(&f, Some(id)),
        Err(CorruptReason::ChecksumMismatch {
            section: Section::Envelope
        })
    );
}

#[test]
fn envelope_rules() {
    let id = QueueId::generate();
    let other = QueueId::generate();
    let file = encode(b"abc", &envelope(id, 3, 1)).unwrap_or_default();
    assert!(matches!(
        decode(&file, Some(other)),
        Err(CorruptReason::BadEnvelope(EnvelopeError::IdMismatch { .. }))
    ));

    // A well-sealed file whose envelope section is not JSON.
    let junk = b"{not json";
    let t = Trailer {
        version: VERSION,
        flags: 0,
        content_crc: crc32c::crc32c(b"abc"),
        content_offset: 16,
        content_len: 3,
        envelope_offset: 19,
        envelope_len: junk.len() as u64,
        envelope_crc: crc32c::crc32c(junk),
    };
    let mut f = encode_header().to_vec();
    f.extend_from_slice(b"abc");
    f.extend_from_slice(junk);
    f.extend_from_slice(&encode_trailer(&t));
    assert!(matches!(
        decode(&f, Some(id)),
        Err(CorruptReason::BadJson(_))
    ));

    // Valid JSON whose size field lies.
    let mut env = envelope(id, 3, 1);
    env.size = 4;
    let json = serde_json::to_vec(&env).unwrap_or_default();
    let t = Trailer {
        envelope_len: json.len() as u64,
        envelope_crc: crc32c::crc32c(&json),
        ..t
    };
    let mut f = encode_header().to_vec();
    f.extend_from_slice(b"abc");
    f.extend_from_slice(&json);
    f.extend_from_slice(&encode_trailer(&t));
    assert_eq!(
        decode(&f, Some(id)),
        Err(CorruptReason::EnvelopeSizeMismatch {
            envelope: 4,
            content: 3
        })
    );
}

#[test]
fn encoder_refuses_what_the_decoder_would_reject() {
    let id = QueueId::generate();
    assert_eq!(
        encode(b"abc", &envelope(id, 2, 1)),
        Err(EncodeError::SizeMismatch {
            envelope: 2,
            content: 3
        })
    );
    let mut env = envelope(id, 3, 1);
    env.recipients.clear();
    assert!(matches!(
        encode(b"abc", &env),
        Err(EncodeError::InvalidEnvelope(_))
    ));
    env.recipients = envelope(id, 3, 1).recipients;
    env.sender = "a\nb".into();
    assert!(matches!(
        encode(b"abc", &env),
        Err(EncodeError::InvalidEnvelope(_))
    ));
}

#[test]
fn short_inputs_are_truncated() {
    for n in 0..MIN_FILE_LEN as usize {
        assert_eq!(decode(&vec![0u8; n], None), Err(CorruptReason::Truncated));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn encode_then_decode_round_trips(
        content in proptest::collection::vec(any::<u8>(), 0..4096),
        env in arb_envelope(QueueId::generate(), 0),
    ) {
        let mut env = env;
        env.size = content.len() as u64;
        let file = encode(&content, &env);
        prop_assert!(file.is_ok());
        let file = file.unwrap_or_default();
        let d = decode(&file, Some(env.id));
        prop_assert_eq!(d, Ok(Decoded { envelope: env.clone(), content: &content[..] }));
    }

    #[test]
    fn every_truncation_is_an_error(
        content in proptest::collection::vec(any::<u8>(), 0..512),
        cut in any::<proptest::sample::Index>(),
    ) {
        let (id, file) = sample(&content);
        let cut = cut.index(file.len());
        prop_assert!(decode(&file[..cut], Some(id)).is_err());
        prop_assert!(decode(&file[..cut], None).is_err());
    }

    #[test]
    fn every_single_byte_flip_is_an_error(
        content in proptest::collection::vec(any::<u8>(), 0..512),
        at in any::<proptest::sample::Index>(),
        bit in 0u8..8,
    ) {
        let (id, mut file) = sample(&content);
        let at = at.index(file.len());
        file[at] ^= 1 << bit;
        prop_assert!(decode(&file, Some(id)).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        crate::fuzzing::decode(&data);
    }

    #[test]
    fn arbitrary_bytes_behind_a_valid_trailer_never_panic(
        data in proptest::collection::vec(any::<u8>(), 0..512),
        clen in any::<u64>(), elen in any::<u64>(),
    ) {
        let t = Trailer {
            version: VERSION, flags: 0, content_crc: 0, content_offset: 16,
            content_len: clen, envelope_offset: 16u64.wrapping_add(clen),
            envelope_len: elen, envelope_crc: 0,
        };
        let mut f = encode_header().to_vec();
        f.extend_from_slice(&data);
        f.extend_from_slice(&encode_trailer(&t));
        crate::fuzzing::decode(&f);
        prop_assert!(decode(&f, None).is_err());
    }
}
