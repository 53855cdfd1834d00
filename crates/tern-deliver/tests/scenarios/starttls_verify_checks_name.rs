//! Policy `verify`: a certificate from a trusted CA for the right name is accepted; the
//! same certificate under another server name fails the handshake, and so does an
//! unknown CA.

#![allow(clippy::unwrap_used)]

use crate::common::*;
use tern_deliver::{ClientContext, OutRecipient, SessionError, SmtpSession, TlsFailure, TlsPolicy};

fn start(pki: &TestPki) -> Peer {
    Peer::start_with(
        "127.0.0.11",
        &["starttls"],
        &[
            "--cert",
            pki.cert.to_str().unwrap(),
            "--key",
            pki.key.to_str().unwrap(),
        ],
    )
}

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn verify_with_right_name_succeeds() {
    let pki = pki("mx.verify.example");
    let peer = start(&pki);
    let mut config = config();
    config.extra_roots_pem = Some(pki.ca_pem.clone().into_bytes());
    let ctx = ClientContext::new(config).unwrap();
    let mut session = SmtpSession::connect(&ctx, peer.addr, "mx.verify.example", TlsPolicy::Verify)
        .await
        .unwrap();
    assert!(session.tls().is_some());
    assert_eq!(session.server_name(), "mx.verify.example");
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
}

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn verify_with_wrong_name_fails_handshake() {
    let pki = pki("mx.verify.example");
    let peer = start(&pki);
    let mut config = config();
    config.extra_roots_pem = Some(pki.ca_pem.clone().into_bytes());
    let ctx = ClientContext::new(config).unwrap();
    let err = SmtpSession::connect(&ctx, peer.addr, "mx.other.example", TlsPolicy::Verify)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SessionError::TlsHandshake { detail, .. } if detail.contains("certificate")),
        "{err:?}"
    );
    assert!(err.is_connection_failure());
    // Reported as RFC 8460's `certificate-host-mismatch`.
    assert_eq!(err.tls_failure(), Some(TlsFailure::CertificateHostMismatch));
    assert!(peer.messages().is_empty());
}

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn verify_with_unknown_ca_fails_handshake() {
    let pki = pki("mx.verify.example");
    let peer = start(&pki);
    let err = SmtpSession::connect(
        &context(),
        peer.addr,
        "mx.verify.example",
        TlsPolicy::Verify,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SessionError::TlsHandshake { .. }), "{err:?}");
    assert_eq!(err.tls_failure(), Some(TlsFailure::CertificateNotTrusted));
}
