//! Delivery status notifications: bounces, delay notices and success reports
//! (RFC 3464 report format, RFC 3461 DSN parameters, RFC 6522 `multipart/report`).
//!
//! [`build`] turns a [`DsnInput`] into one complete RFC 5322 message with CRLF line
//! endings, ready to be queued to the original envelope sender:
//!
//! ```text
//! multipart/report; report-type="delivery-status"
//! ├── text/plain; charset="utf-8"        what happened, remote replies quoted
//! ├── message/delivery-status (7bit)     machine-readable fields, RFC 3464
//! └── text/rfc822-headers  (7bit|8bit)   the original's header section, or
//!     message/rfc822       (7bit|8bit)   the whole original (RET=FULL)
//! ```
//!
//! Invariants:
//! - No value from the input can end a header or a delivery-status field early: untrusted
//!   values are cleaned to one line (see `fields`), and values Tern supplies are checked
//!   and refused with [`DsnError`] if they hold control characters.
//! - The MIME boundary is proven absent from every part before it is used.
//! - The returned original is the stored bytes, except that bare CR and bare LF become
//!   CRLF (RFC 2045 forbids them in 7bit/8bit bodies). A CRLF original is returned
//!   byte-identical. It is declared `8bit` when it holds any byte above 0x7F, else `7bit`;
//!   NULs and over-long lines are passed through as stored.
//! - The whole original is returned only when RET=FULL was asked, at least one recipient
//!   failed (RFC 3461 section 4.3: reports without a failure return headers only) and it
//!   is at most `max_full_size` bytes; otherwise the header section (capped at
//!   [`HEADERS_CAP`]) is returned and the text says why.
//!
//! Trust: the original message, recipient addresses, ORCPT, ENVID, remote host names and
//! replies are untrusted and never make [`build`] fail or panic. The report's own names
//! (reporting MTA, postmaster, original sender, queue id, Message-ID domain) and the
//! status codes come from Tern and are checked.
//!
//! Cost: memory is a small multiple of the returned part (the original for a full
//! return, at most [`HEADERS_CAP`] otherwise) plus the report text. No I/O.

#![forbid(unsafe_code)]

mod fields;
#[doc(hidden)]
pub mod fuzzing;
mod original;
mod text;

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use mail_builder::mime::{MimePart, make_boundary};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

pub use fields::{MAX_FIELD_LINE, MAX_REPLY};
pub use original::original_headers;

use text::{Dates, RecipientDates, Returned};

/// Suggested `max_full_size`: larger originals are returned as headers only.
pub const DEFAULT_MAX_FULL_SIZE: usize = 10 * 1024 * 1024;

/// Largest header section returned, in bytes (see [`original_headers`]).
pub const HEADERS_CAP: usize = 64 * 1024;

/// Display name of the report's `From` address.
pub const FROM_NAME: &str = "Mail Delivery System";

/// How many boundaries are tried before giving up. mail-builder's boundaries mix a
/// timestamp with a per-thread pseudo-random sequence: unique, but not secret, which is
/// why each candidate is checked against the parts; needing a second one is a curiosity.
const BOUNDARY_ATTEMPTS: usize = 16;

/// What a report announces; decides its Subject and its explanation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReportKind {
    /// A bounce: delivery failed for good to at least one recipient.
    Failure,
    /// A delay notice: still trying; the text says until when (`give_up_at`).
    Delay,
    /// A success report for NOTIFY=SUCCESS: delivered, relayed or expanded.
    Success,
}

impl ReportKind {
    /// The Subject of a report of this kind.
    #[must_use]
    pub fn subject(self) -> &'static str {
        match self {
            Self::Failure => "Undelivered Mail Returned to Sender",
            Self::Delay => "Delayed Mail (still being retried)",
            Self::Success => "Successful Mail Delivery Report",
        }
    }

    fn message_id_tag(self) -> &'static str {
        match self {
            Self::Failure => "bounce",
            Self::Delay => "delay",
            Self::Success => "success",
        }
    }
}

