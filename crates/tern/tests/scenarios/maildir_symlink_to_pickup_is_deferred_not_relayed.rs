//! Issue 15, the reviewer's attack: `bob@example.test` is a Maildir owned by the
//! unprivileged user `nobody`, who replaces its `new/` with a symbolic link to Tern's
//! pickup directory. A client outside the relay networks sends bob a message whose `To:`
//! and `Bcc:` name foreign addresses. Had Tern followed the link, the pickup service would
//! queue the file with those addresses as recipients: an open relay. Tern must defer the
//! delivery (event 6008 naming the mailbox and `new`), write nothing into the pickup
//! directory, queue nothing more and relay nothing; once bob's Maildir is a plain one
//! again, the message is delivered at the next retry.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::connectors::{FAST_PICKUP, file_names, pickup_dir};
use crate::common::local::{
    QUEUE, local_section, maildir_files, maildir_route, open_tempdir, smtp_route, wait_for_maildir,
};
use crate::common::peers::SmtpPeer;
use crate::common::{Setup, run, send_one};

/// Runs a command as the unprivileged user `nobody`.
fn as_nobody(args: &[&str]) {
    let out = run(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(args),
        Duration::from_secs(10),
    );
    assert!(
        out.status.success(),
        "{args:?} as nobody: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn chown_nobody(path: &Path) {
    let out = run(
        Command::new("chown").arg("-R").arg("65534:65534").arg(path),
        Duration::from_secs(10),
    );
    assert!(out.status.success());
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn a_symlinked_new_dir_defers_and_writes_nothing_into_pickup() {
    let home = open_tempdir();
    let bob = home.path().join("bob");
    let maildir = bob.join("Maildir");
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    chown_nobody(&bob);
    let maps = tempfile::tempdir().unwrap();
    let mailboxes = maps.path().join("mailboxes");
    std::fs::write(
        &mailboxes,
        format!("bob@example.test {}\n", maildir.display()),
    )
    .unwrap();
    let foreign = SmtpPeer::start("127.0.0.3", &["accept"]);
    let tern = Setup::new()
        .queue(QUEUE)
        .section(FAST_PICKUP)
        .section("[relay]\ndomains = []\nnetworks = [\"192.0.2.0/24\"]\n")
        .section(&local_section(
            &["example.test"],
            Some(&mailboxes),
            None,
            "",
        ))
        .section(&maildir_route(&["example.test"], home.path()))
        .section(&smtp_route(&["evil.example"], foreign.addr))
        .start();
    let pickup = pickup_dir(&tern);
    tern.wait_for_events(6026, 1, Duration::from_secs(20));
    assert!(pickup.is_dir(), "the pickup service made its directory");

    // bob swaps new/ for a link to the pickup directory, as himself.
    let new = maildir.join("new");
    as_nobody(&[
        "mv",
        &new.display().to_string(),
        &maildir.join("new.old").display().to_string(),
    ]);
    as_nobody(&[
        "ln",
        "-s",
        &pickup.display().to_string(),
        &new.display().to_string(),
    ]);

    let message = b"From: <x@client.test>\r\nTo: <victim1@evil.example>\r\nBcc: <victim2@evil.example>\r\nSubject: relay me\r\n\r\nspam\r\n";
    let id = send_one(tern.addr(), "x@client.test", &["bob@example.test"], message);

    // Refused at the first attempt and at the retry, naming the mailbox and `new`.
    let unsafe_events = tern.wait_for_events(6008, 2, Duration::from_secs(30));
    for e in &unsafe_events {
        assert_eq!(e["queue_id"], id.as_str(), "{e}");
        assert_eq!(e["maildir"], maildir.display().to_string(), "{e}");
        assert_eq!(e["component"], new.display().to_string(), "{e}");
        assert!(
            e["reason"]
                .as_str()
                .unwrap()
                .contains("symbolic link owned by uid 65534"),
            "{e}"
        );
    }
    assert!(
        file_names(&pickup).is_empty(),
        "nothing written into pickup"
    );
    assert!(file_names(&pickup.join(".claimed")).is_empty());
    assert!(
        tern.events_with_id(6021).is_empty(),
        "the pickup queued nothing"
    );
    let queued = tern.queue_json(&[]);
    assert_eq!(queued.len(), 1, "only bob's message, deferred: {queued:?}");
    assert_eq!(queued[0]["id"], id.as_str());
    assert!(queued[0].to_string().contains("4.3.0"), "{}", queued[0]);
    assert!(foreign.received().is_empty(), "nothing relayed");
    assert!(maildir_files(&maildir, "new.old").is_empty());

    // bob puts his Maildir back: the mail waiting in the queue is delivered.
    as_nobody(&["rm", &new.display().to_string()]);
    as_nobody(&[
        "mv",
        &maildir.join("new.old").display().to_string(),
        &new.display().to_string(),
    ]);
    let got = wait_for_maildir(&maildir, 1, Duration::from_secs(30));
    assert!(got[0].ends_with(b"spam\n"));
    assert!(file_names(&pickup).is_empty());
    assert!(foreign.received().is_empty(), "nothing relayed");
}
