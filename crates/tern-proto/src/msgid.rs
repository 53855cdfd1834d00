//! Finding a message's Message-ID while its content streams by, for the tracking log.
//!
//! [`MessageIdScanner`] is fed the content in the pieces it arrives in and keeps only the
//! field value it is collecting (at most [`MAX_VALUE`] octets): the message is never
//! buffered. It looks at the header section only, and at most [`MAX_SCAN`] octets of it;
//! once the header section has ended (or the field was found and its last line ended),
//! feeding it costs one comparison per piece.

/// Longest Message-ID value kept, octets (RFC 5322's line limit).
pub const MAX_VALUE: usize = 998;
/// Octets of the header section looked at before giving up.
pub const MAX_SCAN: usize = 256 * 1024;

const NAME: &[u8] = b"message-id";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line.
    LineStart,
    /// A CR at the start of a line: the empty line that ends the header section?
    BlankCr,
    /// Matching the field name; `usize` octets of it matched.
    Name(usize),
    /// In a line that is not the Message-ID field's.
    Skip,
    /// In the Message-ID field's value.
    Value,
    /// Found, or the header section ended, or the scan limit was reached.
    Done,
}

/// Streams over content and remembers the first Message-ID field's value.
#[derive(Debug, Clone)]
pub struct MessageIdScanner {
    state: State,
    /// Collecting the field's value (also across folded lines).
    capturing: bool,
    value: Vec<u8>,
    scanned: usize,
    found: Option<String>,
}

impl Default for MessageIdScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl MessageIdScanner {
    /// A scanner at the start of a message.
    pub fn new() -> MessageIdScanner {
        MessageIdScanner {
            state: State::LineStart,
            capturing: false,
            value: Vec::new(),
            scanned: 0,
            found: None,
        }
    }

    /// Looks at the next piece of content.
    pub fn feed(&mut self, piece: &[u8]) {
        if self.state == State::Done {
            return;
        }
        for &b in piece {
            self.scanned += 1;
            if self.scanned > MAX_SCAN {
                self.state = State::Done;
            }
            self.step(b);
            if self.state == State::Done {
                return;
            }
        }
    }

    fn step(&mut self, b: u8) {
        self.state = match self.state {
            State::Done => State::Done,
            State::LineStart => match b {
                b'\r' => State::BlankCr,
                b'\n' => self.end_of_header(),
                b' ' | b'\t' if self.capturing => {
                    self.push(b);
                    State::Value
                }
                b' ' | b'\t' => State::Skip,
                _ if self.capturing => {
                    // The field ended at the previous line.
                    self.finish();
                    State::Done
                }
                _ => self.name(0, b),
            },
            State::BlankCr => match b {
                b'\n' => self.end_of_header(),
                _ => State::Skip,
            },
            State::Name(i) => self.name(i, b),
            State::Skip => match b {
                b'\n' => State::LineStart,
                _ => State::Skip,
            },
            State::Value => match b {
                b'\n' => State::LineStart,
                b'\r' => State::Value,
                _ => {
                    self.push(b);
                    State::Value
                }
            },
        };
    }

    fn name(&mut self, i: usize, b: u8) -> State {
        match NAME.get(i) {
            Some(want) if b.eq_ignore_ascii_case(want) => State::Name(i + 1),
            None if b == b':' => {
                self.capturing = true;
                State::Value
            }
            _ if b == b'\n' => State::LineStart,
            _ => State::Skip,
        }
    }

    fn end_of_header(&mut self) -> State {
        if self.capturing {
            self.finish();
        }
        State::Done
    }

    fn push(&mut self, b: u8) {
        if self.value.len() < MAX_VALUE {
            self.value.push(b);
        }
    }

    fn finish(&mut self) {
        self.capturing = false;
        let text = String::from_utf8_lossy(&self.value);
        let text = text.trim();
        // `<id@host>`, without comments or folding white space around it.
        let id = match (text.find('<'), text.find('>')) {
            (Some(a), Some(z)) if a < z => text.get(a..=z).unwrap_or(text),
            _ => text,
        };
        let id: String = id.chars().filter(|c| !c.is_control()).collect();
        self.found = (!id.is_empty()).then_some(id);
        self.value = Vec::new();
    }

    /// The Message-ID (usually with its angle brackets), if the content had one.
    pub fn message_id(&self) -> Option<String> {
        if self.capturing {
            // The content ended inside the field (a message without a body).
            let mut copy = self.clone();
            copy.finish();
            return copy.found;
        }
        self.found.clone()
    }
}

/// The Message-ID of a whole message in memory.
pub fn message_id_of(content: &[u8]) -> Option<String> {
    let mut s = MessageIdScanner::new();
    s.feed(content);
    s.message_id()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_field_in_any_case_and_piece_size() {
        let msg = b"From: a@x.test\r\nmessage-ID:  <abc.123@x.test>\r\nSubject: hi\r\n\r\nMessage-ID: <body@x>\r\n";
        assert_eq!(message_id_of(msg).as_deref(), Some("<abc.123@x.test>"));
        for size in 1..8 {
            let mut s = MessageIdScanner::new();
            for piece in msg.chunks(size) {
                s.feed(piece);
            }
            assert_eq!(
                s.message_id().as_deref(),
                Some("<abc.123@x.test>"),
                "pieces of {size}"
            );
        }
    }

    #[test]
    fn folded_values_and_comments() {
        let msg = b"Message-ID:\r\n <folded@x.test> (a comment)\r\nTo: b\r\n\r\n";
        assert_eq!(message_id_of(msg).as_deref(), Some("<folded@x.test>"));
        let bare = b"Message-Id: bare@x.test\n\nbody";
        assert_eq!(message_id_of(bare).as_deref(), Some("bare@x.test"));
    }

    #[test]
    fn only_the_header_section_counts() {
        assert_eq!(message_id_of(b"To: b\r\n\r\nMessage-ID: <no@x>\r\n"), None);
        assert_eq!(message_id_of(b"X-Message-ID: <no@x>\r\n\r\n"), None);
        assert_eq!(message_id_of(b"Message-IDs: <no@x>\r\n\r\n"), None);
        assert_eq!(message_id_of(b""), None);
        assert_eq!(message_id_of(b"Message-ID:   \r\n\r\n"), None);
    }

    #[test]
    fn a_message_without_a_body_ends_inside_the_field() {
        assert_eq!(
            message_id_of(b"Message-ID: <end@x>").as_deref(),
            Some("<end@x>")
        );
    }

    #[test]
    fn values_and_the_scan_are_bounded() {
        let mut long = b"Message-ID: <".to_vec();
        long.extend(std::iter::repeat_n(b'a', 10_000));
        long.extend_from_slice(b"@x>\r\n\r\n");
        let id = message_id_of(&long).unwrap();
        assert!(id.len() <= MAX_VALUE, "{}", id.len());

        let mut big = Vec::new();
        while big.len() < MAX_SCAN + 10 {
            big.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
        }
        big.extend_from_slice(b"Message-ID: <late@x>\r\n\r\n");
        assert_eq!(message_id_of(&big), None, "past the scan limit");
    }
}
