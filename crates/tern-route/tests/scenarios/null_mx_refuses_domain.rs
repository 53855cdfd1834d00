//! A null MX (RFC 7505) means the domain accepts no mail: a permanent 5.1.10.

use crate::common::DnsPeer;
use serde_json::json;
use tern_route::dns::MxAnswer;
use tern_route::dns::plan::{PlanError, SelfIdentity, resolve_mx_plan};

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn null_mx_refuses_domain() {
    let peer = DnsPeer::start(&json!({"names": {
        "nomail.test": {"behaviour": "null_mx", "A": [{"addr": "127.0.0.40"}]}
    }}));
    let resolver = peer.resolver(|_| {});
    assert_eq!(*resolver.mx("nomail.test").await.unwrap(), MxAnswer::NullMx);
    let err = resolve_mx_plan(&resolver, "nomail.test", &SelfIdentity::default(), 10)
        .await
        .unwrap_err();
    assert_eq!(err, PlanError::NullMx);
    assert!(err.is_permanent());
    assert_eq!(err.enhanced_status(), "5.1.10");
    // No address lookup for a domain that refuses mail.
    assert_eq!(peer.queries("nomail.test", "A"), 0);
}
