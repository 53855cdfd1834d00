//! An MX answer is used for exactly as long as its TTL says: while it is fresh, mail goes
//! to the old host even though the zone changed and the DNS server is not asked again;
//! once it has expired, the new answer is fetched and used.

use std::time::{Duration, Instant};

use crate::common::peers::{DnsServer, SmtpPeer, delivering};
use crate::common::{free_port, send_one, simple_message};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn the_cached_answer_serves_until_its_ttl_and_the_new_one_after() {
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    let ttl = 4;
    dns.set_mx("ttl.test", &[(10, "old.ttl.test")], ttl);
    dns.set_a("old.ttl.test", "127.0.0.2".parse().unwrap(), 300);
    dns.set_a("new.ttl.test", "127.0.0.3".parse().unwrap(), 300);
    let old = SmtpPeer::start_on("127.0.0.2", port, &["accept"]);
    let new = SmtpPeer::start_on("127.0.0.3", port, &["accept"]);
    let tern = delivering(&dns, port, "").start();

    send_one(
        tern.addr(),
        "s@client.test",
        &["a@ttl.test"],
        &simple_message("1", "x"),
    );
    let fetched_at = Instant::now();
    old.wait_for(1, Duration::from_secs(20));
    let asked = dns.queries_for("ttl.test");
    assert_eq!(asked, 1, "one MX query so far");

    dns.set_mx("ttl.test", &[(10, "new.ttl.test")], ttl);
    send_one(
        tern.addr(),
        "s@client.test",
        &["b@ttl.test"],
        &simple_message("2", "x"),
    );
    old.wait_for(2, Duration::from_secs(20));
    assert!(
        fetched_at.elapsed() < Duration::from_secs(u64::from(ttl)),
        "the machine was too slow for this test's TTL"
    );
    assert_eq!(
        dns.queries_for("ttl.test"),
        asked,
        "answered from the cache"
    );
    assert!(new.received().is_empty());

    // The condition here is the clock itself: wait until the TTL has passed.
    let expiry = fetched_at + Duration::from_secs(u64::from(ttl)) + Duration::from_millis(300);
    std::thread::sleep(expiry.saturating_duration_since(Instant::now()));
    send_one(
        tern.addr(),
        "s@client.test",
        &["c@ttl.test"],
        &simple_message("3", "x"),
    );
    let got = new.wait_for(1, Duration::from_secs(20));
    assert_eq!(got[0].rcpts(), vec!["c@ttl.test".to_string()]);
    assert_eq!(
        dns.queries_for("ttl.test"),
        asked + 1,
        "asked again after expiry"
    );
    assert_eq!(old.received().len(), 2);
}