/// The `Action` field of one recipient (RFC 3464 section 2.3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Delivery failed for good.
    Failed,
    /// Not delivered yet; Tern keeps trying.
    Delayed,
    /// Delivered to the recipient's mailbox.
    Delivered,
    /// Passed to a system that does not send DSNs.
    Relayed,
    /// Delivered to an alias or list, which passed it on to other addresses.
    Expanded,
}

impl Action {
    /// The field value, as RFC 3464 spells it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Delayed => "delayed",
            Self::Delivered => "delivered",
            Self::Relayed => "relayed",
            Self::Expanded => "expanded",
        }
    }
}

/// How much of the original goes back (RFC 3461 RET).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Return {
    /// RET=HDRS, and Tern's choice when the client gave no RET.
    #[default]
    Headers,
    /// RET=FULL: the whole message, if it fails for someone and fits `max_full_size`.
    Full,
}

/// Everything a report says about one message.
#[derive(Clone, Copy, Debug)]
pub struct DsnInput<'a> {
    /// Tern's host name, written `Reporting-MTA: dns; <name>`. Checked: a host name.
    pub reporting_mta: &'a str,
    /// The report's From address, e.g. `MAILER-DAEMON@host`. Checked.
    pub postmaster: &'a str,
    /// The envelope sender of the original; the report goes To it. Never the null
    /// sender (the caller does not bounce bounces). Checked; may be UTF-8 (SMTPUTF8).
    pub original_sender: &'a str,
    /// RFC 3461 ENVID, already xtext-decoded. Untrusted.
    pub envid: Option<&'a str>,
    /// When Tern accepted the message (`Arrival-Date`).
    pub arrival: OffsetDateTime,
    /// Tern's queue id, quoted in the text and in `X-Tern-Queue-Id`. Checked.
    pub queue_id: &'a str,
    /// What the report announces.
    pub kind: ReportKind,
    /// For a delay notice: when Tern gives up. Also the `Will-Retry-Until` of delayed
    /// recipients without their own.
    pub give_up_at: Option<OffsetDateTime>,
    /// At least one.
    pub recipients: &'a [RecipientReport<'a>],
    /// The original message as stored (CRLF). Untrusted, may be malformed.
    pub original: &'a [u8],
    /// RET.
    pub ret: Return,
    /// A full return larger than this degrades to headers only
    /// ([`DEFAULT_MAX_FULL_SIZE`] is a sensible value).
    pub max_full_size: usize,
    /// The report's `Date`.
    pub date: OffsetDateTime,
    /// Right-hand side of the report's Message-ID. Checked: a host name.
    pub message_id_domain: &'a str,
}

/// What happened to one recipient.
#[derive(Clone, Copy, Debug)]
pub struct RecipientReport<'a> {
    /// The address delivery was attempted to. Written `rfc822; addr`, or `utf-8; ` and
    /// RFC 6533's 7-bit `\x{HEX}` form for a UTF-8 address. Untrusted.
    pub final_recipient: &'a str,
    /// The ORCPT value as given (`rfc822;addr`), xtext-decoded; written as
    /// `Original-Recipient: <value>` with non-ASCII as `\x{HEX}`. Untrusted.
    pub original_recipient: Option<&'a str>,
    /// What happened.
    pub action: Action,
    /// RFC 3463 enhanced status code such as `5.1.1`. Checked.
    pub status: &'a str,
    /// The remote server's name (`Remote-MTA: dns; <name>`). Untrusted.
    pub remote_mta: Option<&'a str>,
    /// The remote server's reply, or a local reason. Untrusted: cleaned to one line and
    /// cut at [`MAX_REPLY`] octets. Typed `smtp` when it starts with a reply code, else
    /// `X-Tern`.
    pub diagnostic: Option<&'a str>,
    /// When delivery was last tried.
    pub last_attempt: Option<OffsetDateTime>,
    /// For a delayed recipient: when Tern gives up on it (else the report's
    /// `give_up_at`). Ignored for other actions.
    pub will_retry_until: Option<OffsetDateTime>,
}

