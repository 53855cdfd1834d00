//! Header fields with 8-bit octets, rewritten in 7 bit or refused.
//!
//! RFC 2047 encoded words may stand only in unstructured text, comments and phrases
//! (display names); RFC 2231 carries 8-bit parameter values. So, by field:
//! - unstructured (Subject, Comments, Content-Description, and any field this module
//!   does not know, whose grammar RFC 5322 §3.6.8 makes unstructured): each run of
//!   8-bit words becomes encoded words; the ASCII words around it, the original
//!   folding and the white space between words are kept;
//! - address lists (From, To, Cc, …): re-written from mail-parser's reading with each
//!   8-bit display name as encoded words; an 8-bit address (local part or domain)
//!   needs SMTPUTF8 and is refused ([`DowngradeError::EightBitAddress`]);
//! - Content-Type and Content-Disposition: re-written with 8-bit parameter values in
//!   RFC 2231 form (`filename*=utf-8''…`); an 8-bit boundary is refused;
//! - any other structured field (Date, Message-ID, Received, DKIM-Signature, …): refused
//!   ([`DowngradeError::EightBitStructuredField`]); no encoding is defined for them.
//!
//! Re-written address and parameter fields lose comments and original formatting, not
//! meaning. Octets that are not UTF-8 are labelled `unknown-8bit` (RFC 1428) in
//! unstructured fields; in address and parameter fields they are refused, because the
//! characters, hence the addresses, cannot be known.
//!
//! Every produced field ends in CRLF; its continuation lines start with a space and no
//! line it writes is longer than 78 octets beyond the text it keeps.
//!
//! Trust: field values are hostile. Names are `[!-9;-~]+` (the header reader's rule),
//! which is what makes them safe to copy.

use mail_parser::{Addr, Address, ContentType, HeaderValue, MessageParser};

use crate::DowngradeError;
use crate::encode::{charset_of, encoded_words, quoted_string, rfc2231};
use crate::header::{Field, printable};
use crate::lines::has_8bit;

/// Fields that carry addresses (RFC 5322 §3.6.2, §3.6.3, §3.6.6; RFC 8098).
const ADDRESS_FIELDS: &[&str] = &[
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "resent-from",
    "resent-sender",
    "resent-to",
    "resent-cc",
    "resent-bcc",
    "disposition-notification-to",
];

/// Structured fields with no place for encoded words.
const STRUCTURED_FIELDS: &[&str] = &[
    "date",
    "resent-date",
    "message-id",
    "resent-message-id",
    "in-reply-to",
    "references",
    "return-path",
    "received",
    "mime-version",
    "content-transfer-encoding",
    "content-id",
    "content-language",
    "content-location",
    "content-md5",
    "keywords",
    "dkim-signature",
    "arc-seal",
    "arc-message-signature",
    "arc-authentication-results",
    "authentication-results",
    "received-spf",
    "list-id",
    "list-help",
    "list-subscribe",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-post",
    "list-owner",
    "list-archive",
    "auto-submitted",
    "original-recipient",
    "final-recipient",
];

/// The field's name for an error message.
fn shown(name: &[u8]) -> String {
    printable(name, 64)
}

