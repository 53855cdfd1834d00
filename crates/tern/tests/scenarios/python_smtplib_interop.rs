//! Tern interoperates with Python's smtplib: EHLO, STARTTLS, a message to three
//! recipients, an SMTPUTF8 message with non-ASCII addresses and a 1 MiB message, all in
//! one TLS session. What is queued is byte-identical to what smtplib put in DATA once the
//! Received header is removed (smtplib turns a `str` message's line endings into CRLF,
//! appends a final CRLF when missing and dot-stuffs; Tern undoes only the stuffing).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use crate::common::{
    Rng, Setup, python, require_python_modules, split_received, toml_str, write_test_certificate,
};

const SCRIPT: &str = r#"
import json, smtplib, ssl, sys
host, port, d = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
out = {}
s = smtplib.SMTP(host, port, local_hostname="smtplib.client.test", timeout=30)
code, _ = s.ehlo()
assert code == 250, code
assert s.has_extn("starttls"), "STARTTLS not offered"
assert s.has_extn("smtputf8"), "SMTPUTF8 not offered"
code, _ = s.starttls(context=ctx)
assert code == 220, code
out["tls_version"] = s.sock.version()
s.ehlo()
three = open(d + "/three.txt", encoding="ascii").read()
out["three_refused"] = s.sendmail("py@client.test", ["r1@localhost", "r2@localhost", "r3@example.org"], three)
utf8 = open(d + "/utf8.eml", "rb").read()
out["utf8_refused"] = s.sendmail("δοκιμή@client.test", ["jörg@localhost"], utf8, mail_options=["SMTPUTF8"])
big = open(d + "/big.eml", "rb").read()
out["big_refused"] = s.sendmail("big@client.test", ["big@localhost"], big)
s.quit()
print(json.dumps(out))
"#;

/// A message of at least `min_body` body bytes with CRLF line endings, some lines
/// starting with dots.
fn big_message(rng: &mut Rng, min_body: usize) -> Vec<u8> {
    let mut m =
        b"From: <big@client.test>\r\nTo: <big@localhost>\r\nSubject: one mebibyte\r\n\r\n".to_vec();
    let start = m.len();
    while m.len() - start < min_body {
        let len = rng.range(0, 990) as usize;
        if rng.range(0, 10) == 0 {
            m.push(b'.');
        }
        for _ in 0..len {
            m.push(b' ' + rng.range(0, 95) as u8);
        }
        m.extend_from_slice(b"\r\n");
    }
    m
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn smtplib_starttls_multi_recipient_smtputf8_and_large_message_are_byte_identical() {
    require_python_modules(&["smtplib", "ssl"]);
    let (mut rng, seed) = Rng::from_env_or_clock();
    let work = tempfile::tempdir().unwrap();
    let (cert, key) = write_test_certificate(work.path());
    let tern = Setup::new()
        .listener_keys(&format!(
            "certificate = {}\nprivate_key = {}",
            toml_str(&cert.display().to_string()),
            toml_str(&key.display().to_string())
        ))
        .start();

    // A str message with LF line endings and no final newline.
    let three = "From: <py@client.test>\nTo: r1@localhost, r2@localhost, r3@example.org\nSubject: three recipients\n\nFirst line.\n.Leading dot.\n.\n..\nLast line without newline";
    let three_expected = {
        let mut e = three.replace('\n', "\r\n").into_bytes();
        e.extend_from_slice(b"\r\n");
        e
    };
    let utf8 = "From: <δοκιμή@client.test>\r\nTo: <jörg@localhost>\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße, jörg! Ελληνικά. 日本語.\r\n".as_bytes().to_vec();
    let big = big_message(&mut rng, 1024 * 1024);
    std::fs::write(work.path().join("three.txt"), three).unwrap();
    std::fs::write(work.path().join("utf8.eml"), &utf8).unwrap();
    std::fs::write(work.path().join("big.eml"), &big).unwrap();

    let addr = tern.addr();
    let out = python(
        SCRIPT,
        &[
            &addr.ip().to_string(),
            &addr.port().to_string(),
            &work.path().display().to_string(),
        ],
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "smtplib script failed (seed {seed}):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["tls_version"], "TLSv1.3", "{result}");
    for k in ["three_refused", "utf8_refused", "big_refused"] {
        assert_eq!(
            result[k],
            serde_json::json!({}),
            "no recipient refused: {result}"
        );
    }

    let spooled = tern.spooled();
    assert_eq!(spooled.len(), 3, "three messages queued");
    let expectations: [(&str, &[&str], &[u8], &str); 3] = [
        (
            "py@client.test",
            &["r1@localhost", "r2@localhost", "r3@example.org"],
            &three_expected,
            "with ESMTPS id",
        ),
        (
            "δοκιμή@client.test",
            &["jörg@localhost"],
            &utf8,
            "with UTF8SMTPS id",
        ),
        (
            "big@client.test",
            &["big@localhost"],
            &big,
            "with ESMTPS id",
        ),
    ];
    for (sender, rcpts, content, proto) in expectations {
        let (listed, stored) = spooled
            .iter()
            .find(|(m, _)| m.envelope.as_ref().unwrap().sender == sender)
            .unwrap_or_else(|| panic!("no message from {sender} in the spool"));
        let env = listed.envelope.as_ref().unwrap();
        assert_eq!(
            env.recipients
                .iter()
                .map(|r| r.address.as_str())
                .collect::<Vec<_>>(),
            rcpts,
            "recipients of the message from {sender}"
        );
        assert_eq!(env.params.smtputf8, sender.contains('δ'));
        let (received, rest) = split_received(&stored.body);
        assert!(
            rest == content,
            "message from {sender}: stored content ({} bytes) differs from what smtplib sent ({} bytes); seed {seed}; first difference at {:?}",
            rest.len(),
            content.len(),
            rest.iter().zip(content.iter()).position(|(a, b)| a != b)
        );
        assert!(
            received.contains("(using TLSv1.3 with cipher "),
            "{received}"
        );
        assert!(received.contains(proto), "{received}");
        assert!(
            received.contains("from smtplib.client.test (localhost [127.0.0.1])"),
            "{received}"
        );
        if rcpts.len() == 1 {
            assert!(
                received.contains(&format!("for <{}>", rcpts[0])),
                "{received}"
            );
        } else {
            assert!(
                !received.contains("for <"),
                "several recipients are not disclosed: {received}"
            );
        }
        assert_eq!(env.size, stored.body.len() as u64);
    }
    assert!(big.len() > 1024 * 1024);
}
