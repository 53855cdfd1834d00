//! Entry point for the `downgrade_8bit` fuzz target and the property tests that run
//! the same check in CI (`tests/properties.rs`). Not a stable API.
//!
//! The check: [`crate::downgrade`] never panics; when it converts, the copy is 7-bit,
//! at most 5 times the input plus 128 octets per encoded part (the fields a part may
//! gain), and converting the copy again changes nothing. The streaming form
//! ([`crate::downgrade_pieces`], fed in pieces of 1, 7, 4096 octets and whole) gives the
//! same answer: the same copy, the same counts, or an error when the other errs.

use crate::{Limits, Source, downgrade, downgrade_pieces, is_7bit};

/// Piece sizes the streaming form is fed in (`0`: the whole input at once).
pub const PIECES: [usize; 4] = [1, 7, 4096, 0];

/// Panics unless the streaming downgrade of `content`, in every size of [`PIECES`],
/// gives what the whole-buffer one gives.
pub fn check_streaming(content: &[u8], source: Source, limits: &Limits) {
    let whole = downgrade(content, source, limits);
    for piece in PIECES {
        let piece = if piece == 0 { content.len() } else { piece };
        let streamed = downgrade_pieces(content, source, limits, piece);
        match (&whole, &streamed) {
            (Ok(d), Ok(s)) => {
                let (bytes, parts, fields) = match s {
                    Some((out, parts, fields)) => (out.as_slice(), *parts, *fields),
                    None => (content, 0, 0),
                };
                assert!(
                    bytes == &*d.content,
                    "streaming in pieces of {piece} gave another copy:\n{:?}\n{:?}",
                    String::from_utf8_lossy(bytes),
                    String::from_utf8_lossy(&d.content)
                );
                assert_eq!(
                    (parts, fields),
                    (d.parts_encoded, d.fields_encoded),
                    "counts, pieces of {piece}"
                );
            }
            (Err(_), Err(_)) => {}
            _ => panic!("pieces of {piece}: streaming {streamed:?}, whole {whole:?}"),
        }
    }
}

/// Small limits, so that inputs of a few kilobytes reach them.
pub const FUZZ_LIMITS: Limits = Limits {
    max_depth: 20,
    max_parts: 500,
};

/// Converts `data` (its first octet, when odd, selects [`Source::Binary`] for the rest)
/// and panics if the result breaks a promise of the crate. Returns whether it converted
/// (`false`: refused with an error, which is fine).
pub fn downgrade_arbitrary(data: &[u8]) -> bool {
    let (source, content) = match data.split_first() {
        Some((first, rest)) if first & 1 == 1 => (Source::Binary, rest),
        _ => (Source::EightBit, data),
    };
    check(content, source, &FUZZ_LIMITS)
}

/// The check itself, for a given source and limits.
pub fn check(content: &[u8], source: Source, limits: &Limits) -> bool {
    check_streaming(content, source, limits);
    let Ok(d) = downgrade(content, source, limits) else {
        return false;
    };
    assert!(is_7bit(&d.content), "8-bit octet in the converted copy");
    let bound = content
        .len()
        .saturating_mul(5)
        .saturating_add(128usize.saturating_mul(d.parts_encoded.saturating_add(1)));
    assert!(
        d.content.len() <= bound,
        "copy of {} octets from {} (bound {bound})",
        d.content.len(),
        content.len()
    );
    if source == Source::EightBit {
        let again = downgrade(&d.content, Source::EightBit, limits);
        assert!(
            matches!(&again, Ok(a) if a.content == d.content),
            "converting the copy again changed it: {again:?}"
        );
    }
    true
}
