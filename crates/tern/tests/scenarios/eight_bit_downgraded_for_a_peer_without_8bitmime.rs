//! 8-bit mail for a next hop without 8BITMIME (aiosmtpd started with `no-8bitmime`) is
//! converted to 7 bit and delivered, not deferred: a UTF-8 text message, a multipart with
//! an 8-bit text part and an 8-bit attachment with an 8-bit file name, a message whose
//! only 8-bit octets are in its Subject and From display name, and an undeclared 8-bit
//! message without MIME headers. Each arrives 7-bit, without `BODY=8BITMIME`, and
//! Python's `email` package reads from it the same decoded texts, attachment octets,
//! file name and header text as from the original. A message that cannot be converted
//! (an 8-bit address needs SMTPUTF8) stays queued with event 4007 and its reason, and
//! goes unchanged once the peer offers 8BITMIME.

use std::time::Duration;

use serde_json::Value;

use crate::common::free_port;
use crate::common::peers::{DnsServer, SmtpPeer, delivering, send_with};

/// Python's reading of a message: every part in tree order (type, decoded payload as
/// hex, file name), the decoded Subject and the From display names.
const READ: &str = r#"
import email, email.policy, json, sys
m = email.message_from_bytes(open(sys.argv[1], "rb").read(), policy=email.policy.default)
parts = []
for p in m.walk():
    if p.is_multipart():
        parts.append({"type": p.get_content_type()})
    else:
        parts.append({"type": p.get_content_type(),
                      "payload": (p.get_payload(decode=True) or b"").hex(),
                      "filename": p.get_filename()})
fix = lambda s: str(s).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
print(json.dumps({
    "case": str(m["X-Case"]),
    "subject": fix(m["Subject"]),
    "from": [fix(a.display_name) for a in m["From"].addresses],
    "parts": parts,
}))
"#;

fn python_reads(content: &[u8]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.eml");
    std::fs::write(&path, content).unwrap();
    let out = crate::common::python(READ, &[path.to_str().unwrap()], Duration::from_secs(30));
    assert!(
        out.status.success(),
        "python could not read the message: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(content)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Text payloads compared with every line end as CRLF (how the original would have
/// travelled); the others octet for octet.
fn same_parts(case: &str, original: &Value, received: &Value) {
    let (a, b) = (
        original["parts"].as_array().unwrap(),
        received["parts"].as_array().unwrap(),
    );
    assert_eq!(a.len(), b.len(), "{case}: parts {original} vs {received}");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x["type"], y["type"], "{case}");
        assert_eq!(x["filename"], y["filename"], "{case}");
        let (px, py) = (
            x["payload"].as_str().unwrap_or_default(),
            y["payload"].as_str().unwrap_or_default(),
        );
        if x["type"].as_str().unwrap().starts_with("text/") {
            let norm = |h: &str| h.replace("0d0a", "\n").replace("0a", "\n");
            assert_eq!(norm(px), norm(py), "{case}: text payload");
        } else {
            assert_eq!(px, py, "{case}: payload");
        }
    }
    assert_eq!(original["subject"], received["subject"], "{case}: Subject");
    assert_eq!(original["from"], received["from"], "{case}: From");
}

fn text_message() -> Vec<u8> {
    "X-Case: text\r\nFrom: <s@client.test>\r\nTo: <a@old.test>\r\nSubject: text\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nCafé crème, naïve façade.\r\nZweite Zeile: Grüße\r\n.leading dot\r\n"
        .as_bytes()
        .to_vec()
}

/// Every octet except CR and LF, then the 8-bit half again: binary-ish, DATA-safe.
fn attachment_bytes() -> Vec<u8> {
    let mut v: Vec<u8> = (0..=255u8).filter(|b| *b != b'\r' && *b != b'\n').collect();
    v.extend(0x80..=0xffu8);
    v
}

fn multipart_message() -> Vec<u8> {
    let mut m = "X-Case: multipart\r\nFrom: <s@client.test>\r\nTo: <a@old.test>\r\nSubject: multipart\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"=_part\"\r\n\r\n--=_part\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nDer Bericht für März liegt bei.\r\n\r\n--=_part\r\nContent-Type: application/octet-stream; name=\"Bericht März.bin\"\r\nContent-Disposition: attachment; filename=\"Bericht März.bin\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        .as_bytes()
        .to_vec();
    m.extend(attachment_bytes());
    m.extend_from_slice(b"\r\n--=_part--\r\n");
    m
}

fn subject_message() -> Vec<u8> {
    "X-Case: subject\r\nFrom: Jörg Müller <joerg@client.test>\r\nTo: <a@old.test>\r\nSubject: Grüße aus Köln — ✓\r\n\r\nThe body is plain ASCII.\r\n"
        .as_bytes()
        .to_vec()
}

