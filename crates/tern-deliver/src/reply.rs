//! SMTP reply parsing, sans-I/O (RFC 5321 §4.2, enhanced codes RFC 3463 / RFC 2034).
//!
//! [`ReplyParser`] is fed raw bytes from the peer and hands back complete [`Reply`]s; it
//! never does I/O and never blocks, so the same code serves the session and the fuzz
//! target.
//!
//! Trust: the input is whatever a remote server sends, so it is untrusted and bounded.
//! - A reply line (without its line ending) is at most [`MAX_LINE`] octets; a longer line
//!   is an error, and the parser never holds more than one partial line.
//! - A reply has at most [`MAX_LINES`] lines.
//! - Every line of a multi-line reply must carry the same code as the first.
//! - The code's first digit is 2 to 5 and its second 0 to 5 (RFC 5321 §4.2.1);
//!   anything else is malformed.
//! - Lines may end in CRLF or a bare LF (some servers do); text is decoded as UTF-8 with
//!   invalid sequences and control characters replaced by U+FFFD, so a reply is safe to
//!   log and to quote in a DSN.
//!
//! After an error the connection is out of sync and must be closed; the parser resets
//! itself so a fuzzer can keep feeding it.

use std::fmt;

/// Longest reply line accepted, in octets, without the line ending.
pub const MAX_LINE: usize = 2048;
/// Most lines accepted in one (multi-line) reply.
pub const MAX_LINES: usize = 100;

/// One complete SMTP reply. Serializable so the queue can keep the last reply per
/// recipient and DSNs can quote it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reply {
    /// Three-digit reply code, 200 to 559.
    pub code: u16,
    /// Enhanced status code (`class.subject.detail`) from the first line, when present
    /// and of the same class as `code`.
    pub enhanced: Option<(u8, u16, u16)>,
    /// Text of each line, without the code, the separator and (when it repeats the one
    /// in `enhanced`) the enhanced status code. Never empty.
    pub lines: Vec<String>,
}

impl Reply {
    /// Builds a reply (for callers and tests); `lines` should not be empty.
    pub fn new(code: u16, enhanced: Option<(u8, u16, u16)>, lines: Vec<String>) -> Reply {
        Reply {
            code,
            enhanced,
            lines,
        }
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 3xx (354 to DATA).
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: do not try again.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The lines' text joined by single spaces.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }
}

impl fmt::Display for Reply {
    /// `250 2.0.0 text of line one text of line two`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some((c, s, d)) = self.enhanced {
            write!(f, " {c}.{s}.{d}")?;
        }
        let text = self.text();
        if !text.is_empty() {
            write!(f, " {text}")?;
        }
        Ok(())
    }
}

/// Why the bytes from the server are not a valid reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// A line longer than [`MAX_LINE`] octets.
    #[error("reply line longer than {MAX_LINE} octets")]
    LineTooLong,
    /// More than [`MAX_LINES`] lines in one reply.
    #[error("reply with more than {MAX_LINES} lines")]
    TooManyLines,
    /// A line that does not start with a valid three-digit code followed by a space, a
    /// hyphen or the end of the line.
    #[error("malformed reply line {0:?}")]
    Malformed(String),
    /// A continuation line whose code differs from the first line's.
    #[error("reply code changed from {first} to {line} inside a multi-line reply")]
    CodeMismatch {
        /// Code of the first line.
        first: u16,
        /// Code of the offending line.
        line: u16,
    },
}

/// Incremental reply parser; see the module documentation for its limits.
#[derive(Debug, Default)]
pub struct ReplyParser {
    /// Bytes of the current, incomplete line; never longer than `MAX_LINE + 1`.
    partial: Vec<u8>,
    /// Code of the first line of the reply being assembled, if any line was seen.
    code: Option<u16>,
    /// Lines of the reply being assembled (the raw text after the separator).
    lines: Vec<String>,
}

impl ReplyParser {
    /// A parser at the start of a reply.
    pub fn new() -> ReplyParser {
        ReplyParser::default()
    }

    /// True when no partial reply is buffered.
    pub fn is_idle(&self) -> bool {
        self.partial.is_empty() && self.code.is_none()
    }

    /// Consumes bytes from `input` until one reply is complete or `input` is used up.
    ///
    /// Returns how many bytes were consumed and the reply if one completed. Bytes after a
    /// complete reply are not consumed: call again with the rest. Bytes of an incomplete
    /// reply are kept inside the parser, so the caller never needs to keep them.
    pub fn advance(&mut self, input: &[u8]) -> Result<(usize, Option<Reply>), ReplyError> {
        let mut used = 0;
        for &byte in input {
            used += 1;
            if byte != b'\n' {
                if self.partial.len() > MAX_LINE {
                    self.reset();
                    return Err(ReplyError::LineTooLong);
                }
                self.partial.push(byte);
                continue;
            }
            let mut line = std::mem::take(&mut self.partial);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.len() > MAX_LINE {
                self.reset();
                return Err(ReplyError::LineTooLong);
            }
            match self.line(&line) {
                Ok(Some(reply)) => return Ok((used, Some(reply))),
                Ok(None) => {}
                Err(e) => {
                    self.reset();
                    return Err(e);
                }
            }
        }
        if self.partial.len() > MAX_LINE + 1 {
            self.reset();
            return Err(ReplyError::LineTooLong);
        }
        Ok((used, None))
    }

