//! Submission as operators know it (RFC 6409, RFC 8314), with swaks as the client and a
//! passwd-file made by the real `doveadm pw`: a port-587-style listener (STARTTLS, `auth
//! = "required"`) and a port-465-style one (implicit TLS, `auth = "required"`). AUTH
//! PLAIN over STARTTLS and AUTH LOGIN over implicit TLS succeed and the authenticated
//! client relays to a domain Tern does not receive for (it is in no relay network); the
//! envelope records the user, the Received header says ESMTPSA and does not name the
//! user; event 2101 is logged for each. Without AUTH, MAIL gets 530 5.7.0 (swaks); before
//! TLS, EHLO does not offer AUTH and AUTH gets 538 5.7.11 (raw client). The SCRAM salt key
//! `auth.key` is made with mode 0600.

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::common::submission::{
    NO_RELAY_NETWORK, passwd_file, replies_with, swaks, tls_keys, transcript,
};
use crate::common::{Listener, Setup, SmtpClient, split_received, toml_str};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn plain_over_starttls_and_login_over_implicit_tls_relay() {
    let dir = tempfile::tempdir().unwrap();
    let users = passwd_file(
        dir.path(),
        &[
            ("alice", "SHA512-CRYPT", "alice-pw"),
            ("bob", "ARGON2ID", "bob-pw"),
        ],
    );
    let keys = tls_keys(dir.path());
    let tern = Setup::new()
        .listeners(vec![
            Listener::new("submission", LOOPBACK)
                .with(&keys)
                .with("auth = \"required\""),
            Listener::new("submissions", LOOPBACK)
                .with(&keys)
                .with("tls = \"implicit\"\nauth = \"required\""),
        ])
        .section(NO_RELAY_NETWORK)
        .section(&format!(
            "[auth]\npasswd_file = {}\n",
            toml_str(&users.display().to_string())
        ))
        .start();
    tern.wait_for_events(2105, 1, Duration::from_secs(10));
    // The SCRAM salt key, private whatever the umask.
    let key = tern.spool_dir().parent().unwrap().join("auth.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", key.display());

    let cases = [
        ("submission", "--tls", "PLAIN", "alice", "alice-pw"),
        ("submissions", "--tls-on-connect", "LOGIN", "bob", "bob-pw"),
    ];
    let mut ids = Vec::new();
    for (listener, tls, mech, user, pw) in cases {
        let to = format!("friend-of-{listener}@example.org");
        let out = swaks(
            tern.addr_of(listener),
            &[
                tls,
                "--auth",
                mech,
                "--auth-user",
                user,
                "--auth-password",
                pw,
                "--from",
                "sender@example.com",
                "--to",
                &to,
            ],
        );
        let t = transcript(&out);
        assert_eq!(out.status.code(), Some(0), "{listener}:\n{t}");
        assert!(t.contains("235 2.7.0 Authentication successful"), "{t}");
        let queued = replies_with(&t, "250 2.0.0 Ok: queued as ");
        let id = queued
            .first()
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or_else(|| panic!("nothing queued:\n{t}"))
            .to_string();
        ids.push((id, user, listener));
    }

    let spooled = tern.spooled();
    for (id, user, listener) in &ids {
        let (listed, stored) = spooled
            .iter()
            .find(|(m, _)| m.id.to_string() == *id)
            .unwrap_or_else(|| panic!("{id} not in the spool"));
        let env = listed.envelope.as_ref().unwrap();
        assert_eq!(env.client.authenticated.as_deref(), Some(*user));
        assert_eq!(env.client.listener, *listener);
        assert!(!env.client.relay_network);
        let (received, _) = split_received(&stored.body);
        assert!(received.contains(" with ESMTPSA id "), "{received}");
        assert!(
            !received.contains(user) && !received.contains("Authenticated"),
            "user named in {received}"
        );
    }
    let ok = tern.wait_for_events(2101, 2, Duration::from_secs(10));
    let users: Vec<&str> = ok.iter().filter_map(|e| e["user"].as_str()).collect();
    assert_eq!(users, ["alice", "bob"], "{ok:?}");

    // No AUTH on a submission listener: nothing is accepted.
    let out = swaks(
        tern.addr_of("submission"),
        &["--tls", "--from", "a@example.com", "--to", "x@example.org"],
    );
    let t = transcript(&out);
    assert_ne!(out.status.code(), Some(0), "{t}");
    assert_eq!(
        replies_with(&t, "530"),
        ["530 5.7.0 Authentication required"],
        "{t}"
    );

    // Before STARTTLS: AUTH neither offered nor accepted.
    let mut c = SmtpClient::connect(tern.addr_of("submission")).unwrap();
    let ehlo = c.hello("client.test");
    assert!(!ehlo.text().contains("AUTH"), "{}", ehlo.text());
    assert!(ehlo.text().contains("STARTTLS"));
    let r = c.command("AUTH PLAIN AGFsaWNlAGFsaWNlLXB3").unwrap();
    assert_eq!(r.code, 538, "{}", r.text());
    assert!(r.text().contains("5.7.11"), "{}", r.text());
    let r = c.command("MAIL FROM:<alice@example.com>").unwrap();
    assert_eq!(
        (r.code, r.text().contains("5.7.0")),
        (530, true),
        "{}",
        r.text()
    );
    assert_eq!(tern.spooled().len(), 2);
}
