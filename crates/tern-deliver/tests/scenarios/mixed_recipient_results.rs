//! One accepted, one 4xx and one 5xx recipient in one transaction: the message goes to
//! the accepted one and each recipient gets its own result.

#![allow(clippy::unwrap_used)]

use crate::common::*;
use tern_deliver::{OutRecipient, RcptOutcome, RecipientResult};

async fn mixed(behaviours: &[&str]) {
    let peer = Peer::start("127.0.0.3", behaviours);
    let mut session = connect(&peer).await;
    let rcpts = [
        OutRecipient::new("ok@example.net"),
        OutRecipient::new("busy@example.net"),
        OutRecipient::new("gone@example.net"),
    ];
    let outcome = session
        .send(&transaction(&rcpts, MESSAGE), &mut reader(MESSAGE))
        .await
        .unwrap();
    let results: Vec<RecipientResult> =
        outcome.recipients.iter().map(RcptOutcome::result).collect();
    assert!(matches!(&results[0], RecipientResult::Delivered(r) if r.code == 250));
    assert!(
        matches!(&results[1], RecipientResult::Transient(r) if r.code == 450 && r.enhanced == Some((4, 2, 0)))
    );
    assert!(
        matches!(&results[2], RecipientResult::Permanent(r) if r.code == 550 && r.enhanced == Some((5, 1, 1)))
    );
    assert!(matches!(&outcome.recipients[1], RcptOutcome::Rejected(_)));
    assert!(session.is_usable());
    session.quit().await;
    let stored = peer.messages();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].meta["rcpt_tos"],
        serde_json::json!(["ok@example.net"])
    );
}

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn mixed_recipient_results_pipelined() {
    mixed(&["tempfail-rcpt=^busy@", "permfail-rcpt=^gone@"]).await;
}

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn mixed_recipient_results_one_by_one() {
    mixed(&[
        "tempfail-rcpt=^busy@",
        "permfail-rcpt=^gone@",
        "no-pipelining",
    ])
    .await;
}
