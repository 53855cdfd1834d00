//! The 7-bit encodings: quoted-printable and base64 bodies (RFC 2045 §6.7, §6.8),
//! encoded words (RFC 2047) and parameter values (RFC 2231). Small and hand-written so
//! that the properties the conversion relies on hold by construction:
//! - every output octet is printable ASCII, space, or part of a CRLF;
//! - no output line exceeds 76 octets (76 + CRLF), far below SMTP's 998;
//! - no quoted-printable line starts with `-`, so encoded content can never form a MIME
//!   delimiter line (`--boundary`); base64 has no `-` at all.
//!
//! Each encoder has a decoder (or a test one) that proves the round trip in the tests.

/// How line ends in a body become quoted-printable hard line breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Breaks {
    /// Text as the next hop would have seen it: CRLF, bare LF and bare CR are each a
    /// line break (the dot-stuffer sends each as CRLF).
    Text,
    /// Only CRLF is a line break; a bare CR or LF is data (`=0D`, `=0A`).
    Exact,
}

/// Longest encoded line before a soft line break (`=` makes it 76).
const QP_LINE: usize = 75;

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn push_hex(out: &mut Vec<u8>, b: u8) {
    out.push(b'=');
    out.push(HEX[usize::from(b >> 4)]);
    out.push(HEX[usize::from(b & 0x0f)]);
}

/// Quoted-printable encoding of `data`.
pub(crate) fn quoted_printable(data: &[u8], breaks: Breaks) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len().saturating_add(data.len() / 2));
    let mut col = 0usize;
    qp_encode_into(data, breaks, &mut col, true, &mut out);
    out
}

