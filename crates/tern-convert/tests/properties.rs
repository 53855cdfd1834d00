//! Property tests of the downgrade on generated MIME.
//!
//! - Generated trees (multiparts, nested messages, leaves of several types and
//!   encodings, 8-bit bodies, 8-bit Subject and display names) are rendered, converted,
//!   and read back with mail-parser, an independent reader: the copy is 7-bit, has the
//!   same tree, and every leaf decodes to the generated content; the decoded Subject and
//!   display name are the generated ones.
//! - Arbitrary bytes, and generated messages with random damage (octets inserted,
//!   removed or replaced, delimiter lines and line ends thrown in), go through the same
//!   check as the fuzz target: no panic, a 7-bit copy of bounded size, stable when
//!   converted again.
//! - Both: the streaming form ([`tern_convert::downgrade_pieces`], pieces of 1, 7,
//!   4096 octets and whole) gives the same copy as the whole-buffer one, or errs when it
//!   errs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mail_parser::{MessageParser, PartType};
use proptest::prelude::*;
use tern_convert::fuzzing::{FUZZ_LIMITS, check, check_streaming};
use tern_convert::{Source, downgrade_8bit, is_7bit};

#[derive(Debug, Clone)]
enum Node {
    Leaf(Leaf),
    Multipart { sub: &'static str, parts: Vec<Node> },
    Message { subject: String, inner: Box<Node> },
}

#[derive(Debug, Clone)]
struct Leaf {
    kind: Kind,
    /// The decoded content.
    content: Vec<u8>,
    cte: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Html,
    Binary,
}

/// Text: UTF-8 lines with CRLF ends, no line starting with `-`.
fn text() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec("[a-zA-Z0-9 .,=_äöüßéèçñ€✓\\t]{0,90}", 0..6).prop_map(|lines| {
        lines
            .iter()
            .map(|l| format!("{l}\r\n"))
            .collect::<String>()
            .into_bytes()
    })
}

/// Binary: any octets, but no `-` (that could start a delimiter line).
fn binary() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..300).prop_map(|v| {
        v.into_iter()
            .map(|b| if b == b'-' { b'_' } else { b })
            .collect()
    })
}

fn leaf() -> impl Strategy<Value = Node> {
    prop_oneof![
        (text(), prop_oneof![Just(""), Just("8bit"), Just("7bit")]).prop_map(|(content, cte)| {
            Node::Leaf(Leaf {
                kind: Kind::Text,
                content,
                cte,
            })
        }),
        (
            text(),
            prop_oneof![Just("quoted-printable"), Just("base64")]
        )
            .prop_map(|(content, cte)| Node::Leaf(Leaf {
                kind: Kind::Html,
                content,
                cte,
            })),
        (
            binary(),
            prop_oneof![Just("binary"), Just("8bit"), Just("base64")]
        )
            .prop_map(|(content, cte)| Node::Leaf(Leaf {
                kind: Kind::Binary,
                content,
                cte,
            })),
    ]
}

fn tree() -> impl Strategy<Value = Node> {
    leaf().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            (
                prop_oneof![Just("mixed"), Just("alternative"), Just("related")],
                proptest::collection::vec(inner.clone(), 1..4)
            )
                .prop_map(|(sub, parts)| Node::Multipart { sub, parts }),
            ("[a-zA-Zäöü ]{0,20}", inner).prop_map(|(subject, n)| Node::Message {
                subject,
                inner: Box::new(n),
            }),
        ]
    })
}

