//! Shared fixtures and parsing helpers for the report tests: a well-formed original, an
//! input builder, and views of a parsed report through mail-parser.

#![allow(dead_code)] // Each test binary uses a different subset.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test support code.

use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders, PartType};
use tern_dsn::{Action, DEFAULT_MAX_FULL_SIZE, DsnInput, RecipientReport, ReportKind, Return};
use time::{OffsetDateTime, UtcOffset};

/// A small well-formed original with CRLF line endings.
pub const ORIGINAL: &[u8] = b"Received: from client.example.net by mx.example.org\r\n\
From: Alice <alice@example.net>\r\n\
To: bob@example.com\r\n\
Subject: quarterly numbers\r\n\
Message-ID: <m1@example.net>\r\n\
\r\n\
Hello Bob,\r\n\
the numbers are attached.\r\n";

/// The header section of [`ORIGINAL`].
pub const ORIGINAL_HEADERS: &[u8] = b"Received: from client.example.net by mx.example.org\r\n\
From: Alice <alice@example.net>\r\n\
To: bob@example.com\r\n\
Subject: quarterly numbers\r\n\
Message-ID: <m1@example.net>\r\n";

/// 2023-11-14 22:13:20 UTC, seen from +02:00: "Wed, 15 Nov 2023 00:13:20 +0200".
pub fn arrival() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_700_000_000)
        .unwrap()
        .to_offset(UtcOffset::from_hms(2, 0, 0).unwrap())
}
pub const ARRIVAL: &str = "Wed, 15 Nov 2023 00:13:20 +0200";

/// One hour after arrival, UTC: "Tue, 14 Nov 2023 23:13:20 +0000".
pub fn last_attempt() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_700_003_600).unwrap()
}
pub const LAST_ATTEMPT: &str = "Tue, 14 Nov 2023 23:13:20 +0000";

/// Five days after arrival, UTC: "Sun, 19 Nov 2023 22:13:20 +0000".
pub fn give_up() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_700_432_000).unwrap()
}
pub const GIVE_UP: &str = "Sun, 19 Nov 2023 22:13:20 +0000";

/// Two hours after arrival, UTC.
pub fn report_date() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_700_007_200).unwrap()
}
pub const REPORT_DATE: &str = "Wed, 15 Nov 2023 00:13:20 +0000";

pub const NO_SUCH_USER: &str = "550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown in virtual mailbox table";

/// A recipient that failed at mx.example.com with [`NO_SUCH_USER`].
pub fn failed(address: &str) -> RecipientReport<'_> {
    RecipientReport {
        final_recipient: address,
        original_recipient: None,
        action: Action::Failed,
        status: "5.1.1",
        remote_mta: Some("mx.example.com"),
        diagnostic: Some(NO_SUCH_USER),
        last_attempt: Some(last_attempt()),
        will_retry_until: None,
    }
}

/// A bounce of [`ORIGINAL`] for `recipients`, headers returned.
pub fn bounce<'a>(recipients: &'a [RecipientReport<'a>]) -> DsnInput<'a> {
    DsnInput {
        reporting_mta: "mx.example.org",
        postmaster: "MAILER-DAEMON@mx.example.org",
        original_sender: "alice@example.net",
        envid: None,
        arrival: arrival(),
        queue_id: "4Xk2mQ9ZbC",
        kind: ReportKind::Failure,
        give_up_at: None,
        recipients,
        original: ORIGINAL,
        ret: Return::Headers,
        max_full_size: DEFAULT_MAX_FULL_SIZE,
        date: report_date(),
        message_id_domain: "mx.example.org",
    }
}

/// Parses a report and checks the envelope every report shares: multipart/report with
/// report-type delivery-status and exactly three parts in the expected order.
pub fn parse(report: &[u8]) -> Message<'_> {
    let message = MessageParser::new()
        .parse(report)
        .expect("mail-parser parses the report");
    let content_type = message.content_type().expect("report has a Content-Type");
    assert_eq!(content_type.ctype(), "multipart");
    assert_eq!(content_type.subtype(), Some("report"));
    assert_eq!(
        content_type.attribute("report-type"),
        Some("delivery-status")
    );
    assert_eq!(parts(&message).len(), 3, "a report has three parts");
    message
}

/// The three top-level parts of a parsed report.
pub fn parts<'m, 'x>(message: &'m Message<'x>) -> Vec<&'m MessagePart<'x>> {
    let PartType::Multipart(ids) = &message.root_part().body else {
        panic!("report root is not multipart");
    };
    ids.iter()
        .map(|&id| message.part(id).expect("sub part exists"))
        .collect()
}

/// `type/subtype` of a part.
pub fn mime_type(part: &MessagePart<'_>) -> String {
    let content_type = part.content_type().expect("part has a Content-Type");
    format!(
        "{}/{}",
        content_type.ctype(),
        content_type.subtype().unwrap_or_default()
    )
}

/// The decoded text of the first part.
pub fn text(message: &Message<'_>) -> String {
    let part = parts(message)[0];
    assert_eq!(mime_type(part), "text/plain");
    assert_eq!(
        part.content_type().unwrap().attribute("charset"),
        Some("utf-8")
    );
    part.text_contents().expect("text part").to_owned()
}

/// The body bytes of a part exactly as they are in the report.
pub fn raw_body<'r>(report: &'r [u8], part: &MessagePart<'_>) -> &'r [u8] {
    &report[part.offset_body as usize..part.offset_end as usize]
}

/// A header of a part, as written.
pub fn part_header(part: &MessagePart<'_>, name: &str) -> Option<String> {
    part.headers
        .iter()
        .find(|header| header.name().eq_ignore_ascii_case(name))
        .map(|header| format!("{:?}", header.value()))
}

/// The fields of the delivery-status part: the per-message block first, then one block
/// per recipient, each as (name, value) pairs in order. Each block is parsed by
/// mail-parser as a header section; values are the raw text without the leading space
/// and trailing CRLF.
pub fn status_blocks(report: &[u8]) -> Vec<Vec<(String, String)>> {
    let message = parse(report);
    let part = parts(&message)[1];
    assert_eq!(mime_type(part), "message/delivery-status");
    let body = raw_body(report, part);
    assert!(body.is_ascii(), "delivery-status is 7-bit");
    let body = std::str::from_utf8(body).unwrap();
    body.split("\r\n\r\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let block = format!("{}\r\n\r\n", block.trim_end_matches("\r\n"));
            let parsed = MessageParser::new()
                .parse_headers(block.as_bytes())
                .expect("a delivery-status block parses as headers");
            parsed
                .headers_raw()
                .map(|(name, value)| {
                    (
                        name.to_owned(),
                        value
                            .trim_start_matches(' ')
                            .trim_end_matches("\r\n")
                            .to_owned(),
                    )
                })
                .collect()
        })
        .collect()
}

/// The single value of `name` in a block; panics when absent or repeated.
pub fn field<'b>(block: &'b [(String, String)], name: &str) -> &'b str {
    let mut values = block.iter().filter(|(field, _)| field == name);
    let value = values
        .next()
        .unwrap_or_else(|| panic!("{name} missing in {block:?}"));
    assert!(values.next().is_none(), "{name} repeated in {block:?}");
    &value.1
}

/// Whether a block has a field called `name`.
pub fn has(block: &[(String, String)], name: &str) -> bool {
    block.iter().any(|(field, _)| field == name)
}

/// Names of the fields of a block, in order.
pub fn names(block: &[(String, String)]) -> Vec<&str> {
    block.iter().map(|(name, _)| name.as_str()).collect()
}
