//! An idle connection waits in the connection cache for `delivery.connection_cache_idle_secs`:
//! a message to another domain on the same MX host within that time goes over it (the
//! peer sees one connection for two domains); then the connection is closed (QUIT) when
//! its idle time is over, and the next message opens a new one.

use std::time::{Duration, Instant};

use crate::common::peers::{DnsServer, SmtpPeer, delivering_with};
use crate::common::{free_port, send_one, simple_message};

const IDLE_SECS: u64 = 3;

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn reused_across_domains_while_idle_and_closed_after() {
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    dns.set_a("mx.one.test", "127.0.0.2".parse().unwrap(), 300);
    for d in ["a.test", "b.test", "c.test"] {
        dns.set_mx(d, &[(10, "mx.one.test")], 300);
    }
    let peer = SmtpPeer::start_on("127.0.0.2", port, &["accept"]);
    let tern = delivering_with(
        &dns,
        port,
        &format!("connection_cache_idle_secs = {IDLE_SECS}\n"),
        "",
    )
    .start();

    send_one(
        tern.addr(),
        "s@client.test",
        &["r@a.test"],
        &simple_message("a", "first"),
    );
    peer.wait_for(1, Duration::from_secs(30));
    send_one(
        tern.addr(),
        "s@client.test",
        &["r@b.test"],
        &simple_message("b", "second"),
    );
    peer.wait_for(2, Duration::from_secs(30));
    let delivered = Instant::now();
    assert_eq!(peer.connections().1, 1, "b.test reused a.test's connection");
    assert_eq!(peer.open_connections(), 1, "kept open, idle, in the cache");
    let log = peer.log();
    assert_eq!(log.matches(">> b'EHLO").count(), 1, "{log}");
    assert!(
        log.contains(">> b'RSET'"),
        "a reused connection starts with RSET:\n{log}"
    );

    // Closed by the idle timer (QUIT), not at once and not much later.
    let deadline = delivered + Duration::from_secs(IDLE_SECS + 10);
    while peer.open_connections() > 0 {
        assert!(
            Instant::now() < deadline,
            "the idle connection was never closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let idle = delivered.elapsed();
    assert!(
        idle >= Duration::from_secs(IDLE_SECS - 1),
        "closed after {idle:?}, before its idle time"
    );
    assert!(peer.log().contains(">> b'QUIT'"), "closed politely");

    send_one(
        tern.addr(),
        "s@client.test",
        &["r@c.test"],
        &simple_message("c", "third"),
    );
    peer.wait_for(3, Duration::from_secs(30));
    assert_eq!(
        peer.connections().1,
        2,
        "a new connection after the idle time"
    );
}
