//! Aliases are expanded at RCPT time: a loop is refused there with `550 5.4.6` and its
//! path (event 6002); a message to several addresses that end in the same mailbox
//! (directly, through nested aliases, in another case, or two addresses mapped to one
//! mailbox) is delivered once per mailbox; a remote member is relayed once, with the
//! address the sender wrote as its ORCPT.

use std::time::{Duration, Instant};

use crate::common::local::{
    QUEUE, local_section, maildir_files, maildir_route, open_tempdir, smtp_route, wait_for_maildir,
};
use crate::common::peers::SmtpPeer;
use crate::common::{Setup, SmtpClient, dot_stuff, simple_message};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn loops_are_refused_and_each_final_mailbox_gets_one_copy() {
    let maps = tempfile::tempdir().unwrap();
    let mailboxes = maps.path().join("mailboxes");
    let aliases = maps.path().join("aliases");
    std::fs::write(
        &mailboxes,
        "alice@example.test  alice\nal@example.test     alice\nbob@example.test    bob\n",
    )
    .unwrap();
    std::fs::write(
        &aliases,
        "# a team with a nested list, a duplicate and a member elsewhere\n\
         team@example.test: alice, al, bob,\n    friend@remote.test, sub\n\
         sub: alice@example.test, bob\n\
         loop-a: loop-b\nloop-b: loop-c@example.test\nloop-c: loop-a\n",
    )
    .unwrap();
    let root = open_tempdir();
    let remote = SmtpPeer::start("127.0.0.3", &["accept"]);
    let tern = Setup::new()
        .queue(QUEUE)
        .section(&local_section(
            &["example.test"],
            Some(&mailboxes),
            Some(&aliases),
            "",
        ))
        .section(&maildir_route(&["example.test"], root.path()))
        .section(&smtp_route(&["remote.test"], remote.addr))
        .start();

    let mut c = SmtpClient::connect(tern.addr()).unwrap();
    c.hello("client.test");
    assert_eq!(c.command("MAIL FROM:<s@client.test>").unwrap().code, 250);
    let looped = c.command("RCPT TO:<loop-a@example.test>").unwrap();
    assert_eq!(looped.code, 550, "{}", looped.text());
    let text = looped.text();
    assert!(text.contains("5.4.6"), "{text}");
    assert!(
        text.contains("loop-a@example.test -> loop-b@example.test -> loop-c@example.test -> loop-a@example.test"),
        "{text}"
    );
    for rcpt in [
        "team@example.test",
        "alice@example.test",
        "ALICE@example.test",
        "sub@example.test",
    ] {
        let r = c.command(&format!("RCPT TO:<{rcpt}>")).unwrap();
        assert_eq!(r.code, 250, "{rcpt}: {}", r.text());
    }
    assert_eq!(c.command("DATA").unwrap().code, 354);
    c.write_raw(&dot_stuff(&simple_message("team news", "once each")))
        .unwrap();
    assert_eq!(c.read_reply().unwrap().code, 250);
    let _ = c.command("QUIT");

    let alice_dir = root.path().join("alice/Maildir");
    let alice = wait_for_maildir(&alice_dir, 1, Duration::from_secs(20));
    let bob = wait_for_maildir(&root.path().join("bob/Maildir"), 1, Duration::from_secs(20));
    let far = remote.wait_for(1, Duration::from_secs(20));
    // Wait for the message to be finished before counting: nothing more may come.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !tern.queue_json(&[]).is_empty() {
        assert!(Instant::now() < deadline, "message still queued");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        maildir_files(&alice_dir, "new").len(),
        1,
        "alice, al, sub's alice and ALICE: one copy"
    );
    assert_eq!(
        maildir_files(&root.path().join("bob/Maildir"), "new").len(),
        1
    );
    assert_eq!(remote.received().len(), 1);
    assert_eq!(far[0].rcpts(), ["friend@remote.test"]);
    let orcpt = far[0].meta["rcpt_options"].to_string();
    assert!(orcpt.contains("ORCPT=rfc822;team@example.test"), "{orcpt}");
    let alice = String::from_utf8_lossy(&alice[0]);
    assert!(
        alice.starts_with("Return-Path: <s@client.test>\nDelivered-To: "),
        "{alice}"
    );
    assert!(alice.contains("Subject: team news"), "{alice}");
    assert!(String::from_utf8_lossy(&bob[0]).contains("Delivered-To: bob@example.test\n"));

    let refused = tern.wait_for_events(6002, 1, Duration::from_secs(10));
    assert_eq!(
        refused[0]["recipient"], "loop-a@example.test",
        "{refused:?}"
    );
    assert!(
        refused[0]["reason"]
            .as_str()
            .unwrap()
            .contains("alias loop"),
        "{refused:?}"
    );
    // The event log is written by its own thread: wait for both events, then make sure
    // there is no third.
    tern.wait_for_events(6003, 2, Duration::from_secs(10));
    let delivered = tern.events_with_id(6003);
    let mailboxes: usize = delivered.len();
    assert_eq!(
        mailboxes, 2,
        "one Maildir delivery per mailbox: {delivered:?}"
    );
}
