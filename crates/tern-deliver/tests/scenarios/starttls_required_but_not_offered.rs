//! Policies `encrypt` and `verify` against a server without STARTTLS: TlsUnavailable,
//! and nothing is sent in plaintext.

#![allow(clippy::unwrap_used)]

use crate::common::*;
use tern_deliver::{SessionError, SmtpSession, Stage, TlsPolicy};

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn encrypt_without_starttls_is_unavailable() {
    let peer = Peer::start("127.0.0.12", &["accept"]);
    for policy in [TlsPolicy::Encrypt, TlsPolicy::Verify] {
        let err = SmtpSession::connect(&context(), peer.addr, "peer.test.example", policy)
            .await
            .unwrap_err();
        assert!(
            matches!(err, SessionError::TlsUnavailable),
            "{policy:?}: {err:?}"
        );
        assert!(err.is_connection_failure());
        assert_eq!(err.stage(), Stage::StartTls);
    }
    assert!(!peer.log().contains("MAIL FROM"));
}
