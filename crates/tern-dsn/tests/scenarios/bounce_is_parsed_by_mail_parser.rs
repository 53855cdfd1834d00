//! A plain bounce, read back with mail-parser: the report's headers, its three parts,
//! every delivery-status field exactly, the remote reply quoted in the text, and the
//! returned header section byte for byte.

#![allow(clippy::unwrap_used)]

use crate::common::*;
use mail_parser::{HeaderValue, MimeHeaders, PartType};
use tern_dsn::{Return, build};

#[test]
fn bounce_headers_name_the_report() {
    let recipients = [failed("bob@example.com")];
    let report = build(&bounce(&recipients)).unwrap();
    let message = parse(&report);

    let from = message.from().unwrap().first().unwrap();
    assert_eq!(from.name(), Some("Mail Delivery System"));
    assert_eq!(from.address(), Some("MAILER-DAEMON@mx.example.org"));
    assert_eq!(
        message.to().unwrap().first().unwrap().address(),
        Some("alice@example.net")
    );
    assert_eq!(
        message.subject(),
        Some("Undelivered Mail Returned to Sender")
    );
    assert_eq!(message.header_raw("Date").map(str::trim), Some(REPORT_DATE));
    let message_id = message.message_id().unwrap();
    assert!(message_id.starts_with("bounce.4Xk2mQ9ZbC."), "{message_id}");
    assert!(message_id.ends_with("@mx.example.org"), "{message_id}");
    assert_eq!(
        message.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied")
    );
    assert_eq!(
        message.header_raw("X-Tern-Queue-Id").map(str::trim),
        Some("4Xk2mQ9ZbC")
    );
    assert_eq!(
        message.header("MIME-Version"),
        Some(&HeaderValue::Text("1.0".into()))
    );
    assert_eq!(
        message
            .headers()
            .iter()
            .filter(|h| h.name() == "MIME-Version")
            .count(),
        1
    );
}

#[test]
fn two_bounces_of_one_message_have_different_message_ids() {
    let recipients = [failed("bob@example.com")];
    let first = build(&bounce(&recipients)).unwrap();
    let second = build(&bounce(&recipients)).unwrap();
    assert_ne!(
        parse(&first).message_id().unwrap(),
        parse(&second).message_id().unwrap()
    );
}

#[test]
fn report_is_crlf_only() {
    let recipients = [failed("bob@example.com")];
    let report = build(&bounce(&recipients)).unwrap();
    for (position, &byte) in report.iter().enumerate() {
        if byte == b'\n' {
            assert_eq!(report[position - 1], b'\r', "bare LF at {position}");
        }
        if byte == b'\r' {
            assert_eq!(
                report.get(position + 1),
                Some(&b'\n'),
                "bare CR at {position}"
            );
        }
    }
}

#[test]
fn parts_have_the_report_types_in_order() {
    let recipients = [failed("bob@example.com")];
    let report = build(&bounce(&recipients)).unwrap();
    let message = parse(&report);
    let types: Vec<String> = parts(&message).into_iter().map(mime_type).collect();
    assert_eq!(
        types,
        [
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ]
    );
}

#[test]
fn delivery_status_fields_are_exact() {
    let recipients = [failed("bob@example.com")];
    let report = build(&bounce(&recipients)).unwrap();
    let blocks = status_blocks(&report);
    assert_eq!(blocks.len(), 2, "{blocks:?}");

    let per_message = &blocks[0];
    assert_eq!(names(per_message), ["Reporting-MTA", "Arrival-Date"]);
    assert_eq!(field(per_message, "Reporting-MTA"), "dns; mx.example.org");
    assert_eq!(field(per_message, "Arrival-Date"), ARRIVAL);

    let recipient = &blocks[1];
    assert_eq!(
        names(recipient),
        [
            "Final-Recipient",
            "Action",
            "Status",
            "Remote-MTA",
            "Diagnostic-Code",
            "Last-Attempt-Date"
        ]
    );
    assert_eq!(
        field(recipient, "Final-Recipient"),
        "rfc822; bob@example.com"
    );
    assert_eq!(field(recipient, "Action"), "failed");
    assert_eq!(field(recipient, "Status"), "5.1.1");
    assert_eq!(field(recipient, "Remote-MTA"), "dns; mx.example.com");
    assert_eq!(
        field(recipient, "Diagnostic-Code"),
        format!("smtp; {NO_SUCH_USER}")
    );
    assert_eq!(field(recipient, "Last-Attempt-Date"), LAST_ATTEMPT);
}

#[test]
fn text_quotes_the_remote_reply_and_names_the_message() {
    let recipients = [failed("bob@example.com")];
    let report = build(&bounce(&recipients)).unwrap();
    let text = text(&parse(&report));
    assert!(text.contains(NO_SUCH_USER), "{text}");
    assert!(
        text.contains("<bob@example.com>: delivery failed"),
        "{text}"
    );
    assert!(text.contains("mx.example.com"), "{text}");
    assert!(text.contains("queue id 4Xk2mQ9ZbC"), "{text}");
    assert!(text.contains(ARRIVAL), "{text}");
    assert!(
        text.contains("This is the mail system at host mx.example.org."),
        "{text}"
    );
    assert!(
        text.contains("headers of your message are attached"),
        "{text}"
    );
}

#[test]
fn returned_headers_are_byte_identical() {
    let recipients = [failed("bob@example.com")];
    let report = build(&bounce(&recipients)).unwrap();
    let message = parse(&report);
    let returned = parts(&message)[2];
    assert_eq!(mime_type(returned), "text/rfc822-headers");
    assert_eq!(raw_body(&report, returned), ORIGINAL_HEADERS);
    assert_eq!(
        message
            .part(0)
            .unwrap()
            .content_type()
            .unwrap()
            .attribute("report-type"),
        Some("delivery-status")
    );
}

#[test]
fn returned_full_message_is_byte_identical() {
    let recipients = [failed("bob@example.com")];
    let input = tern_dsn::DsnInput {
        ret: Return::Full,
        ..bounce(&recipients)
    };
    let report = build(&input).unwrap();
    let message = parse(&report);
    let returned = parts(&message)[2];
    assert_eq!(mime_type(returned), "message/rfc822");
    assert_eq!(raw_body(&report, returned), ORIGINAL);
    let PartType::Message(nested) = &returned.body else {
        panic!("message/rfc822 is parsed as a message: {:?}", returned.body);
    };
    assert_eq!(nested.subject(), Some("quarterly numbers"));
    let text = text(&message);
    assert!(text.contains("Your message is attached below."), "{text}");
}