    fn reset(&mut self) {
        self.partial.clear();
        self.code = None;
        self.lines.clear();
    }

    /// Handles one complete line (without its ending).
    fn line(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        let (code, last, text) = split_line(line)?;
        match self.code {
            None => self.code = Some(code),
            Some(first) if first != code => {
                return Err(ReplyError::CodeMismatch { first, line: code });
            }
            Some(_) => {}
        }
        if self.lines.len() >= MAX_LINES {
            return Err(ReplyError::TooManyLines);
        }
        self.lines.push(clean_text(text));
        if !last {
            return Ok(None);
        }
        let lines = std::mem::take(&mut self.lines);
        self.code = None;
        Ok(Some(finish(code, lines)))
    }
}

/// Splits `250-text` into (250, last line?, text).
fn split_line(line: &[u8]) -> Result<(u16, bool, &[u8]), ReplyError> {
    let malformed = || ReplyError::Malformed(clean_text(line.get(..64).unwrap_or(line)));
    let (digits, rest) = line.split_at_checked(3).ok_or_else(malformed)?;
    let [a, b, c] = *digits else {
        return Err(malformed());
    };
    if !(b'2'..=b'5').contains(&a) || !(b'0'..=b'5').contains(&b) || !c.is_ascii_digit() {
        return Err(malformed());
    }
    let code = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
    match rest.split_first() {
        None => Ok((code, true, rest)),
        Some((b' ', text)) => Ok((code, true, text)),
        Some((b'-', text)) => Ok((code, false, text)),
        Some(_) => Err(malformed()),
    }
}

/// Lossy UTF-8 with control characters (other than tab) replaced.
fn clean_text(text: &[u8]) -> String {
    String::from_utf8_lossy(text)
        .chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect()
}

/// Builds the reply, lifting the enhanced status code out of the text.
fn finish(code: u16, mut lines: Vec<String>) -> Reply {
    let class = u8::try_from(code / 100).unwrap_or(0);
    let enhanced = lines
        .first()
        .and_then(|first| parse_enhanced(first))
        .filter(|(status, _)| status.0 == class);
    if let Some((status, _)) = enhanced {
        for line in &mut lines {
            if let Some((found, len)) = parse_enhanced(line)
                && found == status
            {
                let rest = line.get(len..).unwrap_or("").trim_start().to_string();
                *line = rest;
            }
        }
    }
    Reply {
        code,
        enhanced: enhanced.map(|(status, _)| status),
        lines,
    }
}

