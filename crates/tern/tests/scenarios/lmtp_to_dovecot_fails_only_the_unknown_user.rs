//! The `lmtp` transport against a real Dovecot LMTP server, over its Unix socket and over
//! TCP: the message lands in the Maildirs Dovecot writes (read back with `doveadm`). A
//! user Dovecot does not know fails alone (one bounce names only that recipient, with
//! Dovecot's 5.1.1), and a user whose mailbox Dovecot cannot write is deferred alone by
//! its own reply after the data (LMTP's reply per recipient), then delivered by the retry
//! once the mailbox is writable. Nobody gets a copy twice.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use crate::common::local::{
    Dovecot, QUEUE, give_to_dovecot_user, local_section, open_tempdir, smtp_route,
};
use crate::common::peers::{SmtpPeer, parse_dsn_with_python};
use crate::common::{Setup, send_one, simple_message, toml_str};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn dovecot_lmtp_delivers_per_recipient_over_unix_and_tcp() {
    let mail = open_tempdir();
    give_to_dovecot_user(mail.path());
    let dovecot = Dovecot::start(&["alice", "bob", "carl"], mail.path());
    // carl exists, but his home is not writable by the user Dovecot delivers as: Dovecot
    // accepts him at RCPT and fails him after the data.
    let carl_home = mail.path().join("carl");
    std::fs::create_dir(&carl_home).unwrap();
    std::fs::set_permissions(&carl_home, std::fs::Permissions::from_mode(0o555)).unwrap();
    let maps = tempfile::tempdir().unwrap();
    let mailboxes = maps.path().join("mailboxes");
    // ghost is a mailbox to Tern, but not a user Dovecot knows.
    std::fs::write(
        &mailboxes,
        "alice@lmtp.test alice\nbob@lmtp.test bob\nghost@lmtp.test ghost\ncarl@lmtp.test carl\n\
         carol@tcp.test alice\n",
    )
    .unwrap();
    let sender_mx = SmtpPeer::start("127.0.0.3", &["accept"]);
    let routes = format!(
        "[[route]]\ndomains = [\"lmtp.test\"]\ntransport = \"lmtp\"\nserver = {}\n\n\
         [[route]]\ndomains = [\"tcp.test\"]\ntransport = \"lmtp\"\nserver = \"{}\"\n\n{}",
        toml_str(&format!("unix:{}", dovecot.socket.display())),
        dovecot.inet,
        smtp_route(&["client.test"], sender_mx.addr),
    );
    let tern = Setup::new()
        .queue(QUEUE)
        .section(&local_section(
            &["lmtp.test", "tcp.test"],
            Some(&mailboxes),
            None,
            "",
        ))
        .section(&routes)
        .start();

    send_one(
        tern.addr(),
        "s@client.test",
        &[
            "alice@lmtp.test",
            "ghost@lmtp.test",
            "carl@lmtp.test",
            "bob@lmtp.test",
        ],
        &simple_message("over unix", "to four, two can take it now"),
    );
    dovecot.wait_for_messages("alice", 1, Duration::from_secs(30));
    let bob = dovecot.wait_for_messages("bob", 1, Duration::from_secs(30));
    assert!(bob[0].contains("over unix"), "{bob:?}");

    let bounces = sender_mx.wait_for(1, Duration::from_secs(30));
    let dsn = parse_dsn_with_python(&bounces[0].content);
    let failed = dsn["recipients"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{dsn}");
    assert_eq!(failed[0]["Final-Recipient"], "rfc822; ghost@lmtp.test");
    assert_eq!(failed[0]["Status"], "5.1.1");
    assert!(
        failed[0]["Diagnostic-Code"]
            .as_str()
            .unwrap_or("")
            .contains("doesn't exist"),
        "Dovecot's own reply is quoted: {dsn}"
    );

    // carl's own reply after the data deferred him alone; the retry delivers him once
    // his mailbox is writable.
    let deferred = tern.wait_for_events(4002, 1, Duration::from_secs(30));
    assert_eq!(
        deferred[0]["recipients"].to_string().trim_matches('"'),
        "1",
        "{deferred:?}"
    );
    let queued = tern.queue_json(&[]);
    assert_eq!(queued.len(), 1, "{queued:?}");
    let listed = queued[0].to_string();
    assert!(
        listed.contains("carl@lmtp.test") && listed.contains("451"),
        "{listed}"
    );
    crate::common::local::give_to_dovecot_user(&carl_home);
    std::fs::set_permissions(&carl_home, std::fs::Permissions::from_mode(0o755)).unwrap();
    let carl = dovecot.wait_for_messages("carl", 1, Duration::from_secs(30));
    assert!(carl[0].contains("over unix"), "{carl:?}");

    // Over TCP, to another address of alice's mailbox.
    send_one(
        tern.addr(),
        "s@client.test",
        &["carol@tcp.test"],
        &simple_message("over tcp", "via 127.0.0.1"),
    );
    let alice = dovecot.wait_for_messages("alice", 2, Duration::from_secs(30));
    assert!(alice.iter().any(|m| m.contains("over tcp")), "{alice:?}");
    let full = dovecot.fetch("alice", "hdr.delivered-to hdr.return-path");
    assert!(
        full.iter()
            .any(|m| m.contains("hdr.return-path: <s@client.test>")),
        "{full:?}"
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    while !tern.queue_json(&[]).is_empty() {
        assert!(Instant::now() < deadline, "messages still queued");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Exactly once each; one bounce in all.
    assert_eq!(dovecot.fetch("alice", "hdr.subject").len(), 2);
    assert_eq!(dovecot.fetch("bob", "hdr.subject").len(), 1);
    assert_eq!(dovecot.fetch("carl", "hdr.subject").len(), 1);
    assert_eq!(sender_mx.received().len(), 1);
    let delivered = tern.events_with_id(4001);
    let hosts: Vec<String> = delivered
        .iter()
        .map(|e| e["host"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(
        hosts.iter().any(|h| h.starts_with("lmtp[unix:")),
        "{hosts:?}"
    );
    assert!(
        hosts
            .iter()
            .any(|h| h == &format!("lmtp[{}]", dovecot.inet)),
        "{hosts:?}"
    );
}
