//! Nobody listens: a Connect error that marks the destination down.

#![allow(clippy::unwrap_used)]

use crate::common::*;
use tern_deliver::{SessionError, SmtpSession, Stage, TlsPolicy};

#[tokio::test]
async fn connection_refused_is_connect_error() {
    let addr = unused_port("127.0.0.7");
    let err = SmtpSession::connect(&context(), addr, "nobody.test.example", TlsPolicy::May)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SessionError::Connect { addr: a, source } if *a == addr && source.kind() == std::io::ErrorKind::ConnectionRefused),
        "{err:?}"
    );
    assert!(err.is_connection_failure());
    assert_eq!(err.stage(), Stage::Connect);
}
