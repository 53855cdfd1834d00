//! Command-line framing with a hard length limit.
//!
//! [`CommandFramer::next_frame`] looks at the bytes a session has buffered and returns the
//! next complete command line, or says it needs more bytes, or reports that a line went
//! past the limit. An over-long line is reported exactly once (as [`Frame::TooLong`]) and
//! the framer then discards bytes up to and including that line's LF, so the next command
//! is read in sync (Postfix `smtpd_chat_query_limit` behaviour). The session therefore
//! never buffers more than `max_line` bytes of one command.
//!
//! A line ends at LF; a CR before it is removed. A bare LF ends a command line (RFC 5321
//! §2.3.8 asks for CRLF, but every widespread server accepts LF in commands; in DATA the
//! rules are strict, see `data`).

/// Longest AUTH command line and SASL response line, CRLF included (RFC 4954 §4: 12288
/// octets). Lines that start with `AUTH ` may be this long whatever the command-line limit.
pub const AUTH_LINE_LIMIT: usize = 12288;

/// What the framer found at the front of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A full line without its line ending.
    Line(&'a [u8]),
    /// The buffer holds no complete line yet; read more.
    NeedMore,
    /// A line exceeded the limit: answer `500 5.5.2` once. Its bytes are being skipped.
    TooLong,
    /// Bytes of an over-long line were discarded; nothing to answer.
    Skipped,
}

/// Cuts a byte stream into command lines. Keeps only one flag of state.
#[derive(Debug, Clone)]
pub struct CommandFramer {
    max_line: usize,
    skipping: bool,
}

impl CommandFramer {
    /// `max_line` counts the octets of a line including CRLF (RFC 5321: 512).
    pub fn new(max_line: usize) -> CommandFramer {
        CommandFramer {
            max_line: max_line.max(8),
            skipping: false,
        }
    }

