//! NXDOMAIN is a permanent error, cached for the SOA's negative TTL, then asked again.

use std::time::{Duration, Instant};

use crate::common::{DnsPeer, poll_until};
use serde_json::json;
use tern_route::dns::DnsError;
use tern_route::dns::plan::{PlanError, SelfIdentity, resolve_mx_plan};

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn nxdomain_is_permanent_and_cached() {
    let peer = DnsPeer::start(&json!({"negative_ttl": 1, "names": {}}));
    let resolver = peer.resolver(|_| {});
    let t0 = Instant::now();
    assert!(matches!(
        resolver.mx("nope.test").await,
        Err(DnsError::NxDomain { .. })
    ));
    assert_eq!(peer.queries("nope.test", "MX"), 1);
    let err = resolve_mx_plan(&resolver, "nope.test", &SelfIdentity::default(), 10)
        .await
        .unwrap_err();
    assert_eq!(err, PlanError::NxDomain);
    assert!(err.is_permanent());
    assert_eq!(err.enhanced_status(), "5.1.2");
    assert_eq!(
        peer.queries("nope.test", "MX"),
        1,
        "NXDOMAIN must be cached"
    );

    // The negative TTL (1 s from the SOA) expires and the name is asked again.
    let asked_at = poll_until("the second NXDOMAIN query", || async {
        let _ = resolver.mx("nope.test").await;
        (peer.queries("nope.test", "MX") == 2).then(Instant::now)
    })
    .await;
    assert!(asked_at - t0 >= Duration::from_secs(1));
}
