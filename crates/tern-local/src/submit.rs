//! Locally submitted mail: header parsing, the envelope taken from the headers, and
//! header hygiene.
//!
//! Used by the pickup service and by `tern sendmail`, never by the SMTP server (a relay
//! must not change the mail it passes on). [`LocalMessage::parse`] turns the bytes a
//! program handed over into a message Tern can store: line endings normalised to CRLF
//! (bare LF and bare CR each become CRLF, a missing final line ending is added), a
//! leading mbox `From ` separator line dropped, and the header section checked: every
//! line up to the first empty one must be a header field (`Name: value`, the name
//! printable ASCII) or its continuation, and no NUL byte may be in it. The fields are then
//! parsed with mail-parser for the addresses.
//!
//! [`LocalMessage::hygiene`] adds `Date` and `Message-ID` when missing (at the end of the
//! header section, as Postfix's cleanup does), optionally `From`, and removes every `Bcc`
//! field when asked to, which the callers do exactly when the recipients came from the
//! headers (`sendmail -t`, pickup files without an envelope file): then Bcc recipients
//! are in the envelope and must not be disclosed to the others.
//!
//! Trust: the input is untrusted; every problem is a [`SubmitError`] (the pickup service
//! moves the file to badmail with its text), nothing here panics, and the work is linear
//! in the input, whose size the caller has capped.

use std::collections::HashSet;

use mail_parser::{Address, HeaderName, HeaderValue, MessageParser};
use tern_proto::address::Mailbox;

/// Why a locally submitted message cannot be used. The text goes into the badmail
/// `.reason` file or to `tern sendmail`'s stderr; it never holds message content beyond
/// an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// Empty input, or the first line is not a header field.
    #[error("not a message: it does not start with a header field (Name: value)")]
    NoHeader,
    /// A line in the header section is neither a field nor a continuation.
    #[error("line {line} of the header section is neither a header field nor a continuation")]
    BadHeaderLine {
        /// 1-based line number.
        line: usize,
    },
    /// A NUL byte in the header section.
    #[error("the header section holds a NUL byte")]
    NulInHeader,
    /// No recipient in To, Cc or Bcc (and none given otherwise).
    #[error("no recipient: none in To, Cc or Bcc")]
    NoRecipients,
    /// An address that is not a valid mailbox.
    #[error("{field} address {address:?} is not a valid mailbox ({why})")]
    BadAddress {
        /// Where it was found (`To`, `From`, `envelope sender`, `argument`...).
        field: &'static str,
        /// The address as found, cut to 300 characters.
        address: String,
        /// What is wrong with it.
        why: String,
    },
    /// More recipients than the limit.
    #[error("more than {limit} recipients")]
    TooManyRecipients {
        /// The limit.
        limit: usize,
    },
}

/// A message handed over by a local program, normalised and with its header section
/// checked. Invariant: `content` has CRLF line endings only and ends with CRLF, and
/// `fields` are the header fields of `content[..header_end]` in order.
#[derive(Debug, Clone)]
pub struct LocalMessage {
    content: Vec<u8>,
    /// Offset of the end of the header section: the start of the empty line that ends it,
    /// or `content.len()` for a message without a body.
    header_end: usize,
    fields: Vec<Field>,
}

/// One header field: `content[start..end]`, name `content[start..name_end]`, the last
/// line's CRLF included.
#[derive(Debug, Clone, Copy)]
struct Field {
    start: usize,
    name_end: usize,
    end: usize,
}

/// What [`LocalMessage::hygiene`] should do.
#[derive(Debug, Clone)]
pub struct Hygiene<'a> {
    /// Domain of a generated Message-ID.
    pub hostname: &'a str,
    /// Unique left-hand part of a generated Message-ID (a queue id).
    pub unique: &'a str,
    /// Remove every `Bcc` field: the recipients came from the headers.
    pub remove_bcc: bool,
    /// The value of a `From` field to add when the message has none (`sendmail`).
    pub from_if_missing: Option<&'a str>,
}

/// What [`LocalMessage::hygiene`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HygieneReport {
    /// A Date field was added.
    pub added_date: bool,
    /// A Message-ID field was added.
    pub added_message_id: bool,
    /// A From field was added.
    pub added_from: bool,
    /// How many Bcc fields were removed.
    pub removed_bcc: usize,
}

impl LocalMessage {
    /// Normalises and checks `raw` (see the module header).
    pub fn parse(raw: &[u8]) -> Result<LocalMessage, SubmitError> {
        let mut content = normalize_line_endings(raw);
        if content.starts_with(b"From ") {
            let first_end = find_crlf(&content, 0).map_or(content.len(), |i| i + 2);
            content.drain(..first_end);
        }
        let (header_end, fields) = split_header_section(&content)?;
        Ok(LocalMessage {
            content,
            header_end,
            fields,
        })
    }

