//! A success notice for mail Tern put in a mailbox itself says `Action: delivered`
//! (RFC 3464 §2.3.3), not `relayed`: Tern is the last MTA, so a `NOTIFY=SUCCESS`
//! recipient gets the notice from Tern, read here by Python's `email` package. A
//! recipient without NOTIFY=SUCCESS in the same message gets none, and the notice lists
//! only the recipient that asked.

use std::time::Duration;

use crate::common::Setup;
use crate::common::local::{
    QUEUE, local_section, maildir_route, open_tempdir, smtp_route, wait_for_maildir,
};
use crate::common::peers::{SmtpPeer, parse_dsn_with_python, send_with};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn notify_success_to_a_maildir_brings_a_delivered_notice() {
    let root = open_tempdir();
    let sender_mx = SmtpPeer::start("127.0.0.3", &["accept"]);
    let tern = Setup::new()
        .queue(QUEUE)
        .section(&local_section(
            &["example.test"],
            None,
            None,
            "\n[local.catch_all]\n\"example.test\" = \"{local}\"\n",
        ))
        .section(&maildir_route(&["example.test"], root.path()))
        .section(&smtp_route(&["client.test"], sender_mx.addr))
        .start();
    let id = send_with(
        tern.addr(),
        "MAIL FROM:<s@client.test> ENVID=env-ok",
        &[
            "RCPT TO:<asks@example.test> NOTIFY=SUCCESS ORCPT=rfc822;asks@example.test",
            "RCPT TO:<quiet@example.test>",
        ],
        b"From: <s@client.test>\r\nSubject: hello\r\n\r\nbody\r\n",
    );
    wait_for_maildir(
        &root.path().join("asks/Maildir"),
        1,
        Duration::from_secs(20),
    );
    wait_for_maildir(
        &root.path().join("quiet/Maildir"),
        1,
        Duration::from_secs(20),
    );

    let notices = sender_mx.wait_for(1, Duration::from_secs(30));
    assert_eq!(notices[0].rcpts(), ["s@client.test"]);
    let dsn = parse_dsn_with_python(&notices[0].content);
    assert_eq!(dsn["report_type"], "delivery-status", "{dsn}");
    assert_eq!(
        dsn["per_message"]["Original-Envelope-Id"], "env-ok",
        "{dsn}"
    );
    let recipients = dsn["recipients"].as_array().unwrap();
    assert_eq!(recipients.len(), 1, "only the recipient that asked: {dsn}");
    assert_eq!(
        recipients[0]["Final-Recipient"],
        "rfc822; asks@example.test"
    );
    assert_eq!(recipients[0]["Action"], "delivered", "{dsn}");
    assert_eq!(recipients[0]["Status"], "2.0.0", "{dsn}");
    let queued = tern.events_with_id(4004);
    assert!(
        queued
            .iter()
            .any(|e| e["queue_id"] == id.as_str() && e["kind"] == "success"),
        "{queued:?}"
    );
    assert_eq!(
        sender_mx.received().len(),
        1,
        "one notice, for one recipient"
    );
}
