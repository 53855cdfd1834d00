//! One session carries three transactions in a row.

#![allow(clippy::unwrap_used)]

use crate::common::*;
use tern_deliver::OutRecipient;

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn three_transactions_on_one_session() {
    let peer = Peer::start("127.0.0.13", &["accept"]);
    let mut session = connect(&peer).await;
    let bodies: Vec<Vec<u8>> = (0..3)
        .map(|i| format!("Subject: message {i}\r\n\r\nbody {i}\r\n").into_bytes())
        .collect();
    for (i, body) in bodies.iter().enumerate() {
        let address = format!("r{i}@example.net");
        let rcpts = [OutRecipient::new(&address)];
        let outcome = session
            .send(&transaction(&rcpts, body), &mut reader(body))
            .await
            .unwrap();
        assert_eq!(outcome.delivered(), 1);
        assert_eq!(session.transactions(), i as u32 + 1);
    }
    session.quit().await;
    let stored = peer.messages();
    assert_eq!(stored.len(), 3);
    let mut contents: Vec<Vec<u8>> = stored.into_iter().map(|s| s.content).collect();
    contents.sort();
    assert_eq!(contents, bodies);
    // One connection: a single EHLO in the peer's log.
    assert_eq!(peer.log().matches(">> b'EHLO").count(), 1, "{}", peer.log());
}
