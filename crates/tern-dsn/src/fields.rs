//! The `message/delivery-status` body (RFC 3464 section 2) and the value cleaning every
//! report field goes through.
//!
//! Invariants of the body written here:
//! - it is 7-bit ASCII, so the part is declared `7bit` and needs no encoding;
//! - no field value contains CR, LF or any other control character, so a value can never
//!   end its field early or start a new one: remote text cannot inject fields or headers;
//! - every field line is at most [`MAX_FIELD_LINE`] octets before its CRLF (RFC 5322's
//!   998-octet limit); longer values are cut and end in `...`. Fields are never folded,
//!   so a reader sees each value exactly as written.
//!
//! Trust: recipient addresses, ORCPT, ENVID, the remote MTA's name and its reply are
//! untrusted (they come from SMTP clients, DNS or remote servers) and are cleaned, never
//! refused. Values Tern itself supplies are checked by the caller (`lib.rs`).

use crate::{Action, RecipientReport};

/// Longest field line, in octets, not counting its CRLF.
pub const MAX_FIELD_LINE: usize = 998;

/// Longest remote reply kept, in octets, after cleaning. The same text is quoted in the
/// human-readable part and (non-ASCII replaced by `?`) in `Diagnostic-Code`.
pub const MAX_REPLY: usize = 900;

const TRUNCATED: &str = "...";

/// `value` on one line: every control character (CR, LF, TAB, NUL, DEL, C1) and every
/// other kind of whitespace becomes a space, runs of spaces collapse into one, and the
/// ends are trimmed. Non-ASCII text is kept.
pub(crate) fn one_line(value: &str) -> String {
    let mut cleaned = String::with_capacity(value.len());
    let mut pending_space = false;
    for character in value.chars() {
        if character.is_control() || character.is_whitespace() {
            pending_space = !cleaned.is_empty();
        } else {
            if pending_space {
                cleaned.push(' ');
                pending_space = false;
            }
            cleaned.push(character);
        }
    }
    cleaned
}

/// `value` cut to at most `max` octets on a character boundary, ending in `...` when cut.
pub(crate) fn truncated(mut value: String, max: usize) -> String {
    if value.len() <= max {
        return value;
    }
    let mut cut = max.saturating_sub(TRUNCATED.len());
    while !value.is_char_boundary(cut) {
        cut = cut.saturating_sub(1);
    }
    value.truncate(cut);
    value.push_str(TRUNCATED);
    value
}

/// The remote reply as reported: one line, at most [`MAX_REPLY`] octets.
pub(crate) fn reply_text(diagnostic: &str) -> String {
    truncated(one_line(diagnostic), MAX_REPLY)
}

/// `value` with every non-ASCII character replaced by `?` (for fields RFC 3464 defines as
/// ASCII text, such as `Diagnostic-Code`).
fn ascii_text(value: &str) -> String {
    value
        .chars()
        .map(|character| if character.is_ascii() { character } else { '?' })
        .collect()
}

/// `value` with every non-ASCII character written as RFC 6533's `\x{HEX}`
/// (EmbeddedUnicodeChar), the 7-bit form allowed in `message/delivery-status`.
fn embedded_unicode(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for character in value.chars() {
        if character.is_ascii() {
            encoded.push(character);
        } else {
            encoded.push_str(&format!("\\x{{{:X}}}", u32::from(character)));
        }
    }
    encoded
}

/// The typed address of `Final-Recipient`: `rfc822; addr` for an ASCII address, else
/// RFC 6533's `utf-8; ` followed by the `utf-8-addr-xtext` form, where `\`, `+`, `=`, and
/// every character outside printable ASCII are written `\x{HEX}`.
pub(crate) fn typed_address(address: &str) -> String {
    let address = one_line(address);
    if address.is_ascii() {
        return format!("rfc822; {address}");
    }
    let mut encoded = String::from("utf-8; ");
    for character in address.chars() {
        if character.is_ascii_graphic() && !matches!(character, '\\' | '+' | '=') {
            encoded.push(character);
        } else {
            encoded.push_str(&format!("\\x{{{:X}}}", u32::from(character)));
        }
    }
    encoded
}

/// Whether `status` is an RFC 3463 enhanced status code: `class.subject.detail` with class
/// 2, 4 or 5 and one to three digits in subject and detail.
pub(crate) fn is_status_code(status: &str) -> bool {
    let mut parts = status.split('.');
    let (Some(class), Some(subject), Some(detail), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let digits = |part: &str| {
        (1..=3).contains(&part.len()) && part.bytes().all(|byte| byte.is_ascii_digit())
    };
    matches!(class, "2" | "4" | "5") && digits(subject) && digits(detail)
}

/// The diagnostic type of a reply: `smtp` when it starts like an SMTP reply (three
/// digits, then a space, a hyphen or the end), else `X-Tern` (a local diagnostic such
/// as a DNS or connection failure, RFC 3464 section 2.3.6 extension type).
pub(crate) fn diagnostic_type(reply: &str) -> &'static str {
    let bytes = reply.as_bytes();
    let code = bytes
        .get(..3)
        .is_some_and(|code| code.iter().all(u8::is_ascii_digit));
    let after = bytes.get(3);
    if code && matches!(after, None | Some(b' ' | b'-')) {
        "smtp"
    } else {
        "X-Tern"
    }
}

/// Builder of the `message/delivery-status` body.
pub(crate) struct DeliveryStatus {
    body: String,
}

/// The per-message fields (RFC 3464 section 2.2) of a report.
pub(crate) struct PerMessage<'a> {
    pub reporting_mta: &'a str,
    pub envid: Option<&'a str>,
    pub arrival_date: &'a str,
}

