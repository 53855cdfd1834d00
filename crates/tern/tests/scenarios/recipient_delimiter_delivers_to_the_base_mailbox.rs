//! `local.recipient_delimiter`: `alice+news@example.test` is accepted and delivered into
//! alice's Maildir, with `Delivered-To: alice+news@example.test`; an extension of an
//! unknown user is still refused at RCPT with 5.1.1, and without the setting an
//! extended address is a name of its own (refused here, as it has no mailbox).

use std::time::Duration;

use crate::common::local::{QUEUE, local_section, maildir_route, open_tempdir, wait_for_maildir};
use crate::common::{Setup, SmtpClient, send_one, simple_message};

fn rcpt_code(addr: std::net::SocketAddr, rcpt: &str) -> (u16, String) {
    let mut c = SmtpClient::connect(addr).expect("connect");
    c.hello("client.test");
    let r = c.command("MAIL FROM:<s@client.test>").expect("MAIL");
    assert_eq!(r.code, 250, "{}", r.text());
    let r = c.command(&format!("RCPT TO:<{rcpt}>")).expect("RCPT");
    (r.code, r.text())
}

#[test]
fn an_extended_address_reaches_the_base_mailbox_and_keeps_its_extension() {
    let maps = tempfile::tempdir().unwrap();
    let mailboxes = maps.path().join("mailboxes");
    std::fs::write(&mailboxes, "alice@example.test alice\n").unwrap();
    let root = open_tempdir();
    let with = Setup::new()
        .queue(QUEUE)
        .section(&local_section(
            &["example.test"],
            Some(&mailboxes),
            None,
            "recipient_delimiter = \"+\"\n",
        ))
        .section(&maildir_route(&["example.test"], root.path()))
        .start();
    let (code, text) = rcpt_code(with.addr(), "ghost+news@example.test");
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("5.1.1"), "{text}");
    send_one(
        with.addr(),
        "s@client.test",
        &["Alice+News@example.test"],
        &simple_message("tagged", "for the news folder"),
    );
    let files = wait_for_maildir(
        &root.path().join("alice/Maildir"),
        1,
        Duration::from_secs(20),
    );
    let text = String::from_utf8_lossy(&files[0]);
    assert!(
        text.starts_with("Return-Path: <s@client.test>\nDelivered-To: Alice+News@example.test\n"),
        "{text}"
    );
    assert!(
        !root.path().join("alice+news").exists(),
        "no mailbox of its own"
    );

    let without = Setup::new()
        .queue(QUEUE)
        .section(&local_section(
            &["example.test"],
            Some(&mailboxes),
            None,
            "",
        ))
        .section(&maildir_route(&["example.test"], root.path()))
        .start();
    let (code, text) = rcpt_code(without.addr(), "alice+news@example.test");
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("5.1.1"), "{text}");
}
