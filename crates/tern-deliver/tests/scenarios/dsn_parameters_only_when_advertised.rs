//! DSN parameters (RET, ENVID, NOTIFY, ORCPT) are sent xtext-encoded when the server
//! offers DSN, and left out when it does not (the peer answers 555 to unadvertised
//! parameters, so leaving them out is checked by the delivery succeeding).

#![allow(clippy::unwrap_used)]

use crate::common::*;
use tern_deliver::{DsnRet, Notify, OutRecipient};

fn recipients() -> [OutRecipient<'static>; 1] {
    [OutRecipient {
        address: "a@example.net",
        notify: Some(Notify {
            success: true,
            failure: true,
            delay: false,
            never: false,
        }),
        orcpt: Some("rfc822;a+tag@example.net"),
    }]
}

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn dsn_parameters_when_offered() {
    let peer = Peer::start("127.0.0.9", &["accept"]);
    let mut session = connect(&peer).await;
    assert!(session.capabilities().dsn);
    let rcpts = recipients();
    let mut tx = transaction(&rcpts, MESSAGE);
    tx.dsn_ret = Some(DsnRet::Hdrs);
    tx.dsn_envid = Some("Q1=2 x");
    assert_eq!(
        session
            .send(&tx, &mut reader(MESSAGE))
            .await
            .unwrap()
            .delivered(),
        1
    );
    session.quit().await;
    let meta = &peer.messages()[0].meta;
    assert_eq!(
        meta["mail_options"],
        serde_json::json!(["RET=HDRS", "ENVID=Q1+3D2+20x"])
    );
    assert_eq!(
        meta["rcpt_options"],
        serde_json::json!([["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;a+2Btag@example.net"]])
    );
}

#[tokio::test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn no_dsn_parameters_when_not_offered() {
    let peer = Peer::start("127.0.0.9", &["no-dsn"]);
    let mut session = connect(&peer).await;
    assert!(!session.capabilities().dsn);
    let rcpts = recipients();
    let mut tx = transaction(&rcpts, MESSAGE);
    tx.dsn_ret = Some(DsnRet::Full);
    tx.dsn_envid = Some("id");
    assert_eq!(
        session
            .send(&tx, &mut reader(MESSAGE))
            .await
            .unwrap()
            .delivered(),
        1
    );
    session.quit().await;
    let meta = &peer.messages()[0].meta;
    assert_eq!(meta["mail_options"], serde_json::json!([]));
    assert_eq!(meta["rcpt_options"], serde_json::json!([[]]));
}