fn qp(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in data.split_inclusive(|&b| b == b'\n') {
        let (body, end) = match line.strip_suffix(b"\r\n") {
            Some(b) => (b, true),
            None => (line, false),
        };
        for &b in body {
            if (33..=126).contains(&b) && b != b'=' {
                out.push(b);
            } else {
                out.extend_from_slice(format!("={b:02X}").as_bytes());
            }
        }
        if end {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

fn b64(data: &[u8]) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(A[(n >> 18) as usize & 63]);
        out.push(A[(n >> 12) as usize & 63]);
        out.push(if chunk.len() > 1 {
            A[(n >> 6) as usize & 63]
        } else {
            b'='
        });
        out.push(if chunk.len() > 2 {
            A[n as usize & 63]
        } else {
            b'='
        });
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Renders an entity's header fields and body.
fn render(node: &Node, id: &mut usize, out: &mut Vec<u8>) {
    match node {
        Node::Leaf(l) => {
            let ct = match l.kind {
                Kind::Text => "text/plain; charset=utf-8",
                Kind::Html => "text/html; charset=utf-8",
                Kind::Binary => "application/octet-stream",
            };
            out.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
            if !l.cte.is_empty() {
                out.extend_from_slice(
                    format!("Content-Transfer-Encoding: {}\r\n", l.cte).as_bytes(),
                );
            }
            out.extend_from_slice(b"\r\n");
            match l.cte {
                "quoted-printable" => out.extend_from_slice(&qp(&l.content)),
                "base64" => out.extend_from_slice(&b64(&l.content)),
                _ => out.extend_from_slice(&l.content),
            }
        }
        Node::Multipart { sub, parts } => {
            *id += 1;
            let boundary = format!("=_b{id}_q");
            out.extend_from_slice(
                format!(
                    "Content-Type: multipart/{sub}; boundary=\"{boundary}\"\r\n\r\npreamble\r\n"
                )
                .as_bytes(),
            );
            for p in parts {
                out.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
                render(p, id, out);
            }
            out.extend_from_slice(format!("\r\n--{boundary}--\r\nepilogue\r\n").as_bytes());
        }
        Node::Message { subject, inner } => {
            out.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\n");
            out.extend_from_slice(format!("Subject: {subject}\r\n").as_bytes());
            render(inner, id, out);
        }
    }
}

fn message(subject: &str, name: &str, body: &Node) -> Vec<u8> {
    let mut out =
        format!("From: {name} <sender@example.org>\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n")
            .into_bytes();
    render(body, &mut 0, &mut out);
    out
}

/// The model's leaves in order.
fn model_leaves(node: &Node, out: &mut Vec<(Kind, Vec<u8>)>) {
    match node {
        Node::Leaf(l) => out.push((l.kind, l.content.clone())),
        Node::Multipart { parts, .. } => parts.iter().for_each(|p| model_leaves(p, out)),
        Node::Message { inner, .. } => model_leaves(inner, out),
    }
}

/// mail-parser's leaves in order (`parts[0]` is the root).
fn parsed_leaves(m: &mail_parser::Message<'_>, id: usize, out: &mut Vec<Vec<u8>>) {
    leaves_of(m, id, &mut std::collections::HashSet::new(), out);
}

/// The leaves under part `id`, each part visited once: for some inputs mail-parser's part
/// list names a multipart among its own descendants, and a plain walk would recurse
/// until the stack overflows.
fn leaves_of(
    m: &mail_parser::Message<'_>,
    id: usize,
    visited: &mut std::collections::HashSet<usize>,
    out: &mut Vec<Vec<u8>>,
) {
    if !visited.insert(id) {
        return;
    }
    let Some(part) = m.parts.get(id) else {
        return;
    };
    match &part.body {
        PartType::Multipart(children) => {
            for c in children {
                leaves_of(m, *c as usize, visited, out);
            }
        }
        PartType::Message(inner) => parsed_leaves(inner, 0, out),
        PartType::Text(t) | PartType::Html(t) => out.push(t.as_bytes().to_vec()),
        PartType::Binary(b) | PartType::InlineBinary(b) => out.push(b.to_vec()),
    }
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn generated_messages_keep_structure_and_content(
        body in tree(),
        subject in "[a-zA-Z0-9 äöüÄÖÜß€✓=?_]{1,60}",
        name in "[a-zA-Z äöüéñ]{1,20}",
    ) {
        let raw = message(&subject, &name, &body);
        // The streaming form, in pieces of 1, 7, 4096 octets and whole, gives the same.
        check_streaming(&raw, Source::EightBit, &tern_convert::Limits::default());
        let out = downgrade_8bit(&raw).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert!(is_7bit(&out));
        let copy = MessageParser::new().parse(&out).expect("mail-parser reads the copy");
        let original = MessageParser::new().parse(&raw).expect("mail-parser reads the original");
        let mut want: Vec<Vec<u8>> = Vec::new();
        let mut model = Vec::new();
        model_leaves(&body, &mut model);
        let mut seen = Vec::new();
        parsed_leaves(&original, 0, &mut seen);
        // mail-parser loses parts after a message/rfc822 nested in another inside a
        // multipart; where it misreads the original, the copy must read the same way.
        let as_model = seen.len() == model.len();
        if as_model {
            want.extend(model.iter().map(|(_, c)| c.clone()));
        } else {
            want = seen;
        }
        let mut got = Vec::new();
        parsed_leaves(&copy, 0, &mut got);
        prop_assert_eq!(got.len(), want.len(), "leaves in {}", String::from_utf8_lossy(&out));
        for (w, g) in want.iter().zip(&got) {
            prop_assert!(g == w, "leaf {:?} became {:?} in {}",
                String::from_utf8_lossy(w), String::from_utf8_lossy(g), String::from_utf8_lossy(&out));
        }
        // Where mail-parser misreads the original's structure it can misread its top-level
        // fields too: the copy must then read the same way as the original.
        let want_subject = if as_model {
            squash(&subject)
        } else {
            squash(original.subject().unwrap_or_default())
        };
        prop_assert_eq!(squash(copy.subject().unwrap_or_default()), want_subject,
            "original read as {:?}", original.subject());
        let first = |m: &mail_parser::Message<'_>| {
            m.from().and_then(|a| a.first()).map(|f| {
                (f.name.as_deref().map(|n| n.trim().to_owned()), f.address.as_deref().map(str::to_owned))
            })
        };
        let want_from = if as_model {
            Some((Some(name.trim().to_owned()).filter(|n| !n.is_empty()), Some("sender@example.org".to_owned())))
        } else {
            first(&original)
        };
        prop_assert_eq!(first(&copy), want_from);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
        check(&data, Source::EightBit, &FUZZ_LIMITS);
        check(&data, Source::Binary, &FUZZ_LIMITS);
    }

    #[test]
    fn damaged_messages_never_panic(
        body in tree(),
        damage in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..6, any::<u8>()), 0..12),
    ) {
        let mut raw = message("Grüße", "Jörg", &body);
        for (at, what, byte) in damage {
            let i = at.index(raw.len() + 1);
            let piece: &[u8] = match what {
                0 => &[byte],
                1 => b"\r\n--=_b1_q\r\n",
                2 => b"\r\n--=_b2_q--\r\n",
                3 => b"\n",
                4 => b"\r",
                _ => b"",
            };
            if what == 5 && i < raw.len() {
                raw.remove(i);
            } else {
                raw.splice(i..i, piece.iter().copied());
            }
        }
        check(&raw, Source::EightBit, &FUZZ_LIMITS);
        check(&raw, Source::Binary, &FUZZ_LIMITS);
    }

    /// Messages made of the pieces the MIME reading turns on (header lines of every
    /// kind, separators, delimiter and close lines of nested boundaries with trailing
    /// white space, bare CR and LF, 8-bit and NUL octets, encodings, message/rfc822,
    /// digests), so that the streaming walker and the buffer reader meet the same
    /// corner cases in every order and split across pieces.
    #[test]
    fn mime_shaped_token_soup_streams_like_the_whole_buffer(
        tokens in proptest::collection::vec(0usize..TOKENS.len(), 0..60),
    ) {
        let raw: Vec<u8> = tokens.iter().flat_map(|&t| TOKENS[t].iter().copied()).collect();
        check_streaming(&raw, Source::EightBit, &FUZZ_LIMITS);
        check_streaming(&raw, Source::Binary, &FUZZ_LIMITS);
    }
}