/// Why a report could not be built.
///
/// Reports are built inside Tern for its own queue, so no SMTP peer ever sees these.
/// Every variant is a bug or a misconfiguration on Tern's side, never caused by the
/// message or the remote server: the caller logs it and keeps the message queued rather
/// than losing the notification. Values quoted in a variant are cut to 200 bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DsnError {
    /// The recipient list is empty.
    #[error("a delivery status notification needs at least one recipient")]
    NoRecipients,
    /// A recipient's status is not an RFC 3463 enhanced status code.
    #[error("recipient {index}: status {status:?} is not an enhanced status code")]
    InvalidStatus {
        /// Position of the recipient in the input.
        index: usize,
        /// The status as given.
        status: String,
    },
    /// A value Tern supplies (named by `field`) is empty, too long, or holds characters
    /// that cannot appear where it goes.
    #[error("{field} {value:?} cannot be used in a delivery status notification")]
    InvalidValue {
        /// Which input field: `reporting_mta`, `postmaster`, `original_sender`,
        /// `queue_id` or `message_id_domain`.
        field: &'static str,
        /// The value as given.
        value: String,
    },
    /// A date cannot be written in RFC 5322 form (before year 1900, or an offset with
    /// seconds).
    #[error("{field} {value} cannot be written as an RFC 5322 date")]
    InvalidDate {
        /// Which input date.
        field: &'static str,
        /// The date.
        value: OffsetDateTime,
    },
    /// Every MIME boundary tried occurred inside the parts; practically impossible.
    #[error("no MIME boundary absent from the report parts was found")]
    BoundaryCollision,
}

/// Builds the complete report message (headers and body, CRLF line endings).
///
/// # Errors
///
/// [`DsnError`] when a value Tern supplies is invalid; never because of the original
/// message or anything a remote peer said.
pub fn build(input: &DsnInput<'_>) -> Result<Vec<u8>, DsnError> {
    check_input(input)?;
    let dates = format_dates(input)?;
    let date = rfc5322_date("date", input.date)?;

    let returned = returned_form(input);
    let explanation = text::explanation(input, returned, &dates);

    let mut status = fields::DeliveryStatus::new(&fields::PerMessage {
        reporting_mta: input.reporting_mta,
        envid: input.envid,
        arrival_date: &dates.arrival,
    });
    for (recipient, recipient_dates) in input.recipients.iter().zip(&dates.recipients) {
        status.recipient(
            recipient,
            recipient_dates.last_attempt.as_deref(),
            recipient_dates.will_retry_until.as_deref(),
        );
    }
    let status = status.into_bytes();

    let returned_bytes = match returned {
        Returned::Full => original::crlf_line_endings(input.original),
        Returned::Headers | Returned::HeadersBecauseTooLarge => {
            original::crlf_line_endings(original_headers(input.original, HEADERS_CAP))
        }
    };
    let returned_part = match returned {
        Returned::Full => MimePart::new("message/rfc822", returned_bytes.as_ref())
            .header("Content-Description", Text::new("Returned message")),
        Returned::Headers | Returned::HeadersBecauseTooLarge => {
            MimePart::new("text/rfc822-headers", returned_bytes.as_ref())
                .header("Content-Description", Text::new("Returned message headers"))
        }
    }
    // An explicit transfer encoding makes mail-builder write the bytes as they are.
    .transfer_encoding(original::transfer_encoding(&returned_bytes));

    let boundary = boundary_for(&[explanation.as_bytes(), &status, &returned_bytes])?;
    let message_id = format!(
        "{}.{}.{}@{}",
        input.kind.message_id_tag(),
        input.queue_id,
        make_boundary("."),
        input.message_id_domain
    );

    let body = MimePart::new(
        ContentType::new("multipart/report")
            .attribute("report-type", "delivery-status")
            .attribute("boundary", boundary),
        vec![
            MimePart::new("text/plain", explanation)
                .header("Content-Description", Text::new("Notification")),
            MimePart::new("message/delivery-status", status)
                .header("Content-Description", Text::new("Delivery report"))
                .transfer_encoding("7bit"),
            returned_part,
        ],
    );

    let mut output = Vec::new();
    MessageBuilder::new()
        .from(Address::new_address(Some(FROM_NAME), input.postmaster))
        .to(Address::new_address(None::<&str>, input.original_sender))
        .subject(input.kind.subject())
        // mail-builder's `Date` type writes UTC from a Unix time; writing the RFC 5322
        // text ourselves keeps the caller's offset.
        .header("Date", Raw::new(date))
        .message_id(MessageId::new(message_id))
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .header("X-Tern-Queue-Id", Raw::new(input.queue_id))
        .header("MIME-Version", Raw::new("1.0"))
        .body(body)
        .serialize(&mut output);
    Ok(output)
}

