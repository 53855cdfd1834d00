//! SIZE is read from EHLO, check_compat refuses a bigger message, and SIZE= is sent
//! with messages that fit.

#![allow(clippy::unwrap_used)]

use crate::common::*;
use tern_deliver::{Body, Incompatible, OutRecipient, check_compat};

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn size_advertised_and_too_big() {
    let peer = Peer::start("127.0.0.7", &["size=1000"]);
    let mut session = connect(&peer).await;
    assert_eq!(session.capabilities().size, Some(1000));
    assert_eq!(
        check_compat(session.capabilities(), 1001, Body::SevenBit, false),
        Err(Incompatible::TooBig { limit: 1000 })
    );
    assert_eq!(
        check_compat(
            session.capabilities(),
            MESSAGE.len() as u64,
            Body::SevenBit,
            false
        ),
        Ok(())
    );

    let rcpts = [OutRecipient::new("a@example.net")];
    let outcome = session
        .send(&transaction(&rcpts, MESSAGE), &mut reader(MESSAGE))
        .await
        .unwrap();
    assert_eq!(outcome.delivered(), 1);

    // A caller that ignores check_compat hears it from the server instead.
    let big = vec![b'x'; 2000];
    let outcome = session
        .send(&transaction(&rcpts, &big), &mut reader(&big))
        .await
        .unwrap();
    assert_eq!(outcome.mail.code, 552);
    assert!(session.is_usable());
    session.quit().await;

    let stored = peer.messages();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].meta["mail_options"],
        serde_json::json!([format!("SIZE={}", MESSAGE.len())])
    );
}
