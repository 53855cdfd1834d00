//! When we are the best MX of a domain that is not routed to us, delivery would loop:
//! a temporary 4.4.6 (the mail is kept until the configuration is fixed). When we are a
//! backup MX, only better hosts are tried. A wildcard listener owns the whole IPv4
//! loopback range.

use crate::common::DnsPeer;
use serde_json::json;
use tern_route::dns::plan::{PlanError, SelfIdentity, resolve_mx_plan};

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn best_mx_pointing_to_us_is_a_loop() {
    let peer = DnsPeer::start(&json!({"names": {
        "loop.test": {"MX": [{"pref": 10, "exchange": "us.test"}, {"pref": 20, "exchange": "other.test"}]},
        "backup.test": {"MX": [{"pref": 10, "exchange": "other.test"}, {"pref": 20, "exchange": "alias.test"}]},
        "us.test": {"A": [{"addr": "127.0.0.70"}]},
        "alias.test": {"A": [{"addr": "127.0.0.70"}]},
        "other.test": {"A": [{"addr": "127.0.0.71"}]},
    }}));
    let resolver = peer.resolver(|_| {});
    let me = SelfIdentity {
        names: vec!["mail.example".into()],
        addrs: vec!["127.0.0.70".parse().unwrap()],
        ..SelfIdentity::default()
    };
    let err = resolve_mx_plan(&resolver, "loop.test", &me, 10)
        .await
        .unwrap_err();
    assert_eq!(err, PlanError::MxLoop);
    assert!(!err.is_permanent());
    assert_eq!(err.enhanced_status(), "4.4.6");

    let plan = resolve_mx_plan(&resolver, "backup.test", &me, 10)
        .await
        .unwrap();
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0].name, "other.test");

    // Issue 16: listening on 0.0.0.0 at the MX port, 127.0.0.70 is ours although no
    // listener names it.
    let wildcard = tern_route::OwnAddresses::new(vec!["0.0.0.0:25".parse().unwrap()]);
    let me = wildcard.identity(Vec::new(), 25);
    let err = resolve_mx_plan(&resolver, "loop.test", &me, 10)
        .await
        .unwrap_err();
    assert_eq!(err, PlanError::MxLoop);
    // other.test (127.0.0.71) is on loopback too: both hosts are us.
    let err = resolve_mx_plan(&resolver, "backup.test", &me, 10)
        .await
        .unwrap_err();
    assert_eq!(err, PlanError::MxLoop);
    // Not at another port: a peer listening there is not us.
    let other_port = wildcard.identity(Vec::new(), 2525);
    assert!(
        resolve_mx_plan(&resolver, "loop.test", &other_port, 10)
            .await
            .is_ok()
    );
}
