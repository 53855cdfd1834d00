//! A refused MAIL FROM gives every recipient that reply's class, nothing is stored, and
//! RSET keeps the connection usable.

#![allow(clippy::unwrap_used)]

use crate::common::*;
use tern_deliver::{OutRecipient, RcptOutcome, RecipientResult};

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn permanent_mail_rejection_fails_every_recipient() {
    let peer = Peer::start("127.0.0.3", &["permfail-mail"]);
    let mut session = connect(&peer).await;
    let rcpts = [
        OutRecipient::new("a@example.net"),
        OutRecipient::new("b@example.net"),
    ];
    let outcome = session
        .send(&transaction(&rcpts, MESSAGE), &mut reader(MESSAGE))
        .await
        .unwrap();
    assert_eq!(outcome.mail.code, 553);
    assert_eq!(outcome.data, None);
    assert_eq!(outcome.recipients.len(), 2);
    for r in &outcome.recipients {
        assert!(matches!(r, RcptOutcome::MailRejected(m) if m.code == 553));
        assert!(matches!(r.result(), RecipientResult::Permanent(_)));
    }
    assert!(session.is_usable());
    session.quit().await;
    assert!(peer.messages().is_empty());
    assert!(peer.log().contains("RSET"));
}

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn transient_mail_rejection_defers_every_recipient() {
    let peer = Peer::start("127.0.0.3", &["tempfail-mail"]);
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