/// The 7-bit replacement of a whole field (every line, CRLF-terminated), or why there
/// is none.
pub(crate) fn convert(
    parser: &MessageParser,
    raw: &[u8],
    field: &Field,
) -> Result<Vec<u8>, DowngradeError> {
    let name = field.name(raw);
    let value = field.value(raw);
    let lower = name.to_ascii_lowercase();
    let lower = std::str::from_utf8(&lower).unwrap_or_default();
    let body = if ADDRESS_FIELDS.contains(&lower) {
        addresses(parser, name, value)?
    } else if lower == "content-type" || lower == "content-disposition" {
        parameters(parser, name, value, lower == "content-type")?
    } else if STRUCTURED_FIELDS.contains(&lower) || lower.starts_with("arc-") {
        return Err(DowngradeError::EightBitStructuredField { field: shown(name) });
    } else {
        unstructured(value)
    };
    let mut out = Vec::with_capacity(name.len() + body.len() + 4);
    out.extend_from_slice(name);
    out.push(b':');
    out.extend_from_slice(&body);
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

fn is_wsp(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Unstructured text: runs of 8-bit words become encoded words.
fn unstructured(value: &[u8]) -> Vec<u8> {
    let charset = charset_of(value);
    // Alternating tokens: (is_space, bytes).
    let mut tokens: Vec<(bool, &[u8])> = Vec::new();
    let mut start = 0;
    for i in 1..=value.len() {
        let split = i == value.len()
            || value.get(i).is_some_and(|&b| is_wsp(b))
                != value.get(i - 1).is_some_and(|&b| is_wsp(b));
        if split {
            let t = value.get(start..i).unwrap_or_default();
            tokens.push((t.first().is_some_and(|&b| is_wsp(b)), t));
            start = i;
        }
    }
    let looks_encoded = |t: &[u8]| t.starts_with(b"=?") && t.ends_with(b"?=");
    let mut out = Vec::with_capacity(value.len() * 3);
    if tokens.first().is_none_or(|(space, _)| !space) {
        // An encoded word must not touch the colon.
        out.push(b' ');
    }
    let mut i = 0;
    while let Some(&(space, t)) = tokens.get(i) {
        if space || !has_8bit(t) {
            out.extend_from_slice(t);
            i += 1;
            continue;
        }
        // A run: this word, then (space, 8-bit word) pairs.
        let mut last = i;
        while let (Some((true, _)), Some((false, w))) = (tokens.get(last + 1), tokens.get(last + 2))
        {
            if !has_8bit(w) {
                break;
            }
            last += 2;
        }
        // White space between an existing encoded word and the run would be dropped by
        // decoders (RFC 2047 §6.2): carry it inside the run instead.
        let mut text: Vec<u8> = Vec::new();
        let before_encoded = i >= 2
            && tokens.get(i - 1).is_some_and(|(s, _)| *s)
            && tokens.get(i - 2).is_some_and(|(_, w)| looks_encoded(w));
        if before_encoded && let Some((_, ws)) = tokens.get(i - 1) {
            // `out` already ends with that white space; decoders drop it between the
            // two encoded words, so it is repeated, unfolded, inside the run.
            text.extend(ws.iter().filter(|&&b| b != b'\r' && b != b'\n'));
        }
        for (_, t) in tokens.get(i..=last).unwrap_or_default() {
            text.extend(t.iter().filter(|&&b| b != b'\r' && b != b'\n'));
        }
        let after_encoded = tokens.get(last + 1).is_some_and(|(s, _)| *s)
            && tokens.get(last + 2).is_some_and(|(_, w)| looks_encoded(w));
        if after_encoded && let Some((_, ws)) = tokens.get(last + 1) {
            text.extend(ws.iter().filter(|&&b| b != b'\r' && b != b'\n'));
        }
        out.extend_from_slice(&encoded_words(&text, charset));
        i = last + 1;
    }
    out
}

/// Refuses what the re-written field could not say faithfully.
fn utf8_value<'v>(name: &[u8], value: &'v [u8]) -> Result<&'v str, DowngradeError> {
    std::str::from_utf8(value).map_err(|_| DowngradeError::NotUtf8Field { field: shown(name) })
}

/// A phrase (display name or group name): a quoted string, or encoded words.
fn phrase(text: &str) -> Vec<u8> {
    if text.is_ascii() {
        // Controls cannot be quoted; they are dropped from the display name.
        let clean: String = text.chars().filter(|c| !c.is_ascii_control()).collect();
        quoted_string(&clean).into_bytes()
    } else {
        encoded_words(text.as_bytes(), "utf-8")
    }
}

