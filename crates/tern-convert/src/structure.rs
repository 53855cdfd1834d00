//! The MIME structure of a message: a tree of entities with byte ranges into the raw
//! content, read in one forward pass.
//!
//! The reading follows RFC 2046 §5.1 the way a receiver applies it (Python's `email`
//! feedparser is the model the tests check against), so that the structure Tern converts
//! is the structure the next hop will see:
//! - a multipart with a `boundary` starts at its first delimiter line; its preamble and
//!   epilogue are ignored text; consecutive delimiter lines make no empty parts;
//! - a delimiter line of any enclosing multipart ends the current part, even one nested
//!   deeper (an unterminated inner multipart ends where its parent's next delimiter is);
//! - the line end before a delimiter line belongs to the delimiter (RFC 2046 §5.1.1);
//! - a multipart without a boundary parameter, or whose boundary never starts a part, is
//!   one leaf (text, as receivers show it);
//! - `message/rfc822` with an identity encoding is a nested message; every other type
//!   is a leaf.
//!
//! Bounds: nesting deeper than [`crate::Limits::max_depth`] or more entities than
//! [`crate::Limits::max_parts`] is an error, never a deep recursion or an unbounded
//! tree. Each line is read once by the innermost open entity; checking a line against
//! the open boundaries costs at most `max_depth` comparisons, and only for lines that
//! start with `--`.
//!
//! Trust: the content is hostile; all reading is total and bounded.

use std::ops::Range;

use mail_parser::MessageParser;

use crate::DowngradeError;
use crate::header::{Cte, Field, HeaderSection, Media, cte, field_colon, media};
use crate::lines::{Delimiter, Line, delimiter, line_at};

/// One message or body part.
#[derive(Debug, Clone)]
pub(crate) struct Entity {
    pub header: HeaderSection,
    pub media: Media,
    pub cte: Cte,
    pub body: Body,
}

/// What an entity's body is.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    /// Content to take as it is (or to encode): `range` excludes the line end that
    /// belongs to a following delimiter.
    Leaf { range: Range<usize> },
    /// A multipart that found its first delimiter.
    Multipart { parts: Vec<Entity> },
    /// A `message/rfc822` body.
    Message(Box<Entity>),
}

/// The parsed message.
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    pub root: Entity,
    /// Text that readers ignore (preambles, epilogues, junk header lines), listed only
    /// when it holds 8-bit octets.
    pub ignored: Vec<Range<usize>>,
}

/// Parses `raw`. Errors only for the limits.
pub(crate) fn parse(
    parser: &MessageParser,
    raw: &[u8],
    limits: &crate::Limits,
) -> Result<Tree, DowngradeError> {
    let mut r = Reader {
        parser,
        raw,
        pos: 0,
        open: Vec::new(),
        limits,
        parts: 0,
        ignored: Vec::new(),
    };
    let root = r.entity(0, Media::default_for(false))?;
    // Everything is read: no open boundary can stop the top-level entity early.
    if r.pos < raw.len() {
        r.ignore(r.pos..raw.len());
    }
    Ok(Tree {
        root,
        ignored: r.ignored,
    })
}

struct Reader<'p, 'a> {
    parser: &'p MessageParser,
    raw: &'a [u8],
    /// Start of the next unread line.
    pos: usize,
    /// Boundaries of the enclosing multiparts whose parts are being read, outermost
    /// first.
    open: Vec<Vec<u8>>,
    limits: &'p crate::Limits,
    parts: usize,
    ignored: Vec<Range<usize>>,
}

impl Reader<'_, '_> {
    /// The next line, unless the input ends or it delimits an open multipart.
    fn peek(&self) -> Option<Line> {
        let line = line_at(self.raw, self.pos)?;
        let content = line.content(self.raw);
        if content.starts_with(b"--") && self.open.iter().any(|b| delimiter(content, b).is_some()) {
            return None;
        }
        Some(line)
    }

    fn consume(&mut self, line: Line) {
        self.pos = line.end;
    }

    /// Records an ignored range if it holds 8-bit octets.
    fn ignore(&mut self, range: Range<usize>) {
        let bytes = self.raw.get(range.clone()).unwrap_or_default();
        if crate::lines::has_8bit(bytes) {
            self.ignored.push(range);
        }
    }

    fn entity(&mut self, depth: usize, default: Media) -> Result<Entity, DowngradeError> {
        if depth > self.limits.max_depth {
            return Err(DowngradeError::TooDeep {
                limit: self.limits.max_depth,
            });
        }
        self.parts = self.parts.saturating_add(1);
        if self.parts > self.limits.max_parts {
            return Err(DowngradeError::TooManyParts {
                limit: self.limits.max_parts,
            });
        }
        let header = self.header_section();
        let media = media(self.parser, self.raw, &header, default);
        let cte = cte(self.raw, &header);
        let body = if media.main == "multipart"
            && let Some(boundary) = media.boundary.clone()
        {
            self.multipart(&boundary, media.sub == "digest", depth)?
        } else if media.is("message", "rfc822") && cte.is_identity() {
            Body::Message(Box::new(self.entity(depth + 1, Media::default_for(false))?))
        } else {
            self.leaf()
        };
        Ok(Entity {
            header,
            media,
            cte,
            body,
        })
    }

