//! Idle connections hold no delivery slot, and the connection cache is bounded: with
//! `queue.max_concurrency = 1`, ten destinations on ten different hosts (no connection
//! can be shared) get their mail one after the other without waiting for each other,
//! although every connection stays open, idle, for 60 seconds after its delivery. The
//! cache keeps 3 of them (`delivery.connection_cache_size`); each newer one pushes out
//! the one idle longest, which is closed.
//!
//! Before the cache, a worker with nothing more for its next hop kept its connection and
//! its slot for 2 s: ten destinations behind one slot took 18 s or more.

use std::time::{Duration, Instant};

use crate::common::peers::{DnsServer, SmtpPeer, delivering_with};
use crate::common::{free_port, send_batch, simple_message};

const HOSTS: usize = 10;

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn ten_destinations_behind_one_slot_flow_while_connections_idle() {
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    let mut peers = Vec::new();
    for h in 0..HOSTS {
        let ip = format!("127.0.0.{}", h + 2);
        dns.set_mx(
            &format!("d{h}.test"),
            &[(10, &format!("mx.d{h}.test"))],
            300,
        );
        dns.set_a(&format!("mx.d{h}.test"), ip.parse().unwrap(), 300);
        peers.push(SmtpPeer::start_on(&ip, port, &["accept"]));
    }
    let tern = delivering_with(
        &dns,
        port,
        "connection_cache_idle_secs = 60\nconnection_cache_size = 3\n",
        "",
    )
    .queue("[queue]\ndeliver = true\nmax_concurrency = 1\nmin_backoff_secs = 1\nmax_backoff_secs = 2\n")
    .start();

    let messages: Vec<(String, Vec<u8>)> = (0..HOSTS)
        .map(|h| {
            (
                format!("r@d{h}.test"),
                simple_message(&format!("m{h}"), "one slot"),
            )
        })
        .collect();
    let queued = Instant::now();
    send_batch(tern.addr(), 1, &messages);
    // Generous for a loaded machine, and far below the 18 s that ten destinations took
    // when each idle connection kept the only slot for 2 s.
    let deadline = queued + Duration::from_secs(9);
    loop {
        let delivered: usize = peers.iter().map(SmtpPeer::count).sum();
        if delivered == HOSTS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {delivered} of {HOSTS} destinations delivered within 9 s behind one slot"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in &peers {
        let (max_open, total) = p.connections();
        assert_eq!((max_open, total), (1, 1), "one connection per host");
    }
    // The 3 newest connections wait in the cache (idle for 60 s); the 7 older ones were
    // pushed out and closed.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let open: u64 = peers.iter().map(SmtpPeer::open_connections).sum();
        if open == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} connections still open, the cache holds 3"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
