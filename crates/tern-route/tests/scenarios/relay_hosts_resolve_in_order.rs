//! Relay hosts of an smtp route keep their configured order; IP literals need no DNS; a
//! host that does not resolve is skipped, and none resolving is temporary.

use crate::common::DnsPeer;
use serde_json::json;
use tern_route::dns::plan::{PlanError, resolve_relay_hosts};
use tern_route::table::RelayHost;

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn relay_hosts_resolve_in_order() {
    let peer = DnsPeer::start(&json!({"names": {
        "relay1.test": {"A": [{"addr": "127.0.0.81"}, {"addr": "127.0.0.82"}]},
        "relay2.test": {"A": [{"addr": "127.0.0.83"}]},
    }}));
    let resolver = peer.resolver(|_| {});
    let hosts: Vec<RelayHost> = ["relay2.test:2525", "gone.test", "[::1]:25", "relay1.test"]
        .iter()
        .map(|h| RelayHost::parse(h).unwrap())
        .collect();
    let resolved = resolve_relay_hosts(&resolver, &hosts, 3).await.unwrap();
    let got: Vec<(String, Vec<String>)> = resolved
        .iter()
        .map(|r| {
            (
                r.host.to_string(),
                r.addrs.iter().map(|a| a.to_string()).collect(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("relay2.test:2525".to_owned(), vec!["127.0.0.83".to_owned()]),
            ("[::1]:25".to_owned(), vec!["::1".to_owned()]),
            ("relay1.test:25".to_owned(), vec!["127.0.0.81".to_owned()]),
        ]
    );

    let err = resolve_relay_hosts(&resolver, &hosts[1..2], 3)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PlanError::AllHostsUnresolvable { .. }),
        "{err:?}"
    );
    assert!(!err.is_permanent());
}
