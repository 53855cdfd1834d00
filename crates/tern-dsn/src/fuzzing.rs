//! Entry point for the `dsn_build` fuzz target and the property test that runs the same
//! check in CI (`tests/scenarios/arbitrary_fields.rs`). Not a stable API.
//!
//! Every untrusted input of a report comes from the bytes: the original message, the
//! remote reply, the remote host name, the ENVID, the recipient address and its ORCPT.
//! The check: [`crate::build`] never panics; when it builds a report, mail-parser reads
//! it as `multipart/report` with three parts, the delivery-status part is 7-bit, and it
//! holds exactly the per-message block and the one recipient block, each with only the
//! fields Tern writes (a hostile value can never add a field or a block).

use mail_parser::{MessageParser, MimeHeaders, PartType};
use time::OffsetDateTime;

use crate::{Action, DsnInput, RecipientReport, ReportKind, Return};

/// Fields Tern may write in a recipient block (RFC 3464 §2.3).
const RECIPIENT_FIELDS: [&str; 8] = [
    "final-recipient",
    "original-recipient",
    "action",
    "status",
    "remote-mta",
    "diagnostic-code",
    "last-attempt-date",
    "will-retry-until",
];
/// Fields Tern may write in the per-message block (RFC 3464 §2.2).
const MESSAGE_FIELDS: [&str; 4] = [
    "reporting-mta",
    "original-envelope-id",
    "arrival-date",
    "x-tern-queue-id",
];

/// Splits `data` at 0x00 into up to six untrusted inputs and builds a report from them;
/// panics if the report is not what the module header promises. Returns whether a
/// report was built (`false`: `build` refused the input with an error).
pub fn build_arbitrary(data: &[u8]) -> bool {
    let mut pieces = data.splitn(6, |b| *b == 0);
    let mut text = || String::from_utf8_lossy(pieces.next().unwrap_or_default()).into_owned();
    let (reply, remote, envid, address, orcpt) = (text(), text(), text(), text(), text());
    let original = pieces.next().unwrap_or_default();
    let when = OffsetDateTime::UNIX_EPOCH;
    let recipient = RecipientReport {
        final_recipient: if address.is_empty() {
            "a@b.example"
        } else {
            &address
        },
        original_recipient: (!orcpt.is_empty()).then_some(orcpt.as_str()),
        action: Action::Failed,
        status: "5.1.1",
        remote_mta: (!remote.is_empty()).then_some(remote.as_str()),
        diagnostic: Some(&reply),
        last_attempt: Some(when),
        will_retry_until: None,
    };
    let recipients = [recipient];
    let input = DsnInput {
        reporting_mta: "mx.tern.example",
        postmaster: "MAILER-DAEMON@mx.tern.example",
        original_sender: "sender@client.example",
        envid: (!envid.is_empty()).then_some(envid.as_str()),
        arrival: when,
        queue_id: "0123456789ABCDE",
        kind: ReportKind::Failure,
        give_up_at: None,
        recipients: &recipients,
        original,
        ret: if data.len().is_multiple_of(2) {
            Return::Full
        } else {
            Return::Headers
        },
        max_full_size: crate::DEFAULT_MAX_FULL_SIZE,
        date: when,
        message_id_domain: "mx.tern.example",
    };
    let Ok(report) = crate::build(&input) else {
        // Refused inputs are fine (a checked field was invalid); panics are not.
        return false;
    };
    check_report(&report);
    true
}

fn check_report(report: &[u8]) {
    let message = MessageParser::new()
        .parse(report)
        .unwrap_or_else(|| panic!("mail-parser cannot read the report"));
    let ct = message
        .content_type()
        .unwrap_or_else(|| panic!("no Content-Type"));
    assert_eq!(ct.ctype(), "multipart");
    assert_eq!(ct.subtype(), Some("report"));
    let Some(root) = message.parts.first() else {
        panic!("no parts");
    };
    let PartType::Multipart(children) = &root.body else {
        panic!("the report is not multipart");
    };
    assert_eq!(children.len(), 3, "three parts");
    let Some(status) = children.get(1).and_then(|i| message.parts.get(*i as usize)) else {
        panic!("no delivery-status part");
    };
    let body = report
        .get(status.raw_body_offset() as usize..status.raw_end_offset() as usize)
        .unwrap_or_else(|| panic!("part offsets outside the report"));
    assert!(body.is_ascii(), "delivery-status is 7-bit");
    let text = String::from_utf8_lossy(body);
    let blocks: Vec<&str> = text
        .split("\r\n\r\n")
        .filter(|b| !b.trim().is_empty())
        .collect();
    assert_eq!(
        blocks.len(),
        2,
        "one message block and one recipient block: {text:?}"
    );
    for (block, allowed) in blocks
        .iter()
        .zip([&MESSAGE_FIELDS[..], &RECIPIENT_FIELDS[..]])
    {
        for line in block.split("\r\n") {
            if line.starts_with([' ', '\t']) || line.is_empty() {
                continue; // a folded continuation
            }
            let name = line.split_once(':').map_or(line, |(n, _)| n);
            assert!(
                allowed.contains(&name.to_ascii_lowercase().as_str()),
                "unexpected field {name:?} in {block:?}"
            );
        }
    }
}
