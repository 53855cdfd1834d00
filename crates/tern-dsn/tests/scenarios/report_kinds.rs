//! Delay notices, success reports (NOTIFY=SUCCESS, relayed, expanded) and reports that
//! mix recipients with different actions.

#![allow(clippy::unwrap_used)]

use crate::common::*;
use tern_dsn::{Action, DsnInput, RecipientReport, ReportKind, Return, build};

fn delayed(address: &str) -> RecipientReport<'_> {
    RecipientReport {
        action: Action::Delayed,
        status: "4.4.1",
        diagnostic: Some("451 4.4.1 try again later"),
        ..failed(address)
    }
}

fn delivered(address: &str, action: Action) -> RecipientReport<'_> {
    RecipientReport {
        final_recipient: address,
        original_recipient: None,
        action,
        status: "2.0.0",
        remote_mta: Some("mx.example.com"),
        diagnostic: Some("250 2.0.0 Ok: queued as 7F3A2"),
        last_attempt: Some(last_attempt()),
        will_retry_until: None,
    }
}

#[test]
fn delay_notice_says_when_tern_gives_up() {
    let recipients = [delayed("bob@example.com")];
    let input = DsnInput {
        kind: ReportKind::Delay,
        give_up_at: Some(give_up()),
        ..bounce(&recipients)
    };
    let report = build(&input).unwrap();
    let message = parse(&report);
    assert_eq!(
        message.subject(),
        Some("Delayed Mail (still being retried)")
    );
    assert!(message.message_id().unwrap().starts_with("delay."));

    let text = text(&message);
    assert!(
        text.contains(&format!("will keep trying until {GIVE_UP}")),
        "{text}"
    );
    assert!(
        text.contains("do not need to send the message again"),
        "{text}"
    );
    assert!(text.contains("451 4.4.1 try again later"), "{text}");

    let blocks = status_blocks(&report);
    assert_eq!(blocks.len(), 2);
    assert_eq!(field(&blocks[1], "Action"), "delayed");
    assert_eq!(field(&blocks[1], "Status"), "4.4.1");
    assert_eq!(field(&blocks[1], "Will-Retry-Until"), GIVE_UP);
    assert_eq!(
        field(&blocks[1], "Diagnostic-Code"),
        "smtp; 451 4.4.1 try again later"
    );
}

#[test]
fn recipient_retry_limit_wins_over_the_report_one() {
    let recipients = [RecipientReport {
        will_retry_until: Some(last_attempt()),
        ..delayed("bob@example.com")
    }];
    let input = DsnInput {
        kind: ReportKind::Delay,
        give_up_at: Some(give_up()),
        ..bounce(&recipients)
    };
    let blocks = status_blocks(&build(&input).unwrap());
    assert_eq!(field(&blocks[1], "Will-Retry-Until"), LAST_ATTEMPT);
}

#[test]
fn delay_notice_without_a_limit_still_explains() {
    let recipients = [delayed("bob@example.com")];
    let input = DsnInput {
        kind: ReportKind::Delay,
        ..bounce(&recipients)
    };
    let report = build(&input).unwrap();
    let text = text(&parse(&report));
    assert!(text.contains("will keep trying for a while"), "{text}");
    let blocks = status_blocks(&report);
    assert!(!has(&blocks[1], "Will-Retry-Until"));
}

#[test]
fn delay_notice_returns_headers_even_when_full_was_asked() {
    // RFC 3461 section 4.3: without a failure, only headers go back.
    let recipients = [delayed("bob@example.com")];
    let input = DsnInput {
        kind: ReportKind::Delay,
        ret: Return::Full,
        ..bounce(&recipients)
    };
    let report = build(&input).unwrap();
    let message = parse(&report);
    let returned = parts(&message)[2];
    assert_eq!(mime_type(returned), "text/rfc822-headers");
    assert_eq!(raw_body(&report, returned), ORIGINAL_HEADERS);
}

#[test]
fn success_report_for_notify_success() {
    let recipients = [delivered("bob@example.com", Action::Delivered)];
    let input = DsnInput {
        kind: ReportKind::Success,
        ret: Return::Full,
        ..bounce(&recipients)
    };
    let report = build(&input).unwrap();
    let message = parse(&report);
    assert_eq!(message.subject(), Some("Successful Mail Delivery Report"));
    let text = text(&message);
    assert!(text.contains("<bob@example.com>: delivered"), "{text}");
    assert!(text.contains("250 2.0.0 Ok: queued as 7F3A2"), "{text}");
    assert!(!text.contains("relayed"), "{text}");
    assert_eq!(mime_type(parts(&message)[2]), "text/rfc822-headers");

    let blocks = status_blocks(&report);
    assert_eq!(field(&blocks[1], "Action"), "delivered");
    assert_eq!(field(&blocks[1], "Status"), "2.0.0");
    assert_eq!(
        field(&blocks[1], "Diagnostic-Code"),
        "smtp; 250 2.0.0 Ok: queued as 7F3A2"
    );
    assert!(!has(&blocks[1], "Will-Retry-Until"));
}

#[test]
fn relayed_report_warns_that_nothing_more_may_come() {
    let recipients = [delivered("bob@example.com", Action::Relayed)];
    let input = DsnInput {
        kind: ReportKind::Success,
        ..bounce(&recipients)
    };
    let report = build(&input).unwrap();
    let text = text(&parse(&report));
    assert!(text.contains("<bob@example.com>: relayed"), "{text}");
    assert!(text.contains("may hear nothing more"), "{text}");
    assert_eq!(field(&status_blocks(&report)[1], "Action"), "relayed");
}

#[test]
fn mixed_actions_get_one_block_each_in_order() {
    let recipients = [
        failed("bob@example.com"),
        delayed("carol@example.com"),
        delivered("dave@example.com", Action::Delivered),
        delivered("list@example.com", Action::Expanded),
        RecipientReport {
            remote_mta: None,
            diagnostic: None,
            last_attempt: None,
            ..delivered("erin@example.com", Action::Relayed)
        },
    ];
    let input = DsnInput {
        give_up_at: Some(give_up()),
        ..bounce(&recipients)
    };
    let report = build(&input).unwrap();
    let blocks = status_blocks(&report);
    assert_eq!(blocks.len(), 6);
    let summary: Vec<(&str, &str, &str)> = blocks[1..]
        .iter()
        .map(|block| {
            (
                field(block, "Final-Recipient"),
                field(block, "Action"),
                field(block, "Status"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("rfc822; bob@example.com", "failed", "5.1.1"),
            ("rfc822; carol@example.com", "delayed", "4.4.1"),
            ("rfc822; dave@example.com", "delivered", "2.0.0"),
            ("rfc822; list@example.com", "expanded", "2.0.0"),
            ("rfc822; erin@example.com", "relayed", "2.0.0"),
        ]
    );
    // Only the delayed recipient gets Will-Retry-Until.
    let with_retry: Vec<bool> = blocks[1..]
        .iter()
        .map(|block| has(block, "Will-Retry-Until"))
        .collect();
    assert_eq!(with_retry, [false, true, false, false, false]);
    assert_eq!(names(&blocks[5]), ["Final-Recipient", "Action", "Status"]);

    let text = text(&parse(&report));
    for expected in [
        "<bob@example.com>: delivery failed (status 5.1.1)",
        "<carol@example.com>: delivery delayed, still trying (status 4.4.1)",
        "<dave@example.com>: delivered (status 2.0.0)",
        "<list@example.com>: delivered to a list or alias",
        "<erin@example.com>: relayed",
    ] {
        assert!(text.contains(expected), "{expected} missing from {text}");
    }
}
