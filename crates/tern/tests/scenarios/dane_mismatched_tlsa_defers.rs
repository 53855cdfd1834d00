//! DANE with a record that matches no key of the peer: the handshake is refused
//! (`tlsa-invalid`), event 4181 names the host, the message is deferred 4.7.5 and never
//! delivered. (Fails if the certificate were accepted anyway: the peer would get it.)

use crate::common::dnssec::{
    ChildRecords, SignedZones, expect_refused_then_deferred, tls_leaf, tlsa_3_1_1,
};
use crate::common::peers::SmtpPeer;
use crate::common::{free_port, send_one, simple_message};

#[test]
#[ignore = "needs knot, ldnsutils and the test peers: scripts/test.sh runs it"]
fn dane_mismatched_tlsa_defers_and_never_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = tls_leaf(dir.path(), "mx.secure.dane.test");
    // A record for another key.
    let (_, _, other) = tls_leaf(tempfile::tempdir().unwrap().path(), "mx.secure.dane.test");
    let port = free_port("127.0.0.2".parse().unwrap());
    let world = SignedZones::start(
        "127.0.0.2",
        &ChildRecords {
            secure: tlsa_3_1_1(port, &other),
            ..ChildRecords::default()
        },
    );
    let peer = SmtpPeer::start_on_with_tls("127.0.0.2", port, &cert, &key);
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
