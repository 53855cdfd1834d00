//! Lines as a receiver sees them, and MIME delimiter lines (RFC 2046 §5.1.1).
//!
//! A line ends at CRLF, at a bare LF or at a bare CR. That is what the outbound
//! dot-stuffer sends as CRLF (`tern-deliver` `data`), so it is where the next hop will see
//! line ends, and it is where Python's `email` parser (the receiver model of the tests)
//! splits. Content is bytes; nothing here assumes a character set.
//!
//! A delimiter line is `--` boundary, optionally `--` (the close delimiter), then only
//! spaces and tabs, matched on the whole line: a boundary that is a prefix of a longer
//! token on the line, or that appears in the middle of a line, delimits nothing.
//!
//! Trust: the input is hostile; every function here is total (no panic, no indexing).

/// One line: `start..content_end` is its text, `content_end..end` its line end (empty
/// for a last line without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Line {
    pub start: usize,
    pub content_end: usize,
    pub end: usize,
}

impl Line {
    /// The line's text without its line end.
    pub fn content<'a>(&self, raw: &'a [u8]) -> &'a [u8] {
        raw.get(self.start..self.content_end).unwrap_or_default()
    }
}

/// The line that starts at `start`, or `None` at (or past) the end of `raw`.
pub(crate) fn line_at(raw: &[u8], start: usize) -> Option<Line> {
    let rest = raw.get(start..).filter(|r| !r.is_empty())?;
    let Some(i) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return Some(Line {
            start,
            content_end: raw.len(),
            end: raw.len(),
        });
    };
    let content_end = start.saturating_add(i);
    let crlf = rest.get(i) == Some(&b'\r') && rest.get(i.saturating_add(1)) == Some(&b'\n');
    Some(Line {
        start,
        content_end,
        end: content_end.saturating_add(if crlf { 2 } else { 1 }),
    })
}

/// What a delimiter line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delimiter {
    /// `--boundary`: a body part follows.
    Part,
    /// `--boundary--`: the multipart ends.
    Close,
}

/// Whether the line text `content` is a delimiter line for `boundary`.
pub(crate) fn delimiter(content: &[u8], boundary: &[u8]) -> Option<Delimiter> {
    let rest = content.strip_prefix(b"--")?.strip_prefix(boundary)?;
    let rest = trim_wsp_end(rest);
    if rest.is_empty() {
        Some(Delimiter::Part)
    } else if rest == b"--" {
        Some(Delimiter::Close)
    } else {
        None
    }
}

/// `bytes` without trailing spaces and tabs.
pub(crate) fn trim_wsp_end(mut bytes: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// Whether any octet is above 0x7F.
pub(crate) fn has_8bit(bytes: &[u8]) -> bool {
    bytes.iter().any(|&b| b >= 0x80)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_ends() {
        let raw = b"a\r\nb\nc\rd\r\r\ne";
        let mut at = 0;
        let mut got = Vec::new();
        while let Some(l) = line_at(raw, at) {
            got.push((l.content(raw).to_vec(), l.end - l.content_end));
            at = l.end;
        }
        let want: Vec<(Vec<u8>, usize)> = vec![
            (b"a".to_vec(), 2),
            (b"b".to_vec(), 1),
            (b"c".to_vec(), 1),
            (b"d".to_vec(), 1),
            (b"".to_vec(), 2),
            (b"e".to_vec(), 0),
        ];
        assert_eq!(got, want);
        assert_eq!(line_at(raw, raw.len()), None);
        assert_eq!(line_at(raw, raw.len() + 5), None);
    }

    #[test]
    fn delimiters_match_whole_lines_only() {
        assert_eq!(delimiter(b"--b", b"b"), Some(Delimiter::Part));
        assert_eq!(delimiter(b"--b \t", b"b"), Some(Delimiter::Part));
        assert_eq!(delimiter(b"--b--", b"b"), Some(Delimiter::Close));
        assert_eq!(delimiter(b"--b-- ", b"b"), Some(Delimiter::Close));
        assert_eq!(
            delimiter(b"--bc", b"b"),
            None,
            "prefix of a longer boundary"
        );
        assert_eq!(delimiter(b"--b---", b"b"), None);
        assert_eq!(delimiter(b"--b x", b"b"), None);
        assert_eq!(delimiter(b" --b", b"b"), None);
        assert_eq!(delimiter(b"x--b", b"b"), None);
        assert_eq!(delimiter(b"-b", b"b"), None);
        assert_eq!(delimiter(b"--x---", b"x-"), Some(Delimiter::Close));
    }
}
