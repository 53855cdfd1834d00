//! A UDP answer with TC=1 is asked again over TCP, and the TCP answer is used.

use crate::common::DnsPeer;
use serde_json::json;
use tern_route::dns::{MxAnswer, MxRecord};

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn truncated_udp_answer_retried_over_tcp() {
    let peer = DnsPeer::start(&json!({"names": {
        "tc.test": {
            "behaviour": "truncate_udp",
            "MX": [{"pref": 10, "exchange": "mx.tc.test"}],
        },
        "mx.tc.test": {"behaviour": "truncate_udp", "A": [{"addr": "127.0.0.30"}]},
    }}));
    let resolver = peer.resolver(|_| {});
    let answer = resolver.mx("tc.test").await.unwrap();
    assert_eq!(
        *answer,
        MxAnswer::Records(vec![MxRecord {
            preference: 10,
            exchange: "mx.tc.test".into()
        }])
    );
    let lines = peer.query_lines();
    assert!(lines.contains(&"udp tc.test MX".to_owned()), "{lines:?}");
    assert!(lines.contains(&"tcp tc.test MX".to_owned()), "{lines:?}");
    assert_eq!(
        *resolver.addrs("mx.tc.test").await.unwrap(),
        vec!["127.0.0.30".parse::<std::net::IpAddr>().unwrap()]
    );
    assert!(peer.query_lines().contains(&"tcp mx.tc.test A".to_owned()));
}