fn addr(name: &[u8], a: &Addr<'_>, out: &mut Vec<u8>) -> Result<(), DowngradeError> {
    let display = a.name.as_deref().map(str::trim).filter(|n| !n.is_empty());
    let address = a
        .address
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    if let Some(address) = address
        && !address
            .bytes()
            .all(|b| (b'!'..=b'~').contains(&b) && b != b'<' && b != b'>')
    {
        return Err(DowngradeError::EightBitAddress { field: shown(name) });
    }
    match (display, address) {
        (Some(d), Some(a)) => {
            out.extend_from_slice(&phrase(d));
            out.extend_from_slice(b" <");
            out.extend_from_slice(a.as_bytes());
            out.push(b'>');
        }
        (None, Some(a)) => out.extend_from_slice(a.as_bytes()),
        (Some(d), None) => out.extend_from_slice(&phrase(d)),
        (None, None) => {}
    }
    Ok(())
}

fn addresses(parser: &MessageParser, name: &[u8], value: &[u8]) -> Result<Vec<u8>, DowngradeError> {
    utf8_value(name, value)?;
    let parsed = crate::header::parse_value(parser, "To", value);
    let mut items: Vec<Vec<u8>> = Vec::new();
    match parsed {
        Some(HeaderValue::Address(Address::List(list))) => {
            for a in &list {
                let mut item = Vec::new();
                addr(name, a, &mut item)?;
                if !item.is_empty() {
                    items.push(item);
                }
            }
        }
        Some(HeaderValue::Address(Address::Group(groups))) => {
            for g in &groups {
                let mut members = Vec::new();
                for a in &g.addresses {
                    let mut item = Vec::new();
                    addr(name, a, &mut item)?;
                    if !item.is_empty() {
                        members.push(item);
                    }
                }
                match g.name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
                    Some(group) => {
                        let mut item = phrase(group);
                        item.extend_from_slice(b": ");
                        item.extend_from_slice(&members.join(&b", "[..]));
                        item.push(b';');
                        items.push(item);
                    }
                    None => items.extend(members),
                }
            }
        }
        _ => return Err(DowngradeError::EightBitStructuredField { field: shown(name) }),
    }
    let mut out = vec![b' '];
    out.extend_from_slice(&items.join(&b",\r\n "[..]));
    Ok(out)
}

fn parameters(
    parser: &MessageParser,
    name: &[u8],
    value: &[u8],
    is_content_type: bool,
) -> Result<Vec<u8>, DowngradeError> {
    utf8_value(name, value)?;
    let Some(HeaderValue::ContentType(ct)) =
        crate::header::parse_value(parser, "Content-Type", value)
    else {
        return Err(DowngradeError::EightBitStructuredField { field: shown(name) });
    };
    render_parameters(name, &ct, is_content_type)
}

fn token_ok(t: &str) -> bool {
    !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
}

