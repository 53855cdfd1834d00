//! A cached MTA-STS policy survives a restart: fetched once under `enforce`, then Tern
//! and the policy server are stopped; the restarted Tern reads the policy back from
//! `<data_dir>/mta-sts/` and still refuses the unlisted MX host (4.7.5, event 4181),
//! without any fetch (the server is down).

use std::time::Duration;

use crate::common::mtasts::{PolicyServer, TestCa, policy, publish};
use crate::common::peers::{DnsServer, SmtpPeer, delivering_with};
use crate::common::{free_port, send_one, simple_message};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn enforce_is_still_applied_from_the_cache_after_a_restart() {
    let ca = TestCa::new();
    let mut dns = DnsServer::start();
    let sts_ip = "127.0.1.55";
    let mut server = PolicyServer::start(
        sts_ip,
        &ca,
        &["kept.test"],
        &policy("enforce", &["mx.kept.test"], 86400),
    );
    publish(&mut dns, "kept.test", "1", sts_ip.parse().unwrap());
    let port = free_port("127.0.1.56".parse().unwrap());
    let (cert, key) = ca.leaf(&["mx.kept.test"], false);
    let listed = SmtpPeer::start_on_with_tls("127.0.1.56", port, &cert, &key);
    let (cert, key) = ca.leaf(&["evil.kept.test"], false);
    let rogue = SmtpPeer::start_on_with_tls("127.0.1.57", port, &cert, &key);
    dns.set_a("mx.kept.test", "127.0.1.56".parse().unwrap(), 1);
    dns.set_a("evil.kept.test", "127.0.1.57".parse().unwrap(), 1);
    dns.set_mx("kept.test", &[(10, "mx.kept.test")], 1);
    let mut tern = delivering_with(&dns, port, &ca.delivery_keys(), "")
        .section(&ca.mta_sts_section(2))
        .start();
    send_one(
        tern.addr(),
        "s@client.test",
        &["a@kept.test"],
        &simple_message("1", "x"),
    );
    listed.wait_for(1, Duration::from_secs(30));
    tern.wait_for_events(4151, 1, Duration::from_secs(10));
    assert_eq!(server.requests(), 1);

    tern.stop(Duration::from_secs(20));
    server.stop();
    // An attacker now points the MX at their host.
    dns.set_mx("kept.test", &[(10, "evil.kept.test")], 1);
    tern.restart();
    // The second start's summary (the event log is kept across restarts).
    let loaded = tern.wait_for_events(4154, 2, Duration::from_secs(10));
    assert_eq!(loaded[1]["entries"], "1", "{loaded:?}");
    send_one(
        tern.addr(),
        "s@client.test",
        &["b@kept.test"],
        &simple_message("2", "x"),
    );
    let refused = tern.wait_for_events(4181, 1, Duration::from_secs(30));
    assert!(
        refused[0]["reason"]
            .to_string()
            .contains("does not list MX host evil.kept.test"),
        "{refused:?}"
    );
    assert_eq!(
        rogue.connections().1,
        0,
        "the unlisted MX was never connected to"
    );
    assert_eq!(listed.received().len(), 1);
}
