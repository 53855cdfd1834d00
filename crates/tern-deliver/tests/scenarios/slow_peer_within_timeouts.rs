//! A peer that waits before every reply is still served, as long as each wait is
//! within the stage's limit.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use crate::common::*;
use tern_deliver::{ClientContext, OutRecipient, SmtpSession, TlsPolicy};

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn slow_peer_still_works() {
    let peer = Peer::start("127.0.0.14", &["slow=150"]);
    let mut config = config();
    // Every limit is above the 150 ms delay, most of them not by much.
    let limit = Duration::from_millis(1500);
    config.timeouts.greeting = limit;
    config.timeouts.ehlo = limit;
    config.timeouts.mail = limit;
    config.timeouts.rcpt = limit;
    config.timeouts.data_start = limit;
    config.timeouts.data_end = limit;
    config.timeouts.rset = limit;
    let ctx = ClientContext::new(config).unwrap();
    let mut session = SmtpSession::connect(&ctx, peer.addr, "peer.test.example", TlsPolicy::None)
        .await
        .unwrap();
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
    assert_eq!(peer.messages().len(), 1);
}
