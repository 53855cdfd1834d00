//! RSET between transactions: the second and later transactions on one connection start
//! with RSET (pipelined with MAIL when the server offers PIPELINING, alone otherwise),
//! and a connection that died while idle fails at that RSET, before any content, so the
//! caller knows nothing was delivered and opens a new one.

#![allow(clippy::unwrap_used)]

use crate::common::*;
use tern_deliver::{OutRecipient, SessionError, Stage};

async fn three_on_one(peer: &Peer) {
    let mut session = connect(peer).await;
    for i in 0..3 {
        let address = format!("r{i}@example.net");
        let rcpts = [OutRecipient::new(&address)];
        let outcome = session
            .send(&transaction(&rcpts, MESSAGE), &mut reader(MESSAGE))
            .await
            .unwrap();
        assert_eq!(outcome.delivered(), 1);
    }
    session.quit().await;
}

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn every_reused_transaction_starts_with_rset() {
    for behaviours in [&["accept"][..], &["no-pipelining"][..]] {
        let peer = Peer::start("127.0.0.13", behaviours);
        three_on_one(&peer).await;
        assert_eq!(peer.messages().len(), 3, "{behaviours:?}");
        let log = peer.log();
        assert_eq!(
            log.matches(">> b'RSET'").count(),
            2,
            "{behaviours:?}: one RSET before each reused transaction:\n{log}"
        );
        assert_eq!(log.matches(">> b'EHLO").count(), 1, "{log}");
    }
}

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn a_connection_dead_while_idle_fails_at_rset() {
    let mut peer = Peer::start("127.0.0.13", &["accept"]);
    let mut session = connect(&peer).await;
    let rcpts = [OutRecipient::new("r0@example.net")];
    let outcome = session
        .send(&transaction(&rcpts, MESSAGE), &mut reader(MESSAGE))
        .await
        .unwrap();
    assert_eq!(outcome.delivered(), 1);
    peer.kill();
    let rcpts = [OutRecipient::new("r1@example.net")];
    let err = session
        .send(&transaction(&rcpts, MESSAGE), &mut reader(MESSAGE))
        .await
        .expect_err("the peer is gone");
    assert_eq!(err.stage(), Stage::Rset, "{err}");
    assert!(!err.is_data_unknown(), "{err}");
    assert!(!session.is_usable());
    assert!(matches!(
        session
            .send(&transaction(&rcpts, MESSAGE), &mut reader(MESSAGE))
            .await,
        Err(SessionError::Unusable)
    ));
}
