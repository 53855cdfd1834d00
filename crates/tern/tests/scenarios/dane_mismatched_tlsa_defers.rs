//! DANE with a record that matches no key of the peer: the handshake is refused
//! (`tlsa-invalid`), event 4181 names the host, the message is deferred 4.7.5 and never
//! delivered. (Fails if the certificate were accepted anyway: the peer would get it.)

use crate::common::dnssec::{
    ChildRecords, LeafPeer, expect_refused_then_deferred, leaf_peer, tls_leaf, tlsa_3_1_1,
};
use crate::common::{send_one, simple_message};

#[test]
#[ignore = "needs knot, ldnsutils and the test peers: scripts/test.sh runs it"]
fn dane_mismatched_tlsa_defers_and_never_delivers() {
    // A record for another key.
    let (_, _, other) = tls_leaf(tempfile::tempdir().unwrap().path(), "mx.secure.dane.test");
    let LeafPeer {
        world,
        peer,
        port,
        dir: _certs,
    } = leaf_peer("mx.secure.dane.test", |port, _| ChildRecords {
        secure: tlsa_3_1_1(port, &other),
        ..ChildRecords::default()
    });
    let tern = world.tern(port, "dane", "");

    send_one(
        tern.addr(),
        "s@client.test",
        &["a@secure.dane.test"],
        &simple_message("m", "x"),
    );
    expect_refused_then_deferred(&tern, "tlsa-invalid");
    assert!(
        peer.received().is_empty(),
        "nothing delivered to an unauthenticated host"
    );
}