fn render_parameters(
    name: &[u8],
    ct: &ContentType<'_>,
    is_content_type: bool,
) -> Result<Vec<u8>, DowngradeError> {
    let refuse = || DowngradeError::EightBitStructuredField { field: shown(name) };
    let main = ct.ctype();
    if !token_ok(main) {
        return Err(refuse());
    }
    let mut pieces: Vec<String> = Vec::new();
    let mut first = main.to_string();
    if let Some(sub) = ct.subtype() {
        if !token_ok(sub) {
            return Err(refuse());
        }
        first.push('/');
        first.push_str(sub);
    } else if is_content_type {
        return Err(refuse());
    }
    pieces.push(first);
    for attr in ct.attributes().unwrap_or_default() {
        let (key, value) = (attr.name.as_ref(), attr.value.as_ref());
        if !token_ok(key) {
            return Err(refuse());
        }
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(refuse());
        }
        if value.is_ascii() {
            pieces.push(format!("{key}={}", quoted_string(value)));
        } else if key == "boundary" {
            return Err(DowngradeError::EightBitBoundary);
        } else {
            pieces.extend(rfc2231(key, value));
        }
    }
    let mut out = vec![b' '];
    out.extend_from_slice(pieces.join(";\r\n ").as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(raw: &[u8]) -> Field {
        let colon = raw.iter().position(|&b| b == b':').unwrap();
        let value_end = raw.len() - 2;
        Field {
            start: 0,
            colon,
            value_end,
            end: raw.len(),
        }
    }

    fn conv(raw: &str) -> Result<String, DowngradeError> {
        conv_bytes(raw.as_bytes())
    }

    fn conv_bytes(raw: &[u8]) -> Result<String, DowngradeError> {
        let p = MessageParser::new();
        convert(&p, raw, &field_of(raw)).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn subjects() {
        assert_eq!(
            conv("Subject: Re: Grüße aus Köln!\r\n").unwrap(),
            "Subject: Re: =?utf-8?q?Gr=C3=BC=C3=9Fe?= aus =?utf-8?q?K=C3=B6ln!?=\r\n"
        );
        assert_eq!(
            conv("Subject: Grüße Köln\r\n").unwrap(),
            "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe_K=C3=B6ln?=\r\n"
        );
        assert_eq!(
            conv("X-Note:é\r\n").unwrap(),
            "X-Note: =?utf-8?q?=C3=A9?=\r\n"
        );
        assert_eq!(
            conv("Subject: =?utf-8?q?a?= é\r\n").unwrap(),
            "Subject: =?utf-8?q?a?= =?utf-8?q?_=C3=A9?=\r\n"
        );
        assert_eq!(
            conv_bytes(b"Subject: caf\xe9\r\n\tnext\r\n").unwrap(),
            "Subject: =?unknown-8bit?q?caf=E9?=\r\n\tnext\r\n"
        );
    }

    #[test]
    fn addresses_get_encoded_display_names() {
        assert_eq!(
            conv("From: Jörg Müller <joerg@example.com>, \"Ann, B\" <ann@x.example>, c@d\r\n")
                .unwrap(),
            "From: =?utf-8?q?J=C3=B6rg_M=C3=BCller?= <joerg@example.com>,\r\n \"Ann, B\" <ann@x.example>,\r\n c@d\r\n"
        );
        assert_eq!(
            conv("To: Grüppe: a@b, c@d;\r\n").unwrap(),
            "To: =?utf-8?q?Gr=C3=BCppe?=: a@b, c@d;\r\n"
        );
        assert_eq!(
            conv("To: jörg@example.com\r\n").unwrap_err(),
            DowngradeError::EightBitAddress { field: "To".into() }
        );
        assert_eq!(
            conv("Cc: Ann <ann@exämple.com>\r\n").unwrap_err(),
            DowngradeError::EightBitAddress { field: "Cc".into() }
        );
        assert!(matches!(
            conv_bytes(b"From: J\xf6rg <j@x>\r\n").unwrap_err(),
            DowngradeError::NotUtf8Field { .. }
        ));
    }

    #[test]
    fn parameters_use_rfc2231() {
        assert_eq!(
            conv("Content-Disposition: attachment; filename=\"résumé.pdf\"\r\n").unwrap(),
            "Content-Disposition: attachment;\r\n filename*=utf-8''r%C3%A9sum%C3%A9.pdf\r\n"
        );
        assert_eq!(
            conv("Content-Type: Text/Plain; charset=utf-8; name=\"é\"\r\n").unwrap(),
            "Content-Type: text/plain;\r\n charset=\"utf-8\";\r\n name*=utf-8''%C3%A9\r\n"
        );
        assert_eq!(
            conv("Content-Type: multipart/mixed; boundary=\"é\"\r\n").unwrap_err(),
            DowngradeError::EightBitBoundary
        );
    }

    #[test]
    fn structured_fields_are_refused() {
        for f in [
            "Message-ID: <é@x>\r\n",
            "Received: from é\r\n",
            "DKIM-Signature: a=é\r\n",
        ] {
            assert!(
                matches!(conv(f), Err(DowngradeError::EightBitStructuredField { .. })),
                "{f}"
            );
        }
    }
}
