//! SERVFAIL is a temporary error, cached for `failure_ttl`, after which a repaired answer
//! is seen.

use std::time::{Duration, Instant};

use crate::common::{DnsPeer, poll_until};
use serde_json::json;
use tern_route::dns::DnsError;
use tern_route::dns::plan::{PlanError, SelfIdentity, resolve_mx_plan};

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn servfail_is_temporary_and_cached() {
    let broken = json!({"names": {"bad.test": {"behaviour": "servfail"}}});
    let peer = DnsPeer::start(&broken);
    let resolver = peer.resolver(|c| c.failure_ttl = Duration::from_secs(1));
    let t0 = Instant::now();
    let err = resolver.mx("bad.test").await.unwrap_err();
    assert!(matches!(err, DnsError::Temporary { .. }), "{err:?}");
    assert!(err.is_temporary());
    let asked = peer.queries("bad.test", "MX");
    assert!(asked >= 1);
    let plan_err = resolve_mx_plan(&resolver, "bad.test", &SelfIdentity::default(), 10)
        .await
        .unwrap_err();
    assert!(
        matches!(plan_err, PlanError::Temporary { .. }),
        "{plan_err:?}"
    );
    assert!(!plan_err.is_permanent());
    assert_eq!(plan_err.enhanced_status(), "4.4.3");
    assert_eq!(
        peer.queries("bad.test", "MX"),
        asked,
        "the failure must be cached"
    );

    peer.set_zone(
        &json!({"names": {"bad.test": {"MX": [{"pref": 5, "exchange": "mx.bad.test"}]}}}),
    );
    let repaired_at = poll_until("the repaired answer", || async {
        resolver.mx("bad.test").await.ok().map(|_| Instant::now())
    })
    .await;
    assert!(
        repaired_at - t0 >= Duration::from_secs(1),
        "failure cached too briefly"
    );
}
