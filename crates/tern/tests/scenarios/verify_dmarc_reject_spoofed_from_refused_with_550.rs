//! DMARC `p=reject`: a spoofed From of a `p=reject` domain (SPF of the domain does not
//! list the client, no signature) is refused at the end of DATA with `550 5.7.1` naming
//! DMARC and the domain, and nothing is queued; the refusal is in events 2152 and 2151
//! (tracked, action `reject`). The same message from a trusted forwarder, or From a
//! domain listed in `exceptions`, is accepted and marked `dmarc=fail`. `p=none` is
//! accepted and marked.

use std::time::Duration;

use crate::common::peers::DnsServer;
use crate::common::verify::{
    CLIENT, first_field, message, publish_txt, result_of, send_from, stored, verifying,
};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn spoofed_from_of_a_reject_domain_gets_550_and_nothing_is_queued() {
    let mut dns = DnsServer::start();
    publish_txt(&mut dns, "bank.test", "v=spf1 ip4:192.0.2.1 -all");
    publish_txt(
        &mut dns,
        "_dmarc.bank.test",
        "v=DMARC1; p=reject; rua=mailto:d@bank.test",
    );
    publish_txt(&mut dns, "_dmarc.excepted.test", "v=DMARC1; p=reject");
    publish_txt(&mut dns, "_dmarc.lax.test", "v=DMARC1; p=none");
    let tern = verifying(
        &dns,
        "trusted_forwarders = [\"127.0.0.6\"]\nexceptions = [\"excepted.test\"]\n",
    )
    .start();

    let spoof = message("ceo@bank.test", "spoof");
    let sent = send_from(&tern, CLIENT, "ceo@bank.test", &spoof);
    assert_eq!(sent.reply.code, 550, "{}", sent.reply.text());
    let text = sent.reply.text();
    assert!(
        text.contains("5.7.1") && text.contains("DMARC") && text.contains("bank.test"),
        "{text}"
    );
    assert!(tern.spooled().is_empty(), "nothing queued");
    let refused = tern.wait_for_events(2152, 1, Duration::from_secs(10));
    assert_eq!(refused[0]["reply"], "550 5.7.1", "{refused:?}");
    let verdict = tern.wait_for_events(2151, 1, Duration::from_secs(10));
    assert_eq!(verdict[0]["action"], "reject", "{verdict:?}");
    assert_eq!(verdict[0]["dmarc"], "fail", "{verdict:?}");

    // A trusted forwarder's copy is only marked.
    let sent = send_from(&tern, "127.0.0.6", "ceo@bank.test", &spoof);
    let id = sent
        .reply
        .queued_id()
        .unwrap_or_else(|| panic!("{}", sent.reply.text()));
    let ar = first_field(&stored(&tern, &id));
    assert_eq!(result_of(&ar, "dmarc").as_deref(), Some("fail"), "{ar}");
    assert!(ar.contains("p=REJECT"), "{ar}");

    // An exception is only marked.
    let sent = send_from(
        &tern,
        CLIENT,
        "x@excepted.test",
        &message("x@excepted.test", "exc"),
    );
    let id = sent
        .reply
        .queued_id()
        .unwrap_or_else(|| panic!("{}", sent.reply.text()));
    let ar = first_field(&stored(&tern, &id));
    assert_eq!(result_of(&ar, "dmarc").as_deref(), Some("fail"), "{ar}");

    // p=none: accepted and marked.
    let sent = send_from(&tern, CLIENT, "x@lax.test", &message("x@lax.test", "lax"));
    let id = sent
        .reply
        .queued_id()
        .unwrap_or_else(|| panic!("{}", sent.reply.text()));
    let ar = first_field(&stored(&tern, &id));
    assert_eq!(result_of(&ar, "dmarc").as_deref(), Some("fail"), "{ar}");
    assert!(ar.contains("p=NONE"), "{ar}");
}
