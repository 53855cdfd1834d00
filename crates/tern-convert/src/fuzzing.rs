//! Entry point for the `downgrade_8bit` fuzz target and the property tests that run
//! the same check in CI (`tests/properties.rs`). Not a stable API.
//!
//! The check: [`crate::downgrade`] never panics; when it converts, the copy is 7-bit,
//! at most 5 times the input plus 128 octets per encoded part (the fields a part may
//! gain), and converting the copy again changes nothing.

use crate::{Limits, Source, downgrade, is_7bit};

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
