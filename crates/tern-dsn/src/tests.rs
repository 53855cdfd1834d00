//! Unit tests of `build`'s checks on values Tern supplies, and of which form of the
//! original goes back. Whole-report behaviour is tested in `tests/`.

use time::{OffsetDateTime, UtcOffset};

use super::*;

fn at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap()
}

fn recipient(action: Action) -> RecipientReport<'static> {
    RecipientReport {
        final_recipient: "bob@example.com",
        original_recipient: None,
        action,
        status: "5.1.1",
        remote_mta: None,
        diagnostic: None,
        last_attempt: None,
        will_retry_until: None,
    }
}

fn input<'a>(recipients: &'a [RecipientReport<'a>]) -> DsnInput<'a> {
    DsnInput {
        reporting_mta: "mx.example.org",
        postmaster: "MAILER-DAEMON@mx.example.org",
        original_sender: "alice@example.net",
        envid: None,
        arrival: at(1_700_000_000),
        queue_id: "4Xk2mQ9ZbC",
        kind: ReportKind::Failure,
        give_up_at: None,
        recipients,
        original: b"Subject: x\r\n\r\nbody\r\n",
        ret: Return::Full,
        max_full_size: DEFAULT_MAX_FULL_SIZE,
        date: at(1_700_000_100),
        message_id_domain: "mx.example.org",
    }
}

#[test]
fn valid_input_builds() {
    let recipients = [recipient(Action::Failed)];
    assert!(build(&input(&recipients)).is_ok());
}

#[test]
fn no_recipients_is_refused() {
    assert!(matches!(build(&input(&[])), Err(DsnError::NoRecipients)));
}

#[test]
fn bad_status_is_refused_with_its_position() {
    let recipients = [
        recipient(Action::Failed),
        RecipientReport {
            status: "550",
            ..recipient(Action::Failed)
        },
    ];
    match build(&input(&recipients)) {
        Err(DsnError::InvalidStatus { index, status }) => {
            assert_eq!(index, 1);
            assert_eq!(status, "550");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn values_tern_supplies_are_checked() {
    let recipients = [recipient(Action::Failed)];
    let base = input(&recipients);
    let cases: [(&str, DsnInput<'_>); 9] = [
        (
            "reporting_mta",
            DsnInput {
                reporting_mta: "",
                ..base
            },
        ),
        (
            "reporting_mta",
            DsnInput {
                reporting_mta: "mx\r\nX: y",
                ..base
            },
        ),
        (
            "message_id_domain",
            DsnInput {
                message_id_domain: "a b",
                ..base
            },
        ),
        (
            "postmaster",
            DsnInput {
                postmaster: "MAILER-DAEMON",
                ..base
            },
        ),
        (
            "postmaster",
            DsnInput {
                postmaster: "a@b>\r\nBcc: c@d",
                ..base
            },
        ),
        (
            "original_sender",
            DsnInput {
                original_sender: "",
                ..base
            },
        ),
        (
            "original_sender",
            DsnInput {
                original_sender: "a\0@b",
                ..base
            },
        ),
        (
            "queue_id",
            DsnInput {
                queue_id: "id\r\nX: y",
                ..base
            },
        ),
        (
            "queue_id",
            DsnInput {
                queue_id: "a@b",
                ..base
            },
        ),
    ];
    for (expected, case) in cases {
        match build(&case) {
            Err(DsnError::InvalidValue { field, .. }) => assert_eq!(field, expected),
            other => panic!("{expected}: {other:?}"),
        }
    }
}

#[test]
fn quoted_values_in_errors_are_bounded() {
    let recipients = [recipient(Action::Failed)];
    let long = format!("{}\r\n", "a".repeat(10_000));
    let case = DsnInput {
        queue_id: &long,
        ..input(&recipients)
    };
    match build(&case) {
        Err(DsnError::InvalidValue { value, .. }) => assert!(value.len() <= 200),
        other => panic!("{other:?}"),
    }
}

#[test]
fn dates_before_1900_are_refused() {
    let recipients = [recipient(Action::Failed)];
    let case = DsnInput {
        arrival: at(-3_000_000_000),
        ..input(&recipients)
    };
    assert!(matches!(
        build(&case),
        Err(DsnError::InvalidDate {
            field: "arrival",
            ..
        })
    ));
}

#[test]
fn dates_keep_their_offset() {
    let recipients = [recipient(Action::Failed)];
    let case = DsnInput {
        date: at(1_700_000_000).to_offset(UtcOffset::from_hms(-5, 0, 0).unwrap()),
        ..input(&recipients)
    };
    let report = build(&case).unwrap();
    let report = String::from_utf8_lossy(&report);
    assert!(
        report.contains("\r\nDate: Tue, 14 Nov 2023 17:13:20 -0500\r\n"),
        "{report}"
    );
}

#[test]
fn full_return_needs_a_failure_and_a_small_enough_message() {
    let failed = [recipient(Action::Failed), recipient(Action::Delivered)];
    let delivered = [recipient(Action::Delivered), recipient(Action::Delayed)];
    assert_eq!(returned_form(&input(&failed)), Returned::Full);
    assert_eq!(returned_form(&input(&delivered)), Returned::Headers);
    let small = DsnInput {
        max_full_size: 3,
        ..input(&failed)
    };
    assert_eq!(returned_form(&small), Returned::HeadersBecauseTooLarge);
    let small_without_failure = DsnInput {
        max_full_size: 3,
        ..input(&delivered)
    };
    assert_eq!(returned_form(&small_without_failure), Returned::Headers);
    let headers = DsnInput {
        ret: Return::Headers,
        ..input(&failed)
    };
    assert_eq!(returned_form(&headers), Returned::Headers);
}

#[test]
fn boundary_avoids_every_part() {
    let boundary = boundary_for(&[b"one", b"two"]).unwrap();
    assert!(boundary.starts_with("tern-dsn_"));
    assert!(boundary.len() <= 70, "RFC 2046 limit");
    // The fixed prefix alone in a part does not count as a collision.
    assert!(boundary_for(&[b"--tern-dsn_\r\n"]).is_ok());
}

#[test]
fn subjects_per_kind() {
    assert_eq!(
        ReportKind::Failure.subject(),
        "Undelivered Mail Returned to Sender"
    );
    assert_eq!(
        ReportKind::Delay.subject(),
        "Delayed Mail (still being retried)"
    );
    assert_eq!(
        ReportKind::Success.subject(),
        "Successful Mail Delivery Report"
    );
}
