//! Streaming decoder for DATA content (RFC 5321 §4.1.4, §4.5.2).
//!
//! [`DataDecoder::feed`] takes whatever bytes arrived and appends decoded content to the
//! caller's buffer; the caller writes that buffer to the spool as it goes, so a message is
//! never held whole in memory and SIZE is enforced while streaming.
//!
//! Invariants (the SMTP smuggling defences):
//! - Data ends only at `CRLF . CRLF`, where the first CRLF is a real one that ended a
//!   content line (or the start of data). `LF.LF`, `LF.CRLF`, `CRLF.LF`, `CR.CR`,
//!   `CRLF.CR` and every other variant never end the data and never let the bytes after
//!   them be read as commands.
//! - A bare LF or bare CR (one not part of a CRLF pair) is handled by
//!   [`BareLinePolicy`]: `Reject` finishes reading the data and then refuses the message;
//!   `Normalize` stores it as CRLF but does NOT treat the new line as a line start, so a
//!   dot after it is ordinary content and can never end the data.
//! - A dot at the start of a real line is removed (dot-unstuffing); a line that is only a
//!   dot ends the data.
//! - After the first problem (too big, line too long, bare line ending under `Reject`) no
//!   more content is appended, but the decoder keeps scanning for the end so the session
//!   stays in sync and can answer once with the right code.
//!
//! Trust: input is untrusted; no panics, no growth beyond what the caller appends.

/// What to do with a CR or LF that is not part of a CRLF pair inside DATA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareLinePolicy {
    /// Refuse the message with `550 5.6.11` once its data has been read.
    Reject,
    /// Store it as CRLF (the stored message then has only CRLF line endings).
    Normalize,
}

/// Limits applied while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataLimits {
    /// Most content octets accepted.
    pub max_size: u64,
    /// Most octets in one line, excluding its CRLF.
    pub max_line: usize,
    /// Bare CR / LF policy.
    pub bare: BareLinePolicy,
}

/// The first thing wrong with the content. The message must be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataProblem {
    /// More than `max_size` octets. Reply `552 5.3.4`.
    TooBig,
    /// A line longer than `max_line`. Reply `552 5.6.0`.
    LineTooLong,
    /// A bare CR or LF under [`BareLinePolicy::Reject`]. Reply `550 5.6.11`.
    BareLineEnding,
}

impl DataProblem {
    /// The reply that refuses the message.
    pub fn reply(self, limits: &DataLimits) -> crate::Reply {
        match self {
            DataProblem::TooBig => crate::Reply::new(
                552,
                "5.3.4",
                format!(
                    "Message size exceeds fixed limit of {} octets",
                    limits.max_size
                ),
            ),
            DataProblem::LineTooLong => crate::Reply::new(
                552,
                "5.6.0",
                format!("Message has a line longer than {} octets", limits.max_line),
            ),
            DataProblem::BareLineEnding => crate::Reply::new(
                550,
                "5.6.11",
                "Bare CR or LF in message data; lines must end with CRLF",
            ),
        }
    }
}

/// Result of one [`DataDecoder::feed`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataStep {
    /// All input was consumed; the data continues.
    NeedMore,
    /// The end-of-data line was found; `consumed` bytes of the input belonged to the data
    /// (including the final `.CRLF`). Bytes after that are pipelined commands.
    End {
        /// Bytes of this input that were data.
        consumed: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a real line (after CRLF, or at the start of data).
    LineStart,
    /// A real line began with a dot.
    Dot,
    /// A real line began with dot, CR.
    DotCr,
    /// Inside a line.
    InLine,
    /// A CR inside a line (or at its start).
    Cr,
}

/// Decodes one message's DATA content.
#[derive(Debug, Clone)]
pub struct DataDecoder {
    limits: DataLimits,
    state: State,
    size: u64,
    line_len: usize,
    problem: Option<DataProblem>,
}