    fn header_section(&mut self) -> HeaderSection {
        let mut h = HeaderSection::default();
        // Whether a continuation line continues a field (false after junk).
        let mut in_field = false;
        loop {
            let Some(line) = self.peek() else {
                h.end = self.pos;
                h.body_start = self.pos;
                return h;
            };
            let content = line.content(self.raw);
            match content.first() {
                None => {
                    self.consume(line);
                    h.end = line.start;
                    h.separator = true;
                    h.body_start = line.end;
                    return h;
                }
                Some(b' ' | b'\t') => {
                    match h.fields.last_mut() {
                        Some(field) if in_field => {
                            field.value_end = line.content_end;
                            field.end = line.end;
                        }
                        _ => self.ignore(line.start..line.end),
                    }
                    self.consume(line);
                }
                Some(_) if content.starts_with(b"From ") || content.starts_with(b":") => {
                    self.ignore(line.start..line.end);
                    in_field = false;
                    self.consume(line);
                }
                Some(_) => {
                    let Some(colon) = field_colon(content) else {
                        // Not a header line: the body starts here, without separator.
                        h.end = line.start;
                        h.body_start = line.start;
                        return h;
                    };
                    h.fields.push(Field {
                        start: line.start,
                        colon: line.start.saturating_add(colon),
                        value_end: line.content_end,
                        end: line.end,
                    });
                    in_field = true;
                    self.consume(line);
                }
            }
        }
    }

    /// Reads to the end of the entity; the line end before a delimiter is not content.
    fn leaf(&mut self) -> Body {
        let start = self.pos;
        let mut last: Option<Line> = None;
        while let Some(line) = self.peek() {
            self.consume(line);
            last = Some(line);
        }
        let at_delimiter = self.pos < self.raw.len();
        let end = match last {
            Some(l) if at_delimiter => l.content_end,
            _ => self.pos,
        };
        Body::Leaf {
            range: start..end.max(start),
        }
    }

    fn multipart(
        &mut self,
        boundary: &[u8],
        digest: bool,
        depth: usize,
    ) -> Result<Body, DowngradeError> {
        let start = self.pos;
        // The preamble, up to the first delimiter.
        let first = loop {
            let Some(line) = self.peek() else {
                break None;
            };
            match delimiter(line.content(self.raw), boundary) {
                Some(d) => break Some((line, d)),
                None => self.consume(line),
            }
        };
        let Some((first, Delimiter::Part)) = first else {
            // No part ever starts: the body is one leaf up to the close delimiter (or
            // the end), and what follows a close delimiter is ignored.
            self.pos = start;
            let leaf = self.leaf_until_close(boundary);
            return Ok(leaf);
        };
        self.ignore(start..first.start);
        let mut parts = Vec::new();
        let mut closed = false;
        let mut line = first;
        loop {
            // This delimiter line and any that follow it directly.
            self.consume(line);
            while let Some(next) = self.peek() {
                if delimiter(next.content(self.raw), boundary).is_none() {
                    break;
                }
                self.consume(next);
            }
            self.open.push(boundary.to_vec());
            let part = self.entity(depth + 1, Media::default_for(digest));
            self.open.pop();
            parts.push(part?);
            let Some(next) = self.peek() else {
                break; // the input ends, or an enclosing delimiter: unterminated
            };
            match delimiter(next.content(self.raw), boundary) {
                Some(Delimiter::Part) => line = next,
                Some(Delimiter::Close) => {
                    self.consume(next);
                    closed = true;
                    break;
                }
                // A part reads up to a delimiter; should anything else come, it is
                // ignored like an epilogue rather than read twice.
                None => {
                    closed = true;
                    break;
                }
            }
        }
        if closed {
            let epilogue = self.pos;
            while let Some(line) = self.peek() {
                self.consume(line);
            }
            self.ignore(epilogue..self.pos);
        }
        Ok(Body::Multipart { parts })
    }

    /// A multipart whose first delimiter is a close delimiter or missing: a leaf up to
    /// the close delimiter; the close line and the rest are ignored.
    fn leaf_until_close(&mut self, boundary: &[u8]) -> Body {
        let start = self.pos;
        let mut last: Option<Line> = None;
        let mut stopped = false;
        while let Some(line) = self.peek() {
            if delimiter(line.content(self.raw), boundary).is_some() {
                stopped = true;
                break;
            }
            self.consume(line);
            last = Some(line);
        }
        let at_delimiter = stopped || self.pos < self.raw.len();
        let end = match last {
            Some(l) if at_delimiter => l.content_end,
            _ => self.pos,
        };
        if stopped {
            let rest = self.pos;
            while let Some(line) = self.peek() {
                self.consume(line);
            }
            self.ignore(rest..self.pos);
        }
        Body::Leaf {
            range: start..end.max(start),
        }
    }
}

