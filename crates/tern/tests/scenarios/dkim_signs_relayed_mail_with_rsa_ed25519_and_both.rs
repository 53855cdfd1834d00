//! Mail from a relay-network client is DKIM-signed on its way out and the signatures
//! verify with an independent verifier (dkimpy, answering from the records `tern dkim
//! generate` printed): a 7-bit message From an RSA domain, a multipart From an Ed25519
//! domain, a multipart From a domain with both keys (dual signatures, both valid),
//! relaxed/relaxed, From oversigned. Mail From a domain without a key, or from a
//! subdomain of a signing domain without `subdomains = true`, arrives unsigned. Each
//! loaded key has event 4101 and the signatures are counted in the metrics.

use std::time::Duration;

use crate::common::dkim::{assert_signed_by, generate, section, verify};
use crate::common::free_port;
use crate::common::peers::{DnsServer, SmtpPeer, delivering, send_with};

fn message(case: &str, from: &str, multipart: bool) -> Vec<u8> {
    let mut m = format!(
        "X-Case: {case}\r\nFrom: Sender <{from}>\r\nTo: <a@dest.test>\r\nSubject: case {case}\r\nDate: Mon, 2 Feb 2026 10:00:00 +0000\r\nMessage-ID: <{case}@client.test>\r\nMIME-Version: 1.0\r\n"
    );
    if multipart {
        m.push_str("Content-Type: multipart/mixed; boundary=\"=_b\"\r\n\r\npreamble\r\n--=_b\r\nContent-Type: text/plain\r\n\r\nHello,  with   spaces   \r\n\r\n\r\n--=_b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\r\n--=_b--\r\n");
    } else {
        m.push_str("Content-Type: text/plain\r\n\r\nA plain 7-bit body.\r\n.leading dot\r\n\r\n");
    }
    m.into_bytes()
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn relayed_mail_is_signed_and_verifies_with_dkimpy() {
    let keys = tempfile::tempdir().unwrap();
    let rsa = generate(keys.path(), "rsa.test", "r1", "rsa");
    let ed = generate(keys.path(), "ed.test", "e1", "ed25519");
    let dual_rsa = generate(keys.path(), "dual.test", "r2026", "rsa");
    let dual_ed = generate(keys.path(), "dual.test", "e2026", "ed25519");

    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    dns.set_mx("dest.test", &[(10, "mx.dest.test")], 300);
    dns.set_a("mx.dest.test", "127.0.0.2".parse().unwrap(), 300);
    let sink = SmtpPeer::start_on("127.0.0.2", port, &[]);
    let tern = delivering(&dns, port, "")
        .section(&section(&[&rsa, &ed, &dual_rsa, &dual_ed], ""))
        .start();
    let loaded = tern.wait_for_events(4101, 4, Duration::from_secs(10));
    assert!(
        loaded
            .iter()
            .any(|e| e["selector"] == "r1" && e["bits"].to_string().trim_matches('"') == "2048"),
        "{loaded:?}"
    );

    let cases = [
        ("rsa", message("rsa", "s@rsa.test", false)),
        ("ed", message("ed", "s@ed.test", true)),
        ("dual", message("dual", "s@Dual.Test", true)),
        ("sub", message("sub", "s@sub.dual.test", false)),
        ("other", message("other", "s@other.test", false)),
    ];
    for (_, content) in &cases {
        send_with(
            tern.addr(),
            "MAIL FROM:<s@client.test>",
            &["RCPT TO:<a@dest.test>"],
            content,
        );
    }
    let got = sink.wait_for(cases.len(), Duration::from_secs(30));
    assert_eq!(got.len(), cases.len());
    for r in &got {
        let text = String::from_utf8_lossy(&r.content).to_string();
        let case = text
            .lines()
            .find_map(|l| l.strip_prefix("X-Case: "))
            .unwrap_or_else(|| panic!("no case in {text}"))
            .to_string();
        let original = &cases.iter().find(|(c, _)| *c == case).unwrap().1;
        // The content after the signature fields is what was sent.
        assert!(r.content.ends_with(original), "{case}: content changed");
        match case.as_str() {
            "rsa" => assert_signed_by(&r.content, &[&rsa], "rsa"),
            "ed" => assert_signed_by(&r.content, &[&ed], "ed"),
            "dual" => {
                assert_signed_by(&r.content, &[&dual_rsa, &dual_ed], "dual");
                for sig in verify(&r.content, &[&dual_rsa, &dual_ed]) {
                    let h = sig["h"].as_str().unwrap().to_ascii_lowercase();
                    assert_eq!(
                        h.split(':').filter(|x| *x == "from").count(),
                        2,
                        "From oversigned: {h}"
                    );
                    for f in ["to", "subject", "date", "message-id"] {
                        assert!(h.split(':').any(|x| x == f), "{f} signed: {h}");
                    }
                }
            }
            "sub" | "other" => assert!(
                !text.to_ascii_lowercase().contains("dkim-signature"),
                "{case} must not be signed: {text}"
            ),
            other => panic!("unknown case {other}"),
        }
    }
    // Counted by algorithm: RSA for rsa.test and dual.test, Ed25519 for ed.test and dual.test.
    let metrics = crate::common::admin::Admin::of(&tern).get("/metrics").body;
    for (alg, n) in [("rsa-sha256", 2), ("ed25519-sha256", 2)] {
        let line =
            format!("tern_dkim_signatures_total{{algorithm=\"{alg}\",result=\"signed\"}} {n}");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
}
