//! A positive answer is served from the cache for exactly its TTL, then asked again, and
//! the changed answer is seen.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::common::{DnsPeer, poll_until};
use serde_json::json;

fn zone(addr: &str) -> serde_json::Value {
    json!({"negative_ttl": 60, "names": {"host.test": {"A": [{"addr": addr, "ttl": 2}]}}})
}

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn ttl_expiry_requeries_changed_answer() {
    let peer = DnsPeer::start(&zone("127.0.0.10"));
    let resolver = peer.resolver(|_| {});
    let old: IpAddr = "127.0.0.10".parse().unwrap();
    let new: IpAddr = "127.0.0.11".parse().unwrap();

    // Process-wide metrics, shared with the tests running beside this one: at least.
    let m = tern_metrics::get();
    let (hits, misses, lookups) = (
        m.dns_cache_hits.get(),
        m.dns_cache_misses.get(),
        m.dns_lookup.count(),
    );
    let t0 = Instant::now();
    assert_eq!(*resolver.addrs("host.test").await.unwrap(), vec![old]);
    assert_eq!(peer.queries("host.test", "A"), 1);
    assert_eq!(peer.queries("host.test", "AAAA"), 1);
    assert_eq!(*resolver.addrs("HOST.test.").await.unwrap(), vec![old]);
    assert_eq!(
        peer.queries("host.test", "A"),
        1,
        "second lookup must be a cache hit"
    );
    assert_eq!(resolver.cache_stats().hits, 1);
    assert!(m.dns_cache_hits.get() > hits, "the hit is counted");
    assert!(
        m.dns_cache_misses.get() > misses,
        "the first lookup is a miss"
    );
    assert!(m.dns_lookup.count() >= lookups + 2, "A and AAAA were timed");

    peer.set_zone(&zone("127.0.0.11"));
    let seen_at = poll_until("the changed answer", || async {
        let answer = resolver.addrs("host.test").await.unwrap();
        if *answer == vec![new] {
            return Some(Instant::now());
        }
        assert_eq!(*answer, vec![old]);
        None
    })
    .await;
    let waited = seen_at - t0;
    assert!(
        waited >= Duration::from_secs(2),
        "cache expired early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(6),
        "cache expired late: {waited:?}"
    );
    assert_eq!(
        peer.queries("host.test", "A"),
        2,
        "one new query after expiry"
    );
}
