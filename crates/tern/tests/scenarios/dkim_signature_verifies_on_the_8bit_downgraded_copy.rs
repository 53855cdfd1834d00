//! Signing happens after the 8BITMIME downgrade: 8-bit mail relayed to a peer without
//! 8BITMIME (aiosmtpd `no-8bitmime`) arrives 7-bit and its signatures (RSA and Ed25519,
//! dual) verify with dkimpy on the converted copy. Two cases: a small UTF-8 text message
//! (the copy in memory) and an 8-bit multipart of 2 MiB (converted streaming into a
//! spill file, which is read once to sign and once to send).

use std::time::Duration;

use crate::common::dkim::{assert_signed_by, generate, section};
use crate::common::free_port;
use crate::common::peers::{DnsServer, SmtpPeer, delivering, send_with};

fn small() -> Vec<u8> {
    "X-Case: small\r\nFrom: Jörg <j@dual.test>\r\nTo: <a@old.test>\r\nSubject: Grüße\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nCafé crème, naïve façade.\r\n"
        .as_bytes()
        .to_vec()
}

fn large() -> Vec<u8> {
    let mut m = "X-Case: large\r\nFrom: <j@dual.test>\r\nTo: <a@old.test>\r\nSubject: big\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"=_b\"\r\n\r\n--=_b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n".as_bytes().to_vec();
    let mut i = 0usize;
    while m.len() < 2 * 1024 * 1024 {
        m.extend_from_slice(format!("Zeile {i} für Zeile, ça va\r\n").as_bytes());
        i += 1;
    }
    m.extend_from_slice(b"--=_b--\r\n");
    m
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn signatures_cover_the_7bit_copy_the_peer_receives() {
    let keys = tempfile::tempdir().unwrap();
    let rsa = generate(keys.path(), "dual.test", "r1", "rsa");
    let ed = generate(keys.path(), "dual.test", "e1", "ed25519");
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    dns.set_mx("old.test", &[(10, "mx.old.test")], 300);
    dns.set_a("mx.old.test", "127.0.0.2".parse().unwrap(), 300);
    let old = SmtpPeer::start_on("127.0.0.2", port, &["no-8bitmime"]);
    let tern = delivering(&dns, port, "")
        .section(&section(&[&rsa, &ed], ""))
        .start();
    for content in [small(), large()] {
        send_with(
            tern.addr(),
            "MAIL FROM:<j@dual.test> BODY=8BITMIME",
            &["RCPT TO:<a@old.test>"],
            &content,
        );
    }
    let got = old.wait_for(2, Duration::from_secs(60));
    assert_eq!(got.len(), 2);
    for r in &got {
        assert!(
            r.content.is_ascii(),
            "an 8-bit octet reached the 7-bit peer"
        );
        let case = if r.content.len() > 1024 * 1024 {
            "large"
        } else {
            "small"
        };
        assert_signed_by(&r.content, &[&rsa, &ed], case);
        // Tampering is caught: the check can fail.
        let mut bad = r.content.clone();
        let at = bad.len() - 10;
        bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
        let verdicts = crate::common::dkim::verify(&bad, &[&rsa, &ed]);
        assert!(
            verdicts.iter().all(|v| v["ok"] == false),
            "{case}: {verdicts:?}"
        );
    }
    let converted = tern.wait_for_events(6041, 2, Duration::from_secs(10));
    assert!(
        converted.iter().any(|e| e["spilled"] == "true"),
        "{converted:?}"
    );
}
