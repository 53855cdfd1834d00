//! The server refuses the content after the final dot: accepted recipients get that
//! reply, permanent or transient.

#![allow(clippy::unwrap_used)]

use crate::common::*;
use tern_deliver::{OutRecipient, RecipientResult};

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn data_rejected_permanently() {
    let peer = Peer::start("127.0.0.4", &["permfail-data"]);
    let mut session = connect(&peer).await;
    let rcpts = [
        OutRecipient::new("a@example.net"),
        OutRecipient::new("b@example.net"),
    ];
    let outcome = session
        .send(&transaction(&rcpts, MESSAGE), &mut reader(MESSAGE))
        .await
        .unwrap();
    assert_eq!(outcome.data.as_ref().unwrap().code, 554);
    for r in &outcome.recipients {
        assert!(
            matches!(r.result(), RecipientResult::Permanent(ref x) if x.code == 554 && x.enhanced == Some((5, 6, 0)))
        );
    }
    assert_eq!(outcome.delivered(), 0);
    // The session is still in sync: another transaction gets the same answer.
    let again = session
        .send(&transaction(&rcpts[..1], MESSAGE), &mut reader(MESSAGE))
        .await
        .unwrap();
    assert_eq!(again.data.unwrap().code, 554);
    session.quit().await;
    assert!(peer.messages().is_empty());
}

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn data_rejected_transiently() {
    let peer = Peer::start("127.0.0.4", &["tempfail-data"]);
    let mut session = connect(&peer).await;
    let rcpts = [OutRecipient::new("a@example.net")];
    let outcome = session
        .send(&transaction(&rcpts, MESSAGE), &mut reader(MESSAGE))
        .await
        .unwrap();
    assert!(
        matches!(outcome.recipients[0].result(), RecipientResult::Transient(r) if r.code == 451)
    );
    session.quit().await;
    assert!(peer.messages().is_empty());
}
