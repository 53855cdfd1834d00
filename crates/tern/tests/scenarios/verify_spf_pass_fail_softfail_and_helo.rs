//! SPF of MAIL FROM: `pass` for a listed client, `softfail` for `~all` (accepted even
//! with `spf_fail = "reject"`), `fail` for `-all` refused with `550 5.7.23` (RFC 7372)
//! at the end of DATA when `spf_fail = "reject"`; with a null sender the HELO identity
//! is checked (`smtp.helo`). RFC 7208 §4.6.4's limit of two void lookups: two names
//! that do not exist still pass, a third makes the result `permerror`, and an `exists`
//! name (which mail-auth asks for A and then AAAA) counts once.

use crate::common::peers::DnsServer;
use crate::common::verify::{
    CLIENT, first_field, message, publish_txt, result_of, send_from, send_helo_from, stored,
    verifying,
};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn spf_results_are_marked_and_fail_is_refused_when_configured() {
    let mut dns = DnsServer::start();
    publish_txt(&mut dns, "spf.test", &format!("v=spf1 ip4:{CLIENT} -all"));
    publish_txt(&mut dns, "soft.test", "v=spf1 ip4:192.0.2.1 ~all");
    publish_txt(&mut dns, "helo.test", &format!("v=spf1 ip4:{CLIENT} -all"));
    // The nx*.test names do not exist (NXDOMAIN): each `a:` or `exists:` of one is a void
    // lookup, made before the ip4 term that matches.
    publish_txt(
        &mut dns,
        "void2.test",
        &format!("v=spf1 a:nx1.test exists:nx2.test ip4:{CLIENT} -all"),
    );
    publish_txt(
        &mut dns,
        "void3.test",
        &format!("v=spf1 a:nx1.test a:nx2.test a:nx3.test ip4:{CLIENT} -all"),
    );
    let tern = verifying(&dns, "spf_fail = \"reject\"\n").start();

    let sent = send_from(&tern, CLIENT, "a@spf.test", &message("a@spf.test", "pass"));
    let id = sent
        .reply
        .queued_id()
        .unwrap_or_else(|| panic!("{}", sent.reply.text()));
    let ar = first_field(&stored(&tern, &id));
    assert_eq!(result_of(&ar, "spf").as_deref(), Some("pass"), "{ar}");
    assert!(ar.contains("smtp.mailfrom=spf.test"), "{ar}");

    let sent = send_from(
        &tern,
        CLIENT,
        "a@soft.test",
        &message("a@soft.test", "soft"),
    );
    let id = sent
        .reply
        .queued_id()
        .unwrap_or_else(|| panic!("{}", sent.reply.text()));
    let ar = first_field(&stored(&tern, &id));
    assert_eq!(result_of(&ar, "spf").as_deref(), Some("softfail"), "{ar}");

    let sent = send_from(
        &tern,
        "127.0.0.7",
        "a@spf.test",
        &message("a@spf.test", "fail"),
    );
    assert_eq!(sent.reply.code, 550, "{}", sent.reply.text());
    assert!(
        sent.reply.text().contains("5.7.23"),
        "{}",
        sent.reply.text()
    );

    let sent = send_helo_from(&tern, CLIENT, "helo.test", "", &message("a@x.test", "helo"));
    let id = sent
        .reply
        .queued_id()
        .unwrap_or_else(|| panic!("{}", sent.reply.text()));
    let ar = first_field(&stored(&tern, &id));
    assert_eq!(result_of(&ar, "spf").as_deref(), Some("pass"), "{ar}");
    assert!(ar.contains("smtp.helo=helo.test"), "{ar}");

    for (domain, want) in [("void2.test", "pass"), ("void3.test", "permerror")] {
        let from = format!("a@{domain}");
        let sent = send_from(&tern, CLIENT, &from, &message(&from, domain));
        let id = sent
            .reply
            .queued_id()
            .unwrap_or_else(|| panic!("{domain}: {}", sent.reply.text()));
        let ar = first_field(&stored(&tern, &id));
        assert_eq!(
            result_of(&ar, "spf").as_deref(),
            Some(want),
            "{domain}: {ar}"
        );
    }
}
