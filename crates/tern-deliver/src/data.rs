//! DATA content encoding, sans-I/O: dot-stuffing and the end-of-data marker
//! (RFC 5321 §4.5.2, §4.1.1.4).
//!
//! [`DotStuffer`] turns message content into the bytes sent after `354`, piece by piece,
//! so a large message never needs a second full copy in memory.
//!
//! Invariants of the output, whatever the input:
//! - every line ends in CRLF: a bare CR or a bare LF in the content is sent as CRLF.
//!   Content is expected to have CRLF line endings already, so this changes nothing for
//!   conforming messages; for anything else it guarantees that no receiver, however
//!   lenient about line endings, can find an end-of-data sequence inside the content
//!   (the "SMTP smuggling" family of attacks). A CR at the end of one piece and an LF at
//!   the start of the next are recognised as one CRLF;
//! - a line starting with `.` gets one more `.`;
//! - [`DotStuffer::finish`] adds CRLF when the content does not end with one, then
//!   `.` CRLF. Empty content is sent as just `.` CRLF.

/// Streaming dot-stuffer; see the module documentation.
#[derive(Debug)]
pub struct DotStuffer {
    /// The next byte starts a line.
    at_line_start: bool,
    /// The previous piece ended with a CR whose line ending is not yet written.
    pending_cr: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer::new()
    }
}

impl DotStuffer {
    /// An encoder at the start of the content.
    pub fn new() -> DotStuffer {
        DotStuffer {
            at_line_start: true,
            pending_cr: false,
        }
    }

    /// Appends the encoding of `input` to `out`.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 64 + 4);
        for &byte in input {
            if self.pending_cr {
                self.pending_cr = false;
                out.extend_from_slice(b"\r\n");
                self.at_line_start = true;
                if byte == b'\n' {
                    continue;
                }
            }
            match byte {
                b'\r' => self.pending_cr = true,
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.at_line_start = true;
                }
                _ => {
                    if self.at_line_start && byte == b'.' {
                        out.push(b'.');
                    }
                    out.push(byte);
                    self.at_line_start = false;
                }
            }
        }
    }

    /// Appends the end of the content: a CRLF when the last line is unterminated, then
    /// the `.` CRLF end-of-data marker.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        if self.pending_cr {
            self.pending_cr = false;
            self.at_line_start = true;
            out.extend_from_slice(b"\r\n");
        }
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// Encodes a whole message at once (tests, small messages).
pub fn dot_stuff(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stuffer = DotStuffer::new();
    stuffer.encode(content, &mut out);
    stuffer.finish(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_content() {
        assert_eq!(dot_stuff(b""), b".\r\n");
    }

    #[test]
    fn content_without_final_crlf() {
        assert_eq!(
            dot_stuff(b"Subject: x\r\n\r\nbody"),
            b"Subject: x\r\n\r\nbody\r\n.\r\n"
        );
    }

    #[test]
    fn content_with_final_crlf() {
        assert_eq!(dot_stuff(b"a\r\nb\r\n"), b"a\r\nb\r\n.\r\n");
    }

    #[test]
    fn leading_dots_are_doubled() {
        assert_eq!(
            dot_stuff(b".\r\n..\r\n.a\r\nb.c\r\n."),
            b"..\r\n...\r\n..a\r\nb.c\r\n..\r\n.\r\n"
        );
    }

    #[test]
    fn bare_line_endings_become_crlf() {
        assert_eq!(
            dot_stuff(b"a\n.\nb\r.\rc"),
            b"a\r\n..\r\nb\r\n..\r\nc\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b"a\r"), b"a\r\n.\r\n");
        assert_eq!(dot_stuff(b"a\r\r\n"), b"a\r\n\r\n.\r\n");
    }

    #[test]
    fn crlf_split_across_pieces() {
        let mut out = Vec::new();
        let mut s = DotStuffer::new();
        s.encode(b"a\r", &mut out);
        s.encode(b"\n.b\r", &mut out);
        s.encode(b"\n", &mut out);
        s.finish(&mut out);
        assert_eq!(out, b"a\r\n..b\r\n.\r\n");
    }

    /// What a receiver does: split at CRLF, stop at ".", strip one leading dot.
    fn unstuff(wire: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut rest = wire;
        loop {
            let pos = rest.windows(2).position(|w| w == b"\r\n")?;
            let line = &rest[..pos];
            rest = &rest[pos + 2..];
            if line == b"." {
                return if rest.is_empty() { Some(out) } else { None };
            }
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
            out.extend_from_slice(b"\r\n");
        }
    }

    proptest! {
        #[test]
        fn crlf_content_round_trips(lines in proptest::collection::vec("[.a-z\\x80-\\xff ]{0,12}", 0..20), split in 0usize..400) {
            let content: Vec<u8> = lines.iter().flat_map(|l| l.bytes().chain(*b"\r\n")).collect();
            let at = split.min(content.len());
            let mut out = Vec::new();
            let mut s = DotStuffer::new();
            s.encode(&content[..at], &mut out);
            s.encode(&content[at..], &mut out);
            s.finish(&mut out);
            prop_assert_eq!(unstuff(&out), Some(content));
        }

        /// Streaming: however the content is cut into pieces (a CRLF, a leading dot or
        /// a line split anywhere), the wire bytes are those of the whole-buffer version.
        #[test]
        fn any_chunking_gives_the_whole_buffer_bytes(
            content in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a'), proptest::num::u8::ANY], 0..800),
            cuts in proptest::collection::vec(1usize..64, 0..40),
        ) {
            let whole = dot_stuff(&content);
            let mut out = Vec::new();
            let mut s = DotStuffer::new();
            let mut rest = &content[..];
            let mut cuts = cuts.into_iter().cycle();
            while !rest.is_empty() {
                let n = cuts.next().unwrap_or(rest.len()).min(rest.len());
                s.encode(&rest[..n], &mut out);
                rest = &rest[n..];
            }
            s.finish(&mut out);
            prop_assert_eq!(out, whole);
        }

        #[test]
        fn any_input_has_exactly_one_end_marker(content in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let out = dot_stuff(&content);
            // No bare CR or LF, and the only "\r\n.\r\n" (or leading ".\r\n") is the end.
            let unstuffed = unstuff(&out);
            prop_assert!(unstuffed.is_some());
            for (i, w) in out.windows(2).enumerate() {
                if w[1] == b'\n' { prop_assert_eq!(w[0], b'\r', "bare LF at {}", i + 1); }
                if w[0] == b'\r' { prop_assert_eq!(w[1], b'\n', "bare CR at {}", i); }
            }
        }
    }
}
