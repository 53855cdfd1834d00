//! Implicit MX: a domain without MX records is its own mail host; without addresses
//! either, it is undeliverable (permanent 5.4.4).

use crate::common::DnsPeer;
use serde_json::json;
use tern_route::dns::MxAnswer;
use tern_route::dns::plan::{MxHost, PlanError, SelfIdentity, resolve_mx_plan};

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn domain_without_mx_uses_its_address() {
    let peer = DnsPeer::start(&json!({"names": {
        "plain.test": {
            "A": [{"addr": "127.0.0.60"}],
            "AAAA": [{"addr": "::1"}],
        },
        "bare.test": {"CNAME": null},
    }}));
    let resolver = peer.resolver(|_| {});
    assert_eq!(*resolver.mx("plain.test").await.unwrap(), MxAnswer::NoMx);
    let plan = resolve_mx_plan(&resolver, "Plain.Test.", &SelfIdentity::default(), 10)
        .await
        .unwrap();
    assert_eq!(
        plan,
        vec![MxHost {
            name: "plain.test".into(),
            preference: 0,
            addrs: vec!["127.0.0.60".parse().unwrap(), "::1".parse().unwrap()],
        }]
    );

    let err = resolve_mx_plan(&resolver, "bare.test", &SelfIdentity::default(), 10)
        .await
        .unwrap_err();
    assert_eq!(err, PlanError::NoAddresses);
    assert!(err.is_permanent());
    assert_eq!(err.enhanced_status(), "5.4.4");

    // An address literal needs no DNS at all.
    let before = peer.query_lines().len();
    let plan = resolve_mx_plan(&resolver, "[127.0.0.61]", &SelfIdentity::default(), 10)
        .await
        .unwrap();
    assert_eq!(
        plan[0].addrs,
        vec!["127.0.0.61".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(peer.query_lines().len(), before);
}
