//! A bogus DNSSEC answer: `bogus.dane.test` has a DS in the signed parent but the
//! signature over its MX RRset is altered. Under `tls = "dane"` the mail is deferred
//! (4.7.5), events 4141 and 4181 say why, and the MX host is never connected to (RFC 7672
//! §2.1.1). (Fails if a bogus answer were treated as insecure: the peer would get it in
//! the clear or with opportunistic TLS.)

use std::time::Duration;

use crate::common::dnssec::{
    ChildRecords, LeafPeer, expect_refused_then_deferred, leaf_peer, tlsa_3_1_1,
};
use crate::common::{send_one, simple_message};

#[test]
#[ignore = "needs knot, ldnsutils and the test peers: scripts/test.sh runs it"]
fn dane_bogus_signature_defers_without_connecting() {
    let LeafPeer {
        world,
        peer,
        port,
        dir: _certs,
    } = leaf_peer("mx.bogus.dane.test", |port, spki| ChildRecords {
        bogus: tlsa_3_1_1(port, spki),
        ..ChildRecords::default()
    });
    let tern = world.tern(port, "dane", "");

    send_one(
        tern.addr(),
        "s@client.test",
        &["a@bogus.dane.test"],
        &simple_message("b", "x"),
    );
    let bogus = tern.wait_for_events(4141, 1, Duration::from_secs(30));
    assert_eq!(bogus[0]["domain"], "bogus.dane.test", "{bogus:?}");
    assert_eq!(bogus[0]["lookup"], "mx", "{bogus:?}");
    expect_refused_then_deferred(&tern, "DNSSEC validation failed");
    assert_eq!(peer.connections().1, 0, "the host was never connected to");
    assert!(peer.received().is_empty());
}
