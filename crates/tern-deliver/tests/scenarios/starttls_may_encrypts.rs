//! Policy `may` with a certificate nobody vouches for still encrypts, reports the TLS
//! version and cipher, and EHLO is repeated inside TLS.

#![allow(clippy::unwrap_used)]

use crate::common::*;
use tern_deliver::{OutRecipient, SmtpSession, TlsPolicy};

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn may_with_untrusted_certificate_encrypts() {
    let pki = pki("peer.test.example");
    let peer = Peer::start_with(
        "127.0.0.10",
        &["starttls"],
        &[
            "--cert",
            pki.cert.to_str().unwrap(),
            "--key",
            pki.key.to_str().unwrap(),
        ],
    );
    // The CA is not given to the client: `may` accepts any certificate.
    let mut session =
        SmtpSession::connect(&context(), peer.addr, "other-name.example", TlsPolicy::May)
            .await
            .unwrap();
    let tls = session
        .tls()
        .expect("STARTTLS offered, so the session must be encrypted");
    assert!(
        tls.starts_with("TLSv1.3 TLS13_") || tls.starts_with("TLSv1.2 TLS_"),
        "{tls}"
    );
    // Capabilities were refreshed inside TLS: STARTTLS is no longer offered.
    assert!(!session.capabilities().starttls);
    assert!(session.capabilities().pipelining);

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
    let stored = peer.messages();
    assert_eq!(stored.len(), 1);
    assert!(
        stored[0].meta["tls"].as_str().unwrap().starts_with("TLSv1"),
        "{:?}",
        stored[0].meta
    );
    assert_eq!(stored[0].content, MESSAGE);
}

/// `may` against a server without STARTTLS stays in plaintext and still delivers.
#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn may_without_starttls_is_plaintext() {
    let peer = Peer::start("127.0.0.10", &["accept"]);
    let mut session =
        SmtpSession::connect(&context(), peer.addr, "peer.test.example", TlsPolicy::May)
            .await
            .unwrap();
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
}
