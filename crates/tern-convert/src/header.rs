//! Header sections of a message or body part: where each field is, and the two fields
//! that decide the structure (Content-Type, Content-Transfer-Encoding).
//!
//! Where a header section ends follows the receiver model (Python's `email` feedparser,
//! itself close to RFC 5322 §2.2 and §3.5): a field line is a name of printable ASCII
//! other than `:` followed by `:`; a line starting with a space or a tab continues the
//! field above; the section ends at the first empty line (the separator, consumed) or at
//! the first line that is neither, which then starts the body. A continuation line
//! before any field, a `From ` line (mbox) and a field with an empty name are kept as
//! they are but belong to no field ("junk": readers ignore them).
//!
//! Field values are parsed by mail-parser (quoting, comments, RFC 2231 parameter
//! continuations, encoded words): only the first Content-Type and the first
//! Content-Transfer-Encoding count, as for Python's `Message.get`.
//!
//! Trust: the bytes are hostile. Offsets come from [`crate::lines`] and every slice is
//! taken with `get`.

use mail_parser::{HeaderValue, MessageParser};

/// One header field: `start..end` is every line of it, line ends included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Field {
    pub start: usize,
    /// Offset of the `:` after the name.
    pub colon: usize,
    /// End of the text of its last line (before that line's line end).
    pub value_end: usize,
    pub end: usize,
}

impl Field {
    /// The field name as written.
    pub fn name<'a>(&self, raw: &'a [u8]) -> &'a [u8] {
        raw.get(self.start..self.colon).unwrap_or_default()
    }

    /// The raw value: after the colon, folding line ends included, final line end not.
    pub fn value<'a>(&self, raw: &'a [u8]) -> &'a [u8] {
        raw.get(self.colon.saturating_add(1)..self.value_end)
            .unwrap_or_default()
    }

    /// Whether the name is `name` (ASCII, case-insensitive).
    pub fn is(&self, raw: &[u8], name: &str) -> bool {
        self.name(raw).eq_ignore_ascii_case(name.as_bytes())
    }
}

/// A header section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct HeaderSection {
    pub fields: Vec<Field>,
    /// Where new fields go: after the last header line, before the separator.
    pub end: usize,
    /// An empty line separated the header from the body.
    pub separator: bool,
    /// Where the body starts.
    pub body_start: usize,
}

impl HeaderSection {
    /// The first field called `name`.
    pub fn first(&self, raw: &[u8], name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.is(raw, name))
    }
}

/// Whether a line is a field line in the receiver model: `[!-9;-~]+:`.
pub(crate) fn field_colon(content: &[u8]) -> Option<usize> {
    let colon = content
        .iter()
        .position(|&b| !(b'!'..=b'~').contains(&b) || b == b':')?;
    (colon > 0 && content.get(colon) == Some(&b':')).then_some(colon)
}

/// A value with its line ends removed (RFC 5322 §2.2.3 unfolding).
pub(crate) fn unfold(value: &[u8]) -> Vec<u8> {
    value
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect()
}

/// The media type of a part, as far as the structure needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Media {
    /// Lower-case type, e.g. `text`.
    pub main: String,
    /// Lower-case subtype, e.g. `plain`.
    pub sub: String,
    /// The `boundary` parameter (trailing white space removed), when non-empty.
    pub boundary: Option<Vec<u8>>,
    /// The part has a Content-Type field (else `main/sub` is the default).
    pub declared: bool,
}

impl Media {
    /// `text/plain`, or `message/rfc822` in a multipart/digest (RFC 2046 §5.1.5).
    pub fn default_for(parent_is_digest: bool) -> Media {
        let (main, sub) = if parent_is_digest {
            ("message", "rfc822")
        } else {
            ("text", "plain")
        };
        Media {
            main: main.into(),
            sub: sub.into(),
            boundary: None,
            declared: false,
        }
    }

    pub fn is(&self, main: &str, sub: &str) -> bool {
        self.main == main && self.sub == sub
    }
}

/// Content-Transfer-Encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cte {
    /// No field, or `7bit`.
    SevenBit,
    /// `8bit`.
    EightBit,
    /// `binary`.
    Binary,
    QuotedPrintable,
    Base64,
    /// Anything else (`x-uuencode`, typos): lower-cased, at most 40 octets.
    Other(String),
}

impl Cte {
    /// The body is not encoded (RFC 2045 §6.2 identity encodings).
    pub fn is_identity(&self) -> bool {
        matches!(self, Cte::SevenBit | Cte::EightBit | Cte::Binary)
    }
}