const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b"MIME-Version: 1.0\r\n",
    b"Content-Type: multipart/mixed; boundary=a\r\n",
    b"Content-Type: multipart/digest; boundary=\"b b\"\r\n",
    b"Content-Type: message/rfc822\r\n",
    b"Content-Type: message/partial; id=1\r\n",
    b"Content-Type: text/plain; name=\"caf\xc3\xa9\"\r\n",
    b"Content-Type: application/x\r\n",
    b"Content-Transfer-Encoding: 8bit\r\n",
    b"Content-Transfer-Encoding: binary\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: x-uue\r\n",
    b"Subject: Gr\xc3\xbc\xc3\x9fe\r\n",
    b"From: J\xc3\xb6rg <j@example.com>\r\n",
    b"X-Bad: \xff\xfe\r\n",
    b" continued \xe9\r\n",
    b"\tcontinued\r\n",
    b"From mbox line\r\n",
    b": empty name\r\n",
    b"--a\r\n",
    b"--a  \t\r\n",
    b"--a--\r\n",
    b"--a-- \r\n",
    b"--ab\r\n",
    b"--b b\r\n",
    b"--b b--\r\n",
    b"--a",
    b"text \xc3\xa9t\xc3\xa9 ",
    b"\xff\x00\x80",
    b"=C3=A9=\r\n",
    b"=\xe9",
    b"YWJj\xff\r\n",
    b"plain ascii line\r\n",
    b"x",
    b"-",
    b" ",
];
