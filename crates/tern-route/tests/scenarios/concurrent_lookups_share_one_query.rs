//! Lookups of one name that overlap are coalesced into one query, even when the answer
//! may not be cached (TTL 0).

use crate::common::DnsPeer;
use serde_json::json;

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn concurrent_lookups_share_one_query() {
    let peer = DnsPeer::start(&json!({"names": {
        "busy.test": {"MX": [{"pref": 10, "exchange": "mx.busy.test", "ttl": 0}]}
    }}));
    let resolver = peer.resolver(|_| {});
    // All five are polled once before any answer can be processed: the first asks,
    // the other four wait for it.
    let (a, b, c, d, e) = tokio::join!(
        resolver.mx("busy.test"),
        resolver.mx("busy.test"),
        resolver.mx("BUSY.test"),
        resolver.mx("busy.test."),
        resolver.mx("busy.test"),
    );
    for r in [a, b, c, d, e] {
        assert!(r.is_ok(), "{r:?}");
    }
    assert_eq!(peer.queries("busy.test", "MX"), 1);
    // TTL 0: the next lookup asks again.
    resolver.mx("busy.test").await.unwrap();
    assert_eq!(peer.queries("busy.test", "MX"), 2);
}