/// The quoted-printable encoder's step, shared by [`quoted_printable`] and the
/// streaming [`QpEncoder`]: encodes from the start of `data` and returns how many octets
/// it consumed. Unless `last` (nothing follows `data`), it stops two octets before the
/// end, since an octet's encoding depends on the next two.
pub(crate) fn qp_encode_into(
    data: &[u8],
    breaks: Breaks,
    col: &mut usize,
    last: bool,
    out: &mut Vec<u8>,
) -> usize {
    let mut i = 0usize;
    while let Some(&b) = data.get(i) {
        if !last && i.saturating_add(2) >= data.len() {
            break;
        }
        let next = data.get(i + 1).copied();
        // A line break?
        let brk = match (b, next, breaks) {
            (b'\r', Some(b'\n'), _) => Some(2),
            (b'\r' | b'\n', _, Breaks::Text) => Some(1),
            _ => None,
        };
        if let Some(len) = brk {
            out.extend_from_slice(b"\r\n");
            *col = 0;
            i += len;
            continue;
        }
        let at_line_end = matches!(
            (next, data.get(i + 2), breaks),
            (None, _, _) | (Some(b'\r'), Some(b'\n'), _) | (Some(b'\r' | b'\n'), _, Breaks::Text)
        );
        let literal = match b {
            b' ' | b'\t' => !at_line_end,
            b'=' => false,
            33..=126 => true,
            _ => false,
        };
        let width = if literal { 1 } else { 3 };
        if *col + width > QP_LINE {
            out.extend_from_slice(b"=\r\n");
            *col = 0;
        }
        if literal && !(*col == 0 && b == b'-') {
            out.push(b);
            *col += 1;
        } else {
            push_hex(out, b);
            *col += 3;
        }
        i += 1;
    }
    i
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Lenient quoted-printable decoding: `=XX` (either case) is an octet, `=` before a line
/// end or at the very end is a soft break, any other `=` and any other octet (8-bit ones
/// included) are
/// themselves. Hard line breaks (CRLF, LF, CR) become CRLF, as the next hop would have
/// seen them. Trailing white space is kept (as Python's decoder keeps it).
pub(crate) fn decode_quoted_printable(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    qp_decode_into(data, true, &mut out);
    out
}

/// The decoder's step, shared by [`decode_quoted_printable`] and the streaming
/// [`Requoter`]: decodes from the start of `data`, returns how many octets it consumed;
/// unless `last`, it stops two octets before the end (`=XX`, `=` CRLF need them).
pub(crate) fn qp_decode_into(data: &[u8], last: bool, out: &mut Vec<u8>) -> usize {
    let mut i = 0usize;
    while let Some(&b) = data.get(i) {
        if !last && i.saturating_add(2) >= data.len() {
            break;
        }
        match b {
            b'=' => {
                let (n1, n2) = (data.get(i + 1).copied(), data.get(i + 2).copied());
                match (n1, n2) {
                    // `=` ending the data: a soft break with nothing after it.
                    (None, _) => i += 1,
                    (Some(b'\r'), Some(b'\n')) => i += 3,
                    (Some(b'\r' | b'\n'), _) => i += 2,
                    (Some(h), Some(l)) => match (hex_value(h), hex_value(l)) {
                        (Some(h), Some(l)) => {
                            out.push((h << 4) | l);
                            i += 3;
                        }
                        _ => {
                            out.push(b'=');
                            i += 1;
                        }
                    },
                    _ => {
                        out.push(b'=');
                        i += 1;
                    }
                }
            }
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                i += if data.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
            }
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    i
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Base64 in lines of 76 characters, each ended by CRLF.
pub(crate) fn base64(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 3 * 4 + data.len() / 57 * 2 + 8);
    base64_into(data, true, &mut out);
    out
}

/// Octets per base64 line (76 characters).
const B64_LINE: usize = 57;

/// The base64 step, shared by [`base64`] and the streaming [`Base64Encoder`]: encodes
/// whole lines from the start of `data` (and, when `last`, the rest) and returns how
/// many octets it consumed.
pub(crate) fn base64_into(data: &[u8], last: bool, out: &mut Vec<u8>) -> usize {
    let whole = data.len() / B64_LINE * B64_LINE;
    let take = if last { data.len() } else { whole };
    for line in data.get(..take).unwrap_or_default().chunks(B64_LINE) {
        for group in line.chunks(3) {
            let b = [
                group.first().copied().unwrap_or(0),
                group.get(1).copied().unwrap_or(0),
                group.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            let sextet = |shift: u32| B64[((n >> shift) & 63) as usize];
            out.push(sextet(18));
            out.push(sextet(12));
            out.push(if group.len() > 1 { sextet(6) } else { b'=' });
            out.push(if group.len() > 2 { sextet(0) } else { b'=' });
        }
        out.extend_from_slice(b"\r\n");
    }
    take
}

/// Pending input of a streaming encoder: what a step left, then the new octets.
#[derive(Debug, Default)]
struct Pending(Vec<u8>);

impl Pending {
    /// Appends `data`, runs `step` over everything pending, keeps what it left.
    fn run(&mut self, data: &[u8], step: impl FnOnce(&[u8]) -> usize) {
        self.0.extend_from_slice(data);
        let used = step(&self.0).min(self.0.len());
        self.0.drain(..used);
    }
}

/// [`quoted_printable`] fed in pieces: the same output for any split of the input.
/// Holds at most two octets between calls.
#[derive(Debug)]
pub(crate) struct QpEncoder {
    breaks: Breaks,
    col: usize,
    pending: Pending,
}

impl QpEncoder {
    pub(crate) fn new(breaks: Breaks) -> QpEncoder {
        QpEncoder {
            breaks,
            col: 0,
            pending: Pending::default(),
        }
    }

    pub(crate) fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let (breaks, col) = (self.breaks, &mut self.col);
        self.pending
            .run(data, |d| qp_encode_into(d, breaks, col, false, out));
    }

    pub(crate) fn finish(mut self, out: &mut Vec<u8>) {
        let (breaks, col) = (self.breaks, &mut self.col);
        self.pending
            .run(&[], |d| qp_encode_into(d, breaks, col, true, out));
    }
}

/// `quoted_printable(decode_quoted_printable(x), Breaks::Exact)` fed in pieces.
#[derive(Debug)]
pub(crate) struct Requoter {
    pending: Pending,
    decoded: Vec<u8>,
    encoder: QpEncoder,
}

impl Requoter {
    pub(crate) fn new() -> Requoter {
        Requoter {
            pending: Pending::default(),
            decoded: Vec::new(),
            encoder: QpEncoder::new(Breaks::Exact),
        }
    }

    pub(crate) fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let decoded = &mut self.decoded;
        self.pending
            .run(data, |d| qp_decode_into(d, false, decoded));
        self.encoder.feed(&self.decoded, out);
        self.decoded.clear();
    }

    pub(crate) fn finish(mut self, out: &mut Vec<u8>) {
        let decoded = &mut self.decoded;
        self.pending.run(&[], |d| qp_decode_into(d, true, decoded));
        self.encoder.feed(&self.decoded, out);
        self.encoder.finish(out);
    }
}

/// [`base64`] fed in pieces. Holds at most 56 octets between calls.
#[derive(Debug, Default)]
pub(crate) struct Base64Encoder {
    pending: Pending,
}

impl Base64Encoder {
    pub(crate) fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.pending.run(data, |d| base64_into(d, false, out));
    }

    pub(crate) fn finish(mut self, out: &mut Vec<u8>) {
        self.pending.run(&[], |d| base64_into(d, true, out));
    }
}

