//! Tern interoperates with swaks, a real SMTP client: plain, pipelined, STARTTLS and
//! implicit TLS submissions are queued byte-for-byte as swaks sent them (the Received
//! header of the TLS ones says TLSv1.3), and a client outside the relay networks is
//! refused with 554 5.7.1 for a domain Tern does not receive for.
//!
//! swaks 20201014 has no BDAT support; CHUNKING is exercised with a raw socket in
//! `bdat_chunks_are_queued_byte_identical.rs`.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::{
    Listener, Setup, require_program, run, split_received, toml_str, write_test_certificate,
};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn swaks(swaks: &Path, server: SocketAddr, args: &[&str]) -> Output {
    run(
        Command::new(swaks)
            .arg("--server")
            .arg(format!("{}:{}", server.ip(), server.port()))
            .args(["--timeout", "20"])
            .args(args),
        Duration::from_secs(60),
    )
}

/// The DATA content as swaks put it on the wire, rebuilt from its transcript: the lines
/// it printed as sent (` -> ` in clear, ` ~> ` inside TLS) between the 354 reply and the
/// lone dot, with the dot-stuffing removed.
fn content_from_transcript(transcript: &str) -> Vec<u8> {
    let mut in_data = false;
    let mut out = Vec::new();
    for line in transcript.lines() {
        let sent = line
            .strip_prefix(" -> ")
            .or_else(|| line.strip_prefix(" ~> "));
        if !in_data {
            if line.starts_with("<-  354") || line.starts_with("<~  354") {
                in_data = true;
            }
            continue;
        }
        let Some(sent) = sent else { continue };
        if sent == "." {
            return out;
        }
        let unstuffed = sent
            .strip_prefix('.')
            .filter(|_| sent.starts_with(".."))
            .unwrap_or(sent);
        out.extend_from_slice(unstuffed.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    panic!("no complete DATA in swaks transcript:\n{transcript}");
}

struct Case {
    name: &'static str,
    listener: &'static str,
    args: &'static [&'static str],
    tls: bool,
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn plain_pipelined_starttls_and_implicit_tls_are_queued() {
    let swaks_bin = require_program("swaks");
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = write_test_certificate(certs.path());
    let tls_keys = format!(
        "certificate = {}\nprivate_key = {}",
        toml_str(&cert.display().to_string()),
        toml_str(&key.display().to_string())
    );
    let tern = Setup::new()
        .listeners(vec![
            Listener::new("submission", LOOPBACK).with(&tls_keys),
            Listener::new("smtps", LOOPBACK)
                .with(&tls_keys)
                .with("tls = \"implicit\""),
        ])
        .start();

    let cases = [
        Case {
            name: "plain",
            listener: "submission",
            args: &[],
            tls: false,
        },
        Case {
            name: "pipeline",
            listener: "submission",
            args: &["--pipeline"],
            tls: false,
        },
        Case {
            name: "starttls",
            listener: "submission",
            args: &["--tls"],
            tls: true,
        },
        Case {
            name: "tlsonconnect",
            listener: "smtps",
            args: &["--tls-on-connect"],
            tls: true,
        },
    ];
    let mut expected = Vec::new();
    for case in &cases {
        let to = format!("{}@localhost", case.name);
        let subject = format!("Subject: swaks {}", case.name);
        let body = format!(
            "Hello from swaks ({}).\n.a line that starts with a dot\n.\n..\nend",
            case.name
        );
        let mut args = vec![
            "--to",
            &to,
            "--from",
            "swaks@client.test",
            "--helo",
            "client.test",
            "--header",
            &subject,
            "--body",
            &body,
        ];
        args.extend_from_slice(case.args);
        let out = swaks(&swaks_bin, tern.addr_of(case.listener), &args);
        let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            out.status.code(),
            Some(0),
            "swaks {} failed:\n{transcript}\n{}",
            case.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let queued_line = transcript
            .lines()
            .find(|l| l.contains("250 2.0.0 Ok: queued as "))
            .unwrap_or_else(|| panic!("swaks {} saw no queued reply:\n{transcript}", case.name));
        let id = queued_line.rsplit(' ').next().unwrap().to_string();
        if case.tls {
            assert!(
                transcript.contains(" ~> MAIL FROM:"),
                "swaks {} did not send its transaction inside TLS:\n{transcript}",
                case.name
            );
        }
        if case.name == "pipeline" {
            // Pipelined: MAIL, RCPT and DATA go out before the first reply comes back.
            let lines: Vec<&str> = transcript.lines().collect();
            let mail = lines
                .iter()
                .position(|l| l.starts_with(" -> MAIL FROM"))
                .unwrap();
            assert!(
                lines[mail + 1].starts_with(" -> RCPT TO")
                    && lines[mail + 2].starts_with(" -> DATA"),
                "swaks did not pipeline:\n{transcript}"
            );
        }
        expected.push((case, id, to, content_from_transcript(&transcript)));
    }

    let spooled = tern.spooled();
    assert_eq!(
        spooled.len(),
        cases.len(),
        "one queued message per swaks run"
    );
    for (case, id, to, content) in &expected {
        let (listed, stored) = spooled
            .iter()
            .find(|(m, _)| m.id.to_string() == *id)
            .unwrap_or_else(|| panic!("{} ({id}) is not in the spool", case.name));
        let env = listed.envelope.as_ref().unwrap();
        assert_eq!(env.sender, "swaks@client.test");
        assert_eq!(
            env.recipients
                .iter()
                .map(|r| r.address.as_str())
                .collect::<Vec<_>>(),
            vec![to.as_str()]
        );
        assert_eq!(env.client.listener, case.listener);
        let (received, rest) = split_received(&stored.body);
        assert!(
            rest == content.as_slice(),
            "{}: stored content differs from what swaks sent\n--- sent ---\n{}\n--- stored ---\n{}",
            case.name,
            String::from_utf8_lossy(content),
            String::from_utf8_lossy(rest)
        );
        assert!(received.contains(&format!("id {id}")), "{received}");
        assert!(
            received.contains("from client.test (localhost [127.0.0.1])"),
            "{received}"
        );
        if case.tls {
            assert!(
                received.contains("(using TLSv1.3 with cipher ")
                    && received.contains("with ESMTPS id"),
                "{}: Received header should record TLSv1.3:\n{received}",
                case.name
            );
            assert!(
                env.client
                    .tls
                    .as_deref()
                    .is_some_and(|t| t.starts_with("TLSv1.3")),
                "{:?}",
                env.client.tls
            );
        } else {
            assert!(
                !received.contains("using") && received.contains("with ESMTP id"),
                "{}: {received}",
                case.name
            );
            assert_eq!(env.client.tls, None);
        }
    }
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn client_outside_relay_networks_is_refused_554_for_foreign_domain() {
    let swaks_bin = require_program("swaks");
    // Only 127.0.0.2 may relay; swaks connects from 127.0.0.1, so it is "outside".
    let tern = Setup::new()
        .section("[relay]\ndomains = [\"localhost\"]\nnetworks = [\"127.0.0.2/32\"]\n")
        .start();

    let out = swaks(
        &swaks_bin,
        tern.addr(),
        &[
            "--to",
            "someone@example.org",
            "--from",
            "outsider@client.test",
            "--helo",
            "client.test",
        ],
    );
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    // swaks exits 24 when RCPT TO is refused.
    assert_eq!(
        out.status.code(),
        Some(24),
        "swaks exit code:\n{transcript}"
    );
    assert!(
        transcript.contains("<** 554 5.7.1 <someone@example.org>: Relay access denied"),
        "{transcript}"
    );

    // The same outsider may still send to a domain Tern receives for.
    let out = swaks(
        &swaks_bin,
        tern.addr(),
        &[
            "--to",
            "you@localhost",
            "--from",
            "outsider@client.test",
            "--helo",
            "client.test",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let queued = tern.queue_json(&[]);
    assert_eq!(
        queued.len(),
        1,
        "only the local message is queued: {queued:?}"
    );
    assert_eq!(queued[0]["recipients"][0]["address"], "you@localhost");
    let denied = tern.wait_for_events(2004, 1, Duration::from_secs(10));
    assert_eq!(denied[0]["recipient"], "someone@example.org", "{denied:?}");
}
