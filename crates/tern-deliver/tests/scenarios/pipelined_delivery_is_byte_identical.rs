//! Three recipients through PIPELINING; the peer stores exactly the bytes we sent,
//! including lines that needed dot-stuffing.

#![allow(clippy::unwrap_used)]

use crate::common::*;
use tern_deliver::{OutRecipient, RcptOutcome, RecipientResult};

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn pipelined_delivery_to_three_recipients_is_byte_identical() {
    let peer = Peer::start("127.0.0.2", &["accept"]);
    let mut session = connect(&peer).await;
    assert!(session.capabilities().pipelining);
    assert!(session.greeting().is_positive());
    assert_eq!(session.tls(), None);

    let content: &[u8] =
        b"From: a@example.org\r\nSubject: dots\r\n\r\n.\r\n..two\r\n.leading\r\nmiddle . dot\r\n.";
    let rcpts = [
        OutRecipient::new("one@example.net"),
        OutRecipient::new("two@example.net"),
        OutRecipient::new("three@example.net"),
    ];
    let outcome = session
        .send(&transaction(&rcpts, content), &mut reader(content))
        .await
        .unwrap();
    assert!(outcome.mail.is_positive());
    assert_eq!(outcome.recipients.len(), 3);
    assert_eq!(outcome.delivered(), 3);
    for r in &outcome.recipients {
        assert!(matches!(r, RcptOutcome::Accepted { .. }), "{r:?}");
        assert!(matches!(r.result(), RecipientResult::Delivered(_)));
    }
    assert_eq!(outcome.data.as_ref().unwrap().enhanced, Some((2, 0, 0)));
    assert_eq!(session.transactions(), 1);
    session.quit().await;

    let stored = peer.messages();
    assert_eq!(stored.len(), 1);
    // The content did not end with CRLF: exactly one CRLF was added.
    let mut expected = content.to_vec();
    expected.extend_from_slice(b"\r\n");
    assert_eq!(stored[0].content, expected);
    assert_eq!(stored[0].meta["mail_from"], "sender@example.org");
    assert_eq!(
        stored[0].meta["rcpt_tos"],
        serde_json::json!(["one@example.net", "two@example.net", "three@example.net"])
    );
    // SIZE was not advertised, so no SIZE parameter; 7-bit body, so no BODY.
    assert_eq!(stored[0].meta["mail_options"], serde_json::json!([]));
    // MAIL, the three RCPTs and DATA went out in one write: when the peer read MAIL,
    // the rest was already waiting.
    assert_eq!(
        stored[0].meta["buffered_at_mail"],
        "RCPT TO:<one@example.net>\r\nRCPT TO:<two@example.net>\r\n\
         RCPT TO:<three@example.net>\r\nDATA\r\n"
    );
}
