//! Streaming checks for BDAT content (RFC 3030 CHUNKING).
//!
//! BDAT content has no dot-stuffing and no end-of-data marker: the client says how many
//! octets follow, and the message ends with `BDAT n LAST`. It must still be the same kind
//! of text as DATA content, so [`BdatDecoder`] applies the same rules as
//! [`crate::DataDecoder`], minus the dot handling:
//!
//! - lines longer than `max_line` octets (CRLF excluded) make the message
//!   [`DataProblem::LineTooLong`];
//! - a CR or LF that is not part of a CRLF pair is a bare line ending, handled by
//!   [`BareLinePolicy`]: `Normalize` stores it as CRLF, `Reject` makes the message
//!   [`DataProblem::BareLineEnding`];
//! - more than `max_size` octets received make it [`DataProblem::TooBig`]. The size
//!   counts what the client sent (the octets of the chunks, as RFC 1870 and RFC 3030 count
//!   them), not what is stored: normalising a bare LF adds one stored octet.
//!
//! Invariants:
//! - The state is carried across calls, so chunk boundaries (and the reads inside a
//!   chunk) never change the result: a CR ending one chunk and an LF starting the next
//!   are one CRLF. A CR still pending when the message ends is a bare CR
//!   ([`BdatDecoder::finish`]).
//! - Well-formed content (every line ending a CRLF, every line within the limit) is
//!   appended to the output byte for byte.
//! - Nothing past the point of the first problem is appended (the output is the same
//!   however the input was cut, problems included); the caller keeps reading the chunks
//!   it was promised so the session stays in sync, then refuses the message once.
//!
//! Trust: input is untrusted; no panics, and the output grows by at most twice the input.

use crate::data::{BareLinePolicy, DataLimits, DataProblem};

/// Decodes the content of one message sent with BDAT, chunk after chunk.
#[derive(Debug, Clone)]
pub struct BdatDecoder {
    limits: DataLimits,
    /// The last octet seen was a CR whose LF has not arrived yet (it may start the next
    /// read or chunk).
    pending_cr: bool,
    /// Octets of the current line so far, its line ending excluded.
    line_len: usize,
    /// Octets received, whatever was kept.
    received: u64,
    problem: Option<DataProblem>,
}

