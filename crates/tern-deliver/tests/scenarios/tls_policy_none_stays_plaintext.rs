//! Policy `none` never sends STARTTLS, even when it is offered.

#![allow(clippy::unwrap_used)]

use crate::common::*;
use tern_deliver::{OutRecipient, SmtpSession, TlsPolicy};

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn none_never_starts_tls() {
    let pki = pki("peer.test.example");
    let peer = Peer::start_with(
        "127.0.0.12",
        &["starttls"],
        &[
            "--cert",
            pki.cert.to_str().unwrap(),
            "--key",
            pki.key.to_str().unwrap(),
        ],
    );
    let mut session =
        SmtpSession::connect(&context(), peer.addr, "peer.test.example", TlsPolicy::None)
            .await
            .unwrap();
    assert!(session.capabilities().starttls);
    assert_eq!(session.tls(), None);
    let rcpts = [OutRecipient::new("a@example.net")];
    assert_eq!(
        session
            .send(&transaction(&rcpts, MESSAGE), &mut reader(MESSAGE))
            .await
            .unwrap()
            .delivered(),
        1
    );
    session.quit().await;
    assert!(!peer.log().contains(">> b'STARTTLS'"), "{}", peer.log());
    assert_eq!(peer.messages()[0].meta["tls"], serde_json::Value::Null);
}