/// The shape of a tree, for comparing two readings: per entity in order, its depth,
/// media type and body kind.
pub(crate) fn shape(entity: &Entity) -> Vec<(usize, String, &'static str, usize)> {
    let mut out = Vec::new();
    let mut stack = vec![(entity, 0usize)];
    while let Some((e, depth)) = stack.pop() {
        let (kind, n) = match &e.body {
            Body::Leaf { .. } => ("leaf", 0),
            Body::Multipart { parts } => ("multipart", parts.len()),
            Body::Message(_) => ("message", 1),
        };
        out.push((depth, format!("{}/{}", e.media.main, e.media.sub), kind, n));
        match &e.body {
            Body::Leaf { .. } => {}
            Body::Multipart { parts } => {
                for p in parts.iter().rev() {
                    stack.push((p, depth + 1));
                }
            }
            Body::Message(inner) => stack.push((inner, depth + 1)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(raw: &[u8]) -> Tree {
        parse(&MessageParser::new(), raw, &crate::Limits::default()).unwrap()
    }

    fn leaves(e: &Entity, raw: &[u8], out: &mut Vec<Vec<u8>>) {
        match &e.body {
            Body::Leaf { range } => out.push(raw[range.clone()].to_vec()),
            Body::Multipart { parts } => parts.iter().for_each(|p| leaves(p, raw, out)),
            Body::Message(inner) => leaves(inner, raw, out),
        }
    }

    fn leaf_texts(raw: &[u8]) -> Vec<Vec<u8>> {
        let t = read(raw);
        let mut out = Vec::new();
        leaves(&t.root, raw, &mut out);
        out
    }

    #[test]
    fn simple_message() {
        let raw = b"Subject: x\r\n  folded\r\nFrom: a\r\n\r\nbody\r\n";
        let t = read(raw);
        assert_eq!(t.root.header.fields.len(), 2);
        assert!(t.root.header.separator);
        assert_eq!(t.root.header.fields[0].value(raw), b" x\r\n  folded");
        assert_eq!(leaf_texts(raw), vec![b"body\r\n".to_vec()]);
    }

    #[test]
    fn multipart_parts_preamble_epilogue() {
        let raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\npre\r\n--b\r\n\r\none\r\n--b\r\nContent-Type: text/html\r\n\r\ntwo\r\n\r\n--b--\r\nepi\r\n";
        let t = read(raw);
        assert_eq!(leaf_texts(raw), vec![b"one".to_vec(), b"two\r\n".to_vec()]);
        let s = shape(&t.root);
        assert_eq!(s[0], (0, "multipart/mixed".into(), "multipart", 2));
        assert_eq!(s[2], (1, "text/html".into(), "leaf", 0));
    }

    #[test]
    fn enclosing_delimiter_ends_an_unterminated_inner_multipart() {
        let raw = b"Content-Type: multipart/mixed; boundary=out\r\n\r\n--out\r\nContent-Type: multipart/alternative; boundary=in\r\n\r\n--in\r\n\r\ninner\r\n--out\r\n\r\nsecond\r\n--out--\r\n";
        assert_eq!(leaf_texts(raw), vec![b"inner".to_vec(), b"second".to_vec()]);
    }

    #[test]
    fn same_boundary_nested_leaves_the_inner_empty() {
        let raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n";
        let t = read(raw);
        let s = shape(&t.root);
        assert_eq!(s[0].3, 2, "{s:?}");
        assert_eq!(s[1], (1, "multipart/mixed".into(), "leaf", 0));
    }

    #[test]
    fn boundary_never_found_is_one_leaf() {
        let raw =
            b"Content-Type: multipart/mixed; boundary=zz\r\n\r\ntext --zz inline\r\n--zzz\r\n";
        let t = read(raw);
        assert!(matches!(t.root.body, Body::Leaf { .. }));
        assert_eq!(
            leaf_texts(raw),
            vec![b"text --zz inline\r\n--zzz\r\n".to_vec()]
        );
    }

    #[test]
    fn nested_message_and_missing_separator() {
        let raw =
            b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\nnot a header line\r\nmore\r\n";
        let t = read(raw);
        let Body::Message(inner) = &t.root.body else {
            panic!("not a message")
        };
        assert!(!inner.header.separator);
        assert_eq!(
            leaf_texts(raw),
            vec![b"not a header line\r\nmore\r\n".to_vec()]
        );
    }

    #[test]
    fn limits_are_errors() {
        let mut raw = Vec::new();
        for i in 0..30 {
            raw.extend_from_slice(
                format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n")
                    .as_bytes(),
            );
        }
        let limits = crate::Limits {
            max_depth: 10,
            ..crate::Limits::default()
        };
        assert_eq!(
            parse(&MessageParser::new(), &raw, &limits).unwrap_err(),
            DowngradeError::TooDeep { limit: 10 }
        );
        let limits = crate::Limits {
            max_parts: 5,
            ..crate::Limits::default()
        };
        assert_eq!(
            parse(&MessageParser::new(), &raw, &limits).unwrap_err(),
            DowngradeError::TooManyParts { limit: 5 }
        );
    }
}
