//! MTA-STS `testing`: `TlsRequest::audit` sets TLS up as the policy says (`may`) and also
//! checks the certificate as `verify` would; the outcome is kept in `tls_audit()` and
//! never fails the session.

#![allow(clippy::unwrap_used)]

use crate::common::*;
use tern_deliver::{ClientContext, OutRecipient, SmtpSession, TlsFailure, TlsPolicy, TlsRequest};

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

fn audited() -> TlsRequest {
    TlsRequest {
        policy: TlsPolicy::May,
        dane: None,
        audit: true,
    }
}

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn audit_outcomes_are_recorded_and_mail_still_goes() {
    let pki = pki("mx.audit.example");
    let peer = start(&pki);
    let mut trusting = config();
    trusting.extra_roots_pem = Some(pki.ca_pem.clone().into_bytes());
    let trusting = ClientContext::new(trusting).unwrap();
    let cases = [
        (&trusting, "mx.audit.example", Ok(())),
        (
            &trusting,
            "mx.other.example",
            Err(TlsFailure::CertificateHostMismatch),
        ),
        (
            &context(),
            "mx.audit.example",
            Err(TlsFailure::CertificateNotTrusted),
        ),
    ];
    for (ctx, name, want) in cases {
        let mut session = SmtpSession::connect_with(ctx, peer.addr, name, &audited())
            .await
            .unwrap();
        assert!(session.tls().is_some(), "{name}");
        assert_eq!(session.tls_audit(), Some(want), "{name}");
        let rcpts = [OutRecipient::new("a@example.net")];
        let sent = session
            .send(&transaction(&rcpts, MESSAGE), &mut reader(MESSAGE))
            .await
            .unwrap();
        assert_eq!(sent.delivered(), 1, "{name}");
        session.quit().await;
    }
    // Not asked: no audit.
    let session = SmtpSession::connect(&trusting, peer.addr, "mx.other.example", TlsPolicy::May)
        .await
        .unwrap();
    assert_eq!(session.tls_audit(), None);
    session.quit().await;
    assert_eq!(peer.messages().len(), 3);
}
