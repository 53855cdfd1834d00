//! DMARC `p=quarantine` with `dmarc_quarantine = "hold"`: the message is accepted, marked
//! (`X-Tern-Quarantine`), and parked in the hold queue at its first routing (event 4009)
//! instead of being delivered; `tern queue release` then delivers it, and it is not held
//! again. A message passing DMARC is delivered at once.

use std::time::Duration;

use crate::common::peers::{DnsServer, SmtpPeer};
use crate::common::run;
use crate::common::verify::{AUTHSERV, CLIENT, message, publish_txt, send_from};
use crate::common::{Listener, Setup};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn quarantined_mail_waits_in_hold_until_released() {
    let mut dns = DnsServer::start();
    publish_txt(&mut dns, "_dmarc.q.test", "v=DMARC1; p=quarantine");
    publish_txt(&mut dns, "ok.test", &format!("v=spf1 ip4:{CLIENT} -all"));
    publish_txt(&mut dns, "_dmarc.ok.test", "v=DMARC1; p=quarantine");
    let peer = SmtpPeer::start("127.0.0.3", &["accept"]);
    let tern = Setup::new()
        .listeners(vec![Listener::new("mx", "127.0.0.1".parse().unwrap())])
        .dns(&dns.dns_section())
        .queue("[queue]\ndeliver = true\nmin_backoff_secs = 1\nmax_backoff_secs = 1\n")
        .section("[relay]\ndomains = [\"dest.test\"]\nnetworks = [\"127.0.0.1/32\"]\n")
        .section(&format!(
            "[verify]\nenabled = true\nauthserv_id = \"{AUTHSERV}\"\ndmarc_quarantine = \"hold\"\n"
        ))
        .section(&format!(
            "[[route]]\ndomains = [\"dest.test\"]\ntransport = \"smtp\"\nhosts = [\"{}\"]\n",
            peer.addr
        ))
        .start();

    let sent = send_from(
        &tern,
        CLIENT,
        "x@other.test",
        &message("x@q.test", "quarantined"),
    );
    let id = sent
        .reply
        .queued_id()
        .unwrap_or_else(|| panic!("{}", sent.reply.text()));
    let held = tern.wait_for_events(4009, 1, Duration::from_secs(30));
    assert_eq!(held[0]["queue_id"], id.as_str(), "{held:?}");
    assert!(tern.spool_files("hold").contains(&id), "in hold/");

    // Passing DMARC (SPF aligned): delivered at once.
    let sent = send_from(&tern, CLIENT, "x@ok.test", &message("x@ok.test", "fine"));
    assert_eq!(sent.reply.code, 250, "{}", sent.reply.text());
    let got = peer.wait_for(1, Duration::from_secs(30));
    assert_eq!(got.len(), 1);
    assert!(!String::from_utf8_lossy(&got[0].content).contains("X-Tern-Quarantine"));

    // Released: delivered, with its mark, and not held again.
    let out = run(
        &mut tern.tern_command(&["queue", "release", &id]),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = peer.wait_for(2, Duration::from_secs(30));
    assert_eq!(got.len(), 2, "the released message was delivered");
    let released = got
        .iter()
        .map(|r| String::from_utf8_lossy(&r.content).to_string())
        .find(|t| t.contains("Subject: quarantined"))
        .expect("the quarantined message");
    assert!(
        released.contains("X-Tern-Quarantine: dmarc; policy.domain=q.test"),
        "{released}"
    );
    assert_eq!(tern.events_with_id(4009).len(), 1, "held once");
}
