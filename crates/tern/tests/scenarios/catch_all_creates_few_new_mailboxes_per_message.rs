//! Issue 15: one message to a catch-all domain with many recipients would create a
//! Maildir for each. With `local.max_new_mailboxes_per_message = 2`, each delivery
//! attempt of the message creates at most two; the recipients whose Maildir does not
//! exist yet beyond that are deferred with `452 4.5.3` (event 6009) and get theirs at
//! the next attempts, so five new mailboxes take three attempts and nothing is lost.
//! A Maildir that exists already does not count.

use std::time::Duration;

use crate::common::connectors::wait_until;
use crate::common::local::{QUEUE, local_section, maildir_files, maildir_route, open_tempdir};
use crate::common::{Setup, send_one, simple_message};

#[test]
fn new_maildirs_are_created_two_per_attempt() {
    let root = open_tempdir();
    let tern = Setup::new()
        .queue(QUEUE)
        .section(&local_section(
            &["example.test"],
            None,
            None,
            "max_new_mailboxes_per_message = 2\n[local.catch_all]\n\"example.test\" = \"{local}\"\n",
        ))
        .section(&maildir_route(&["example.test"], root.path()))
        .start();
    // One existing mailbox: delivering to it creates nothing.
    let old = root.path().join("old/Maildir");
    std::fs::create_dir_all(old.join("new")).unwrap();
    let users = ["u1", "u2", "u3", "u4", "u5"];
    let mut rcpts: Vec<String> = users.iter().map(|u| format!("{u}@example.test")).collect();
    rcpts.push("old@example.test".into());
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let id = send_one(
        tern.addr(),
        "s@client.test",
        &rcpts,
        &simple_message("hello", "to many new people"),
    );
    wait_until(
        Duration::from_secs(60),
        "every mailbox has the message",
        || {
            users
                .iter()
                .all(|u| maildir_files(&root.path().join(u).join("Maildir"), "new").len() == 1)
        },
    );
    assert_eq!(maildir_files(&old, "new").len(), 1);
    let limited = tern.events_with_id(6009);
    // Attempt 1: old + 2 new, 3 deferred; attempt 2: 2 new, 1 deferred; attempt 3: 1.
    assert_eq!(limited.len(), 4, "{limited:#?}");
    for e in &limited {
        assert_eq!(e["queue_id"], id.as_str(), "{e}");
        assert_eq!(e["limit"], "2", "{e}");
    }
    let delivered = tern.wait_for_events(6003, 6, Duration::from_secs(20));
    assert_eq!(delivered.len(), 6, "each mailbox once: {delivered:#?}");
    wait_until(Duration::from_secs(20), "the queue empties", || {
        tern.queue_json(&[]).is_empty()
    });
}