impl BdatDecoder {
    /// A decoder at the start of a message.
    pub fn new(limits: DataLimits) -> BdatDecoder {
        BdatDecoder {
            limits,
            pending_cr: false,
            line_len: 0,
            received: 0,
            problem: None,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &DataLimits {
        &self.limits
    }

    /// The first problem found, if any.
    pub fn problem(&self) -> Option<DataProblem> {
        self.problem
    }

    /// Octets received so far (what counts against the size limit).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Checks the next `input` octets of content and appends what is to be stored to
    /// `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        // Only what fits under the size limit is looked at, so where the input was cut
        // never changes the output.
        let room = self.limits.max_size.saturating_sub(self.received);
        let within = usize::try_from(room).unwrap_or(usize::MAX).min(input.len());
        self.received = self.received.saturating_add(input.len() as u64);
        self.check(input.get(..within).unwrap_or_default(), out);
        if self.received > self.limits.max_size {
            self.fail(DataProblem::TooBig);
        }
    }

    fn check(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut rest = input;
        // Nothing is kept after a problem (a pending CR no longer matters either).
        while !rest.is_empty() && self.problem.is_none() {
            if self.pending_cr {
                self.pending_cr = false;
                match rest.strip_prefix(b"\n") {
                    Some(tail) => {
                        self.end_line(out);
                        rest = tail;
                    }
                    None => self.bare(out),
                }
                continue;
            }
            // Copy up to the next CR or LF in one go.
            let n = rest
                .iter()
                .position(|&b| b == b'\r' || b == b'\n')
                .unwrap_or(rest.len());
            let (text, after) = rest.split_at(n);
            self.line_bytes(text, out);
            rest = after;
            if self.problem.is_some() {
                break;
            }
            if let Some((&b, tail)) = rest.split_first() {
                rest = tail;
                if b == b'\r' {
                    self.pending_cr = true;
                } else {
                    // A bare LF.
                    self.bare(out);
                }
            }
        }
        if self.problem.is_some() {
            self.pending_cr = false;
        }
    }

    /// The message ended (`BDAT … LAST` was read in full): a CR still waiting for its LF
    /// is a bare CR.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr && self.problem.is_none() {
            self.bare(out);
        }
        self.pending_cr = false;
    }

    fn line_bytes(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        // What fits in the line is kept either way, so where the input was cut never
        // changes the output.
        let room = self.limits.max_line.saturating_sub(self.line_len);
        out.extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
        self.line_len = self.line_len.saturating_add(bytes.len());
        if self.line_len > self.limits.max_line {
            self.fail(DataProblem::LineTooLong);
        }
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        self.line_len = 0;
        out.extend_from_slice(b"\r\n");
    }

    /// A CR or LF that is not part of a CRLF pair.
    fn bare(&mut self, out: &mut Vec<u8>) {
        match self.limits.bare {
            BareLinePolicy::Reject => self.fail(DataProblem::BareLineEnding),
            BareLinePolicy::Normalize => self.end_line(out),
        }
    }

    fn fail(&mut self, p: DataProblem) {
        if self.problem.is_none() {
            self.problem = Some(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: DataLimits = DataLimits {
        max_size: 1 << 20,
        max_line: 1000,
        bare: BareLinePolicy::Normalize,
    };

    fn decode(chunks: &[&[u8]], limits: DataLimits) -> (Vec<u8>, Option<DataProblem>) {
        let mut d = BdatDecoder::new(limits);
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, &mut out);
        }
        d.finish(&mut out);
        (out, d.problem())
    }

    #[test]
    fn well_formed_content_is_kept_byte_for_byte() {
        let content =
            b"Subject: x\r\n\r\n.\r\n..two dots\r\n\x00 nul and 8-bit \xc3\xa9\r\nno final CRLF";
        assert_eq!(decode(&[content], LIMITS), (content.to_vec(), None));
    }

    #[test]
    fn crlf_split_across_chunks_is_one_line_ending() {
        let (out, problem) = decode(&[b"line one\r", b"\nline two\r\n"], LIMITS);
        assert_eq!(out, b"line one\r\nline two\r\n");
        assert_eq!(problem, None);
        let reject = DataLimits {
            bare: BareLinePolicy::Reject,
            ..LIMITS
        };
        assert_eq!(decode(&[b"a\r", b"\nb\r\n"], reject).1, None);
    }

    #[test]
    fn bare_line_endings_are_normalised() {
        let (out, problem) = decode(&[b"a\nb\rc\r\r\nd\n\ne\r"], LIMITS);
        assert_eq!(out, b"a\r\nb\r\nc\r\n\r\nd\r\n\r\ne\r\n");
        assert_eq!(problem, None);
        // A CR ending a chunk followed by something else than LF is bare.
        let (out, _) = decode(&[b"a\r", b"b\r\n"], LIMITS);
        assert_eq!(out, b"a\r\nb\r\n");
    }

    #[test]
    fn bare_line_endings_are_refused_under_reject() {
        let reject = DataLimits {
            bare: BareLinePolicy::Reject,
            ..LIMITS
        };
        for chunks in [
            &[&b"a\nb\r\n"[..]][..],
            &[b"a\rb\r\n"],
            &[b"a\r", b"b\r\n"],
            &[b"a\r\n", b"\n"],
            &[b"ends with CR\r"],
        ] {
            assert_eq!(
                decode(chunks, reject).1,
                Some(DataProblem::BareLineEnding),
                "{chunks:?}"
            );
        }
    }

    #[test]
    fn line_limit_counts_across_chunks() {
        let limits = DataLimits {
            max_line: 4,
            ..LIMITS
        };
        assert_eq!(decode(&[b"ab", b"cd\r\n"], limits).1, None);
        assert_eq!(
            decode(&[b"ab", b"cde\r\n"], limits).1,
            Some(DataProblem::LineTooLong)
        );
        // The count restarts after every line ending, bare ones included.
        assert_eq!(decode(&[b"abcd\nabcd\r\nabcd"], limits).1, None);
    }

    #[test]
    fn size_counts_octets_received() {
        let limits = DataLimits {
            max_size: 7,
            ..LIMITS
        };
        // Seven octets received, eight stored after normalisation: within the limit.
        let (out, problem) = decode(&[b"ab\ncd\r\n"], limits);
        assert_eq!(problem, None);
        assert_eq!(out, b"ab\r\ncd\r\n");
        let mut d = BdatDecoder::new(limits);
        let mut out = Vec::new();
        d.feed(b"abc", &mut out);
        d.feed(b"defgh", &mut out);
        assert_eq!(d.problem(), Some(DataProblem::TooBig));
        assert_eq!(d.received(), 8);
        assert_eq!(out, b"abcdefg");
    }

    #[test]
    fn nothing_is_kept_after_a_problem() {
        let limits = DataLimits {
            max_line: 3,
            ..LIMITS
        };
        let (out, problem) = decode(&[b"ab\r\nabcdef\r\nxy\r\n"], limits);
        assert_eq!(problem, Some(DataProblem::LineTooLong));
        assert_eq!(out, b"ab\r\nabc");
    }

    proptest! {
        /// Any split of the content into chunks and reads gives the result of one piece.
        #[test]
        fn chunking_does_not_matter(
            body in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a')], 0..300),
            split in 1usize..20,
            reject in any::<bool>(),
        ) {
            let limits = DataLimits {
                bare: if reject { BareLinePolicy::Reject } else { BareLinePolicy::Normalize },
                max_line: 7,
                ..LIMITS
            };
            let whole = decode(&[&body], limits);
            let pieces: Vec<&[u8]> = body.chunks(split).collect();
            prop_assert_eq!(&whole, &decode(&pieces, limits));
            let small = DataLimits { max_size: 100, ..limits };
            prop_assert_eq!(decode(&[&body], small), decode(&pieces, small));
        }

        /// Normalised output has only CRLF line endings, no over-long line, and at most
        /// twice the input.
        #[test]
        fn normalised_output_is_clean(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let (out, problem) = decode(&[&body], DataLimits { max_line: 50, ..LIMITS });
            prop_assert!(out.len() <= body.len() * 2);
            if problem.is_none() {
                for (i, &b) in out.iter().enumerate() {
                    if b == b'\n' { prop_assert!(i > 0 && out[i - 1] == b'\r'); }
                    if b == b'\r' { prop_assert_eq!(out.get(i + 1), Some(&b'\n')); }
                }
                for line in out.split(|&b| b == b'\n') {
                    prop_assert!(line.len() <= 51);
                }
            }
        }
    }
}
