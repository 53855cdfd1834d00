//! A server without PIPELINING gets one command at a time, and the message arrives.

#![allow(clippy::unwrap_used)]

use crate::common::*;
use tern_deliver::OutRecipient;

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn delivery_without_pipelining() {
    let peer = Peer::start("127.0.0.2", &["accept", "no-pipelining"]);
    let mut session = connect(&peer).await;
    assert!(!session.capabilities().pipelining);
    let rcpts = [
        OutRecipient::new("a@example.net"),
        OutRecipient::new("b@example.net"),
    ];
    let outcome = session
        .send(&transaction(&rcpts, MESSAGE), &mut reader(MESSAGE))
        .await
        .unwrap();
    assert_eq!(outcome.delivered(), 2);
    session.quit().await;
    let stored = peer.messages();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].content, MESSAGE);
    // Nothing was sent ahead of the MAIL reply.
    assert_eq!(stored[0].meta["buffered_at_mail"], "");
}

/// Without PIPELINING a refused MAIL is not followed by RCPT.
#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn no_rcpt_after_refused_mail_without_pipelining() {
    let peer = Peer::start("127.0.0.2", &["permfail-mail", "no-pipelining"]);
    let mut session = connect(&peer).await;
    let rcpts = [OutRecipient::new("a@example.net")];
    let outcome = session
        .send(&transaction(&rcpts, MESSAGE), &mut reader(MESSAGE))
        .await
        .unwrap();
    assert!(outcome.mail.is_permanent());
    session.quit().await;
    assert!(!peer.log().contains("RCPT TO"), "{}", peer.log());
}
