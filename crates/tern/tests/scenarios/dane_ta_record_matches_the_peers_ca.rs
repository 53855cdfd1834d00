//! DANE-TA (usage 2): the MX host publishes `TLSA 2 0 1` of the CA that issued its
//! certificate, and sends that CA in its chain. A certificate that chains to the CA and
//! names the MX host is accepted (delivered); another host with a certificate from the
//! same kind of chain but for another name is refused (`certificate-host-mismatch`,
//! 4.7.5, RFC 7672 §3.2.2). (Fails if the chain or the name were not checked.)

use std::time::Duration;

use crate::common::dnssec::{ChildRecords, SignedZones, tls_chain};
use crate::common::peers::SmtpPeer;
use crate::common::{free_port, send_one, simple_message};

#[test]
#[ignore = "needs knot, ldnsutils and the test peers: scripts/test.sh runs it"]
fn dane_ta_record_accepts_the_chain_and_checks_the_name() {
    let good = tempfile::tempdir().unwrap();
    let bad = tempfile::tempdir().unwrap();
    let (chain, key, ca) = tls_chain(good.path(), "mx.secure.dane.test");
    let (chain2, key2, ca2) = tls_chain(bad.path(), "wrong.example.net");
    let port = free_port("127.0.0.2".parse().unwrap());
    // `named.secure.dane.test` has the host `mx2` at 127.0.0.3, whose certificate names
    // another host.
    let world = SignedZones::start(
        "127.0.0.2",
        &ChildRecords {
            secure: format!(
                "_{port}._tcp.mx 300 IN TLSA 2 0 1 {ca}\nnamed MX 10 mx2\nmx2 A 127.0.0.3\n_{port}._tcp.mx2 300 IN TLSA 2 0 1 {ca2}\n"
            ),
            ..ChildRecords::default()
        },
    );
    let peer = SmtpPeer::start_on_with_tls("127.0.0.2", port, &chain, &key);
    let wrong = SmtpPeer::start_on_with_tls("127.0.0.3", port, &chain2, &key2);
    let tern = world.tern(port, "dane", "");

    send_one(
        tern.addr(),
        "s@client.test",
        &["a@secure.dane.test"],
        &simple_message("t", "x"),
    );
    let got = peer.wait_for(1, Duration::from_secs(30));
    assert!(
        got[0].meta["tls"]
            .as_str()
            .unwrap_or_default()
            .starts_with("TLSv1."),
        "{:?}",
        got[0].meta
    );

    send_one(
        tern.addr(),
        "s@client.test",
        &["b@named.secure.dane.test"],
        &simple_message("n", "x"),
    );
    let refused = tern.wait_for_events(4181, 1, Duration::from_secs(30));
    let reason = refused[0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("4.7.5") && reason.contains("certificate-host-mismatch"),
        "{refused:?}"
    );
    assert!(
        wrong.received().is_empty(),
        "nothing delivered to a host its certificate does not name"
    );
}
