//! The conversion itself: a list of edits over the raw content, planned from the tree,
//! applied in one copy, then checked.
//!
//! What changes (docs/CONVERSION.md has the operator's version):
//! - a leaf whose body needs it is encoded: text (and multiparts read as one leaf,
//!   and message types other than rfc822) in quoted-printable, anything else in base64;
//!   its Content-Transfer-Encoding field is replaced (later duplicates removed) or
//!   added; a leaf without Content-Type gets `text/plain` with its charset (`utf-8` when
//!   the octets are UTF-8, else `unknown-8bit`);
//! - a leaf already in quoted-printable with 8-bit octets is decoded and encoded again;
//!   one in base64 loses the 8-bit octets, which base64 decoders ignore anyway
//!   (RFC 2045 §6.8), so its decoded content is unchanged;
//! - a multipart or message/rfc822 labelled `8bit` or `binary` above converted content
//!   is labelled `7bit`; the message gets `MIME-Version: 1.0` when it had none and a
//!   part was encoded;
//! - 8-bit header fields are rewritten by [`crate::fields`];
//! - 8-bit octets in text readers ignore (preamble, epilogue, junk header lines) become
//!   `?`.
//!
//! Every other octet is copied as it is: field order, boundaries, delimiter lines,
//! 7-bit parts.
//!
//! Checks before anything is returned: the edits do not overlap, the copy holds no
//! 8-bit octet, and reading the copy gives the same structure (same entities, same
//! media types, same nesting) as the original. A failed check is an error, so a bug here
//! defers a message rather than sending it altered.

use std::ops::Range;

use mail_parser::MessageParser;

use crate::encode::{Breaks, base64, charset_of, decode_quoted_printable, quoted_printable};
use crate::header::Cte;
use crate::lines::has_8bit;
use crate::structure::{Body, Entity, Tree, parse, shape};
use crate::walk::FIELD_MAX;
use crate::{DowngradeError, Downgraded, Limits, Source};

/// Longest line SMTP carries (RFC 5321 §4.5.3.1.6), without its CRLF.
const MAX_LINE: usize = 998;

struct Edit {
    range: Range<usize>,
    bytes: Vec<u8>,
    /// Nesting depth of the entity that made it: of two insertions at one place (a
    /// header section that ends without an empty line, where a nested message's header
    /// begins), the outer entity's comes first, since its fields belong to the outer
    /// header.
    depth: usize,
}

struct Plan<'a> {
    parser: &'a MessageParser,
    raw: &'a [u8],
    source: Source,
    edits: Vec<Edit>,
    /// Depth of the entity being planned.
    depth: usize,
    parts_encoded: usize,
    fields_encoded: usize,
}

/// How a leaf with an identity encoding is encoded.
enum Class {
    Text,
    Opaque,
    /// message/partial and message/external-body must stay 7bit (RFC 2046 §5.2.2,
    /// §5.2.3): no encoding is allowed.
    Forbidden,
}

fn class(media: &crate::header::Media) -> Class {
    match media.main.as_str() {
        "text" | "multipart" => Class::Text,
        "message" if media.sub == "partial" || media.sub == "external-body" => Class::Forbidden,
        "message" => Class::Text,
        _ => Class::Opaque,
    }
}

/// Whether an identity-encoded body cannot go as it is over a 7-bit DATA transaction.
fn needs_encoding(body: &[u8], source: Source) -> bool {
    if has_8bit(body) {
        return true;
    }
    if source == Source::EightBit {
        return false;
    }
    // Binary content: anything the dot-stuffer would change, or SMTP refuse.
    let mut line = 0usize;
    let mut prev = None;
    for (i, &b) in body.iter().enumerate() {
        let bare_cr = b == b'\r' && body.get(i + 1) != Some(&b'\n');
        let bare_lf = b == b'\n' && prev != Some(b'\r');
        if b == 0 || bare_cr || bare_lf {
            return true;
        }
        if b == b'\n' {
            line = 0;
        } else if b != b'\r' {
            line += 1;
            if line > MAX_LINE {
                return true;
            }
        }
        prev = Some(b);
    }
    false
}