/// Parses `X.Y.Z` (RFC 3463: class 2, 4 or 5; subject and detail up to three digits)
/// at the start of `text`, followed by a space or the end. Returns the code and its
/// length in bytes.
fn parse_enhanced(text: &str) -> Option<((u8, u16, u16), usize)> {
    let end = text.find(' ').unwrap_or(text.len());
    let token = text.get(..end)?;
    let mut parts = token.split('.');
    let class = parts.next()?;
    let subject = parts.next()?;
    let detail = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let number = |s: &str, max_len: usize| -> Option<u16> {
        if s.is_empty() || s.len() > max_len || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let class = u8::try_from(number(class, 1)?).ok()?;
    if !matches!(class, 2 | 4 | 5) {
        return None;
    }
    Some(((class, number(subject, 3)?, number(detail, 3)?), end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Reply>, ReplyError> {
        let mut parser = ReplyParser::new();
        let mut out = Vec::new();
        let mut rest = input;
        loop {
            let (used, reply) = parser.advance(rest)?;
            rest = rest.get(used..).unwrap_or_default();
            match reply {
                Some(r) => out.push(r),
                None => return Ok(out),
            }
        }
    }

    #[test]
    fn single_line_with_enhanced_code() {
        let r = parse_all(b"250 2.1.0 Sender ok\r\n").unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].code, 250);
        assert_eq!(r[0].enhanced, Some((2, 1, 0)));
        assert_eq!(r[0].lines, vec!["Sender ok"]);
        assert_eq!(r[0].to_string(), "250 2.1.0 Sender ok");
        assert!(r[0].is_positive());
    }

    #[test]
    fn multi_line_strips_repeated_enhanced_codes() {
        let r =
            parse_all(b"550-5.1.1 No such user\r\n550-5.1.1 here\r\n550 5.1.1 really\r\n").unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].lines, vec!["No such user", "here", "really"]);
        assert_eq!(r[0].to_string(), "550 5.1.1 No such user here really");
        assert!(r[0].is_permanent());
    }

    #[test]
    fn enhanced_code_of_other_class_is_ignored() {
        let r = parse_all(b"451 5.1.1 odd\r\n").unwrap();
        assert_eq!(r[0].enhanced, None);
        assert_eq!(r[0].lines, vec!["5.1.1 odd"]);
        assert!(r[0].is_transient());
    }

    #[test]
    fn not_an_enhanced_code() {
        for text in ["2.0", "2.0.0.0", "2.0.x", "3.0.0", "2.1234.0", "2.0.0x"] {
            let input = format!("250 {text} rest\r\n");
            let r = parse_all(input.as_bytes()).unwrap();
            assert_eq!(r[0].enhanced, None, "{text}");
        }
    }

    #[test]
    fn bare_code_and_bare_lf() {
        let r = parse_all(b"250\n354 go ahead\n").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].lines, vec![""]);
        assert_eq!(r[0].to_string(), "250");
        assert_eq!(r[1].code, 354);
        assert!(r[1].is_intermediate());
    }

    #[test]
    fn pipelined_replies_in_one_buffer() {
        let r = parse_all(b"250 ok\r\n250 ok\r\n550 no\r\n354 go\r\n").unwrap();
        let codes: Vec<u16> = r.iter().map(|r| r.code).collect();
        assert_eq!(codes, vec![250, 250, 550, 354]);
    }

    #[test]
    fn byte_by_byte_feeding() {
        let input = b"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 100\r\n";
        let mut parser = ReplyParser::new();
        let mut got = None;
        for (i, b) in input.iter().enumerate() {
            let (used, reply) = parser.advance(std::slice::from_ref(b)).unwrap();
            assert_eq!(used, 1);
            if let Some(r) = reply {
                assert_eq!(i, input.len() - 1);
                got = Some(r);
            }
        }
        assert_eq!(got.unwrap().lines.len(), 3);
        assert!(parser.is_idle());
    }

    #[test]
    fn code_mismatch() {
        assert_eq!(
            parse_all(b"250-a\r\n251 b\r\n"),
            Err(ReplyError::CodeMismatch {
                first: 250,
                line: 251
            })
        );
    }

    #[test]
    fn malformed_lines() {
        for input in [
            &b"25\r\n"[..],
            b"hello\r\n",
            b"650 x\r\n",
            b"160 x\r\n",
            b"270 x\r\n",
            b"250x\r\n",
            b"\r\n",
        ] {
            assert!(
                matches!(parse_all(input), Err(ReplyError::Malformed(_))),
                "{input:?}"
            );
        }
    }

    #[test]
    fn line_length_limit() {
        let mut ok = b"250 ".to_vec();
        ok.resize(MAX_LINE, b'a');
        ok.extend_from_slice(b"\r\n");
        assert_eq!(parse_all(&ok).unwrap().len(), 1);

        let mut long = b"250 ".to_vec();
        long.resize(MAX_LINE + 1, b'a');
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse_all(&long), Err(ReplyError::LineTooLong));

        // Without any line ending the parser still refuses to buffer forever.
        let endless = vec![b'a'; MAX_LINE * 4];
        assert_eq!(parse_all(&endless), Err(ReplyError::LineTooLong));
    }

    #[test]
    fn line_count_limit() {
        let mut input = Vec::new();
        for _ in 0..MAX_LINES - 1 {
            input.extend_from_slice(b"250-x\r\n");
        }
        input.extend_from_slice(b"250 x\r\n");
        assert_eq!(parse_all(&input).unwrap()[0].lines.len(), MAX_LINES);

        let mut input = Vec::new();
        for _ in 0..MAX_LINES {
            input.extend_from_slice(b"250-x\r\n");
        }
        input.extend_from_slice(b"250 x\r\n");
        assert_eq!(parse_all(&input), Err(ReplyError::TooManyLines));
    }

    #[test]
    fn reply_round_trips_through_json() {
        let r = parse_all(b"451-4.7.1 greylisted\r\n451 4.7.1 come back\r\n").unwrap();
        let json = serde_json::to_string(&r[0]).unwrap();
        assert_eq!(serde_json::from_str::<Reply>(&json).unwrap(), r[0]);
    }

    #[test]
    fn control_characters_and_invalid_utf8_are_replaced() {
        let r = parse_all(b"250 a\x1b[31mb\xff\r\n").unwrap();
        assert_eq!(r[0].lines, vec!["a\u{fffd}[31mb\u{fffd}"]);
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(input in proptest::collection::vec(proptest::num::u8::ANY, 0..4096)) {
            let mut parser = ReplyParser::new();
            let mut rest = &input[..];
            while !rest.is_empty() {
                match parser.advance(rest) {
                    Ok((used, _)) => {
                        proptest::prop_assert!(used > 0 && used <= rest.len());
                        rest = &rest[used..];
                    }
                    Err(_) => break,
                }
                proptest::prop_assert!(parser.partial.len() <= MAX_LINE + 1);
                proptest::prop_assert!(parser.lines.len() <= MAX_LINES);
            }
        }

        #[test]
        fn reply_like_input_never_panics(lines in proptest::collection::vec("[2-5][0-5][0-9][ -][0-9. a-z]{0,20}", 1..20)) {
            let input = lines.join("\r\n") + "\r\n";
            let _ = parse_all(input.as_bytes());
        }
    }
}
