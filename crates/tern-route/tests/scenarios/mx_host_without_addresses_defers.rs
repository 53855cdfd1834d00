//! MX hosts that exist without addresses, or do not exist, leave nothing to try: the
//! recipients are deferred (4.4.3), not bounced.

use crate::common::DnsPeer;
use serde_json::json;
use tern_route::dns::plan::{PlanError, SelfIdentity, resolve_mx_plan};

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn mx_host_without_addresses_defers() {
    let peer = DnsPeer::start(&json!({"names": {
        "ex.test": {"MX": [
            {"pref": 10, "exchange": "noaddr.ex.test"},
            {"pref": 20, "exchange": "gone.ex.test"},
        ]},
        "noaddr.ex.test": {"MX": [{"pref": 1, "exchange": "x.test"}]},
    }}));
    let resolver = peer.resolver(|_| {});
    let err = resolve_mx_plan(&resolver, "ex.test", &SelfIdentity::default(), 10)
        .await
        .unwrap_err();
    let PlanError::AllHostsUnresolvable { reason } = &err else {
        panic!("{err:?}");
    };
    assert!(
        reason.contains("noaddr.ex.test") && reason.contains("gone.ex.test"),
        "{reason}"
    );
    assert!(!err.is_permanent());
    assert_eq!(err.enhanced_status(), "4.4.3");
    assert_eq!(peer.queries("noaddr.ex.test", "A"), 1);
    assert_eq!(peer.queries("gone.ex.test", "AAAA"), 1);
}
