//! A record with TTL 0 is used once: every lookup goes to the server.

use crate::common::DnsPeer;
use serde_json::json;

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn zero_ttl_is_not_cached() {
    let peer = DnsPeer::start(&json!({"names": {
        "zero.test": {"A": [{"addr": "127.0.0.20", "ttl": 0}], "MX": [{"pref": 1, "exchange": "zero.test", "ttl": 0}]}
    }}));
    let resolver = peer.resolver(|_| {});
    for round in 1..=3 {
        assert_eq!(resolver.addrs("zero.test").await.unwrap().len(), 1);
        assert!(resolver.mx("zero.test").await.is_ok());
        assert_eq!(peer.queries("zero.test", "A"), round);
        assert_eq!(peer.queries("zero.test", "MX"), round);
    }
    let stats = resolver.cache_stats();
    assert_eq!((stats.hits, stats.entries), (0, 0));
}
