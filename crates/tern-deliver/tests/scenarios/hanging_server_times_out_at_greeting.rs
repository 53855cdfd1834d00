//! A server that accepts TCP and never greets is given up on after the greeting timeout.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use crate::common::*;
use tern_deliver::{ClientContext, SessionError, SmtpSession, Stage, TlsPolicy};

#[tokio::test]
async fn hang_times_out_at_greeting() {
    let peer = Peer::start("127.0.0.6", &["hang"]);
    let mut config = config();
    config.timeouts.greeting = Duration::from_millis(300);
    let ctx = ClientContext::new(config).unwrap();
    let started = Instant::now();
    let err = SmtpSession::connect(&ctx, peer.addr, "peer.test.example", TlsPolicy::None)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(
            err,
            SessionError::Timeout {
                stage: Stage::Greeting
            }
        ),
        "{err}"
    );
    assert!(err.is_connection_failure());
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
}