/// The charset label for header octets: `utf-8` when they are UTF-8, else
/// `unknown-8bit` (RFC 1428), which says exactly that the octets are kept unknown.
pub(crate) fn charset_of(bytes: &[u8]) -> &'static str {
    if std::str::from_utf8(bytes).is_ok() {
        "utf-8"
    } else {
        "unknown-8bit"
    }
}

/// Longest encoded word (RFC 2047 §2).
const WORD: usize = 75;

/// Encodes `text` as RFC 2047 "Q" encoded words (the strict §5(3) set, valid in
/// unstructured text, comments and phrases alike), each at most 75 characters, never
/// splitting a UTF-8 character; words are separated by folding white space (CRLF SP),
/// which decoders drop between encoded words.
pub(crate) fn encoded_words(text: &[u8], charset: &str) -> Vec<u8> {
    let prefix = format!("=?{charset}?q?");
    let room = WORD.saturating_sub(prefix.len() + 2).max(12);
    let mut out = Vec::with_capacity(text.len() * 3 + 16);
    let mut word: Vec<u8> = Vec::new();
    let flush = |word: &mut Vec<u8>, out: &mut Vec<u8>| {
        if word.is_empty() {
            return;
        }
        if !out.is_empty() {
            out.extend_from_slice(b"\r\n ");
        }
        out.extend_from_slice(prefix.as_bytes());
        out.append(word);
        out.extend_from_slice(b"?=");
    };
    let utf8 = charset == "utf-8";
    let mut i = 0usize;
    while i < text.len() {
        // One character: a whole UTF-8 sequence, or one octet.
        let len = if utf8 { utf8_len(text, i) } else { 1 };
        let ch = text.get(i..i + len).unwrap_or_default();
        let mut enc = Vec::with_capacity(ch.len() * 3);
        for &b in ch {
            match b {
                b' ' => enc.push(b'_'),
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'!' | b'*' | b'+' | b'-' | b'/' => {
                    enc.push(b)
                }
                _ => push_hex(&mut enc, b),
            }
        }
        if word.len() + enc.len() > room {
            flush(&mut word, &mut out);
        }
        word.extend_from_slice(&enc);
        i += len.max(1);
    }
    flush(&mut word, &mut out);
    out
}

/// Length of the UTF-8 sequence starting at `i` (1 for anything not a valid start).
fn utf8_len(text: &[u8], i: usize) -> usize {
    let n = match text.get(i) {
        Some(0xc0..=0xdf) => 2,
        Some(0xe0..=0xef) => 3,
        Some(0xf0..=0xf7) => 4,
        _ => 1,
    };
    if text
        .get(i..i + n)
        .is_some_and(|s| std::str::from_utf8(s).is_ok())
    {
        n
    } else {
        1
    }
}

