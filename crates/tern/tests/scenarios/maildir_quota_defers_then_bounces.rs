//! Per-mailbox quota: a message that does not fit is deferred with `452 4.2.2` under
//! `quota_exceeded = "defer"` (it stays queued, the mailbox untouched, event 6005), and
//! after a reload to `quota_exceeded = "bounce"` the same message fails with `552 5.2.2`
//! and the sender gets one bounce. A message that fits is delivered; a mailbox without a
//! quota takes anything.

use std::time::Duration;

use crate::common::local::{
    QUEUE, local_section, maildir_files, maildir_route, open_tempdir, smtp_route, wait_for_maildir,
};
use crate::common::peers::{SmtpPeer, parse_dsn_with_python};
use crate::common::{Setup, run, send_one, simple_message};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn over_quota_defers_with_4_2_2_then_bounces_with_5_2_2() {
    let maps = tempfile::tempdir().unwrap();
    let mailboxes = maps.path().join("mailboxes");
    std::fs::write(
        &mailboxes,
        "small@example.test small quota=2K\nbig@example.test big quota=0\n",
    )
    .unwrap();
    let root = open_tempdir();
    let sender_mx = SmtpPeer::start("127.0.0.3", &["accept"]);
    let tern = Setup::new()
        .queue(QUEUE)
        .section(&local_section(
            &["example.test"],
            Some(&mailboxes),
            None,
            // The default quota (1 KiB) applies to neither: both have their own.
            "quota_bytes = 1024\nquota_exceeded = \"defer\"\n",
        ))
        .section(&maildir_route(&["example.test"], root.path()))
        .section(&smtp_route(&["client.test"], sender_mx.addr))
        .start();
    let small = root.path().join("small/Maildir");

    send_one(
        tern.addr(),
        "s@client.test",
        &["small@example.test"],
        &simple_message("fits", "a short one"),
    );
    wait_for_maildir(&small, 1, Duration::from_secs(20));

    let body: Vec<String> = (0..40).map(|_| "x".repeat(70)).collect();
    let large = simple_message("too big", &body.join("\n"));
    assert!(large.len() > 2048);
    let id = send_one(
        tern.addr(),
        "s@client.test",
        &["small@example.test", "big@example.test"],
        &large,
    );
    wait_for_maildir(&root.path().join("big/Maildir"), 1, Duration::from_secs(20));
    let over = tern.wait_for_events(6005, 1, Duration::from_secs(20));
    assert_eq!(over[0]["action"], "defer", "{over:?}");
    tern.wait_for_events(4002, 1, Duration::from_secs(20));
    let queued = tern.queue_json(&[]);
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0]["id"], id.as_str());
    let text = queued[0].to_string();
    assert!(
        text.contains("4.2.2") && text.contains("mailbox is full"),
        "{text}"
    );
    assert_eq!(
        maildir_files(&small, "new").len(),
        1,
        "nothing written over quota"
    );
    assert!(maildir_files(&small, "tmp").is_empty());
    assert!(sender_mx.received().is_empty(), "no bounce while deferring");

    // The operator switches to bouncing; the retry (1-2 s) fails the recipient.
    let config = tern.config_path.clone().unwrap();
    let original = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        original.replace("quota_exceeded = \"defer\"", "quota_exceeded = \"bounce\""),
    )
    .unwrap();
    let ok = run(&mut tern.tern_command(&["reload"]), Duration::from_secs(20));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let bounces = sender_mx.wait_for(1, Duration::from_secs(30));
    let dsn = parse_dsn_with_python(&bounces[0].content);
    let failed = dsn["recipients"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{dsn}");
    assert_eq!(failed[0]["Final-Recipient"], "rfc822; small@example.test");
    assert_eq!(failed[0]["Status"], "5.2.2");
    let actions: Vec<_> = tern
        .events_with_id(6005)
        .iter()
        .map(|e| e["action"].clone())
        .collect();
    assert_eq!(actions.last().unwrap(), "bounce", "{actions:?}");
    assert_eq!(maildir_files(&small, "new").len(), 1);
    assert_eq!(
        maildir_files(&root.path().join("big/Maildir"), "new").len(),
        1,
        "big got it once"
    );
}