impl Plan<'_> {
    fn edit(&mut self, range: Range<usize>, bytes: Vec<u8>) {
        let depth = self.depth;
        self.edits.push(Edit {
            range,
            bytes,
            depth,
        });
    }

    /// Plans one entity; returns whether an encoding label was introduced below it.
    fn entity(&mut self, e: &Entity, top: bool) -> Result<bool, DowngradeError> {
        // The streaming form's bounds on the fields it reads whole (`walk.rs`).
        for name in ["content-type", "content-transfer-encoding"] {
            if let Some(f) = e.header.first(self.raw, name)
                && f.end.saturating_sub(f.start) > FIELD_MAX
            {
                return Err(DowngradeError::FieldTooLong {
                    field: crate::header::printable(f.name(self.raw), 64),
                });
            }
        }
        for field in &e.header.fields {
            let bytes = self.raw.get(field.start..field.end).unwrap_or_default();
            if has_8bit(bytes) && bytes.len() > FIELD_MAX {
                return Err(DowngradeError::FieldTooLong {
                    field: crate::header::printable(field.name(self.raw), 64),
                });
            }
            if has_8bit(bytes) {
                let new = crate::fields::convert(self.parser, self.raw, field)?;
                self.edit(field.start..field.end, new);
                self.fields_encoded += 1;
            }
        }
        let mut inserts: Vec<u8> = Vec::new();
        let encoded = match &e.body {
            Body::Leaf { range } => self.leaf(e, range.clone(), &mut inserts)?,
            Body::Multipart { parts } => {
                let mut any = false;
                for p in parts {
                    self.depth += 1;
                    let encoded = self.entity(p, false);
                    self.depth -= 1;
                    any |= encoded?;
                }
                any
            }
            Body::Message(inner) => {
                self.depth += 1;
                let encoded = self.entity(inner, false);
                self.depth -= 1;
                encoded?
            }
        };
        let container = !matches!(e.body, Body::Leaf { .. });
        if container && encoded && matches!(e.cte, Cte::EightBit | Cte::Binary) {
            self.set_cte(e, "7bit", &mut inserts);
        }
        if top && encoded && e.header.first(self.raw, "mime-version").is_none() {
            let mut fields = b"MIME-Version: 1.0\r\n".to_vec();
            fields.append(&mut inserts);
            inserts = fields;
        }
        if !inserts.is_empty() {
            if !e.header.separator {
                inserts.extend_from_slice(b"\r\n");
            }
            self.edit(e.header.end..e.header.end, inserts);
        }
        Ok(encoded)
    }

    /// Replaces the first Content-Transfer-Encoding field (removing later ones) or
    /// adds one.
    fn set_cte(&mut self, e: &Entity, name: &str, inserts: &mut Vec<u8>) {
        let line = format!("Content-Transfer-Encoding: {name}\r\n").into_bytes();
        let mut first = true;
        for f in &e.header.fields {
            if f.is(self.raw, "content-transfer-encoding") {
                let bytes = if first { line.clone() } else { Vec::new() };
                self.edit(f.start..f.end, bytes);
                first = false;
            }
        }
        if first {
            inserts.extend_from_slice(&line);
        }
    }

    fn leaf(
        &mut self,
        e: &Entity,
        range: Range<usize>,
        inserts: &mut Vec<u8>,
    ) -> Result<bool, DowngradeError> {
        let body = self.raw.get(range.clone()).unwrap_or_default();
        match &e.cte {
            cte if cte.is_identity() => {
                if !needs_encoding(body, self.source) {
                    if *cte == Cte::Binary && self.source == Source::Binary {
                        // 7-bit content wrongly labelled for a DATA transaction.
                        self.set_cte(e, "7bit", inserts);
                    }
                    return Ok(false);
                }
                let (encoded, name) = match class(&e.media) {
                    Class::Text => {
                        let breaks = if *cte == Cte::Binary {
                            Breaks::Exact
                        } else {
                            Breaks::Text
                        };
                        (quoted_printable(body, breaks), "quoted-printable")
                    }
                    Class::Opaque => (base64(body), "base64"),
                    Class::Forbidden => {
                        return Err(DowngradeError::EncodingForbidden {
                            media_type: format!("{}/{}", e.media.main, e.media.sub),
                        });
                    }
                };
                self.edit(range, encoded);
                self.set_cte(e, name, inserts);
                if !e.media.declared && e.media.is("text", "plain") {
                    inserts.extend_from_slice(
                        format!(
                            "Content-Type: text/plain; charset=\"{}\"\r\n",
                            charset_of(body)
                        )
                        .as_bytes(),
                    );
                }
                self.parts_encoded += 1;
                Ok(true)
            }
            _ if !has_8bit(body) => Ok(false),
            Cte::QuotedPrintable => {
                let again = quoted_printable(&decode_quoted_printable(body), Breaks::Exact);
                self.edit(range, again);
                self.parts_encoded += 1;
                Ok(false)
            }
            Cte::Base64 => {
                let kept = body.iter().copied().filter(|&b| b < 0x80).collect();
                self.edit(range, kept);
                self.parts_encoded += 1;
                Ok(false)
            }
            Cte::Other(name) => Err(DowngradeError::UnknownEncoding {
                encoding: name.clone(),
            }),
            _ => Ok(false),
        }
    }
}