/// Parses one field value with mail-parser.
pub(crate) fn parse_value(
    parser: &MessageParser,
    name: &str,
    value: &[u8],
) -> Option<HeaderValue<'static>> {
    let mut block = Vec::with_capacity(name.len() + value.len() + 6);
    block.extend_from_slice(name.as_bytes());
    block.push(b':');
    block.extend_from_slice(&unfold(value));
    block.extend_from_slice(b"\r\n\r\n");
    let message = parser.parse_headers(&block)?;
    let header = message
        .parts
        .into_iter()
        .next()?
        .headers
        .into_iter()
        .next()?;
    Some(header.value.into_owned())
}

/// The part's media type: its first Content-Type, else `default`.
pub(crate) fn media(
    parser: &MessageParser,
    raw: &[u8],
    header: &HeaderSection,
    default: Media,
) -> Media {
    let Some(field) = header.first(raw, "content-type") else {
        return default;
    };
    let text_plain = Media {
        main: "text".into(),
        sub: "plain".into(),
        boundary: None,
        declared: true,
    };
    let Some(HeaderValue::ContentType(ct)) = parse_value(parser, "Content-Type", field.value(raw))
    else {
        // Unreadable: a receiver takes it as text/plain (RFC 2045 §5.2).
        return text_plain;
    };
    let Some(sub) = ct.subtype() else {
        return text_plain;
    };
    let boundary = ct
        .attribute("boundary")
        .map(|b| b.trim_end().as_bytes().to_vec())
        .filter(|b| !b.is_empty());
    Media {
        main: ct.ctype().to_ascii_lowercase(),
        sub: sub.to_ascii_lowercase(),
        boundary,
        declared: true,
    }
}

/// The part's Content-Transfer-Encoding: the first token of its first CTE field.
pub(crate) fn cte(raw: &[u8], header: &HeaderSection) -> Cte {
    let Some(field) = header.first(raw, "content-transfer-encoding") else {
        return Cte::SevenBit;
    };
    let value = unfold(field.value(raw));
    let token: Vec<u8> = value
        .iter()
        .copied()
        .skip_while(|b| b.is_ascii_whitespace())
        .take_while(|b| !b.is_ascii_whitespace() && *b != b'(' && *b != b';')
        .map(|b| b.to_ascii_lowercase())
        .collect();
    match token.as_slice() {
        b"" | b"7bit" => Cte::SevenBit,
        b"8bit" => Cte::EightBit,
        b"binary" => Cte::Binary,
        b"quoted-printable" => Cte::QuotedPrintable,
        b"base64" => Cte::Base64,
        other => Cte::Other(printable(other, 40)),
    }
}

/// Hostile bytes made safe for an error message: printable ASCII, at most `max` octets.
pub(crate) fn printable(bytes: &[u8], max: usize) -> String {
    bytes
        .iter()
        .take(max)
        .map(|&b| {
            if (b' '..=b'~').contains(&b) {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_lines() {
        assert_eq!(field_colon(b"Subject: x"), Some(7));
        assert_eq!(field_colon(b"X-A:"), Some(3));
        assert_eq!(field_colon(b":x"), None);
        assert_eq!(field_colon(b"Subject : x"), None);
        assert_eq!(field_colon(b"no colon"), None);
        assert_eq!(field_colon(b"S\xc3\xbcbject: x"), None);
    }

    fn section(raw: &[u8]) -> HeaderSection {
        let mut fields = Vec::new();
        let mut at = 0;
        while let Some(l) = crate::lines::line_at(raw, at) {
            if let Some(c) = field_colon(l.content(raw)) {
                fields.push(Field {
                    start: l.start,
                    colon: l.start + c,
                    value_end: l.content_end,
                    end: l.end,
                });
            }
            at = l.end;
        }
        HeaderSection {
            fields,
            ..HeaderSection::default()
        }
    }

    #[test]
    fn media_types_and_encodings() {
        let p = MessageParser::new();
        let raw = b"Content-Type: Multipart/Mixed; boundary=\"b 1 \"\r\nContent-Transfer-Encoding:  Base64 (x)\r\n";
        let h = section(raw);
        let m = media(&p, raw, &h, Media::default_for(false));
        assert_eq!((m.main.as_str(), m.sub.as_str()), ("multipart", "mixed"));
        assert_eq!(m.boundary.as_deref(), Some(&b"b 1"[..]));
        assert_eq!(cte(raw, &h), Cte::Base64);
        let raw = b"Content-Type: text\r\nContent-Transfer-Encoding: X-UUENCODE\r\n";
        let h = section(raw);
        assert!(media(&p, raw, &h, Media::default_for(true)).is("text", "plain"));
        assert_eq!(cte(raw, &h), Cte::Other("x-uuencode".into()));
        let h = section(b"");
        assert!(media(&p, b"", &h, Media::default_for(true)).is("message", "rfc822"));
        assert_eq!(cte(b"", &h), Cte::SevenBit);
    }
}