    /// The normalised content.
    pub fn content(&self) -> &[u8] {
        &self.content
    }

    /// Whether the content holds octets above 127 (needs `BODY=8BITMIME` to relay).
    pub fn is_8bit(&self) -> bool {
        self.content.iter().any(|b| *b >= 0x80)
    }

    /// Whether a field of this name is present (case-insensitive).
    pub fn has_field(&self, name: &str) -> bool {
        self.fields.iter().any(|f| self.name_is(f, name))
    }

    fn name_is(&self, f: &Field, name: &str) -> bool {
        self.content
            .get(f.start..f.name_end)
            .is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
    }

    fn header_section(&self) -> &[u8] {
        self.content.get(..self.header_end).unwrap_or_default()
    }

    /// The envelope sender the headers give: the first address of `Sender`, else of
    /// `From`; `None` when neither holds one. A bare local part gets `@hostname`.
    pub fn sender_from_headers(&self, hostname: &str) -> Result<Option<String>, SubmitError> {
        let section = self.header_section();
        let Some(parsed) = MessageParser::new().parse_headers(section) else {
            return Ok(None);
        };
        for (name, field) in [(HeaderName::Sender, "Sender"), (HeaderName::From, "From")] {
            for value in parsed.header_values(name) {
                if let Some(first) = addresses(value).into_iter().next() {
                    return qualify(&first, hostname, field).map(Some);
                }
            }
        }
        Ok(None)
    }

    /// Every address in `To`, `Cc` and `Bcc` (all occurrences, groups flattened), each
    /// qualified with `@hostname` when it has no domain, validated, duplicates removed
    /// (case-insensitively), in order. At most `limit`.
    pub fn recipients_from_headers(
        &self,
        hostname: &str,
        limit: usize,
    ) -> Result<Vec<String>, SubmitError> {
        let mut out = Recipients::new(limit);
        let section = self.header_section();
        if let Some(parsed) = MessageParser::new().parse_headers(section) {
            for (name, field) in [
                (HeaderName::To, "To"),
                (HeaderName::Cc, "Cc"),
                (HeaderName::Bcc, "Bcc"),
            ] {
                for value in parsed.header_values(name) {
                    for a in addresses(value) {
                        out.push(qualify(&a, hostname, field)?)?;
                    }
                }
            }
        }
        Ok(out.into_vec())
    }

    /// Applies header hygiene (see the module header) and returns the new content.
    pub fn hygiene(&self, h: &Hygiene<'_>) -> (Vec<u8>, HygieneReport) {
        let mut report = HygieneReport::default();
        let mut out = Vec::with_capacity(self.content.len() + 200);
        let mut pos = 0;
        for f in &self.fields {
            if h.remove_bcc && self.name_is(f, "Bcc") {
                out.extend_from_slice(self.content.get(pos..f.start).unwrap_or_default());
                pos = f.end;
                report.removed_bcc += 1;
            }
        }
        out.extend_from_slice(self.content.get(pos..self.header_end).unwrap_or_default());
        if let Some(from) = h.from_if_missing
            && !self.has_field("From")
        {
            out.extend_from_slice(format!("From: {}\r\n", one_line(from)).as_bytes());
            report.added_from = true;
        }
        if !self.has_field("Date") {
            out.extend_from_slice(format!("Date: {}\r\n", rfc5322_now()).as_bytes());
            report.added_date = true;
        }
        if !self.has_field("Message-ID") {
            let id = format!("<{}@{}>", one_line(h.unique), one_line(h.hostname));
            out.extend_from_slice(format!("Message-ID: {id}\r\n").as_bytes());
            report.added_message_id = true;
        }
        out.extend_from_slice(self.content.get(self.header_end..).unwrap_or_default());
        (out, report)
    }
}

/// Collects recipients without duplicates, up to a limit.
pub(crate) struct Recipients {
    list: Vec<String>,
    seen: HashSet<String>,
    limit: usize,
}

impl Recipients {
    pub(crate) fn new(limit: usize) -> Recipients {
        Recipients {
            list: Vec::new(),
            seen: HashSet::new(),
            limit,
        }
    }

