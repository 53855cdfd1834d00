//! A wrong password and an unknown user get the same reply, byte for byte (swaks over
//! STARTTLS, a passwd-file made by doveadm); events 2102 tell the operator which it was.
//! After `auth.max_failures_per_client` failures the client is locked out: one event
//! 2103 (kind client), and AUTH gets 454 4.7.0 even with the right password; the
//! failures are counted in `tern_smtp_auth` on /metrics.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::common::admin::Admin;
use crate::common::submission::{passwd_file, replies_with, swaks, tls_keys, transcript};
use crate::common::{Listener, Setup, toml_str};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn unknown_user_and_wrong_password_are_alike_and_lead_to_a_lockout() {
    let dir = tempfile::tempdir().unwrap();
    let users = passwd_file(dir.path(), &[("alice", "BLF-CRYPT", "alice-pw")]);
    let tern = Setup::new()
        .listeners(vec![
            Listener::new("submission", LOOPBACK)
                .with(&tls_keys(dir.path()))
                .with("auth = \"required\""),
        ])
        .section(&format!(
            "[auth]\npasswd_file = {}\nmax_failures_per_client = 3\nfailure_delay_ms = 20\nmax_failure_delay_ms = 100\nlockout_secs = 600\n",
            toml_str(&users.display().to_string())
        ))
        .start();
    let attempt = |user: &str, pw: &str| {
        let out = swaks(
            tern.addr_of("submission"),
            &[
                "--tls",
                "--auth",
                "PLAIN",
                "--auth-user",
                user,
                "--auth-password",
                pw,
                "--from",
                "a@example.com",
                "--to",
                "b@example.org",
                "--quit-after",
                "AUTH",
            ],
        );
        transcript(&out)
    };
    let wrong = attempt("alice", "not-her-password");
    let unknown = attempt("mallory", "alice-pw");
    let wrong_reply = replies_with(&wrong, "535");
    assert_eq!(
        wrong_reply,
        ["535 5.7.8 Authentication credentials invalid"],
        "{wrong}"
    );
    assert_eq!(replies_with(&unknown, "535"), wrong_reply, "{unknown}");

    let failed = tern.wait_for_events(2102, 2, Duration::from_secs(10));
    let reasons: Vec<&str> = failed.iter().filter_map(|e| e["reason"].as_str()).collect();
    assert_eq!(reasons, ["wrong_password", "unknown_user"], "{failed:?}");
    assert!(tern.events_with_id(2103).is_empty());

    // The third failure locks the client out: one event, then 454 whatever it sends.
    let third = attempt("alice", "still-wrong");
    assert_eq!(replies_with(&third, "535").len(), 1, "{third}");
    let lockout = tern.wait_for_events(2103, 1, Duration::from_secs(10));
    assert_eq!(lockout[0]["kind"], "client", "{lockout:?}");
    assert_eq!(lockout[0]["key"], "127.0.0.1", "{lockout:?}");
    let right = attempt("alice", "alice-pw");
    assert_eq!(
        replies_with(&right, "454"),
        ["454 4.7.0 Too many failed authentications, try again later"],
        "{right}"
    );
    assert!(
        tern.events_with_id(2101).is_empty(),
        "a locked-out client authenticated"
    );
    assert_eq!(tern.events_with_id(2103).len(), 1, "one event per lockout");

    let metrics = Admin::of(&tern).get("/metrics").body;
    for line in [
        "tern_smtp_auth_total{mechanism=\"plain\",result=\"failure\"} 3",
        "tern_smtp_auth_total{mechanism=\"plain\",result=\"locked\"} 1",
        "tern_smtp_auth_total{mechanism=\"plain\",result=\"success\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}
