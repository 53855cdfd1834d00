//! DMARC `p=quarantine` with `dmarc_quarantine = "header"` (the default): the message is
//! accepted, its Authentication-Results says `dmarc=fail (p=QUARANTINE dis=QUARANTINE)`
//! and an `X-Tern-Quarantine: dmarc; policy.domain=<domain>` field follows it for a
//! filter downstream. A forged `X-Tern-Quarantine` in arriving mail is removed. With
//! `pct=0` the policy is sampled out: no quarantine field, `dis=NONE`.

use crate::common::peers::DnsServer;
use crate::common::verify::{
    CLIENT, first_field, message, publish_txt, result_of, send_from, stored, verifying,
};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn quarantine_policy_is_marked_for_a_filter_downstream() {
    let mut dns = DnsServer::start();
    publish_txt(&mut dns, "_dmarc.q.test", "v=DMARC1; p=quarantine");
    publish_txt(
        &mut dns,
        "_dmarc.sampled.test",
        "v=DMARC1; p=quarantine; pct=0",
    );
    let tern = verifying(&dns, "dmarc_quarantine = \"header\"\n").start();

    let sent = send_from(&tern, CLIENT, "x@other.test", &message("x@q.test", "q"));
    let id = sent
        .reply
        .queued_id()
        .unwrap_or_else(|| panic!("{}", sent.reply.text()));
    let content = stored(&tern, &id);
    let ar = first_field(&content);
    assert_eq!(result_of(&ar, "dmarc").as_deref(), Some("fail"), "{ar}");
    assert!(ar.contains("dis=QUARANTINE"), "{ar}");
    let text = String::from_utf8_lossy(&content).to_string();
    let second = text
        .split("\r\n")
        .find(|l| l.starts_with("X-Tern-Quarantine:"));
    assert_eq!(
        second,
        Some("X-Tern-Quarantine: dmarc; policy.domain=q.test"),
        "{text}"
    );

    // A forged marker is removed; pct=0 samples the policy out.
    let mut forged = b"X-Tern-Quarantine: none\r\n".to_vec();
    forged.extend_from_slice(&message("x@sampled.test", "s"));
    let sent = send_from(&tern, CLIENT, "x@other.test", &forged);
    let id = sent
        .reply
        .queued_id()
        .unwrap_or_else(|| panic!("{}", sent.reply.text()));
    let content = stored(&tern, &id);
    let text = String::from_utf8_lossy(&content).to_string();
    assert!(!text.contains("X-Tern-Quarantine"), "{text}");
    let ar = first_field(&content);
    assert!(
        ar.contains("dis=NONE") && ar.contains("sampled out"),
        "{ar}"
    );
}
