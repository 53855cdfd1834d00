//! A server that never answers gives a temporary error within the configured timeout,
//! and the failure is cached.

use std::time::{Duration, Instant};

use crate::common::DnsPeer;
use serde_json::json;
use tern_route::dns::DnsError;

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn unanswered_query_times_out_as_temporary() {
    let peer = DnsPeer::start(&json!({"names": {"silent.test": {"behaviour": "drop"}}}));
    let resolver = peer.resolver(|c| c.timeout = Duration::from_millis(600));
    let start = Instant::now();
    let err = resolver.addrs("silent.test").await.unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, DnsError::Temporary { .. }), "{err:?}");
    assert!(
        took < Duration::from_secs(3),
        "timeout not enforced: {took:?}"
    );
    let asked = peer.queries("silent.test", "A");
    assert!(asked >= 1);

    let start = Instant::now();
    assert!(matches!(
        resolver.addrs("silent.test").await,
        Err(DnsError::Temporary { .. })
    ));
    assert!(
        start.elapsed() < Duration::from_millis(300),
        "failure not served from cache"
    );
    assert_eq!(peer.queries("silent.test", "A"), asked);
}