/// Runs the conversion on content known to need it.
pub(crate) fn run<'a>(
    raw: &'a [u8],
    source: Source,
    limits: &Limits,
) -> Result<Downgraded<'a>, DowngradeError> {
    let parser = MessageParser::new();
    let tree = parse(&parser, raw, limits)?;
    if source == Source::Binary && tree.root.header.first(raw, "mime-version").is_none() {
        return Err(DowngradeError::NotMime);
    }
    let mut plan = Plan {
        parser: &parser,
        raw,
        source,
        edits: Vec::new(),
        depth: 0,
        parts_encoded: 0,
        fields_encoded: 0,
    };
    plan.entity(&tree.root, true)?;
    for range in &tree.ignored {
        let bytes = raw.get(range.clone()).unwrap_or_default();
        let cleaned = bytes
            .iter()
            .map(|&b| if b >= 0x80 { b'?' } else { b })
            .collect();
        plan.edit(range.clone(), cleaned);
    }
    let Plan {
        mut edits,
        parts_encoded,
        fields_encoded,
        ..
    } = plan;
    if edits.is_empty() {
        return Ok(Downgraded {
            content: raw.into(),
            parts_encoded,
            fields_encoded,
        });
    }
    let out = apply(raw, &mut edits)?;
    check(&parser, &tree, &out, limits)?;
    Ok(Downgraded {
        content: out.into(),
        parts_encoded,
        fields_encoded,
    })
}

fn apply(raw: &[u8], edits: &mut [Edit]) -> Result<Vec<u8>, DowngradeError> {
    edits.sort_by_key(|e| (e.range.start, e.range.end, e.depth));
    let extra: usize = edits.iter().map(|e| e.bytes.len()).sum();
    let mut out = Vec::with_capacity(raw.len().saturating_add(extra));
    let mut pos = 0usize;
    for e in edits.iter() {
        if e.range.start < pos || e.range.end < e.range.start {
            return Err(DowngradeError::Inconsistent {
                check: "overlapping edits",
            });
        }
        out.extend_from_slice(raw.get(pos..e.range.start).unwrap_or_default());
        out.extend_from_slice(&e.bytes);
        pos = e.range.end;
    }
    out.extend_from_slice(raw.get(pos..).unwrap_or_default());
    Ok(out)
}

