//! An insecure delegation: `insecure.dane.test` is not signed and has no DS, so its TLSA
//! records (present, and matching) prove nothing. Under `tls = "dane"` DANE does not
//! apply and the mail goes as `may` (delivered, with opportunistic TLS); under
//! `tls = "dane-only"` it is deferred 4.7.5 (event 4181), never delivered. (Fails if an
//! unsigned TLSA were trusted, or if `dane-only` fell back.)

use std::time::Duration;

use crate::common::dnssec::{
    ChildRecords, LeafPeer, expect_refused_then_deferred, leaf_peer, tlsa_3_1_1,
};
use crate::common::{send_one, simple_message};

#[test]
#[ignore = "needs knot, ldnsutils and the test peers: scripts/test.sh runs it"]
fn dane_insecure_delegation_falls_back_under_dane_and_defers_under_dane_only() {
    let LeafPeer {
        world,
        peer,
        port,
        dir: _certs,
    } = leaf_peer("mx.insecure.dane.test", |port, spki| ChildRecords {
        insecure: format!("{}\nonly MX 10 mx\n", tlsa_3_1_1(port, spki)),
        ..ChildRecords::default()
    });
    let routes = format!(
        "[[route]]\ndomains = [\"only.insecure.dane.test\"]\ntransport = \"mx\"\nport = {port}\ntls = \"dane-only\"\n"
    );
    let tern = world.tern(port, "dane", &routes);

    send_one(
        tern.addr(),
        "s@client.test",
        &["a@insecure.dane.test"],
        &simple_message("i", "x"),
    );
    let got = peer.wait_for(1, Duration::from_secs(30));
    assert!(
        got[0].meta["tls"]
            .as_str()
            .unwrap_or_default()
            .starts_with("TLSv1."),
        "`may`: TLS when offered: {:?}",
        got[0].meta
    );
    assert!(tern.events_with_id(4142).is_empty(), "DANE not in force");

    send_one(
        tern.addr(),
        "s@client.test",
        &["b@only.insecure.dane.test"],
        &simple_message("o", "x"),
    );
    expect_refused_then_deferred(&tern, "dane-only");
    assert_eq!(
        peer.received().len(),
        1,
        "the dane-only message was not delivered"
    );
}
