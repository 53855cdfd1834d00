//! The pickup directory's two formats, delivered to a real SMTP receiver (aiosmtpd): a
//! plain RFC 5322 file whose envelope comes from its headers (like `sendmail -t`) and a
//! pair whose envelope comes from its `.env` file. Each arrives once, with its envelope;
//! the plain file's Bcc recipient gets it but the Bcc field is gone; both get Date and
//! Message-ID; the first Received field names the pickup. Nothing is left behind.

use std::time::Duration;

use crate::common::Setup;
use crate::common::connectors::{
    FAST_PICKUP, drop_file, drop_pair, header, pickup_dir, wait_pickup_empty,
};
use crate::common::peers::SmtpPeer;

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn plain_files_and_pairs_are_delivered_with_their_envelopes() {
    let peer = SmtpPeer::start("127.0.0.3", &["accept"]);
    let mut tern = Setup::new()
        .queue("[queue]\ndeliver = true\nmin_backoff_secs = 1\nmax_backoff_secs = 2\n")
        .section(FAST_PICKUP)
        .section(&format!(
            "[[route]]\ndomains = [\"*\"]\ntransport = \"smtp\"\nhosts = [\"{}\"]\n",
            peer.addr
        ))
        .start();
    let dir = pickup_dir(&tern);
    drop_file(
        &dir,
        "plain.txt",
        b"From: Alice <alice@client.test>\nTo: bob@example.net\nBcc: hidden@example.org\nSubject: plain\n\nplain body\n",
    );
    drop_pair(
        &dir,
        "pair",
        r#"{"version":1,"sender":"sys@legacy.test","recipients":["carol@example.net",{"address":"dave@example.org","notify":"never"}]}"#,
        b"To: someone-else@example.com\r\nSubject: pair\r\n\r\npair body\r\n",
    );
    let got = peer.wait_for(2, Duration::from_secs(30));
    assert_eq!(got.len(), 2, "each file arrives once");
    let by_subject = |s: &str| {
        got.iter()
            .find(|r| header(&r.content, "Subject").as_deref() == Some(s))
            .unwrap_or_else(|| panic!("no message with Subject {s}"))
    };

    let plain = by_subject("plain");
    assert_eq!(plain.mail_from(), "alice@client.test");
    let mut rcpts = plain.rcpts();
    rcpts.sort();
    assert_eq!(rcpts, ["bob@example.net", "hidden@example.org"]);
    let text = String::from_utf8_lossy(&plain.content);
    assert!(
        !text.contains("hidden"),
        "the Bcc field was disclosed:\n{text}"
    );
    assert!(
        text.starts_with("Received: by mx.tern.test (Tern pickup, from userid "),
        "{text}"
    );
    assert!(header(&plain.content, "Date").is_some(), "{text}");
    assert!(
        header(&plain.content, "Message-ID").is_some_and(|m| m.ends_with("@mx.tern.test>")),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\nplain body\r\n"), "{text}");

    let pair = by_subject("pair");
    assert_eq!(pair.mail_from(), "sys@legacy.test");
    let mut rcpts = pair.rcpts();
    rcpts.sort();
    assert_eq!(
        rcpts,
        ["carol@example.net", "dave@example.org"],
        "the envelope file, not the To field, decides"
    );
    assert!(header(&pair.content, "Message-ID").is_some());

    wait_pickup_empty(&tern, Duration::from_secs(10));
    let queued = tern.wait_for_events(6021, 2, Duration::from_secs(10));
    let mut formats: Vec<String> = queued
        .iter()
        .map(|e| e["format"].as_str().unwrap_or_default().to_owned())
        .collect();
    formats.sort();
    assert_eq!(formats, ["envelope", "headers"]);
    tern.stop(Duration::from_secs(15));
}
