//! The mailbox and alias maps are reloaded with the rest of the configuration: after
//! `tern reload` a new mailbox and a new alias are accepted at RCPT and delivered. A map
//! with an error is refused with its `file:line` by `tern check-config`, by `tern
//! reload` (which then signals nothing) and by the server on a bare SIGHUP (event 1008),
//! and the maps in force stay in force.

use std::time::Duration;

use crate::common::local::{QUEUE, local_section, maildir_route, open_tempdir, wait_for_maildir};
use crate::common::{Setup, SmtpClient, run, send_one, simple_message, tern_bin};

fn rcpt_code(addr: std::net::SocketAddr, rcpt: &str) -> u16 {
    let mut c = SmtpClient::connect(addr).unwrap();
    c.hello("client.test");
    assert_eq!(c.command("MAIL FROM:<s@client.test>").unwrap().code, 250);
    let code = c.command(&format!("RCPT TO:<{rcpt}>")).unwrap().code;
    let _ = c.command("QUIT");
    code
}

#[test]
fn maps_reload_atomically_and_a_bad_map_is_refused_with_file_and_line() {
    let maps = tempfile::tempdir().unwrap();
    let mailboxes = maps.path().join("mailboxes");
    let aliases = maps.path().join("aliases");
    std::fs::write(&mailboxes, "alice@example.test alice\n").unwrap();
    std::fs::write(&aliases, "postmaster: alice\n").unwrap();
    let root = open_tempdir();
    let tern = Setup::new()
        .queue(QUEUE)
        .section(&local_section(
            &["example.test"],
            Some(&mailboxes),
            Some(&aliases),
            "",
        ))
        .section(&maildir_route(&["example.test"], root.path()))
        .start();
    let loaded = tern.wait_for_events(6007, 1, Duration::from_secs(10));
    let count = |e: &serde_json::Value, k: &str| e[k].to_string().trim_matches('"').to_owned();
    assert_eq!(
        (count(&loaded[0], "mailboxes"), count(&loaded[0], "aliases")),
        ("1".into(), "1".into()),
        "{loaded:?}"
    );
    assert_eq!(rcpt_code(tern.addr(), "bob@example.test"), 550);
    assert_eq!(rcpt_code(tern.addr(), "team@example.test"), 550);

    std::fs::write(
        &mailboxes,
        "alice@example.test alice\nbob@example.test bob\n",
    )
    .unwrap();
    std::fs::write(&aliases, "postmaster: alice\nteam: alice, bob\n").unwrap();
    let ok = run(&mut tern.tern_command(&["reload"]), Duration::from_secs(20));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    tern.wait_for_events(6007, 2, Duration::from_secs(20));
    assert_eq!(rcpt_code(tern.addr(), "bob@example.test"), 250);
    send_one(
        tern.addr(),
        "s@client.test",
        &["team@example.test"],
        &simple_message("after reload", "hi"),
    );
    wait_for_maildir(&root.path().join("bob/Maildir"), 1, Duration::from_secs(20));
    wait_for_maildir(
        &root.path().join("alice/Maildir"),
        1,
        Duration::from_secs(20),
    );

    // A broken line 3 (and a loop-free but unknown-domain alias) is reported with file:line.
    std::fs::write(
        &mailboxes,
        "alice@example.test alice\nbob@example.test bob\ncarol@example.test\n",
    )
    .unwrap();
    std::fs::write(
        &aliases,
        "postmaster: alice\nteam: alice, bob\nx@other.test: alice\n",
    )
    .unwrap();
    let config = tern.config_path.clone().unwrap();
    let check = run(
        std::process::Command::new(tern_bin())
            .arg("check-config")
            .arg(&config),
        Duration::from_secs(20),
    );
    assert!(!check.status.success());
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        report.contains(&format!("local.mailbox_map: {}:3:", mailboxes.display())),
        "{report}"
    );
    assert!(
        report.contains(&format!("local.alias_map: {}:3:", aliases.display())),
        "{report}"
    );
    let refused = run(&mut tern.tern_command(&["reload"]), Duration::from_secs(20));
    assert!(!refused.status.success());
    let text = String::from_utf8_lossy(&refused.stdout);
    assert!(
        text.contains(&format!("{}:3:", mailboxes.display())) && text.contains("refused"),
        "{text}"
    );
    tern.signal(libc::SIGHUP);
    let failed = tern.wait_for_events(1008, 1, Duration::from_secs(20));
    let errors = failed[0]["errors"].as_str().unwrap();
    assert!(
        errors.contains(&format!("{}:3:", mailboxes.display())),
        "{errors}"
    );
    // Still the maps of the last good reload.
    assert_eq!(rcpt_code(tern.addr(), "bob@example.test"), 250);
    assert_eq!(rcpt_code(tern.addr(), "team@example.test"), 250);
    assert_eq!(rcpt_code(tern.addr(), "carol@example.test"), 550);
    assert_eq!(
        tern.events_with_id(6007).len(),
        2,
        "a refused reload loads nothing"
    );
}
