//! Messages larger than every in-memory bound (the 64 KiB delivery piece, the 128 KiB
//! head a loaded message keeps, the 1 MiB conversion bound) are streamed from the spool:
//! a 3 MB message full of lines that need dot-stuffing, with CRLFs falling on every
//! piece boundary, reaches an 8BITMIME peer byte-identical (after Tern's Received
//! header); a 3 MB 8-bit message for a peer without 8BITMIME is converted through a
//! spill file (event 6041 says `spilled`), arrives 7-bit with the same decoded text, and
//! leaves nothing in the spool's `tmp/`.

use std::time::Duration;

use crate::common::peers::{DnsServer, SmtpPeer, delivering, send_with};
use crate::common::{free_port, split_received};

/// About `size` octets of lines of varying length, many starting with a dot, so that
/// line ends and dots fall on both sides of every 64 KiB boundary.
fn dotted(size: usize) -> Vec<u8> {
    let mut m = b"From: <s@client.test>\r\nTo: <a@new.test>\r\nSubject: big\r\n\r\n".to_vec();
    let mut i = 0usize;
    while m.len() < size {
        let len = 1 + (i * 7919) % 97;
        if i.is_multiple_of(3) {
            m.push(b'.');
        }
        m.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, len));
        m.extend_from_slice(b"\r\n");
        i += 1;
    }
    m
}

fn eight_bit(size: usize) -> (Vec<u8>, Vec<u8>) {
    let mut text = Vec::new();
    while text.len() < size {
        text.extend_from_slice("Grüße aus Köln, ça va très bien. Zeile für Zeile.\r\n".as_bytes());
    }
    let mut m = b"From: <s@client.test>\r\nTo: <b@old.test>\r\nSubject: big 8bit\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n".to_vec();
    m.extend_from_slice(&text);
    (m, text)
}

const DECODE: &str = r#"
import email, email.policy, sys
m = email.message_from_bytes(open(sys.argv[1], "rb").read(), policy=email.policy.default)
sys.stdout.buffer.write(m.get_payload(decode=True))
"#;

#[test]
fn large_messages_are_streamed_and_arrive_byte_identical() {
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    dns.set_mx("new.test", &[(10, "mx.new.test")], 300);
    dns.set_a("mx.new.test", "127.0.0.2".parse().unwrap(), 300);
    dns.set_mx("old.test", &[(10, "mx.old.test")], 300);
    dns.set_a("mx.old.test", "127.0.0.3".parse().unwrap(), 300);
    let new = SmtpPeer::start_on("127.0.0.2", port, &["accept"]);
    let old = SmtpPeer::start_on("127.0.0.3", port, &["no-8bitmime"]);
    let tern = delivering(&dns, port, "").start();

    let big = dotted(3_000_000);
    send_with(
        tern.addr(),
        "MAIL FROM:<s@client.test>",
        &["RCPT TO:<a@new.test>"],
        &big,
    );
    let (eight, text) = eight_bit(3_000_000);
    send_with(
        tern.addr(),
        "MAIL FROM:<s@client.test> BODY=8BITMIME",
        &["RCPT TO:<b@old.test>"],
        &eight,
    );

    let got = new.wait_for(1, Duration::from_secs(60));
    let (_, rest) = split_received(&got[0].content);
    assert!(rest == big.as_slice(), "the 3 MB message arrived changed");

    let got = old.wait_for(1, Duration::from_secs(60));
    let r = &got[0];
    assert!(
        r.content.is_ascii(),
        "an 8-bit octet reached the 7-bit peer"
    );
    assert!(!r.meta["mail_options"].to_string().contains("BODY"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.eml");
    std::fs::write(&path, &r.content).unwrap();
    let out = crate::common::python(DECODE, &[path.to_str().unwrap()], Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == text, "the decoded text differs");

    let converted = tern.wait_for_events(6041, 1, Duration::from_secs(10));
    assert_eq!(converted[0]["spilled"], "true", "{}", converted[0]);
    let converted_size: u64 = converted[0]["converted_size"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(converted_size > 1024 * 1024);
    // The spill file had no name and is gone with its transaction.
    assert!(
        tern.spool_files("tmp").is_empty(),
        "{:?}",
        tern.spool_files("tmp")
    );
}
