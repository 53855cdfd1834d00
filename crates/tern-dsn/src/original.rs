//! The returned original message: cutting out its header section, repairing its line
//! endings, and choosing the transfer encoding it is declared with.
//!
//! Trust: none. The original is whatever a client sent and the spool stored: it may have
//! no header/body separator, bare LF or CR, 8-bit bytes, NULs, or an enormous header
//! section. Every function here is total (no panics, no indexing) and bounded by its input
//! and the caller's cap.
//!
//! Invariant: for an original that already uses CRLF line endings throughout, the bytes
//! returned are byte-identical to the corresponding bytes of the original.

use std::borrow::Cow;

/// The header section of `original`: everything before the first empty line, including
/// the line ending of the last header line but not the empty line itself.
///
/// An empty line is `CRLF` or a bare `LF` at the start of a line. If the original has no
/// empty line, all of it counts as header section. The result is never longer than
/// `cap`: a longer section is cut after the last complete line that fits, or at `cap`
/// exactly when not even one line fits. An original that starts with an empty line has
/// an empty header section.
///
/// Cost: one scan of at most `cap` bytes (plus one line), no allocation.
#[must_use]
pub fn original_headers(original: &[u8], cap: usize) -> &[u8] {
    let mut line_start = 0usize;
    let end = loop {
        let rest = original.get(line_start..).unwrap_or_default();
        if rest.starts_with(b"\r\n") || rest.starts_with(b"\n") {
            break line_start;
        }
        match rest.iter().position(|&byte| byte == b'\n') {
            // `line_start` grows strictly, so the loop ends; once past `cap` the exact end
            // no longer matters because the section is cut below.
            Some(offset) => {
                line_start = line_start.saturating_add(offset).saturating_add(1);
                if line_start > cap {
                    break line_start;
                }
            }
            None => break original.len(),
        }
    };
    if end <= cap {
        return original.get(..end).unwrap_or_default();
    }
    let within = original.get(..cap).unwrap_or_default();
    match within.iter().rposition(|&byte| byte == b'\n') {
        Some(last_newline) => within.get(..=last_newline).unwrap_or_default(),
        None => within,
    }
}

/// `bytes` with every bare LF and bare CR turned into CRLF, as MIME requires of a 7bit or
/// 8bit body (RFC 2045 section 2.7/2.8). Borrowed, and so byte-identical, when there was
/// nothing to repair.
pub(crate) fn crlf_line_endings(bytes: &[u8]) -> Cow<'_, [u8]> {
    if !has_bare_line_ending(bytes) {
        return Cow::Borrowed(bytes);
    }
    let mut repaired = Vec::with_capacity(bytes.len().saturating_add(bytes.len() / 16));
    let mut previous_was_cr = false;
    for &byte in bytes {
        match byte {
            b'\n' if previous_was_cr => repaired.push(b'\n'),
            b'\n' => repaired.extend_from_slice(b"\r\n"),
            _ => {
                if previous_was_cr {
                    // The CR already pushed was bare: complete it.
                    repaired.push(b'\n');
                }
                repaired.push(byte);
            }
        }
        previous_was_cr = byte == b'\r';
    }
    if previous_was_cr {
        repaired.push(b'\n');
    }
    Cow::Owned(repaired)
}

fn has_bare_line_ending(bytes: &[u8]) -> bool {
    let mut previous = None;
    for (position, &byte) in bytes.iter().enumerate() {
        match byte {
            b'\n' if previous != Some(b'\r') => return true,
            b'\r' if bytes.get(position.saturating_add(1)) != Some(&b'\n') => return true,
            _ => {}
        }
        previous = Some(byte);
    }
    false
}

/// The Content-Transfer-Encoding a returned part is declared with: `8bit` when any byte
/// has the high bit set, else `7bit`. NUL bytes and lines longer than 998 octets are not
/// repaired (they are returned as stored); the declaration only covers the high bit.
pub(crate) fn transfer_encoding(bytes: &[u8]) -> &'static str {
    if bytes.iter().any(|&byte| byte >= 0x80) {
        "8bit"
    } else {
        "7bit"
    }
}

/// Whether `needle` occurs anywhere in `haystack` (used to prove a MIME boundary does not
/// occur inside a part).
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, _)) = needle.split_first() else {
        return true;
    };
    let mut from = 0usize;
    while let Some(rest) = haystack.get(from..) {
        let Some(offset) = rest.iter().position(|&byte| byte == first) else {
            return false;
        };
        if rest
            .get(offset..)
            .is_some_and(|tail| tail.starts_with(needle))
        {
            return true;
        }
        from = from.saturating_add(offset).saturating_add(1);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_section_stops_before_the_empty_line() {
        let original = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n";
        assert_eq!(
            original_headers(original, 1024),
            b"From: a@example.com\r\nSubject: hi\r\n"
        );
    }

    #[test]
    fn header_section_with_bare_lf_separator() {
        let original = b"From: a@example.com\nSubject: hi\n\nbody\n";
        assert_eq!(
            original_headers(original, 1024),
            b"From: a@example.com\nSubject: hi\n"
        );
    }

    #[test]
    fn no_separator_means_all_headers() {
        let original = b"From: a@example.com\r\nSubject: hi";
        assert_eq!(original_headers(original, 1024), original);
    }

    #[test]
    fn leading_empty_line_means_no_headers() {
        assert_eq!(original_headers(b"\r\nbody", 1024), b"");
        assert_eq!(original_headers(b"\nbody", 1024), b"");
        assert_eq!(original_headers(b"", 1024), b"");
    }

    #[test]
    fn cap_cuts_after_the_last_whole_line() {
        let original = b"A: 1\r\nB: 2\r\nC: 3\r\n\r\nbody";
        assert_eq!(original_headers(original, 14), b"A: 1\r\nB: 2\r\n");
        assert_eq!(original_headers(original, 12), b"A: 1\r\nB: 2\r\n");
        assert_eq!(original_headers(original, 11), b"A: 1\r\n");
    }

    #[test]
    fn cap_cuts_inside_a_single_enormous_line() {
        let original = vec![b'x'; 100_000];
        assert_eq!(original_headers(&original, 10).len(), 10);
        assert_eq!(original_headers(&original, 0), b"");
    }

    #[test]
    fn crlf_original_is_borrowed_unchanged() {
        let original = b"A: 1\r\n\r\nbody\r\n";
        assert!(matches!(crlf_line_endings(original), Cow::Borrowed(_)));
    }

    #[test]
    fn bare_line_endings_become_crlf() {
        assert_eq!(
            crlf_line_endings(b"a\nb\rc\r\nd\r").as_ref(),
            b"a\r\nb\r\nc\r\nd\r\n"
        );
        assert_eq!(crlf_line_endings(b"\n\n").as_ref(), b"\r\n\r\n");
        assert_eq!(crlf_line_endings(b"\r\r\n").as_ref(), b"\r\n\r\n");
    }

    #[test]
    fn eight_bit_is_detected() {
        assert_eq!(transfer_encoding(b"plain"), "7bit");
        assert_eq!(transfer_encoding(b"caf\xc3\xa9"), "8bit");
        assert_eq!(transfer_encoding(b"\xff"), "8bit");
    }

    #[test]
    fn substring_search() {
        assert!(contains(b"abc--xyz", b"--xyz"));
        assert!(!contains(b"abc--xy", b"--xyz"));
        assert!(contains(b"--", b"--"));
        assert!(!contains(b"", b"-"));
    }
}
