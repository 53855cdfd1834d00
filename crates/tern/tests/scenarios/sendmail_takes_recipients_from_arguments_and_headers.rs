//! `tern sendmail` with recipients as arguments (several, comma-separated, a bare local
//! name) and with `-t` (recipients from To, Cc and Bcc as well, and the Bcc field removed).
//! Without `-i` a lone dot ends the input. The messages are queued by the running server
//! through its pickup directory, with Date, Message-ID and From added.

use std::time::Duration;

use tern_spool::{ListedMessage, StoredMessage};

use crate::common::connectors::{FAST_PICKUP, assert_ok, header, sendmail, wait_until};
use crate::common::{HOSTNAME, Setup, Tern};

/// Waits for the message with this Subject and returns it.
pub fn queued_with_subject(tern: &Tern, subject: &str) -> (ListedMessage, StoredMessage) {
    let mut found = None;
    wait_until(
        Duration::from_secs(20),
        &format!("the message {subject:?} is queued"),
        || {
            found = tern
                .spooled()
                .into_iter()
                .find(|(_, s)| header(&s.body, "Subject").as_deref() == Some(subject));
            found.is_some()
        },
    );
    found.unwrap()
}

fn rcpts(m: &ListedMessage) -> Vec<String> {
    m.envelope
        .as_ref()
        .unwrap()
        .recipients
        .iter()
        .map(|r| r.address.clone())
        .collect()
}

#[test]
fn recipients_come_from_the_arguments_and_with_t_from_the_headers() {
    let mut tern = Setup::new().section(FAST_PICKUP).start();

    let out = sendmail(
        &tern,
        &["a@example.net", "b@example.org,c@example.com", "root"],
        b"Subject: arguments\nTo: someone@else.test\n\nfirst line\n.\nafter the dot\n",
    );
    assert_ok(&out, "sendmail with recipients");
    let (m, s) = queued_with_subject(&tern, "arguments");
    assert_eq!(
        rcpts(&m),
        [
            "a@example.net".to_owned(),
            "b@example.org".into(),
            "c@example.com".into(),
            format!("root@{HOSTNAME}")
        ],
        "the To field does not add recipients without -t"
    );
    let body = String::from_utf8_lossy(&s.body).into_owned();
    assert!(
        body.ends_with("\r\n\r\nfirst line\r\n"),
        "a lone dot ends the input:\n{body}"
    );
    assert!(header(&s.body, "Date").is_some(), "{body}");
    assert!(header(&s.body, "Message-ID").is_some(), "{body}");
    let sender = m.envelope.as_ref().unwrap().sender.clone();
    assert!(sender.ends_with(&format!("@{HOSTNAME}")), "{sender}");
    assert_eq!(header(&s.body, "From").as_deref(), Some(sender.as_str()));

    let out = sendmail(
        &tern,
        &["-t", "extra@example.net"],
        b"Subject: headers\nTo: Tee One <t1@example.net>\nCc: t2@example.org\nBcc: secret@example.com\n\nbody\n",
    );
    assert_ok(&out, "sendmail -t");
    let (m, s) = queued_with_subject(&tern, "headers");
    assert_eq!(
        rcpts(&m),
        [
            "extra@example.net",
            "t1@example.net",
            "t2@example.org",
            "secret@example.com"
        ]
    );
    let body = String::from_utf8_lossy(&s.body).into_owned();
    assert!(
        !body.contains("secret"),
        "Bcc must be removed with -t:\n{body}"
    );
    assert!(body.contains("\r\nCc: t2@example.org\r\n"), "{body}");

    // Nothing to send to: a usage error (64), nothing submitted.
    let out = sendmail(&tern, &["-t"], b"Subject: nobody\n\nx\n");
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let out = sendmail(&tern, &[], b"Subject: nobody\n\nx\n");
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no recipients"));
    tern.stop(Duration::from_secs(15));
    assert_eq!(tern.spooled().len(), 2);
}
