//! An MX host that is a CNAME resolves through the chain; the chain's smallest TTL bounds
//! the cached answer.

use std::time::{Duration, Instant};

use crate::common::{DnsPeer, poll_until};
use serde_json::json;
use tern_route::dns::plan::{MxHost, SelfIdentity, resolve_mx_plan};

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn mx_through_cname_resolves() {
    let peer = DnsPeer::start(&json!({"names": {
        "ex.test": {"MX": [{"pref": 10, "exchange": "mx.ex.test"}]},
        "mx.ex.test": {"CNAME": {"target": "real.ex.test", "ttl": 1}},
        "real.ex.test": {"A": [{"addr": "127.0.0.50", "ttl": 300}]},
    }}));
    let resolver = peer.resolver(|_| {});
    let t0 = Instant::now();
    let plan = resolve_mx_plan(&resolver, "ex.test", &SelfIdentity::default(), 10)
        .await
        .unwrap();
    assert_eq!(
        plan,
        vec![MxHost {
            name: "mx.ex.test".into(),
            preference: 10,
            addrs: vec!["127.0.0.50".parse().unwrap()],
        }]
    );
    assert_eq!(peer.queries("mx.ex.test", "A"), 1);
    // The CNAME's TTL (1 s), not the A record's (300 s), decides when to ask again.
    let asked_at = poll_until("the address to be asked again", || async {
        resolver.addrs("mx.ex.test").await.unwrap();
        (peer.queries("mx.ex.test", "A") == 2).then(Instant::now)
    })
    .await;
    assert!(asked_at - t0 >= Duration::from_secs(1));
}