fn check(
    parser: &MessageParser,
    before: &Tree,
    out: &[u8],
    limits: &Limits,
) -> Result<(), DowngradeError> {
    if has_8bit(out) {
        return Err(DowngradeError::Inconsistent {
            check: "an 8-bit octet is left",
        });
    }
    let after = parse(parser, out, limits)?;
    if shape(&after.root) != shape(&before.root) {
        return Err(DowngradeError::StructureChanged);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::{DowngradeError, Limits, Source, downgrade, downgrade_8bit};

    fn conv(raw: &[u8]) -> String {
        String::from_utf8(downgrade_8bit(raw).unwrap()).unwrap()
    }

    #[test]
    fn plain_message_becomes_mime() {
        assert_eq!(
            conv(b"Received: x\r\nSubject: hi\r\n\r\ncaf\xc3\xa9\r\n-- \r\n"),
            "Received: x\r\nSubject: hi\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n\r\ncaf=C3=A9\r\n=2D-=20\r\n"
        );
    }

    #[test]
    fn multipart_text_and_attachment() {
        let raw = b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\npre \xff\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n\x00\x01\xfe\xff\r\n--b\r\nContent-Type: text/plain\r\n\r\nascii only\r\n--b--\r\n";
        assert_eq!(
            conv(raw),
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\nContent-Transfer-Encoding: 7bit\r\n\r\npre ?\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAH+/w==\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nascii only\r\n--b--\r\n"
        );
    }

    #[test]
    fn encoded_parts_keep_their_encoding() {
        let raw =
            b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nYW\xffJj\r\n";
        assert_eq!(
            conv(raw),
            "Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nYWJj\r\n"
        );
        let raw = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: Quoted-Printable\r\n\r\na=3D\xe9=\r\nb\r\n";
        assert_eq!(
            conv(raw),
            "Content-Type: text/plain\r\nContent-Transfer-Encoding: Quoted-Printable\r\n\r\na=3D=E9b\r\n"
        );
    }

    #[test]
    fn headers_only() {
        assert_eq!(
            conv("Subject: Grüße\r\nFrom: Jörg <j@example.com>\r\n\r\nbody\r\n".as_bytes()),
            "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nFrom: =?utf-8?q?J=C3=B6rg?= <j@example.com>\r\n\r\nbody\r\n"
        );
    }

    #[test]
    fn refusals() {
        let cases: [(&[u8], DowngradeError); 4] = [
            (
                "To: jörg@example.com\r\n\r\nx\r\n".as_bytes(),
                DowngradeError::EightBitAddress { field: "To".into() },
            ),
            (
                b"Content-Transfer-Encoding: x-uuencode\r\n\r\n\xff\r\n",
                DowngradeError::UnknownEncoding {
                    encoding: "x-uuencode".into(),
                },
            ),
            (
                b"Content-Type: message/partial; id=1\r\n\r\n\xff\r\n",
                DowngradeError::EncodingForbidden {
                    media_type: "message/partial".into(),
                },
            ),
            (
                "Message-ID: <é@x>\r\n\r\n".as_bytes(),
                DowngradeError::EightBitStructuredField {
                    field: "Message-ID".into(),
                },
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(downgrade_8bit(raw).unwrap_err(), want);
        }
    }

    #[test]
    fn binary_content() {
        let limits = Limits::default();
        let raw = b"Content-Type: text/plain\r\n\r\nbinary\x00\r\n";
        assert_eq!(
            downgrade(raw, Source::Binary, &limits).unwrap_err(),
            DowngradeError::NotMime
        );
        let raw = b"MIME-Version: 1.0\r\nContent-Type: application/x\r\nContent-Transfer-Encoding: binary\r\n\r\na\rb\nc";
        let d = downgrade(raw, Source::Binary, &limits).unwrap();
        assert_eq!(
            &*d.content,
            b"MIME-Version: 1.0\r\nContent-Type: application/x\r\nContent-Transfer-Encoding: base64\r\n\r\nYQ1iCmM=\r\n"
        );
        let raw = b"MIME-Version: 1.0\r\nContent-Transfer-Encoding: binary\r\n\r\nplain\r\n";
        let d = downgrade(raw, Source::Binary, &limits).unwrap();
        assert_eq!(
            &*d.content,
            b"MIME-Version: 1.0\r\nContent-Transfer-Encoding: 7bit\r\n\r\nplain\r\n"
        );
    }

    #[test]
    fn fields_added_where_a_nested_message_begins_go_to_the_right_header() {
        // The outer header ends without an empty line where the nested message (whose
        // own header is empty) begins: the outer's MIME-Version comes first, then the
        // line that ends it, then the inner part's fields.
        let raw = b"Content-Type: message/rfc822\r\n--a\r\n\xe9\r\n";
        assert_eq!(
            conv(raw),
            "Content-Type: message/rfc822\r\nMIME-Version: 1.0\r\n\r\nContent-Transfer-Encoding: quoted-printable\r\nContent-Type: text/plain; charset=\"unknown-8bit\"\r\n\r\n=2D-a\r\n=E9\r\n"
        );
    }

    #[test]
    fn seven_bit_content_is_borrowed() {
        let raw = b"Subject: x\r\n\r\ny\r\n";
        let d = downgrade(raw, Source::EightBit, &Limits::default()).unwrap();
        assert!(matches!(d.content, std::borrow::Cow::Borrowed(_)));
    }
}