    /// Adds `a` unless it is there already (ASCII letters compared without case, as
    /// [`crate::address::key_of`]); whether it was new.
    pub(crate) fn push(&mut self, a: String) -> Result<bool, SubmitError> {
        if !self.seen.insert(crate::address::key_of(&a)) {
            return Ok(false);
        }
        if self.list.len() >= self.limit {
            return Err(SubmitError::TooManyRecipients { limit: self.limit });
        }
        self.list.push(a);
        Ok(true)
    }

    pub(crate) fn into_vec(self) -> Vec<String> {
        self.list
    }
}

/// The addresses of an address header value, groups flattened. mail-parser reads a bare
/// local part (`To: root`, common in cron mail) as a display name without an address: a
/// name that is one dot-atom is taken as that local part; other entries without an
/// address (a display name alone) are skipped.
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
        .filter_map(|x| match (x.address.as_deref(), x.name.as_deref()) {
            (Some(addr), _) => Some(addr.to_owned()),
            (None, Some(name)) if is_dot_atom(name) => Some(name.to_owned()),
            _ => None,
        })
        .collect()
}

/// RFC 5322 dot-atom text: atext runs separated by single dots.
fn is_dot_atom(s: &str) -> bool {
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    !s.is_empty()
        && s.split('.')
            .all(|part| !part.is_empty() && part.chars().all(atext))
}

/// Validates an address for the envelope; a bare local part (`root`, a dot-atom) gets
/// `@hostname`,
/// as sendmail's and Postfix's local submission do. Returns the canonical form.
pub fn qualify(address: &str, hostname: &str, field: &'static str) -> Result<String, SubmitError> {
    let a = address.trim();
    let bad = |why: String| SubmitError::BadAddress {
        field,
        address: a.chars().take(300).collect(),
        why,
    };
    let full = if a.contains('@') {
        a.to_owned()
    } else if is_dot_atom(a) {
        format!("{a}@{hostname}")
    } else {
        return Err(bad("no domain, and not a plain local name".into()));
    };
    if full.len() > tern_spool::envelope::MAX_ADDRESS_LEN {
        return Err(bad("longer than 256 octets".into()));
    }
    if full.chars().any(char::is_control) {
        return Err(bad("control character".into()));
    }
    match Mailbox::parse(&full) {
        // `a@@b` or `"a@b"@c`: an `@` in the local part is a route, not a mailbox.
        Ok(m) if m.routing_trick() == Some(tern_proto::address::RoutingTrick::QuotedAt) => {
            Err(bad("more than one @".into()))
        }
        Ok(m) => Ok(m.to_string()),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// `Date:` value for now, RFC 5322 form.
pub fn rfc5322_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 +0000".into())
}

/// Text for a header value: control characters (line breaks) become spaces.
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// CRLF line endings: a bare LF or a bare CR becomes CRLF; a final line without an end
/// gets CRLF. Empty input stays empty.
pub fn normalize_line_endings(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32 + 2);
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match b {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if raw.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            _ => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn find_crlf(s: &[u8], from: usize) -> Option<usize> {
    s.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| p + from)
}

/// Splits the header section of CRLF content into fields; returns its end and the fields.
fn split_header_section(content: &[u8]) -> Result<(usize, Vec<Field>), SubmitError> {
    let mut fields: Vec<Field> = Vec::new();
    let mut pos = 0;
    let mut line_no = 0;
    // Normalised content always ends with CRLF: no line is left out.
    while let Some(eol) = find_crlf(content, pos) {
        line_no += 1;
        let line = content.get(pos..eol).unwrap_or_default();
        if line.is_empty() {
            break;
        }
        if line.contains(&0) {
            return Err(SubmitError::NulInHeader);
        }
        let next = eol + 2;
        match line.first() {
            Some(b' ') | Some(b'\t') => match fields.last_mut() {
                Some(f) => f.end = next,
                None if line_no == 1 => return Err(SubmitError::NoHeader),
                None => return Err(SubmitError::BadHeaderLine { line: line_no }),
            },
            _ => {
                let name_len = line.iter().position(|b| *b == b':');
                let valid = name_len.is_some_and(|n| {
                    n > 0
                        && line
                            .get(..n)
                            .is_some_and(|name| name.iter().all(|b| (33..=126).contains(b)))
                });
                match (valid, name_len) {
                    (true, Some(n)) => fields.push(Field {
                        start: pos,
                        name_end: pos + n,
                        end: next,
                    }),
                    _ if line_no == 1 => return Err(SubmitError::NoHeader),
                    _ => return Err(SubmitError::BadHeaderLine { line: line_no }),
                }
            }
        }
        pos = next;
    }
    if fields.is_empty() {
        return Err(SubmitError::NoHeader);
    }
    Ok((pos.min(content.len()), fields))
}

#[cfg(test)]
mod tests;