fn undeclared_message() -> Vec<u8> {
    "X-Case: undeclared\r\nFrom: <s@client.test>\r\nSubject: undeclared\r\n\r\nno BODY=8BITMIME, no MIME: déjà vu\r\n"
        .as_bytes()
        .to_vec()
}

fn unconvertible_message() -> Vec<u8> {
    "X-Case: unconvertible\r\nFrom: <s@client.test>\r\nTo: jörg@exämple.test\r\nSubject: x\r\n\r\nné\r\n"
        .as_bytes()
        .to_vec()
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn eight_bit_messages_are_converted_to_7bit_and_delivered() {
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    dns.set_mx("old.test", &[(10, "mx.old.test")], 300);
    dns.set_a("mx.old.test", "127.0.0.2".parse().unwrap(), 300);
    let mut old = SmtpPeer::start_on("127.0.0.2", port, &["no-8bitmime"]);
    let tern = delivering(&dns, port, "").start();

    let cases = [
        (
            "text",
            text_message(),
            "MAIL FROM:<s@client.test> BODY=8BITMIME",
        ),
        (
            "multipart",
            multipart_message(),
            "MAIL FROM:<s@client.test> BODY=8BITMIME",
        ),
        (
            "subject",
            subject_message(),
            "MAIL FROM:<s@client.test> BODY=8BITMIME",
        ),
        (
            "undeclared",
            undeclared_message(),
            "MAIL FROM:<s@client.test>",
        ),
    ];
    for (_, content, mail) in &cases {
        send_with(tern.addr(), mail, &["RCPT TO:<a@old.test>"], content);
    }
    let kept = unconvertible_message();
    let kept_id = send_with(
        tern.addr(),
        "MAIL FROM:<s@client.test> BODY=8BITMIME",
        &["RCPT TO:<b@old.test>"],
        &kept,
    );

    let got = old.wait_for(4, Duration::from_secs(30));
    assert_eq!(got.len(), 4, "only the convertible messages arrive");
    for r in &got {
        assert!(
            r.content.is_ascii(),
            "an 8-bit octet reached the 7-bit peer:\n{}",
            String::from_utf8_lossy(&r.content)
        );
        let options = r.meta["mail_options"].to_string();
        assert!(!options.contains("BODY"), "{options}");
        let received = python_reads(&r.content);
        let case = received["case"].as_str().unwrap().to_string();
        let (_, original, _) = cases
            .iter()
            .find(|(name, _, _)| *name == case)
            .unwrap_or_else(|| panic!("unknown case {case}"));
        let original = python_reads(original);
        same_parts(&case, &original, &received);
        // And against what the test wrote, not only against Python's first reading.
        let parts = received["parts"].as_array().unwrap();
        match case.as_str() {
            "text" => assert_eq!(
                parts[0]["payload"],
                hex(
                    "Café crème, naïve façade.\r\nZweite Zeile: Grüße\r\n.leading dot\r\n"
                        .as_bytes()
                )
            ),
            "multipart" => {
                assert_eq!(parts.len(), 3);
                assert_eq!(
                    parts[1]["payload"],
                    hex("Der Bericht für März liegt bei.\r\n".as_bytes())
                );
                assert_eq!(parts[2]["payload"], hex(&attachment_bytes()));
                assert_eq!(parts[2]["filename"], "Bericht März.bin");
            }
            "subject" => {
                assert_eq!(received["subject"], "Grüße aus Köln — ✓");
                assert_eq!(received["from"][0], "Jörg Müller");
            }
            "undeclared" => assert_eq!(
                parts[0]["payload"],
                hex("no BODY=8BITMIME, no MIME: déjà vu\r\n".as_bytes())
            ),
            other => panic!("unexpected case {other}"),
        }
    }

    let converted = tern.wait_for_events(6041, 4, Duration::from_secs(10));
    assert!(converted.iter().all(|e| e["next_hop"] == "mx:old.test"));
    let held = tern.wait_for_events(4007, 1, Duration::from_secs(20));
    assert_eq!(held[0]["queue_id"], kept_id.as_str());
    assert!(
        held[0]["reason"].as_str().unwrap().contains("SMTPUTF8"),
        "{}",
        held[0]
    );
    let queued = tern.queue_json(&[]);
    assert_eq!(
        queued.len(),
        1,
        "only the unconvertible message waits: {queued:?}"
    );
    assert_eq!(queued[0]["id"], kept_id.as_str());

    // The peer learns 8BITMIME: the kept message goes unchanged.
    old.restart(&["accept"]);
    let got = old.wait_for(5, Duration::from_secs(30));
    let late: Vec<_> = got.iter().filter(|r| r.content.ends_with(&kept)).collect();
    assert_eq!(late.len(), 1, "the kept message arrives once, as stored");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