impl DataDecoder {
    /// A decoder at the start of data.
    pub fn new(limits: DataLimits) -> DataDecoder {
        DataDecoder {
            limits,
            state: State::LineStart,
            size: 0,
            line_len: 0,
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

    /// Content octets decoded so far (counting only what was kept).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Decodes `input`, appending content to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> DataStep {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::InLine {
                // Fast path: copy up to the next CR or LF in one go.
                let rest = &input[i..];
                let n = rest
                    .iter()
                    .position(|&b| b == b'\r' || b == b'\n')
                    .unwrap_or(rest.len());
                if n > 0 {
                    self.emit_line_bytes(&rest[..n], out);
                    i += n;
                    continue;
                }
            }
            let b = input[i];
            i += 1;
            match (self.state, b) {
                (State::LineStart, b'.') => self.state = State::Dot,
                (State::LineStart | State::InLine, b'\r') => self.state = State::Cr,
                (State::LineStart | State::InLine, b'\n') => self.bare(b"", out),
                (State::LineStart | State::InLine, _) => {
                    self.emit_line_bytes(&[b], out);
                    self.state = State::InLine;
                }
                (State::Dot, b'\r') => self.state = State::DotCr,
                (State::Dot, b'\n') => self.bare(b".", out),
                (State::Dot, _) => {
                    // Dot-unstuffing: drop the leading dot, keep the rest of the line.
                    self.emit_line_bytes(&[b], out);
                    self.state = State::InLine;
                }
                (State::DotCr, b'\n') => {
                    self.state = State::LineStart;
                    return DataStep::End { consumed: i };
                }
                (State::DotCr, _) => {
                    self.bare(b".", out);
                    i -= 1; // reprocess this byte inside the line
                }
                (State::Cr, b'\n') => {
                    self.emit_raw(b"\r\n", out);
                    self.line_len = 0;
                    self.state = State::LineStart;
                }
                (State::Cr, _) => {
                    self.bare(b"", out);
                    i -= 1;
                }
            }
        }
        DataStep::NeedMore
    }

    /// Handles a bare CR or LF; `prefix` is content held back before it (a line-start dot).
    fn bare(&mut self, prefix: &[u8], out: &mut Vec<u8>) {
        match self.limits.bare {
            BareLinePolicy::Reject => self.fail(DataProblem::BareLineEnding),
            BareLinePolicy::Normalize => {
                self.emit_line_bytes(prefix, out);
                self.emit_raw(b"\r\n", out);
                self.line_len = 0;
            }
        }
        // Never a line start: a dot after a bare line ending is ordinary content.
        self.state = State::InLine;
    }

    fn emit_line_bytes(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.line_len = self.line_len.saturating_add(bytes.len());
        if self.line_len > self.limits.max_line {
            self.fail(DataProblem::LineTooLong);
        }
        self.emit_raw(bytes, out);
    }

    fn emit_raw(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if self.problem.is_some() {
            return;
        }
        let new_size = self.size.saturating_add(bytes.len() as u64);
        if new_size > self.limits.max_size {
            self.fail(DataProblem::TooBig);
            return;
        }
        self.size = new_size;
        out.extend_from_slice(bytes);
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

    fn decode(input: &[u8], limits: DataLimits) -> (Vec<u8>, Option<usize>, Option<DataProblem>) {
        let mut d = DataDecoder::new(limits);
        let mut out = Vec::new();
        match d.feed(input, &mut out) {
            DataStep::End { consumed } => (out, Some(consumed), d.problem()),
            DataStep::NeedMore => (out, None, d.problem()),
        }
    }

    #[test]
    fn simple_message_and_pipelined_rest() {
        let input = b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n";
        let (out, end, problem) = decode(input, LIMITS);
        assert_eq!(out, b"Subject: x\r\n\r\nhello\r\n");
        assert_eq!(end, Some(input.len() - 6));
        assert_eq!(problem, None);
    }

    #[test]
    fn empty_message() {
        assert_eq!(decode(b".\r\n", LIMITS), (vec![], Some(3), None));
    }

    #[test]
    fn dot_unstuffing() {
        let (out, end, _) = decode(b"..leading\r\n...\r\n.\r\n", LIMITS);
        assert_eq!(out, b".leading\r\n..\r\n");
        assert!(end.is_some());
    }

    #[test]
    fn smuggling_variants_never_end_data() {
        for variant in [
            &b"a\n.\nMAIL FROM:<x@y>\r\n"[..],
            b"a\n.\r\nMAIL FROM:<x@y>\r\n",
            b"a\r\n.\nMAIL FROM:<x@y>\r\n",
            b"a\r.\rMAIL FROM:<x@y>\r\n",
            b"a\r\n.\rMAIL FROM:<x@y>\r\n",
            b"a\r.\r\nMAIL FROM:<x@y>\r\n",
            b"a\n.\rMAIL FROM:<x@y>\r\n",
            b"a\r\n\x00.\r\nMAIL FROM:<x@y>\r\n",
        ] {
            for bare in [BareLinePolicy::Normalize, BareLinePolicy::Reject] {
                let limits = DataLimits { bare, ..LIMITS };
                let (_, end, _) = decode(variant, limits);
                assert_eq!(
                    end,
                    None,
                    "{:?} ended data under {bare:?}",
                    String::from_utf8_lossy(variant)
                );
            }
        }
    }

    #[test]
    fn bare_lf_reject_reads_to_the_end_then_reports() {
        let limits = DataLimits {
            bare: BareLinePolicy::Reject,
            ..LIMITS
        };
        let (_, end, problem) = decode(b"a\nb\r\n.\r\n", limits);
        assert_eq!(end, Some(8));
        assert_eq!(problem, Some(DataProblem::BareLineEnding));
    }

    #[test]
    fn bare_lf_normalize_stores_crlf() {
        let (out, end, problem) = decode(b"a\nb\rc\r\n.\r\n", LIMITS);
        assert_eq!(out, b"a\r\nb\r\nc\r\n");
        assert!(end.is_some());
        assert_eq!(problem, None);
    }

    #[test]
    fn size_limit_enforced_while_streaming() {
        let limits = DataLimits {
            max_size: 10,
            ..LIMITS
        };
        let mut d = DataDecoder::new(limits);
        let mut out = Vec::new();
        assert_eq!(
            d.feed(b"0123456789abcdef\r\n", &mut out),
            DataStep::NeedMore
        );
        assert_eq!(d.problem(), Some(DataProblem::TooBig));
        assert!(out.len() <= 10);
        assert!(matches!(d.feed(b".\r\n", &mut out), DataStep::End { .. }));
    }

    #[test]
    fn line_limit() {
        let limits = DataLimits {
            max_line: 4,
            ..LIMITS
        };
        assert_eq!(decode(b"abcd\r\n.\r\n", limits).2, None);
        assert_eq!(
            decode(b"abcde\r\n.\r\n", limits).2,
            Some(DataProblem::LineTooLong)
        );
    }

    proptest! {
        /// Any chunking of the input gives the same result as one piece.
        #[test]
        fn chunking_does_not_matter(body in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a')], 0..300), split in 1usize..20) {
            let mut input = body.clone();
            input.extend_from_slice(b"\r\n.\r\n");
            let whole = decode(&input, LIMITS);
            let mut d = DataDecoder::new(LIMITS);
            let mut out = Vec::new();
            let mut end = None;
            let mut offset = 0;
            for chunk in input.chunks(split) {
                if let DataStep::End { consumed } = d.feed(chunk, &mut out) {
                    end = Some(offset + consumed);
                    break;
                }
                offset += chunk.len();
            }
            prop_assert_eq!(whole.0, out);
            prop_assert_eq!(whole.1, end);
        }

        /// Data ends exactly at the first real CRLF.CRLF, never earlier.
        #[test]
        fn ends_only_at_crlf_dot_crlf(body in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'x')], 0..300)) {
            for bare in [BareLinePolicy::Normalize, BareLinePolicy::Reject] {
                let (_, end, _) = decode(&body, DataLimits { bare, ..LIMITS });
                if let Some(n) = end {
                    let ended = &body[..n];
                    prop_assert!(ended.ends_with(b".\r\n"));
                    prop_assert!(n == 3 || ended[..n - 3].ends_with(b"\r\n"));
                }
            }
        }
    }
}
