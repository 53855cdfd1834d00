//! Credentials checked by a real Dovecot over its auth socket (what Postfix's
//! `smtpd_sasl_type = dovecot` uses): Dovecot started by the test with a passwd-file
//! passdb and an auth Unix listener; Tern connects at start (event 2110 lists Dovecot's
//! mechanisms), swaks authenticates with PLAIN and with LOGIN over STARTTLS, and a wrong
//! password is refused with 535 5.7.8.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::common::submission::{
    DovecotAuth, NO_RELAY_NETWORK, replies_with, swaks, tls_keys, transcript,
};
use crate::common::{Listener, Setup, toml_str};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn plain_login_and_a_wrong_password_through_dovecot() {
    let dovecot = DovecotAuth::start(&[("erin", "SHA512-CRYPT", "erin-pw")]);
    let dir = tempfile::tempdir().unwrap();
    let tern = Setup::new()
        .listeners(vec![
            Listener::new("submission", LOOPBACK)
                .with(&tls_keys(dir.path()))
                .with("auth = \"required\""),
        ])
        .section(NO_RELAY_NETWORK)
        .section(&format!(
            "[auth]\ndovecot_socket = {}\nfailure_delay_ms = 0\n",
            toml_str(&dovecot.socket.display().to_string())
        ))
        .start();
    let connected = tern.wait_for_events(2110, 1, Duration::from_secs(10));
    assert_eq!(connected[0]["mechanisms"], "PLAIN LOGIN", "{connected:?}");

    for mech in ["PLAIN", "LOGIN"] {
        let out = swaks(
            tern.addr_of("submission"),
            &[
                "--tls",
                "--auth",
                mech,
                "--auth-user",
                "erin",
                "--auth-password",
                "erin-pw",
                "--from",
                "erin@example.com",
                "--to",
                "friend@example.org",
            ],
        );
        let t = transcript(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{mech}:\n{t}\n{}",
            dovecot.log()
        );
        assert!(t.contains("235 2.7.0 Authentication successful"), "{t}");
    }
    let out = swaks(
        tern.addr_of("submission"),
        &[
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            "erin",
            "--auth-password",
            "wrong",
            "--from",
            "erin@example.com",
            "--to",
            "friend@example.org",
        ],
    );
    let t = transcript(&out);
    assert_eq!(
        replies_with(&t, "535"),
        ["535 5.7.8 Authentication credentials invalid"],
        "{t}"
    );
    let ok = tern.wait_for_events(2101, 2, Duration::from_secs(10));
    assert!(ok.iter().all(|e| e["user"] == "erin"), "{ok:?}");
    let spooled = tern.spooled();
    assert_eq!(spooled.len(), 2);
    for (m, _) in &spooled {
        let env = m.envelope.as_ref().unwrap();
        assert_eq!(env.client.authenticated.as_deref(), Some("erin"));
    }
}
