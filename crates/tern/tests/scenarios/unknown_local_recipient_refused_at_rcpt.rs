//! A recipient in a local domain that has no alias, no mailbox and no catch-all is
//! refused at RCPT with `550 5.1.1` (event 6001), from relay clients and outside clients
//! alike, so Tern never accepts mail it would have to bounce (no backscatter). Known
//! mailboxes and catch-all addresses in the same transaction are accepted and delivered,
//! and nothing bounces.

use std::net::IpAddr;
use std::time::Duration;

use crate::common::local::{
    QUEUE, local_section, maildir_files, maildir_route, open_tempdir, wait_for_maildir,
};
use crate::common::{Setup, SmtpClient, dot_stuff, simple_message};

#[test]
fn unknown_local_recipients_get_550_5_1_1_at_rcpt_and_the_rest_is_delivered() {
    let maps = tempfile::tempdir().unwrap();
    let mailboxes = maps.path().join("mailboxes");
    std::fs::write(&mailboxes, "# known users\nalice@example.test  alice\n").unwrap();
    let root = open_tempdir();
    let tern = Setup::new()
        .queue(QUEUE)
        // Only 127.0.0.1 may relay; 127.0.0.2 is an outside client.
        .section("[relay]\ndomains = []\nnetworks = [\"127.0.0.1/32\"]\n")
        .section(&local_section(
            &["example.test", "open.test"],
            Some(&mailboxes),
            None,
            "[local.catch_all]\n\"open.test\" = \"{local}\"\n",
        ))
        .section(&maildir_route(&["example.test", "open.test"], root.path()))
        .start();

    let outside: IpAddr = "127.0.0.2".parse().unwrap();
    let mut c = SmtpClient::connect_from(tern.addr(), outside).unwrap();
    c.hello("client.test");
    assert_eq!(c.command("MAIL FROM:<s@client.test>").unwrap().code, 250);
    let ghost = c.command("RCPT TO:<ghost@example.test>").unwrap();
    assert_eq!(ghost.code, 550, "{}", ghost.text());
    assert!(
        ghost.lines[0].starts_with("5.1.1 <ghost@example.test>"),
        "{}",
        ghost.text()
    );
    // Case does not make an unknown user known, nor a known one unknown.
    assert_eq!(c.command("RCPT TO:<GHOST@Example.TEST>").unwrap().code, 550);
    assert_eq!(c.command("RCPT TO:<Alice@Example.test>").unwrap().code, 250);
    assert_eq!(c.command("RCPT TO:<anyone@open.test>").unwrap().code, 250);
    // Not ours at all, from outside: relay denied, as before.
    assert_eq!(c.command("RCPT TO:<x@elsewhere.test>").unwrap().code, 554);
    assert_eq!(c.command("DATA").unwrap().code, 354);
    c.write_raw(&dot_stuff(&simple_message("local", "two of three")))
        .unwrap();
    let queued = c.read_reply().unwrap();
    assert_eq!(queued.code, 250, "{}", queued.text());
    let _ = c.command("QUIT");

    // A relay client gets the same answer for an unknown local user.
    let mut r = SmtpClient::connect(tern.addr()).unwrap();
    r.hello("relay.test");
    assert_eq!(r.command("MAIL FROM:<s@client.test>").unwrap().code, 250);
    let ghost = r.command("RCPT TO:<nobody@example.test>").unwrap();
    assert_eq!(
        (ghost.code, ghost.lines[0].get(..5)),
        (550, Some("5.1.1")),
        "{}",
        ghost.text()
    );
    let _ = r.command("QUIT");

    let alice = wait_for_maildir(
        &root.path().join("alice/Maildir"),
        1,
        Duration::from_secs(20),
    );
    let anyone = wait_for_maildir(
        &root.path().join("anyone/Maildir"),
        1,
        Duration::from_secs(20),
    );
    assert!(String::from_utf8_lossy(&alice[0]).contains("Subject: local"));
    assert_eq!(alice.len() + anyone.len(), 2);
    assert!(
        !root.path().join("ghost").exists(),
        "no mailbox is made for an unknown user"
    );

    let refused = tern.wait_for_events(6001, 3, Duration::from_secs(10));
    let who: Vec<&str> = refused
        .iter()
        .filter_map(|e| e["recipient"].as_str())
        .collect();
    assert_eq!(
        who,
        [
            "ghost@example.test",
            "GHOST@example.test",
            "nobody@example.test"
        ],
        "{refused:?}"
    );
    // The message is finished with nothing failed: no bounce, no failure event.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !tern.queue_json(&[]).is_empty() {
        assert!(std::time::Instant::now() < deadline, "message still queued");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        tern.events_with_id(4003).is_empty(),
        "a failure was recorded"
    );
    assert!(tern.events_with_id(4004).is_empty(), "a DSN was queued");
    assert!(maildir_files(&root.path().join("alice/Maildir"), "tmp").is_empty());
}