    /// Examines `buf` and returns the next frame plus how many bytes of `buf` the caller
    /// must drop from its front. Call repeatedly until it returns `NeedMore`. A line that
    /// starts with `AUTH ` may be [`AUTH_LINE_LIMIT`] octets long.
    pub fn next_frame<'a>(&mut self, buf: &'a [u8]) -> (Frame<'a>, usize) {
        let auth = buf
            .get(..5)
            .is_some_and(|head| head.eq_ignore_ascii_case(b"AUTH "));
        let limit = if auth && !self.skipping {
            self.max_line.max(AUTH_LINE_LIMIT)
        } else {
            self.max_line
        };
        self.next_frame_within(buf, limit)
    }

    /// The next SASL response line of an AUTH exchange (RFC 4954 §4): like
    /// [`next_frame`](Self::next_frame) with the [`AUTH_LINE_LIMIT`].
    pub fn next_auth_response<'a>(&mut self, buf: &'a [u8]) -> (Frame<'a>, usize) {
        self.next_frame_within(buf, self.max_line.max(AUTH_LINE_LIMIT))
    }

    fn next_frame_within<'a>(&mut self, buf: &'a [u8], max_line: usize) -> (Frame<'a>, usize) {
        let window = &buf[..buf.len().min(max_line)];
        match window.iter().position(|&b| b == b'\n') {
            Some(lf) if self.skipping => {
                self.skipping = false;
                (Frame::Skipped, lf + 1)
            }
            Some(lf) => {
                let line = &buf[..lf];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                (Frame::Line(line), lf + 1)
            }
            None if self.skipping => (
                if window.is_empty() {
                    Frame::NeedMore
                } else {
                    Frame::Skipped
                },
                window.len(),
            ),
            None if buf.len() >= max_line => {
                self.skipping = true;
                (Frame::TooLong, window.len())
            }
            None => (Frame::NeedMore, 0),
        }
    }

    /// True while the rest of an over-long line is being discarded.
    pub fn is_skipping(&self) -> bool {
        self.skipping
    }

    /// Forgets any skip in progress (used when the connection's byte stream restarts,
    /// as after STARTTLS).
    pub fn reset(&mut self) {
        self.skipping = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames(framer: &mut CommandFramer, input: &[u8]) -> Vec<String> {
        let mut buf = input.to_vec();
        let mut out = Vec::new();
        loop {
            let (f, used) = framer.next_frame(&buf);
            match f {
                Frame::Line(l) => out.push(String::from_utf8_lossy(l).into_owned()),
                Frame::TooLong => out.push("<too long>".into()),
                Frame::Skipped => {}
                Frame::NeedMore => break,
            }
            buf.drain(..used);
        }
        out
    }

    #[test]
    fn splits_pipelined_lines() {
        let mut f = CommandFramer::new(512);
        assert_eq!(
            frames(&mut f, b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nNO"),
            vec!["MAIL FROM:<a@b>", "RCPT TO:<c@d>", "DATA"]
        );
    }

    #[test]
    fn over_long_line_reported_once_and_skipped_in_sync() {
        let mut f = CommandFramer::new(16);
        let mut input = vec![b'x'; 100];
        input.extend_from_slice(b"\r\nNOOP\r\n");
        assert_eq!(frames(&mut f, &input), vec!["<too long>", "NOOP"]);
    }

    #[test]
    fn over_long_line_split_across_reads() {
        let mut f = CommandFramer::new(16);
        let mut buf = vec![b'y'; 20];
        let (fr, used) = f.next_frame(&buf);
        assert_eq!(fr, Frame::TooLong);
        buf.drain(..used);
        buf.extend_from_slice(&[b'y'; 40]);
        let mut seen = Vec::new();
        loop {
            let (fr, used) = f.next_frame(&buf);
            if fr == Frame::NeedMore {
                break;
            }
            seen.push(format!("{fr:?}"));
            buf.drain(..used);
        }
        assert!(seen.iter().all(|s| s == "Skipped"));
        buf.extend_from_slice(b"\r\nQUIT\r\n");
        assert_eq!(frames(&mut f, &buf), vec!["QUIT"]);
    }

    #[test]
    fn auth_lines_may_be_12288_octets() {
        let mut f = CommandFramer::new(512);
        let mut line = b"AUTH PLAIN ".to_vec();
        line.resize(AUTH_LINE_LIMIT - 2, b'A');
        line.extend_from_slice(b"\r\n");
        assert_eq!(frames(&mut f, &line).len(), 1);
        assert_eq!(frames(&mut f, &line)[0].len(), AUTH_LINE_LIMIT - 2);
        // One more octet is too long; other commands keep their limit.
        let mut long = b"AUTH PLAIN ".to_vec();
        long.resize(AUTH_LINE_LIMIT, b'A');
        long.extend_from_slice(b"\r\nNOOP\r\n");
        assert_eq!(frames(&mut f, &long), vec!["<too long>", "NOOP"]);
        let mut noop = b"NOOP ".to_vec();
        noop.resize(600, b'x');
        noop.extend_from_slice(b"\r\n");
        assert_eq!(frames(&mut f, &noop), vec!["<too long>"]);
        // A response line inside an exchange has the AUTH limit too.
        let mut resp = vec![b'A'; AUTH_LINE_LIMIT - 2];
        resp.extend_from_slice(b"\r\n");
        let (fr, used) = f.next_auth_response(&resp);
        assert!(matches!(fr, Frame::Line(l) if l.len() == AUTH_LINE_LIMIT - 2));
        assert_eq!(used, AUTH_LINE_LIMIT);
    }

    #[test]
    fn line_of_exactly_the_limit_is_accepted() {
        let mut f = CommandFramer::new(8);
        assert_eq!(frames(&mut f, b"ABCDEF\r\n"), vec!["ABCDEF"]);
        let mut f = CommandFramer::new(8);
        assert_eq!(frames(&mut f, b"ABCDEFG\r\nX\n"), vec!["<too long>", "X"]);
    }

    proptest! {
        #[test]
        fn never_buffers_past_limit_and_never_panics(data in proptest::collection::vec(any::<u8>(), 0..4000), limit in 8usize..600) {
            let mut f = CommandFramer::new(limit);
            let mut buf = data.clone();
            loop {
                let (fr, used) = f.next_frame(&buf);
                if let Frame::Line(l) = fr { prop_assert!(l.len() < limit.max(AUTH_LINE_LIMIT)); }
                if used == 0 { prop_assert!(buf.len() < limit.max(AUTH_LINE_LIMIT) || f.is_skipping()); break; }
                buf.drain(..used);
            }
        }
    }
}
