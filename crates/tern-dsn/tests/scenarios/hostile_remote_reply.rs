//! Whatever a remote server replies (CR LF injection, control characters, 10 KB of text,
//! a forged boundary), it stays inside one Diagnostic-Code field and one quoted line, and
//! cannot add a header or a delivery-status field.

#![allow(clippy::unwrap_used)]

use crate::common::*;
use tern_dsn::{MAX_FIELD_LINE, MAX_REPLY, RecipientReport, build};

const INJECTION: &str = "550 5.1.1 gone\r\nBcc: victim@example.com\r\n\r\n\
Final-Recipient: rfc822; forged@example.com\r\nAction: delivered\nStatus: 2.0.0\r\
X-Evil: 1\0\u{7}\u{1b}[2J\u{7f}\u{85}\u{2028}end";

const CLEANED: &str = "550 5.1.1 gone Bcc: victim@example.com Final-Recipient: rfc822; \
forged@example.com Action: delivered Status: 2.0.0 X-Evil: 1 [2J end";

fn report_with(diagnostic: &str, remote_mta: &str) -> Vec<u8> {
    let recipients = [RecipientReport {
        diagnostic: Some(diagnostic),
        remote_mta: Some(remote_mta),
        ..failed("bob@example.com")
    }];
    build(&bounce(&recipients)).unwrap()
}

#[test]
fn crlf_injection_stays_one_field() {
    let report = report_with(INJECTION, "mx.example.com\r\nX-Injected: yes");
    let blocks = status_blocks(&report);
    assert_eq!(blocks.len(), 2, "no extra block: {blocks:?}");
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
        field(recipient, "Diagnostic-Code"),
        format!("smtp; {CLEANED}")
    );
    assert_eq!(
        field(recipient, "Final-Recipient"),
        "rfc822; bob@example.com"
    );
    assert_eq!(field(recipient, "Action"), "failed");
    assert_eq!(
        field(recipient, "Remote-MTA"),
        "dns; mx.example.com X-Injected: yes"
    );

    let message = parse(&report);
    assert!(message.header("Bcc").is_none());
    assert!(message.header("X-Injected").is_none());
    assert!(message.header("X-Evil").is_none());
    let text = text(&message);
    assert!(text.contains(CLEANED), "{text}");
    assert!(
        !text
            .chars()
            .any(|c| c.is_control() && c != '\r' && c != '\n'),
        "{text:?}"
    );
    assert!(!text.contains("\nBcc:"), "{text}");
}

#[test]
fn ten_kilobyte_reply_is_cut_to_one_bounded_line() {
    let long = format!("550 5.7.1 {}", "spam ".repeat(2048));
    assert!(long.len() > 10_000);
    let report = report_with(&long, "mx.example.com");
    let blocks = status_blocks(&report);
    let diagnostic = field(&blocks[1], "Diagnostic-Code");
    assert!(
        diagnostic.starts_with("smtp; 550 5.7.1 spam spam"),
        "{diagnostic}"
    );
    assert!(diagnostic.ends_with("..."), "{diagnostic}");
    assert!(diagnostic.len() <= "smtp; ".len() + MAX_REPLY);
    assert!(diagnostic.len() > MAX_REPLY / 2);

    let message = parse(&report);
    let status = raw_body(&report, parts(&message)[1]);
    for line in status.split(|&b| b == b'\n') {
        assert!(line.len() <= MAX_FIELD_LINE + 1, "{} octets", line.len());
    }
    // The text quotes the same cut reply.
    let quoted = diagnostic.trim_start_matches("smtp; ");
    assert!(text(&message).contains(quoted));
}

#[test]
fn every_report_line_is_within_the_rfc5322_limit() {
    let long = "x".repeat(10_000);
    let recipients = [RecipientReport {
        original_recipient: Some(&long),
        remote_mta: Some(&long),
        diagnostic: Some(&long),
        ..failed(&long)
    }];
    let report = build(&bounce(&recipients)).unwrap();
    for line in report.split(|&b| b == b'\n') {
        assert!(line.len() <= 1000, "{} octets", line.len());
    }
    assert_eq!(status_blocks(&report).len(), 2);
}

#[test]
fn non_ascii_reply_is_question_marks_in_the_field_and_intact_in_the_text() {
    let reply = "550 5.1.1 Benutzer unbekannt: Müller";
    let report = report_with(reply, "mx.example.com");
    let blocks = status_blocks(&report);
    assert_eq!(
        field(&blocks[1], "Diagnostic-Code"),
        "smtp; 550 5.1.1 Benutzer unbekannt: M?ller"
    );
    assert!(text(&parse(&report)).contains(reply));
}

#[test]
fn a_reply_that_guesses_at_boundaries_changes_nothing() {
    let reply = "550 x\r\n--tern-dsn_0_0_0\r\nContent-Type: text/html\r\n\r\n<b>hi</b>\r\n--tern-dsn_0_0_0--";
    let report = report_with(reply, "mx.example.com");
    let message = parse(&report);
    assert_eq!(status_blocks(&report).len(), 2);
    assert_eq!(mime_type(parts(&message)[0]), "text/plain");
}