impl DeliveryStatus {
    /// Starts the body with the per-message fields. `reporting_mta` and `arrival_date`
    /// were checked or produced by Tern; the ENVID is cleaned.
    pub(crate) fn new(fields: &PerMessage<'_>) -> Self {
        let mut status = Self {
            body: String::with_capacity(1024),
        };
        status.field("Reporting-MTA", &format!("dns; {}", fields.reporting_mta));
        if let Some(envid) = fields.envid {
            status.field("Original-Envelope-Id", &ascii_text(&one_line(envid)));
        }
        status.field("Arrival-Date", fields.arrival_date);
        status
    }

    /// Appends one per-recipient block (RFC 3464 section 2.3). `dates` are the already
    /// formatted Last-Attempt-Date and Will-Retry-Until; the status code was checked.
    pub(crate) fn recipient(
        &mut self,
        recipient: &RecipientReport<'_>,
        last_attempt: Option<&str>,
        will_retry_until: Option<&str>,
    ) {
        self.body.push_str("\r\n");
        if let Some(original) = recipient.original_recipient {
            self.field("Original-Recipient", &embedded_unicode(&one_line(original)));
        }
        self.field("Final-Recipient", &typed_address(recipient.final_recipient));
        self.field("Action", recipient.action.as_str());
        self.field("Status", recipient.status);
        if let Some(remote_mta) = recipient.remote_mta {
            self.field(
                "Remote-MTA",
                &format!("dns; {}", ascii_text(&one_line(remote_mta))),
            );
        }
        if let Some(diagnostic) = recipient.diagnostic {
            let reply = ascii_text(&reply_text(diagnostic));
            self.field(
                "Diagnostic-Code",
                &format!("{}; {reply}", diagnostic_type(&reply)),
            );
        }
        if let Some(date) = last_attempt {
            self.field("Last-Attempt-Date", date);
        }
        if recipient.action == Action::Delayed
            && let Some(date) = will_retry_until
        {
            self.field("Will-Retry-Until", date);
        }
    }

    /// The finished body, as bytes.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.body.into_bytes()
    }

    /// Appends `name: value` CRLF, cutting the value so the line fits. Callers pass
    /// values that are already single-line ASCII; the cleaning is repeated here so the
    /// invariant holds even if one forgets.
    fn field(&mut self, name: &str, value: &str) {
        let value = ascii_text(&one_line(value));
        let room = MAX_FIELD_LINE.saturating_sub(name.len().saturating_add(2));
        self.body.push_str(name);
        self.body.push_str(": ");
        self.body.push_str(&truncated(value, room));
        self.body.push_str("\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_removes_every_line_break_and_control() {
        assert_eq!(
            one_line("550 no\r\nBcc: x@y\r\n\r\n\0\u{7f}\u{85}\u{2028} end\t"),
            "550 no Bcc: x@y end"
        );
        assert_eq!(one_line("  \r\n "), "");
        assert_eq!(one_line("Grüße"), "Grüße");
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncated("abcdef".into(), 6), "abcdef");
        assert_eq!(truncated("abcdefg".into(), 6), "abc...");
        let cut = truncated("ééééé".into(), 8);
        assert_eq!(cut, "éé...");
        assert!(cut.len() <= 8);
    }

    #[test]
    fn ascii_address_is_rfc822_typed() {
        assert_eq!(
            typed_address("user+tag@example.com"),
            "rfc822; user+tag@example.com"
        );
    }

    #[test]
    fn utf8_address_uses_rfc6533_xtext() {
        assert_eq!(
            typed_address("jörg+x@bücher.example"),
            "utf-8; j\\x{F6}rg\\x{2B}x@b\\x{FC}cher.example"
        );
    }

    #[test]
    fn status_codes() {
        for good in ["5.1.1", "4.4.7", "2.0.0", "5.123.456"] {
            assert!(is_status_code(good), "{good}");
        }
        for bad in [
            "", "5.1", "5.1.1.1", "3.1.1", "5..1", "5.1.1234", "5.a.1", "55.1.1", " 5.1.1",
        ] {
            assert!(!is_status_code(bad), "{bad}");
        }
    }

    #[test]
    fn diagnostic_types() {
        assert_eq!(diagnostic_type("550 5.1.1 no such user"), "smtp");
        assert_eq!(diagnostic_type("550-first line"), "smtp");
        assert_eq!(diagnostic_type("421"), "smtp");
        assert_eq!(diagnostic_type("connection timed out"), "X-Tern");
        assert_eq!(diagnostic_type("5501 odd"), "X-Tern");
    }

    #[test]
    fn every_field_line_fits() {
        let mut status = DeliveryStatus::new(&PerMessage {
            reporting_mta: "mx.example.org",
            envid: Some(&"e".repeat(5000)),
            arrival_date: "Mon, 1 Jan 2024 00:00:00 +0000",
        });
        let long = "x".repeat(5000);
        let recipient = RecipientReport {
            final_recipient: &long,
            original_recipient: Some(&long),
            action: Action::Failed,
            status: "5.1.1",
            remote_mta: Some(&long),
            diagnostic: Some(&long),
            last_attempt: None,
            will_retry_until: None,
        };
        status.recipient(&recipient, None, None);
        let body = String::from_utf8(status.into_bytes()).unwrap();
        for line in body.split("\r\n") {
            assert!(line.len() <= MAX_FIELD_LINE, "{} octets", line.len());
            assert!(!line.contains('\r') && !line.contains('\n'));
        }
        assert!(body.contains("Original-Envelope-Id: eee"));
        assert!(body.contains("...\r\n"));
    }
}
