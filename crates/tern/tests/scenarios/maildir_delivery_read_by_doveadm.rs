//! The `maildir` transport writes a message a real mail reader reads back: Dovecot's
//! `doveadm` (a Dovecot started by the test over the Maildirs Tern wrote) finds one
//! message per delivery with Tern's `Return-Path` and `Delivered-To`, the sender's
//! headers and the body byte for byte (dot-stuffing undone, LF line ends). Tern creates
//! the Maildir on first delivery and leaves nothing in `tmp/`.

use std::time::Duration;

use crate::common::local::{
    Dovecot, QUEUE, give_to_dovecot_user, local_section, maildir_files, maildir_route,
    open_tempdir, wait_for_maildir,
};
use crate::common::{Setup, send_one};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn doveadm_reads_what_the_maildir_transport_wrote() {
    let maps = tempfile::tempdir().unwrap();
    let mailboxes = maps.path().join("mailboxes");
    std::fs::write(
        &mailboxes,
        "alice@example.test alice\nbob@example.test bob\n",
    )
    .unwrap();
    let root = open_tempdir();
    let tern = Setup::new()
        .queue(QUEUE)
        .section(&local_section(
            &["example.test"],
            Some(&mailboxes),
            None,
            "",
        ))
        .section(&maildir_route(&["example.test"], root.path()))
        .start();
    assert!(!root.path().join("alice").exists());

    let first = b"From: Sender <s@client.test>\r\nTo: alice@example.test\r\nSubject: first\r\nMessage-ID: <one@client.test>\r\n\r\nHello Alice,\r\n.a line that starts with a dot\r\n\r\nbye\r\n";
    send_one(tern.addr(), "s@client.test", &["alice@example.test"], first);
    send_one(
        tern.addr(),
        "",
        &["alice@example.test", "bob@example.test"],
        b"Subject: second\r\n\r\nfrom the null sender\r\n",
    );
    let alice_dir = root.path().join("alice/Maildir");
    wait_for_maildir(&alice_dir, 2, Duration::from_secs(20));
    wait_for_maildir(&root.path().join("bob/Maildir"), 1, Duration::from_secs(20));
    assert!(
        maildir_files(&alice_dir, "tmp").is_empty(),
        "tmp/ left behind"
    );
    assert!(alice_dir.join("cur").is_dir());
    for name in maildir_files(&alice_dir, "new") {
        assert!(name.contains(",S="), "{name}");
    }
    tern.wait_for_events(6003, 2, Duration::from_secs(10));

    // Dovecot reads and writes mail as an unprivileged user in this test.
    give_to_dovecot_user(root.path());
    let dovecot = Dovecot::start(&["alice", "bob"], root.path());
    let messages = dovecot.fetch(
        "alice",
        "hdr.return-path hdr.delivered-to hdr.subject hdr.message-id body",
    );
    assert_eq!(messages.len(), 2, "{messages:#?}");
    let one = messages
        .iter()
        .find(|m| m.contains("hdr.subject: first"))
        .expect("first message");
    assert!(one.contains("hdr.return-path: <s@client.test>"), "{one}");
    assert!(
        one.contains("hdr.delivered-to: alice@example.test"),
        "{one}"
    );
    assert!(one.contains("hdr.message-id: <one@client.test>"), "{one}");
    assert!(
        one.contains("body:\nHello Alice,\n.a line that starts with a dot\n\nbye"),
        "{one}"
    );
    let two = messages
        .iter()
        .find(|m| m.contains("hdr.subject: second"))
        .expect("second message");
    assert!(two.contains("hdr.return-path: <>"), "{two}");
    let bob = dovecot.fetch("bob", "hdr.delivered-to hdr.subject");
    assert_eq!(bob.len(), 1, "{bob:#?}");
    assert!(
        bob[0].contains("hdr.delivered-to: bob@example.test"),
        "{bob:?}"
    );
    // Tern's Received header travels with the message.
    let received = dovecot.fetch("alice", "hdr.received");
    assert!(
        received.iter().all(|m| m.contains("by mx.tern.test")),
        "{received:?}"
    );
}
