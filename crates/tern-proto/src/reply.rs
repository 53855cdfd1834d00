//! SMTP replies with enhanced status codes (RFC 5321 §4.2, RFC 3463, RFC 2034).
//!
//! A [`Reply`] is a code, an optional enhanced status and one or more text lines. It is
//! rendered with `-` continuation on every line but the last. Text is sanitised on
//! construction: CR, LF and other control characters never reach the wire, so no peer
//! input echoed in a reply can forge extra reply lines.

use std::fmt::Write as _;

/// One SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Three-digit reply code.
    pub code: u16,
    /// Enhanced status code (`class.subject.detail`), or `None` for the greeting.
    pub status: Option<String>,
    /// Text lines; at least one.
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply with an enhanced status code.
    pub fn new(code: u16, status: &str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            status: Some(status.to_string()),
            lines: vec![clean(text.into())],
        }
    }

    /// A reply without an enhanced status (greeting, EHLO).
    pub fn plain(code: u16, lines: Vec<String>) -> Reply {
        let mut lines: Vec<String> = lines.into_iter().map(clean).collect();
        if lines.is_empty() {
            lines.push(String::new());
        }
        Reply {
            code,
            status: None,
            lines,
        }
    }

    /// True for 4xx and 5xx replies.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// Appends the wire form to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut s = String::new();
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let _ = write!(s, "{}{}", self.code, sep);
            if let Some(st) = &self.status {
                let _ = write!(s, "{st} ");
            }
            s.push_str(line);
            s.push_str("\r\n");
        }
        out.extend_from_slice(s.as_bytes());
    }

    /// The wire form as a string (for tests and logs).
    pub fn to_wire(&self) -> String {
        let mut v = Vec::new();
        self.write_to(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    }

    /// The first line without the trailing CRLF, for events.
    pub fn summary(&self) -> String {
        let mut s = format!("{}", self.code);
        if let Some(st) = &self.status {
            s.push(' ');
            s.push_str(st);
        }
        if let Some(l) = self.lines.first() {
            s.push(' ');
            s.push_str(l);
        }
        s
    }
}

fn clean(s: String) -> String {
    if s.chars().any(|c| c.is_control()) {
        s.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line() {
        assert_eq!(
            Reply::new(250, "2.1.0", "Sender OK").to_wire(),
            "250 2.1.0 Sender OK\r\n"
        );
    }

    #[test]
    fn multi_line() {
        let r = Reply::plain(
            250,
            vec!["mx.test".into(), "PIPELINING".into(), "SIZE 10".into()],
        );
        assert_eq!(
            r.to_wire(),
            "250-mx.test\r\n250-PIPELINING\r\n250 SIZE 10\r\n"
        );
    }

    #[test]
    fn control_characters_never_reach_the_wire() {
        let r = Reply::new(501, "5.5.4", "bad \r\n250 forged");
        assert_eq!(r.to_wire(), "501 5.5.4 bad   250 forged\r\n");
    }
}
