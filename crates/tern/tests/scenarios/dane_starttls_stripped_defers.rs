//! A downgrade: the MX host has secure, usable TLSA records but does not offer STARTTLS
//! (as when an attacker strips it). The mail is deferred 4.7.5 (event 4181,
//! `starttls-not-supported`) and nothing is sent in the clear. (Fails if DANE fell back
//! to plaintext: the peer would receive the message.)

use crate::common::dnssec::{
    ChildRecords, SignedZones, expect_refused_then_deferred, tls_leaf, tlsa_3_1_1,
};
use crate::common::peers::SmtpPeer;
use crate::common::{free_port, send_one, simple_message};

#[test]
#[ignore = "needs knot, ldnsutils and the test peers: scripts/test.sh runs it"]
fn dane_starttls_stripped_defers_and_sends_nothing_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, spki) = tls_leaf(dir.path(), "mx.secure.dane.test");
    let port = free_port("127.0.0.2".parse().unwrap());
    let world = SignedZones::start(
        "127.0.0.2",
        &ChildRecords {
            secure: tlsa_3_1_1(port, &spki),
            ..ChildRecords::default()
        },
    );
    // No STARTTLS offered.
    let peer = SmtpPeer::start_on("127.0.0.2", port, &["accept"]);
    let tern = world.tern(port, "dane", "");

    send_one(
        tern.addr(),
        "s@client.test",
        &["a@secure.dane.test"],
        &simple_message("s", "x"),
    );
    expect_refused_then_deferred(&tern, "4.7.5");
    assert!(peer.received().is_empty(), "nothing sent in the clear");
    assert!(
        !peer.log().contains("MAIL FROM"),
        "no transaction started: {}",
        peer.log()
    );
}
