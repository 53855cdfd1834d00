//! A multi-MiB 8-bit MIME message for a next hop without 8BITMIME is converted by the
//! streaming converter (messages over 1 MiB: two passes over the spool, the copy written
//! to a spill file as it comes) and arrives 7-bit: a multipart/mixed of about 5 MB with
//! an 8-bit UTF-8 text part whose lines fall across every 64 KiB piece, an 8-bit binary
//! attachment with an 8-bit file name, a nested message/rfc822 with its own 8-bit
//! Subject and text, an 8-bit Subject and display name, and an 8-bit preamble. Python's
//! `email` package reads the same parts from the copy as from the original (types,
//! file names, decoded payloads by SHA-256, Subjects), the copy is octet for octet what
//! the whole-buffer converter makes of the stored message, event 6041 says `spilled`,
//! and the spool's `tmp/` is empty afterwards.

use std::time::Duration;

use serde_json::Value;

use crate::common::peers::{DnsServer, SmtpPeer, delivering, send_with};
use crate::common::{free_port, split_received};

/// Python's reading: every part in tree order (type, file name, SHA-256 and length of
/// the decoded payload, text with line ends as LF), the Subjects of the message and of
/// the nested one, the From display name.
const READ: &str = r#"
import email, email.policy, hashlib, json, sys
m = email.message_from_bytes(open(sys.argv[1], "rb").read(), policy=email.policy.default)
# Raw 8-bit header text comes as surrogate escapes: back to UTF-8.
fix = lambda s: None if s is None else str(s).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
parts = []
for p in m.walk():
    if p.get_content_type() == "message/rfc822":
        parts.append({"type": "message/rfc822", "subject": fix(p.get_payload(0)["Subject"])})
        continue
    if p.is_multipart():
        parts.append({"type": p.get_content_type()})
        continue
    payload = p.get_payload(decode=True) or b""
    if p.get_content_maintype() == "text":
        payload = payload.replace(b"\r\n", b"\n")
    parts.append({"type": p.get_content_type(), "filename": fix(p.get_filename()),
                  "len": len(payload), "sha256": hashlib.sha256(payload).hexdigest()})
print(json.dumps({"subject": fix(m["Subject"]),
                  "from": [fix(a.display_name) for a in m["From"].addresses],
                  "parts": parts}))
"#;

fn python_reads(content: &[u8]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.eml");
    std::fs::write(&path, content).unwrap();
    let out = crate::common::python(READ, &[path.to_str().unwrap()], Duration::from_secs(120));
    assert!(
        out.status.success(),
        "python could not read the message: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// UTF-8 text of about `size` octets, lines of varying length.
fn text(size: usize) -> Vec<u8> {
    let mut t = Vec::with_capacity(size + 200);
    let mut i = 0usize;
    while t.len() < size {
        t.extend_from_slice("Grüße aus Köln, ça va très bien — Zeile ".as_bytes());
        t.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, (i * 7919) % 61));
        t.extend_from_slice(format!(" {i}\r\n").as_bytes());
        i += 1;
    }
    t
}

/// Every octet value but CR, LF and `-`, then CRLF, repeated: 8-bit binary that is
/// DATA-safe (lines under Tern's 8192-octet limit).
fn attachment(size: usize) -> Vec<u8> {
    let mut block: Vec<u8> = (0..=255u8)
        .filter(|b| !matches!(b, b'\r' | b'\n' | b'-'))
        .collect();
    block.extend_from_slice(b"\r\n");
    let mut a = Vec::with_capacity(size + block.len());
    while a.len() < size {
        a.extend_from_slice(&block);
    }
    a
}

fn message() -> Vec<u8> {
    let mut m = "From: Jörg Müller <joerg@client.test>\r\nTo: <b@old.test>\r\nSubject: Große Anlage ✓\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"=_outer\"\r\n\r\nPréambule ignoré\r\n--=_outer\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n".as_bytes().to_vec();
    m.extend(text(2_000_000));
    m.extend_from_slice(
        "\r\n--=_outer\r\nContent-Type: application/octet-stream; name=\"Bericht März.bin\"\r\nContent-Disposition: attachment; filename=\"Bericht März.bin\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            .as_bytes(),
    );
    m.extend(attachment(2_000_000));
    m.extend_from_slice(
        "\r\n--=_outer\r\nContent-Type: message/rfc822\r\n\r\nFrom: <inner@client.test>\r\nSubject: Innere Größe\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            .as_bytes(),
    );
    m.extend(text(500_000));
    m.extend_from_slice(b"\r\n--=_outer--\r\n");
    m
}

#[test]
fn eight_bit_mime_of_several_mib_arrives_7bit_with_the_same_parts() {
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    dns.set_mx("old.test", &[(10, "mx.old.test")], 300);
    dns.set_a("mx.old.test", "127.0.0.2".parse().unwrap(), 300);
    let old = SmtpPeer::start_on("127.0.0.2", port, &["no-8bitmime"]);
    let tern = delivering(&dns, port, "").start();

    let original = message();
    assert!(original.len() > 4 * 1024 * 1024);
    send_with(
        tern.addr(),
        "MAIL FROM:<s@client.test> BODY=8BITMIME",
        &["RCPT TO:<b@old.test>"],
        &original,
    );

    let got = old.wait_for(1, Duration::from_secs(120));
    let r = &got[0];
    assert!(
        r.content.is_ascii(),
        "an 8-bit octet reached the 7-bit peer"
    );
    assert!(!r.meta["mail_options"].to_string().contains("BODY"));

    // What Python reads from the copy is what it reads from the original.
    let (want, seen) = (python_reads(&original), python_reads(&r.content));
    assert_eq!(seen, want, "the copy reads differently");
    let parts = want["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 5, "{want}");
    assert_eq!(parts[2]["filename"], "Bericht März.bin");
    assert_eq!(parts[3]["subject"], "Innere Größe");
    assert_eq!(want["subject"], "Große Anlage ✓");

    // Octet for octet what the whole-buffer form makes of the stored message (Tern's
    // Received field, then the original).
    let (received, rest) = split_received(&r.content);
    let mut stored = received.into_bytes();
    stored.extend_from_slice(&original);
    let whole = tern_convert::downgrade_8bit(&stored).unwrap();
    let (_, whole_rest) = split_received(&whole);
    assert!(
        rest == whole_rest,
        "the streaming copy differs from the whole-buffer one"
    );

    let converted = tern.wait_for_events(6041, 1, Duration::from_secs(10));
    assert_eq!(converted[0]["spilled"], "true", "{}", converted[0]);
    assert_eq!(converted[0]["parts"], "3", "{}", converted[0]);
    assert!(
        tern.spool_files("tmp").is_empty(),
        "{:?}",
        tern.spool_files("tmp")
    );
}