fn returned_form(input: &DsnInput<'_>) -> Returned {
    let any_failed = input
        .recipients
        .iter()
        .any(|recipient| recipient.action == Action::Failed);
    match input.ret {
        Return::Full if any_failed && input.original.len() <= input.max_full_size => Returned::Full,
        Return::Full if any_failed => Returned::HeadersBecauseTooLarge,
        Return::Full | Return::Headers => Returned::Headers,
    }
}

fn boundary_for(parts: &[&[u8]]) -> Result<String, DsnError> {
    for _ in 0..BOUNDARY_ATTEMPTS {
        let boundary = format!("tern-dsn_{}", make_boundary("_"));
        if !parts
            .iter()
            .any(|part| original::contains(part, boundary.as_bytes()))
        {
            return Ok(boundary);
        }
    }
    Err(DsnError::BoundaryCollision)
}

fn check_input(input: &DsnInput<'_>) -> Result<(), DsnError> {
    if input.recipients.is_empty() {
        return Err(DsnError::NoRecipients);
    }
    for (index, recipient) in input.recipients.iter().enumerate() {
        if !fields::is_status_code(recipient.status) {
            return Err(DsnError::InvalidStatus {
                index,
                status: quoted(recipient.status),
            });
        }
    }
    check("reporting_mta", input.reporting_mta, is_host_name)?;
    check("message_id_domain", input.message_id_domain, is_host_name)?;
    check("postmaster", input.postmaster, is_mailbox)?;
    check("original_sender", input.original_sender, is_mailbox)?;
    check("queue_id", input.queue_id, |value| {
        value.len() <= 64
            && value
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_'))
    })
}

fn check(field: &'static str, value: &str, valid: impl Fn(&str) -> bool) -> Result<(), DsnError> {
    if !value.is_empty() && valid(value) {
        Ok(())
    } else {
        Err(DsnError::InvalidValue {
            field,
            value: quoted(value),
        })
    }
}

/// A host name or address literal, ASCII (A-labels), at most 255 octets.
fn is_host_name(value: &str) -> bool {
    value.len() <= 255
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_'))
}

/// An envelope address as it goes between angle brackets: has an `@`, no control
/// characters, no angle brackets, at most 512 octets. UTF-8 is allowed (SMTPUTF8).
fn is_mailbox(value: &str) -> bool {
    value.len() <= 512
        && value.contains('@')
        && !value
            .chars()
            .any(|character| character.is_control() || matches!(character, '<' | '>'))
}

fn quoted(value: &str) -> String {
    fields::truncated(value.to_owned(), 200)
}

fn rfc5322_date(field: &'static str, value: OffsetDateTime) -> Result<String, DsnError> {
    value
        .format(&Rfc2822)
        .map_err(|_| DsnError::InvalidDate { field, value })
}

fn format_dates(input: &DsnInput<'_>) -> Result<Dates, DsnError> {
    let optional = |field, value: Option<OffsetDateTime>| {
        value.map(|value| rfc5322_date(field, value)).transpose()
    };
    let mut recipients = Vec::with_capacity(input.recipients.len());
    for recipient in input.recipients {
        let will_retry_until = match recipient.action {
            Action::Delayed => optional(
                "will_retry_until",
                recipient.will_retry_until.or(input.give_up_at),
            )?,
            _ => None,
        };
        recipients.push(RecipientDates {
            last_attempt: optional("last_attempt", recipient.last_attempt)?,
            will_retry_until,
        });
    }
    Ok(Dates {
        arrival: rfc5322_date("arrival", input.arrival)?,
        give_up: optional("give_up_at", input.give_up_at)?,
        recipients,
    })
}

#[cfg(test)]
mod tests;
