//! ENVID and ORCPT present or absent, and UTF-8 (SMTPUTF8) addresses.

#![allow(clippy::unwrap_used)]

use crate::common::*;
use tern_dsn::{DsnInput, RecipientReport, build};

#[test]
fn envid_present_is_written_in_the_per_message_block() {
    let recipients = [failed("bob@example.com")];
    let input = DsnInput {
        envid: Some("ABC.12345+x"),
        ..bounce(&recipients)
    };
    let report = build(&input).unwrap();
    let blocks = status_blocks(&report);
    assert_eq!(
        names(&blocks[0]),
        ["Reporting-MTA", "Original-Envelope-Id", "Arrival-Date"]
    );
    assert_eq!(field(&blocks[0], "Original-Envelope-Id"), "ABC.12345+x");
    assert!(!has(&blocks[1], "Original-Envelope-Id"));
    let text = text(&parse(&report));
    assert!(text.contains("Envelope id: ABC.12345+x"), "{text}");
}

#[test]
fn envid_absent_writes_no_field() {
    let recipients = [failed("bob@example.com")];
    let report = build(&bounce(&recipients)).unwrap();
    let blocks = status_blocks(&report);
    assert!(!has(&blocks[0], "Original-Envelope-Id"));
    assert!(!text(&parse(&report)).contains("Envelope id"));
}

#[test]
fn orcpt_present_comes_first_and_verbatim() {
    let recipients = [
        RecipientReport {
            original_recipient: Some("rfc822;Bob.Original@Example.COM"),
            ..failed("bob@example.com")
        },
        failed("carol@example.com"),
    ];
    let report = build(&bounce(&recipients)).unwrap();
    let blocks = status_blocks(&report);
    assert_eq!(
        names(&blocks[1])[..2],
        ["Original-Recipient", "Final-Recipient"]
    );
    assert_eq!(
        field(&blocks[1], "Original-Recipient"),
        "rfc822;Bob.Original@Example.COM"
    );
    // ORCPT absent: no field, not even an empty one.
    assert!(!has(&blocks[2], "Original-Recipient"));
    assert_eq!(
        field(&blocks[2], "Final-Recipient"),
        "rfc822; carol@example.com"
    );
}

#[test]
fn utf8_recipient_uses_the_rfc6533_type() {
    let recipients = [RecipientReport {
        original_recipient: Some("utf-8;jörg@bücher.example"),
        ..failed("jörg+news@bücher.example")
    }];
    let report = build(&bounce(&recipients)).unwrap();
    let blocks = status_blocks(&report);
    assert_eq!(
        field(&blocks[1], "Final-Recipient"),
        "utf-8; j\\x{F6}rg\\x{2B}news@b\\x{FC}cher.example"
    );
    assert_eq!(
        field(&blocks[1], "Original-Recipient"),
        "utf-8;j\\x{F6}rg@b\\x{FC}cher.example"
    );
    // The human-readable text shows the address as people write it.
    let text = text(&parse(&report));
    assert!(
        text.contains("<jörg+news@bücher.example>: delivery failed"),
        "{text}"
    );
}

#[test]
fn utf8_original_sender_is_the_report_recipient() {
    let recipients = [failed("bob@example.com")];
    let input = DsnInput {
        original_sender: "Ærøskøbing@dø.example",
        ..bounce(&recipients)
    };
    let report = build(&input).unwrap();
    let message = parse(&report);
    assert_eq!(
        message.to().unwrap().first().unwrap().address(),
        Some("Ærøskøbing@dø.example")
    );
}

#[test]
fn remote_mta_absent_writes_no_field() {
    let recipients = [RecipientReport {
        remote_mta: None,
        diagnostic: Some("Host or domain name not found"),
        ..failed("bob@nowhere.example")
    }];
    let report = build(&bounce(&recipients)).unwrap();
    let blocks = status_blocks(&report);
    assert!(!has(&blocks[1], "Remote-MTA"));
    assert_eq!(
        field(&blocks[1], "Diagnostic-Code"),
        "X-Tern; Host or domain name not found"
    );
    let text = text(&parse(&report));
    assert!(text.contains("Reason:"), "{text}");
    assert!(text.contains("Host or domain name not found"), "{text}");
}
