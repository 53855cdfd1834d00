//! The header section of a message in transfer, kept (bounded) for the sender-login check
//! of its From addresses at the end of DATA (`auth.sender_check = "envelope_and_header"`).
//!
//! Only the client's content is seen (not Tern's Received header); capture stops at the
//! first empty line or at [`MAX_HEADER`] octets. A header section longer than that cannot
//! be checked, and the message is refused (`HeaderCapture::complete` is false).
//!
//! Trust: the content is hostile; mail-parser reads the fields and never panics on them.

use mail_parser::{Address, HeaderName, HeaderValue, MessageParser};

/// Most header octets kept.
pub const MAX_HEADER: usize = 256 * 1024;

/// Collects the header section as content passes.
#[derive(Debug, Default)]
pub struct HeaderCapture {
    bytes: Vec<u8>,
    complete: bool,
    over: bool,
}

impl HeaderCapture {
    /// A new capture.
    pub fn new() -> HeaderCapture {
        HeaderCapture::default()
    }

    /// Feeds the next piece of content.
    pub fn feed(&mut self, piece: &[u8]) {
        if self.complete || self.over {
            return;
        }
        let start = self.bytes.len().saturating_sub(3);
        let room = MAX_HEADER.saturating_sub(self.bytes.len());
        let take = piece.len().min(room);
        self.bytes
            .extend_from_slice(piece.get(..take).unwrap_or_default());
        if self.bytes.starts_with(b"\r\n") || self.bytes.starts_with(b"\n") {
            // No header section at all.
            self.bytes.clear();
            self.complete = true;
            return;
        }
        let tail = self.bytes.get(start..).unwrap_or_default();
        if let Some(end) = find_end(tail) {
            self.bytes.truncate(start + end);
            self.complete = true;
        } else if self.bytes.len() >= MAX_HEADER {
            self.over = true;
        }
    }

    /// True unless the header section was too long to keep. (Content without an empty
    /// line is all header: complete at its end.)
    pub fn checkable(&self) -> bool {
        !self.over
    }

    /// Every address of every From field.
    pub fn sender_addresses(&self) -> Vec<String> {
        let mut block = self.bytes.clone();
        block.extend_from_slice(b"\r\n\r\n");
        let Some(msg) = MessageParser::new().parse_headers(&block) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for h in msg.headers() {
            if h.name == HeaderName::From {
                out.extend(addresses(&h.value));
            }
        }
        out
    }
}

/// Where the empty line ending the header section starts, inclusive of the line break
/// before it.
fn find_end(b: &[u8]) -> Option<usize> {
    let crlf = b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 2);
    let lf = b.windows(2).position(|w| w == b"\n\n").map(|i| i + 1);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn addresses(value: &HeaderValue<'_>) -> Vec<String> {
    let HeaderValue::Address(a) = value else {
        return Vec::new();
    };
    let entries: Vec<&mail_parser::Addr<'_>> = match a {
        Address::List(list) => list.iter().collect(),
        Address::Group(groups) => groups.iter().flat_map(|g| g.addresses.iter()).collect(),
    };
    entries
        .into_iter()
        .map(|x| x.address.as_deref().unwrap_or("").to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_addresses_across_pieces_and_folds() {
        let mut c = HeaderCapture::new();
        c.feed(b"Subject: hi\r\nFrom: \"Alice, A.\" <alice@example.com>,\r\n bob@exa");
        c.feed(b"mple.com\r\nTo: x@y\r\n\r\nFrom: body@evil.example\r\n");
        assert!(c.checkable());
        assert_eq!(
            c.sender_addresses(),
            ["alice@example.com", "bob@example.com"]
        );
        let mut two = HeaderCapture::new();
        two.feed(b"From: a@example.com\nFrom: b@example.com\n\nbody");
        assert_eq!(two.sender_addresses(), ["a@example.com", "b@example.com"]);
        // A From with only a display name has an empty address: nobody owns it.
        let mut bare = HeaderCapture::new();
        bare.feed(b"From: Just A Name\r\n\r\n");
        assert_eq!(bare.sender_addresses(), [""]);
    }

    #[test]
    fn a_message_without_header_section_has_no_from() {
        let mut c = HeaderCapture::new();
        c.feed(b"\r\nFrom: body@example.com\r\n");
        c.feed(&vec![b'x'; MAX_HEADER]);
        assert!(c.checkable());
        assert!(c.sender_addresses().is_empty());
    }

    #[test]
    fn too_long_header_is_not_checkable() {
        let mut c = HeaderCapture::new();
        let line = format!("X-Filler: {}\r\n", "x".repeat(990));
        for _ in 0..300 {
            c.feed(line.as_bytes());
        }
        assert!(!c.checkable());
    }
}
