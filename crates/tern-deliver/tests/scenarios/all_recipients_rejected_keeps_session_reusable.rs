//! When every RCPT is refused no content is sent, and after RSET the same session
//! carries a second transaction that succeeds.

#![allow(clippy::unwrap_used)]

use crate::common::*;
use tern_deliver::{OutRecipient, RcptOutcome};

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn all_recipients_rejected_then_reuse() {
    let peer = Peer::start("127.0.0.4", &["permfail-rcpt=^bad", "tempfail-rcpt=^later"]);
    let mut session = connect(&peer).await;
    let rcpts = [
        OutRecipient::new("bad1@example.net"),
        OutRecipient::new("later@example.net"),
    ];
    let outcome = session
        .send(&transaction(&rcpts, MESSAGE), &mut reader(MESSAGE))
        .await
        .unwrap();
    assert_eq!(outcome.data, None);
    assert!(matches!(&outcome.recipients[0], RcptOutcome::Rejected(r) if r.code == 550));
    assert!(matches!(&outcome.recipients[1], RcptOutcome::Rejected(r) if r.code == 450));
    assert!(session.is_usable());
    assert!(peer.messages().is_empty());
    // The pipelined DATA was refused by the peer (no valid recipients), so no content
    // line reached it.
    assert!(!peer.log().contains("Hello."), "{}", peer.log());

    let good = [OutRecipient::new("good@example.net")];
    let outcome = session
        .send(&transaction(&good, MESSAGE), &mut reader(MESSAGE))
        .await
        .unwrap();
    assert_eq!(outcome.delivered(), 1);
    assert_eq!(session.transactions(), 2);
    session.quit().await;
    let stored = peer.messages();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].meta["rcpt_tos"],
        serde_json::json!(["good@example.net"])
    );
}
