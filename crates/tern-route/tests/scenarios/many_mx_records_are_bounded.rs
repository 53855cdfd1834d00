//! 300 MX records: the answer (too big for UDP) arrives over TCP, at most 100 hosts are
//! looked up, and the plan is cut to `max_addresses`.

use std::collections::HashSet;

use crate::common::DnsPeer;
use serde_json::{Map, Value, json};
use tern_route::dns::MxAnswer;
use tern_route::dns::plan::{MAX_MX_HOSTS, SelfIdentity, resolve_mx_plan};

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn many_mx_records_are_bounded() {
    let mut names = Map::new();
    let mx: Vec<Value> = (0..300)
        .map(|i| json!({"pref": i / 10, "exchange": format!("mx{i:03}.big.test")}))
        .collect();
    names.insert("big.test".into(), json!({"MX": mx}));
    for i in 0..300 {
        names.insert(
            format!("mx{i:03}.big.test"),
            json!({"A": [{"addr": format!("127.1.{}.{}", i / 200, i % 200 + 1)}]}),
        );
    }
    let peer = DnsPeer::start(&json!({"names": names}));
    let resolver = peer.resolver(|_| {});

    let MxAnswer::Records(records) = resolver.mx("big.test").await.unwrap().as_ref().clone() else {
        panic!("expected records");
    };
    assert_eq!(records.len(), 300);
    assert!(peer.query_lines().contains(&"tcp big.test MX".to_owned()));

    let plan = resolve_mx_plan(&resolver, "big.test", &SelfIdentity::default(), 25)
        .await
        .unwrap();
    let total: usize = plan.iter().map(|h| h.addrs.len()).sum();
    assert_eq!(total, 25);
    assert!(plan.windows(2).all(|w| w[0].preference <= w[1].preference));
    // The 25 best hosts are those of preferences 0, 1 and half of 2.
    assert!(plan.iter().all(|h| h.preference <= 2));

    let looked_up: HashSet<String> = peer
        .query_lines()
        .iter()
        .filter(|l| l.ends_with(" A"))
        .filter_map(|l| l.split(' ').nth(1).map(str::to_owned))
        .collect();
    assert_eq!(looked_up.len(), MAX_MX_HOSTS);
    // The ones looked up are the most preferred: mx000..mx099.
    assert!(
        looked_up.iter().all(|n| n.as_str() < "mx100.big.test"),
        "{looked_up:?}"
    );
}
