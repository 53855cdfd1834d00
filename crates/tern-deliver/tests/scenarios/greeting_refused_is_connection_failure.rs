//! A 421 or 554 greeting ends the attempt with a Greeting error that marks the
//! destination down.

#![allow(clippy::unwrap_used)]

use crate::common::*;
use tern_deliver::{SessionError, SmtpSession, Stage, TlsPolicy};

#[tokio::test]
async fn greeting_421() {
    let peer = Peer::start("127.0.0.5", &["greet421"]);
    let err = SmtpSession::connect(&context(), peer.addr, "peer.test.example", TlsPolicy::May)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SessionError::Greeting(r) if r.code == 421 && r.enhanced == Some((4, 3, 2))),
        "{err}"
    );
    assert!(err.is_connection_failure());
    assert_eq!(err.stage(), Stage::Greeting);
}

#[tokio::test]
async fn greeting_554() {
    let peer = Peer::start("127.0.0.5", &["greet554"]);
    let err = SmtpSession::connect(&context(), peer.addr, "peer.test.example", TlsPolicy::None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SessionError::Greeting(r) if r.is_permanent()),
        "{err}"
    );
    assert!(err.is_connection_failure());
}
