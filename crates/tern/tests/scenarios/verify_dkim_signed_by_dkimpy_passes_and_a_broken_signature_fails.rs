//! Mail signed by an independent signer (dkimpy's `dkim.sign`, RSA 2048, relaxed) from a
//! client outside the relay networks is verified: the stored message starts with Tern's
//! Authentication-Results (`dkim=pass header.d=... header.s=...`, DMARC passing through
//! the aligned signature, `arc=none`), above Tern's Received. The same message with one
//! body byte changed is stored with `dkim=fail` (DMARC `p=none` so it is still
//! accepted). A 512-bit RSA key fails. Each verdict is in the tracking log (`tern track`)
//! and counted in the metrics.

use std::time::Duration;

use crate::common::peers::DnsServer;
use crate::common::verify::{
    AUTHSERV, CLIENT, dkimpy_sign, first_field, message, publish_txt, result_of, rsa_key,
    send_from, stored, verifying,
};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn dkimpy_signature_passes_and_a_changed_byte_fails() {
    let keys = tempfile::tempdir().unwrap();
    let (key, p) = rsa_key(keys.path(), 2048);
    let (weak, weak_p) = rsa_key(keys.path(), 512);
    let mut dns = DnsServer::start();
    publish_txt(
        &mut dns,
        "sel._domainkey.signed.test",
        &format!("v=DKIM1; k=rsa; p={p}"),
    );
    publish_txt(
        &mut dns,
        "weak._domainkey.signed.test",
        &format!("v=DKIM1; k=rsa; p={weak_p}"),
    );
    publish_txt(&mut dns, "_dmarc.signed.test", "v=DMARC1; p=none");
    let tern = verifying(&dns, "").start();

    let good = dkimpy_sign(
        &message("a@signed.test", "good"),
        "sel",
        "signed.test",
        &key,
    );
    let sent = send_from(&tern, CLIENT, "bounce@other.test", &good);
    let id = sent
        .reply
        .queued_id()
        .unwrap_or_else(|| panic!("{}", sent.reply.text()));
    let content = stored(&tern, &id);
    let ar = first_field(&content);
    assert!(
        ar.starts_with(&format!("Authentication-Results: {AUTHSERV};")),
        "{ar}"
    );
    assert_eq!(result_of(&ar, "dkim").as_deref(), Some("pass"), "{ar}");
    assert!(ar.contains("header.d=signed.test header.s=sel"), "{ar}");
    assert_eq!(result_of(&ar, "dmarc").as_deref(), Some("pass"), "{ar}");
    assert_eq!(result_of(&ar, "arc").as_deref(), Some("none"), "{ar}");
    // Tern's Received follows, then the content byte for byte.
    let text = String::from_utf8_lossy(&content).to_string();
    let after_ar = text.split_once("\r\nReceived: ").map(|(a, _)| a.len());
    assert!(after_ar.is_some(), "{text}");
    assert!(content.ends_with(&good), "content kept byte for byte");

    let mut broken = good.clone();
    let at = broken.len() - 4;
    broken[at] = b'X';
    let sent = send_from(&tern, CLIENT, "bounce@other.test", &broken);
    let bad_id = sent
        .reply
        .queued_id()
        .unwrap_or_else(|| panic!("{}", sent.reply.text()));
    let ar = first_field(&stored(&tern, &bad_id));
    assert_eq!(result_of(&ar, "dkim").as_deref(), Some("fail"), "{ar}");
    assert_eq!(result_of(&ar, "dmarc").as_deref(), Some("fail"), "{ar}");

    let short = dkimpy_sign(
        &message("a@signed.test", "weak"),
        "weak",
        "signed.test",
        &weak,
    );
    let sent = send_from(&tern, CLIENT, "bounce@other.test", &short);
    let weak_id = sent
        .reply
        .queued_id()
        .unwrap_or_else(|| panic!("{}", sent.reply.text()));
    let ar = first_field(&stored(&tern, &weak_id));
    assert_ne!(
        result_of(&ar, "dkim").as_deref(),
        Some("pass"),
        "512-bit RSA: {ar}"
    );

    // The verdicts are tracked.
    let verdicts = tern.wait_for_events(2151, 3, Duration::from_secs(10));
    assert!(
        verdicts
            .iter()
            .any(|e| e["queue_id"] == id.as_str() && e["dkim"] == "pass"),
        "{verdicts:?}"
    );
    let out = crate::common::run(
        &mut tern.tern_command(&["track", &bad_id]),
        Duration::from_secs(20),
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("verified") && shown.contains("fail"),
        "tern track: {shown}"
    );
    let metrics = crate::common::admin::Admin::of(&tern).get("/metrics").body;
    let line = "tern_verify_results_total{method=\"dkim\",result=\"pass\"} 1";
    assert!(metrics.contains(line), "{line} in\n{metrics}");
}
