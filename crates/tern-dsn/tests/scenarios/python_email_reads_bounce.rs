//! A real second reader: Python's standard `email` package (policy `default`) parses a
//! generated bounce. For `message/delivery-status` it exposes the per-message block and
//! each per-recipient block as sub-messages; the script prints what it sees and the test
//! checks it field by field.
//!
//! The script prints one JSON array per line; every element is the hex encoding of a
//! UTF-8 string, so the Rust side reads it without a JSON library and without escaping
//! questions. If `python3` is missing the test fails and says so.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use crate::common::*;
use tern_dsn::{Action, DsnInput, RecipientReport, Return, build};

const SCRIPT: &str = r#"
import email, email.policy, json, sys

def out(*values):
    print(json.dumps([str(v).encode("utf-8").hex() for v in values]))

with open(sys.argv[1], "rb") as f:
    msg = email.message_from_bytes(f.read(), policy=email.policy.default)
out("content-type", msg.get_content_type())
out("report-type", msg.get_param("report-type"))
out("defects", len(msg.defects))
parts = msg.get_payload()
out("parts", len(parts))
for part in parts:
    out("part", part.get_content_type())
out("text", parts[0].get_content())
for index, block in enumerate(parts[1].get_payload()):
    for name, value in block.items():
        out("field", index, name, value)
returned = parts[2]
if returned.get_content_type() == "message/rfc822":
    inner = returned.get_payload()[0]
    out("returned-subject", inner["subject"])
else:
    out("returned-text", returned.get_payload(decode=True).decode("utf-8", "replace"))
"#;

/// Runs the script on `report` and returns its lines, each decoded into strings.
fn python_view(report: &[u8]) -> Vec<Vec<String>> {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), report).unwrap();
    let output = match Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(file.path())
        .output()
    {
        Ok(output) => output,
        Err(error) => {
            panic!("this test needs python3 (with its standard email package) on PATH: {error}")
        }
    };
    assert!(
        output.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            line.trim_start_matches('[')
                .trim_end_matches(']')
                .split(", ")
                .map(|element| {
                    let hex = element.trim_matches('"');
                    let bytes: Vec<u8> = (0..hex.len())
                        .step_by(2)
                        .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).unwrap())
                        .collect();
                    String::from_utf8(bytes).unwrap()
                })
                .collect()
        })
        .collect()
}

/// The single line whose first element is `key`, without the key.
fn one<'v>(view: &'v [Vec<String>], key: &str) -> &'v [String] {
    let mut lines = view.iter().filter(|line| line[0] == key);
    let line = lines
        .next()
        .unwrap_or_else(|| panic!("no {key} in {view:?}"));
    assert!(lines.next().is_none(), "{key} repeated");
    &line[1..]
}

/// Fields of delivery-status block `index`, in order.
fn block(view: &[Vec<String>], index: usize) -> Vec<(String, String)> {
    view.iter()
        .filter(|line| line[0] == "field" && line[1] == index.to_string())
        .map(|line| (line[2].clone(), line[3].clone()))
        .collect()
}

#[test]
fn python_reads_every_delivery_status_field() {
    let recipients = [
        RecipientReport {
            original_recipient: Some("rfc822;Bob@Example.com"),
            ..failed("bob@example.com")
        },
        RecipientReport {
            action: Action::Delayed,
            status: "4.4.1",
            remote_mta: None,
            diagnostic: Some("connection timed out"),
            ..failed("carol@example.com")
        },
    ];
    let input = DsnInput {
        envid: Some("QQ314159"),
        give_up_at: Some(give_up()),
        ..bounce(&recipients)
    };
    let report = build(&input).unwrap();
    let view = python_view(&report);

    assert_eq!(one(&view, "content-type"), ["multipart/report"]);
    assert_eq!(one(&view, "report-type"), ["delivery-status"]);
    assert_eq!(one(&view, "defects"), ["0"]);
    assert_eq!(one(&view, "parts"), ["3"]);
    let part_types: Vec<&str> = view
        .iter()
        .filter(|line| line[0] == "part")
        .map(|line| line[1].as_str())
        .collect();
    assert_eq!(
        part_types,
        [
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ]
    );

    let per_message = block(&view, 0);
    assert_eq!(
        per_message,
        [
            ("Reporting-MTA".into(), "dns; mx.example.org".into()),
            ("Original-Envelope-Id".into(), "QQ314159".into()),
            ("Arrival-Date".into(), ARRIVAL.into()),
        ]
    );
    let bob = block(&view, 1);
    assert_eq!(
        bob,
        [
            ("Original-Recipient".into(), "rfc822;Bob@Example.com".into()),
            ("Final-Recipient".into(), "rfc822; bob@example.com".into()),
            ("Action".into(), "failed".into()),
            ("Status".into(), "5.1.1".into()),
            ("Remote-MTA".into(), "dns; mx.example.com".into()),
            ("Diagnostic-Code".into(), format!("smtp; {NO_SUCH_USER}")),
            ("Last-Attempt-Date".into(), LAST_ATTEMPT.into()),
        ]
    );
    let carol = block(&view, 2);
    assert_eq!(
        carol,
        [
            ("Final-Recipient".into(), "rfc822; carol@example.com".into()),
            ("Action".into(), "delayed".into()),
            ("Status".into(), "4.4.1".into()),
            (
                "Diagnostic-Code".into(),
                "X-Tern; connection timed out".into()
            ),
            ("Last-Attempt-Date".into(), LAST_ATTEMPT.into()),
            ("Will-Retry-Until".into(), GIVE_UP.into()),
        ]
    );
    assert!(block(&view, 3).is_empty(), "no fourth block");

    let text = &one(&view, "text")[0];
    assert!(text.contains(NO_SUCH_USER), "{text}");
    let returned = &one(&view, "returned-text")[0];
    assert_eq!(returned.as_bytes(), ORIGINAL_HEADERS);
}

#[test]
fn python_reads_a_full_return_as_a_message() {
    let recipients = [failed("bob@example.com")];
    let input = DsnInput {
        ret: Return::Full,
        ..bounce(&recipients)
    };
    let view = python_view(&build(&input).unwrap());
    assert_eq!(one(&view, "defects"), ["0"]);
    assert_eq!(one(&view, "returned-subject"), ["quarterly numbers"]);
}

#[test]
fn python_sees_hostile_reply_as_one_field() {
    let hostile =
        "550 no\r\nBcc: victim@example.com\r\n\r\nFinal-Recipient: rfc822; x@y\r\n\u{0}\u{1b}[31m";
    let recipients = [RecipientReport {
        diagnostic: Some(hostile),
        ..failed("bob@example.com")
    }];
    let view = python_view(&build(&bounce(&recipients)).unwrap());
    let bob = block(&view, 1);
    let diagnostics: Vec<_> = bob
        .iter()
        .filter(|(name, _)| name == "Diagnostic-Code")
        .collect();
    assert_eq!(diagnostics.len(), 1);
    assert_eq!(
        diagnostics[0].1,
        "smtp; 550 no Bcc: victim@example.com Final-Recipient: rfc822; x@y [31m"
    );
    assert_eq!(
        bob.iter()
            .filter(|(name, _)| name == "Final-Recipient")
            .count(),
        1
    );
    assert!(bob.iter().all(|(name, _)| name != "Bcc"));
    assert!(block(&view, 2).is_empty());
}
