//! MTA-STS `testing` (RFC 8461 §5): the mail goes out as the route says (`may`), even
//! where `enforce` would refuse, and the delivery is recorded under `mta-sts-testing`.
//! - t1.test: its only MX is not in the policy → delivered there anyway;
//! - t2.test: its only MX is listed but its certificate names another host (it would
//!   fail `verify`) → delivered there anyway, over TLS.
//!
//! Visible: event 4182 `delivery.tls.policy` (a debug event, always in the tracking log:
//! read with `tern track --json`) with policy `mta-sts-testing` for each, and
//! `tern dest --json` shows `tls.summary` `mta-sts-testing (may)` (each message has a
//! second recipient the peer defers, so the destinations stay listed). The certificate
//! audit's failure goes to the TLS-RPT recorder (`ctx.tls_reports`), which has no
//! visible output in this build; what is checked here is what an administrator sees.

use std::time::Duration;

use crate::common::mtasts::{PolicyServer, TestCa, dest_tls, policy, publish, tracked};
use crate::common::peers::{DnsServer, SmtpPeer, delivering_with};
use crate::common::{free_port, send_one, simple_message};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn testing_delivers_to_unlisted_and_misnamed_hosts_and_records_it() {
    let ca = TestCa::new();
    let mut dns = DnsServer::start();
    let sts_ip = "127.0.1.58";
    let _server = PolicyServer::start(
        sts_ip,
        &ca,
        &["t1.test", "t2.test"],
        &policy("testing", &["mx.t2.test"], 86400),
    );
    publish(&mut dns, "t1.test", "1", sts_ip.parse().unwrap());
    publish(&mut dns, "t2.test", "1", sts_ip.parse().unwrap());
    let port = free_port("127.0.1.59".parse().unwrap());
    // Not in the policy; a valid certificate for its own name.
    let (cert, key) = ca.leaf(&["rogue.t1.test"], false);
    let later = ["tempfail-rcpt=^later@"];
    let unlisted = SmtpPeer::start_on_with_tls_and("127.0.1.59", port, &cert, &key, &later);
    // In the policy; its certificate names another host.
    let (cert, key) = ca.leaf(&["somewhere-else.test"], false);
    let misnamed = SmtpPeer::start_on_with_tls_and("127.0.1.60", port, &cert, &key, &later);
    dns.set_a("rogue.t1.test", "127.0.1.59".parse().unwrap(), 300);
    dns.set_a("mx.t2.test", "127.0.1.60".parse().unwrap(), 300);
    dns.set_mx("t1.test", &[(10, "rogue.t1.test")], 300);
    dns.set_mx("t2.test", &[(10, "mx.t2.test")], 300);
    let tern = delivering_with(&dns, port, &ca.delivery_keys(), "")
        .section(&ca.mta_sts_section(5))
        .start();

    let id1 = send_one(
        tern.addr(),
        "s@client.test",
        &["a@t1.test", "later@t1.test"],
        &simple_message("t1", "x"),
    );
    let id2 = send_one(
        tern.addr(),
        "s@client.test",
        &["b@t2.test", "later@t2.test"],
        &simple_message("t2", "x"),
    );
    for (peer, rcpt) in [(&unlisted, "a@t1.test"), (&misnamed, "b@t2.test")] {
        let got = peer.wait_for(1, Duration::from_secs(30));
        assert_eq!(got[0].rcpts(), [rcpt]);
        assert!(
            got[0].meta["tls"]
                .as_str()
                .unwrap_or_default()
                .starts_with("TLSv1."),
            "STARTTLS used as under may: {:?}",
            got[0].meta
        );
    }
    // The policy was fetched, in testing, once per domain.
    let fetched = tern.wait_for_events(4151, 2, Duration::from_secs(10));
    assert!(
        fetched.iter().all(|e| e["mode"] == "testing"),
        "{fetched:?}"
    );
    // Nothing was refused.
    assert!(tern.events_with_id(4181).is_empty());
    // Event 4182, tracked: each delivery under mta-sts-testing, and why.
    let reason_of = |id: &str, host: &str| {
        let used = tracked(&tern, id, "delivery.tls.policy", Duration::from_secs(20));
        assert_eq!(used[0]["policy"], "mta-sts-testing", "{used:?}");
        assert!(
            used[0]["host"]
                .as_str()
                .is_some_and(|h| h.starts_with(host)),
            "{used:?}"
        );
        used[0]["reason"].as_str().unwrap_or_default().to_string()
    };
    let r1 = reason_of(&id1, "rogue.t1.test");
    assert!(
        r1.contains("MTA-STS testing") && r1.contains("host not in the policy"),
        "{r1}"
    );
    let r2 = reason_of(&id2, "mx.t2.test");
    assert!(
        r2.contains("certificate audited") && !r2.contains("not in the policy"),
        "{r2}"
    );
    // tern dest: the destination's policy.
    for name in ["mx:t1.test", "mx:t2.test"] {
        let tls = dest_tls(&tern, name, Duration::from_secs(20));
        assert!(
            tls["summary"]
                .as_str()
                .is_some_and(|s| s.starts_with("mta-sts-testing")),
            "{name}: {tls}"
        );
        assert_eq!(tls["summary"], "mta-sts-testing (may)", "{name}: {tls}");
    }
}
