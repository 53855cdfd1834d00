//! A domain announces an MTA-STS policy that cannot be fetched, and nothing is cached
//! (RFC 8461 §5.1): the mail goes out as the route says, and the wait is bounded by
//! `[mta_sts] fetch_timeout_secs` (2 s here).
//! - down.test: nothing listens on its policy host (connection refused);
//! - hung.test: its policy host accepts the request and never answers.
//!
//! Both are delivered well within 15 s, event 4152 (`sts-policy-fetch-error`, fallback
//! `none`) is logged for each, and `tern dest` shows `route (may)` (a second recipient
//! the peer defers keeps each destination listed).

use std::time::{Duration, Instant};

use crate::common::mtasts::{PolicyServer, TestCa, dest_tls, policy, publish};
use crate::common::peers::{DnsServer, SmtpPeer, delivering_with};
use crate::common::{free_port, send_one, simple_message};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn fetch_failure_or_timeout_delivers_within_its_bound() {
    let ca = TestCa::new();
    let mut dns = DnsServer::start();
    // down.test: nothing on 127.0.1.63:443.
    publish(&mut dns, "down.test", "1", "127.0.1.63".parse().unwrap());
    // hung.test: a server that takes the request and never answers.
    let hung_ip = "127.0.1.64";
    let hung = PolicyServer::start(
        hung_ip,
        &ca,
        &["hung.test"],
        &policy("enforce", &["nowhere.test"], 86400),
    );
    hung.hang();
    publish(&mut dns, "hung.test", "1", hung_ip.parse().unwrap());
    let port = free_port("127.0.1.65".parse().unwrap());
    let peer = SmtpPeer::start_on("127.0.1.65", port, &["tempfail-rcpt=^later@"]);
    dns.set_a("mx.fail.test", "127.0.1.65".parse().unwrap(), 300);
    dns.set_mx("down.test", &[(10, "mx.fail.test")], 300);
    dns.set_mx("hung.test", &[(10, "mx.fail.test")], 300);
    let tern = delivering_with(&dns, port, &ca.delivery_keys(), "")
        .section(&ca.mta_sts_section(2))
        .start();

    let started = Instant::now();
    send_one(
        tern.addr(),
        "s@client.test",
        &["a@down.test", "later@down.test"],
        &simple_message("down", "x"),
    );
    send_one(
        tern.addr(),
        "s@client.test",
        &["b@hung.test", "later@hung.test"],
        &simple_message("hung", "x"),
    );
    let got = peer.wait_for(2, Duration::from_secs(15));
    let took = started.elapsed();
    let mut rcpts: Vec<String> = got.iter().flat_map(|r| r.rcpts()).collect();
    rcpts.sort();
    assert_eq!(rcpts, ["a@down.test", "b@hung.test"]);
    assert!(
        took < Duration::from_secs(15),
        "delivered after {took:?}, past the bound"
    );
    assert!(hung.requests() >= 1, "the hung server was asked");

    let failed = tern.wait_for_events(4152, 2, Duration::from_secs(10));
    for (domain, why) in [("down.test", "connecting"), ("hung.test", "within 2s")] {
        let e = failed
            .iter()
            .find(|e| e["domain"] == domain)
            .unwrap_or_else(|| panic!("no 4152 for {domain}: {failed:?}"));
        assert_eq!(e["result"], "sts-policy-fetch-error", "{e}");
        assert_eq!(e["fallback"], "none", "{e}");
        assert!(
            e["reason"].as_str().is_some_and(|r| r.contains(why)),
            "{domain}: {e}"
        );
    }
    assert!(tern.events_with_id(4151).is_empty(), "nothing was fetched");
    assert!(tern.events_with_id(4181).is_empty(), "nothing was refused");
    for name in ["mx:down.test", "mx:hung.test"] {
        let tls = dest_tls(&tern, name, Duration::from_secs(20));
        assert_eq!(tls["summary"], "route (may)", "{name}: {tls}");
        assert!(
            tls["hosts"][0]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("MTA-STS policy unavailable")),
            "{name}: {tls}"
        );
    }
}
