//! Mail DKIM-signed by one Tern (`[dkim]`, RSA and Ed25519 keys from `tern dkim
//! generate`) and relayed to a second Tern that verifies (`[verify]`): both signatures
//! pass (RFC 8463 Ed25519 included), DMARC `p=reject` of the signing domain passes
//! through DKIM although SPF is `none`, and the message is accepted.

use std::time::Duration;

use crate::common::dkim::{generate, section};
use crate::common::peers::{DnsServer, delivering, send_with};
use crate::common::verify::{AUTHSERV, first_field, publish_txt, result_of, stored};
use crate::common::{Listener, Setup};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn tern_signatures_verify_at_a_tern_receiver() {
    let keys = tempfile::tempdir().unwrap();
    let rsa = generate(keys.path(), "signer.test", "r1", "rsa");
    let ed = generate(keys.path(), "signer.test", "e1", "ed25519");
    let mut dns = DnsServer::start();
    for k in [&rsa, &ed] {
        dns.set_txt(&k.name(), &k.strings, 300);
    }
    publish_txt(&mut dns, "_dmarc.signer.test", "v=DMARC1; p=reject");
    dns.set_mx("dest.test", &[(10, "mx.dest.test")], 300);
    dns.set_a("mx.dest.test", "127.0.0.2".parse().unwrap(), 300);
    // The receiver: no relay network on loopback, so the signer is verified.
    let receiver = Setup::new()
        .listeners(vec![Listener::new("mx", "127.0.0.2".parse().unwrap())])
        .dns(&dns.dns_section())
        .section("[relay]\ndomains = [\"dest.test\"]\nnetworks = [\"192.0.2.0/24\"]\n")
        .section(&format!(
            "[verify]\nenabled = true\nauthserv_id = \"{AUTHSERV}\"\n"
        ))
        .start();
    let signer = delivering(&dns, receiver.addr().port(), "")
        .section(&section(&[&rsa, &ed], ""))
        .start();
    let content = b"From: <news@signer.test>\r\nTo: <user@dest.test>\r\nSubject: signed by tern\r\nDate: Mon, 2 Feb 2026 10:00:00 +0000\r\nMessage-ID: <t1@signer.test>\r\n\r\nBody.\r\n";
    send_with(
        signer.addr(),
        "MAIL FROM:<news@signer.test>",
        &["RCPT TO:<user@dest.test>"],
        content,
    );
    let got = receiver.wait_for_incoming(1, Duration::from_secs(30));
    assert_eq!(got.len(), 1, "the receiver accepted it");
    let id = got[0].id.to_string();
    let ar = first_field(&stored(&receiver, &id));
    assert_eq!(
        ar.matches("dkim=pass").count(),
        2,
        "both signatures pass: {ar}"
    );
    assert!(
        ar.contains("header.s=e1") && ar.contains("header.s=r1"),
        "{ar}"
    );
    assert_eq!(result_of(&ar, "dmarc").as_deref(), Some("pass"), "{ar}");
}