/// A parameter value as a quoted string (RFC 2045 §5.1), for ASCII values.
pub(crate) fn quoted_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// An RFC 2231 parameter with an 8-bit value: `name*=utf-8''%XX…`, split into
/// continuations `name*0*=utf-8''…; name*1*=…` of at most 60 characters each.
/// Returns the `name*…=value` pieces, to be joined with `;` and folding white space.
pub(crate) fn rfc2231(name: &str, value: &str) -> Vec<String> {
    let mut chunks: Vec<String> = vec![String::new()];
    // Whole characters per continuation, so that no reader has to join half ones.
    for c in value.chars() {
        let mut utf8 = [0u8; 4];
        let mut piece = String::new();
        for &b in c.encode_utf8(&mut utf8).as_bytes() {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                piece.push(char::from(b));
            } else {
                piece.push_str(&format!("%{b:02X}"));
            }
        }
        if chunks.last().is_some_and(|c| c.len() + piece.len() > 60) {
            chunks.push(String::new());
        }
        if let Some(last) = chunks.last_mut() {
            last.push_str(&piece);
        }
    }
    if chunks.len() == 1 {
        let only = chunks.pop().unwrap_or_default();
        return vec![format!("{name}*=utf-8''{only}")];
    }
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            if i == 0 {
                format!("{name}*0*=utf-8''{c}")
            } else {
                format!("{name}*{i}*={c}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Strict quoted-printable decoding, for the round trip: hard breaks are CRLF.
    fn qp_decode_strict(enc: &[u8]) -> Vec<u8> {
        decode_quoted_printable(enc)
    }

    fn b64_decode(enc: &[u8]) -> Vec<u8> {
        let mut bits = 0u32;
        let mut n = 0;
        let mut out = Vec::new();
        for &c in enc {
            let Some(v) = B64.iter().position(|&x| x == c) else {
                continue;
            };
            bits = (bits << 6) | v as u32;
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push((bits >> n) as u8);
            }
        }
        out
    }

    fn check_lines(enc: &[u8]) {
        for line in enc.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            assert!(line.len() <= 76, "line of {}: {:?}", line.len(), line);
            assert!(!line.starts_with(b"-"), "line starts with '-'");
            assert!(!line.contains(&b'\r'), "bare CR");
            assert!(
                line.iter()
                    .all(|&b| (b' '..=b'~').contains(&b) || b == b'\t')
            );
        }
    }

    #[test]
    fn qp_examples() {
        assert_eq!(
            quoted_printable(b"caf\xc3\xa9\r\n", Breaks::Text),
            b"caf=C3=A9\r\n"
        );
        assert_eq!(
            quoted_printable(b"a \r\nb\t", Breaks::Text),
            b"a=20\r\nb=09"
        );
        assert_eq!(quoted_printable(b"a\nb\rc", Breaks::Text), b"a\r\nb\r\nc");
        assert_eq!(quoted_printable(b"a\nb\rc", Breaks::Exact), b"a=0Ab=0Dc");
        assert_eq!(
            quoted_printable(b"-- \r\n=", Breaks::Text),
            b"=2D-=20\r\n=3D"
        );
        let long = vec![b'x'; 200];
        let enc = quoted_printable(&long, Breaks::Text);
        check_lines(&enc);
        assert_eq!(decode_quoted_printable(&enc), long);
    }

    #[test]
    fn lenient_qp_decoding() {
        assert_eq!(
            decode_quoted_printable(b"a=3Db=3db=\r\nc=\nd=zz=4="),
            b"a=b=bcd=zz=4"
        );
        assert_eq!(
            decode_quoted_printable(b"\xff x \nz\r"),
            b"\xff x \r\nz\r\n"
        );
    }

    #[test]
    fn base64_examples() {
        assert_eq!(base64(b""), b"");
        assert_eq!(base64(b"f"), b"Zg==\r\n");
        assert_eq!(base64(b"foobar"), b"Zm9vYmFy\r\n");
        let data: Vec<u8> = (0..=255).collect();
        let enc = base64(&data);
        check_lines(&enc);
        assert_eq!(b64_decode(&enc), data);
    }

    #[test]
    fn encoded_word_examples() {
        assert_eq!(
            encoded_words("Grüße aus Köln".as_bytes(), "utf-8"),
            b"=?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?="
        );
        assert_eq!(
            encoded_words(b"\xe9t\xe9", "unknown-8bit"),
            b"=?unknown-8bit?q?=E9t=E9?="
        );
        let long = "é".repeat(100);
        let enc = encoded_words(long.as_bytes(), "utf-8");
        for word in enc.split(|&b| b == b'\n') {
            let word = word.strip_suffix(b"\r").unwrap_or(word);
            let word = word.strip_prefix(b" ").unwrap_or(word);
            assert!(word.len() <= 75);
            // Never half a character: each word holds whole "=C3=A9" pairs.
            assert_eq!(
                (word.len() - 12) % 6,
                0,
                "{:?}",
                String::from_utf8_lossy(word)
            );
        }
    }

    #[test]
    fn parameters() {
        assert_eq!(quoted_string(r#"a "b" \c"#), r#""a \"b\" \\c""#);
        assert_eq!(
            rfc2231("filename", "résumé.pdf"),
            vec!["filename*=utf-8''r%C3%A9sum%C3%A9.pdf"]
        );
        let long = rfc2231("name", &"é".repeat(15));
        assert_eq!(long.len(), 2);
        assert!(long[0].starts_with("name*0*=utf-8''%C3%A9"));
        assert!(long[1].starts_with("name*1*=%C3%A9"));
    }

    proptest! {
        #[test]
        fn qp_round_trips_exactly(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let enc = quoted_printable(&data, Breaks::Exact);
            check_lines(&enc);
            prop_assert_eq!(qp_decode_strict(&enc), data);
        }

        #[test]
        fn qp_text_round_trips_with_crlf_lines(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let enc = quoted_printable(&data, Breaks::Text);
            check_lines(&enc);
            // What the next hop would have seen: every line end as CRLF.
            let mut want = Vec::new();
            let mut i = 0;
            while i < data.len() {
                match (data[i], data.get(i + 1)) {
                    (b'\r', Some(b'\n')) => { want.extend_from_slice(b"\r\n"); i += 2; }
                    (b'\r' | b'\n', _) => { want.extend_from_slice(b"\r\n"); i += 1; }
                    (b, _) => { want.push(b); i += 1; }
                }
            }
            prop_assert_eq!(qp_decode_strict(&enc), want);
        }

        #[test]
        fn streaming_encoders_match_whole_ones(
            data in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'='), Just(b' '), any::<u8>()], 0..400),
            size in 1usize..9,
        ) {
            for breaks in [Breaks::Text, Breaks::Exact] {
                let (mut out, mut enc) = (Vec::new(), QpEncoder::new(breaks));
                data.chunks(size).for_each(|c| enc.feed(c, &mut out));
                enc.finish(&mut out);
                prop_assert_eq!(&out, &quoted_printable(&data, breaks));
            }
            let (mut out, mut enc) = (Vec::new(), Requoter::new());
            data.chunks(size).for_each(|c| enc.feed(c, &mut out));
            enc.finish(&mut out);
            prop_assert_eq!(&out, &quoted_printable(&decode_quoted_printable(&data), Breaks::Exact));
            let (mut out, mut enc) = (Vec::new(), Base64Encoder::default());
            data.chunks(size).for_each(|c| enc.feed(c, &mut out));
            enc.finish(&mut out);
            prop_assert_eq!(&out, &base64(&data));
        }

        #[test]
        fn base64_round_trips(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let enc = base64(&data);
            check_lines(&enc);
            prop_assert_eq!(b64_decode(&enc), data);
        }
    }
}
