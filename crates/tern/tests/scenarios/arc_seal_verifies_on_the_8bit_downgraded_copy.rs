//! Sealing happens after the 8BITMIME downgrade, and the chain is validated on the
//! message as received: an 8-bit message carrying an upstream ARC set (dkimpy), relayed
//! to a peer without 8BITMIME (aiosmtpd `no-8bitmime`), arrives 7-bit with Tern's set
//! `i=2; cv=pass`, and dkimpy validates the chain on the converted copy (the newest
//! ARC-Message-Signature, Tern's, covers the copy; the seals cover only ARC fields).
//! Validating the copy instead of the stored form would have given `cv=fail` (the
//! upstream body hash is over the 8-bit body).

use std::time::Duration;

use crate::common::arc::{assert_sealed, section, upstream_seal};
use crate::common::dkim::generate;
use crate::common::free_port;
use crate::common::peers::{DnsServer, SmtpPeer, delivering, send_with};

fn original() -> Vec<u8> {
    "Authentication-Results: upstream.test; spf=pass smtp.mailfrom=j@origin.test\r\nFrom: Jörg <j@origin.test>\r\nTo: <a@dest.test>\r\nSubject: Grüße\r\nDate: Sun, 6 Dec 2026 10:00:00 +0000\r\nMessage-ID: <8bit@origin.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nCafé crème, naïve façade.\r\n"
        .as_bytes()
        .to_vec()
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn the_seal_covers_the_7bit_copy_and_the_chain_still_passes() {
    let keys = tempfile::tempdir().unwrap();
    let up = generate(keys.path(), "upstream.test", "u1", "rsa");
    let ours = generate(keys.path(), "forward.test", "arc", "rsa");
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    dns.set_mx("dest.test", &[(10, "mx.dest.test")], 300);
    dns.set_a("mx.dest.test", "127.0.0.2".parse().unwrap(), 300);
    dns.set_txt(&up.name(), &up.strings, 300);
    let old = SmtpPeer::start_on("127.0.0.2", port, &["no-8bitmime"]);
    let tern = delivering(&dns, port, "")
        .section("[relay]\ndomains = [\"dest.test\"]\nnetworks = [\"127.0.0.9/32\"]\n")
        .section(&section(&ours, ""))
        .start();
    let sealed_upstream = upstream_seal(&original(), &up, "upstream.test");
    send_with(
        tern.addr(),
        "MAIL FROM:<j@origin.test> BODY=8BITMIME",
        &["RCPT TO:<a@dest.test>"],
        &sealed_upstream,
    );
    let got = old.wait_for(1, Duration::from_secs(30));
    let r = &got[0];
    assert!(
        r.content.is_ascii(),
        "an 8-bit octet reached the 7-bit peer"
    );
    assert_sealed(&r.content, &[&up, &ours], 2, "pass", "downgraded");
    tern.wait_for_events(6041, 1, Duration::from_secs(10));
    let sealed = tern.wait_for_events(4113, 1, Duration::from_secs(10));
    assert_eq!(sealed[0]["cv"], "pass", "{sealed:?}");
}
