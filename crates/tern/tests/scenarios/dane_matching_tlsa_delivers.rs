//! DANE (RFC 7672) with a matching record: `secure.dane.test` is DNSSEC-signed under the
//! trust anchor, its MX host publishes `TLSA 3 1 1` of the peer's key; a route with
//! `tls = "dane"` delivers over TLS, and event 4142 says DANE is in force for the host.
//! (Fails if validation, the TLSA lookup or the DANE-EE match is broken: the mail would
//! be deferred, or sent without DANE and no 4142.)

use std::time::Duration;

use crate::common::dnssec::{ChildRecords, LeafPeer, leaf_peer, tlsa_3_1_1};
use crate::common::{send_one, simple_message};

#[test]
#[ignore = "needs knot, ldnsutils and the test peers: scripts/test.sh runs it"]
fn dane_matching_tlsa_delivers_over_tls() {
    let LeafPeer {
        world,
        peer,
        port,
        dir: _certs,
    } = leaf_peer("mx.secure.dane.test", |port, spki| ChildRecords {
        secure: tlsa_3_1_1(port, spki),
        ..ChildRecords::default()
    });
    let tern = world.tern(port, "dane", "");

    send_one(
        tern.addr(),
        "s@client.test",
        &["a@secure.dane.test"],
        &simple_message("d", "x"),
    );
    let got = peer.wait_for(1, Duration::from_secs(30));
    assert!(
        got[0].meta["tls"]
            .as_str()
            .unwrap_or_default()
            .starts_with("TLSv1."),
        "delivered over TLS: {:?}",
        got[0].meta
    );
    let in_force = tern.wait_for_events(4142, 1, Duration::from_secs(10));
    assert_eq!(in_force[0]["host"], "mx.secure.dane.test", "{in_force:?}");
    assert_eq!(in_force[0]["records"], "1", "{in_force:?}");
    assert!(tern.events_with_id(4181).is_empty(), "no refusal");
}
