//! Sender authorisation (Postfix's `reject_sender_login_mismatch`): with a sender-login
//! map and `sender_check = "envelope_and_header"`, swaks authenticated as alice may not
//! use bob's address as MAIL FROM (553 5.7.1, event 2107 `where` envelope), nor put it in
//! the From header (553 5.7.1 after DATA, nothing queued, event 2107 `where` header); its
//! own address, and any of its domain's through `@domain`, go through.

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::common::submission::{
    NO_RELAY_NETWORK, passwd_file, replies_with, swaks, tls_keys, transcript,
};
use crate::common::{Listener, Setup, toml_str};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn envelope_and_header_senders_must_be_the_users() {
    let dir = tempfile::tempdir().unwrap();
    let users = passwd_file(dir.path(), &[("alice", "SHA256-CRYPT", "alice-pw")]);
    let map = dir.path().join("senders");
    std::fs::write(
        &map,
        "# address or @domain, then logins\nalice@example.com alice\nbob@example.com bob\n@alice.example alice\n",
    )
    .unwrap();
    std::fs::set_permissions(&map, std::fs::Permissions::from_mode(0o644)).unwrap();
    let tern = Setup::new()
        .listeners(vec![
            Listener::new("submission", LOOPBACK)
                .with(&tls_keys(dir.path()))
                .with("auth = \"required\""),
        ])
        .section(NO_RELAY_NETWORK)
        .section(&format!(
            "[auth]\npasswd_file = {}\nsender_login_map = {}\nsender_check = \"envelope_and_header\"\n",
            toml_str(&users.display().to_string()),
            toml_str(&map.display().to_string())
        ))
        .start();
    tern.wait_for_events(2108, 1, Duration::from_secs(10));
    let send = |from: &str, header_from: &str| {
        let header = format!("From: {header_from}");
        let out = swaks(
            tern.addr_of("submission"),
            &[
                "--tls",
                "--auth",
                "PLAIN",
                "--auth-user",
                "alice",
                "--auth-password",
                "alice-pw",
                "--from",
                from,
                "--to",
                "someone@example.org",
                "--header",
                &header,
            ],
        );
        (out.status.code(), transcript(&out))
    };

    let (code, t) = send("bob@example.com", "alice@example.com");
    assert_ne!(code, Some(0), "{t}");
    assert_eq!(
        replies_with(&t, "553"),
        ["553 5.7.1 <bob@example.com>: Sender address rejected: not owned by user alice"],
        "{t}"
    );
    let (code, t) = send("alice@example.com", "Bob <bob@example.com>");
    assert_ne!(code, Some(0), "{t}");
    assert_eq!(replies_with(&t, "553").len(), 1, "{t}");
    assert!(replies_with(&t, "250 2.0.0 Ok: queued").is_empty(), "{t}");

    let (code, t) = send("alice@example.com", "Alice <alice@example.com>");
    assert_eq!(code, Some(0), "{t}");
    let (code, t) = send("news@alice.example", "alice@example.com");
    assert_eq!(code, Some(0), "{t}");

    let mismatches = tern.wait_for_events(2107, 2, Duration::from_secs(10));
    let seen: Vec<(&str, &str, &str)> = mismatches
        .iter()
        .map(|e| {
            (
                e["user"].as_str().unwrap_or(""),
                e["sender"].as_str().unwrap_or(""),
                e["where"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("alice", "bob@example.com", "envelope"),
            ("alice", "bob@example.com", "header")
        ]
    );
    assert_eq!(
        tern.spooled().len(),
        2,
        "only alice's own messages are queued"
    );
}
