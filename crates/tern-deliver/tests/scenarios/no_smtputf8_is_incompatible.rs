//! A server without SMTPUTF8 cannot take a message that needs it; one with it gets the
//! SMTPUTF8 and BODY=8BITMIME parameters.

#![allow(clippy::unwrap_used)]

use crate::common::*;
use tern_deliver::{Body, Incompatible, OutRecipient, check_compat};

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn no_smtputf8_means_incompatible() {
    let peer = Peer::start("127.0.0.8", &["no-smtputf8", "no-8bitmime"]);
    let session = connect(&peer).await;
    let caps = session.capabilities();
    assert!(!caps.smtputf8);
    assert!(!caps.eightbitmime);
    assert_eq!(
        check_compat(caps, 10, Body::SevenBit, true),
        Err(Incompatible::NoSmtpUtf8)
    );
    assert_eq!(
        check_compat(caps, 10, Body::EightBitMime, false),
        Err(Incompatible::NoEightBitMime)
    );
    session.quit().await;
}

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn smtputf8_and_8bitmime_parameters_when_offered() {
    let peer = Peer::start("127.0.0.8", &["accept"]);
    let mut session = connect(&peer).await;
    assert_eq!(
        check_compat(session.capabilities(), 10, Body::EightBitMime, true),
        Ok(())
    );
    let content = "Subject: caf\u{e9}\r\n\r\nna\u{ef}ve\r\n".as_bytes();
    let rcpts = [OutRecipient::new("j\u{f6}rg@example.net")];
    let mut tx = transaction(&rcpts, content);
    tx.body = Body::EightBitMime;
    tx.smtputf8 = true;
    let outcome = session.send(&tx, &mut reader(content)).await.unwrap();
    assert_eq!(outcome.delivered(), 1);
    session.quit().await;
    let stored = peer.messages();
    assert_eq!(stored[0].content, content);
    assert_eq!(
        stored[0].meta["rcpt_tos"],
        serde_json::json!(["j\u{f6}rg@example.net"])
    );
    assert_eq!(
        stored[0].meta["mail_options"],
        serde_json::json!(["BODY=8BITMIME", "SMTPUTF8"])
    );
}
