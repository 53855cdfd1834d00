//! MTA-STS `mode: none` (RFC 8461 §5): the domain has withdrawn its policy; the mail goes
//! out as the route says. Here the route is `may` and the MX host's certificate comes
//! from a CA Tern does not trust: delivered over TLS anyway, and `tern dest` shows
//! `route (may)` (a second recipient the peer defers keeps the destination listed). No
//! 4182 (the route's own policy) and no 4181.

use std::time::Duration;

use crate::common::mtasts::{PolicyServer, TestCa, dest_tls, policy, publish, tracked};
use crate::common::peers::{DnsServer, SmtpPeer, delivering_with};
use crate::common::{free_port, send_one, simple_message};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn mode_none_delivers_as_the_route_says() {
    let ca = TestCa::new();
    let stranger = TestCa::new();
    let mut dns = DnsServer::start();
    let sts_ip = "127.0.1.61";
    let server = PolicyServer::start(
        sts_ip,
        &ca,
        &["none.test"],
        &policy("none", &["mx.none.test"], 86400),
    );
    publish(&mut dns, "none.test", "2", sts_ip.parse().unwrap());
    let port = free_port("127.0.1.62".parse().unwrap());
    let (cert, key) = stranger.leaf(&["mx.none.test"], false);
    let peer = SmtpPeer::start_on_with_tls_and(
        "127.0.1.62",
        port,
        &cert,
        &key,
        &["tempfail-rcpt=^later@"],
    );
    dns.set_a("mx.none.test", "127.0.1.62".parse().unwrap(), 300);
    dns.set_mx("none.test", &[(10, "mx.none.test")], 300);
    let tern = delivering_with(&dns, port, &ca.delivery_keys(), "")
        .section(&ca.mta_sts_section(5))
        .start();

    let id = send_one(
        tern.addr(),
        "s@client.test",
        &["a@none.test", "later@none.test"],
        &simple_message("none", "x"),
    );
    let got = peer.wait_for(1, Duration::from_secs(30));
    assert_eq!(got[0].rcpts(), ["a@none.test"]);
    assert!(
        got[0].meta["tls"]
            .as_str()
            .unwrap_or_default()
            .starts_with("TLSv1."),
        "{:?}",
        got[0].meta
    );
    let fetched = tern.wait_for_events(4151, 1, Duration::from_secs(10));
    assert_eq!(fetched[0]["mode"], "none", "{fetched:?}");
    assert_eq!(server.requests(), 1);
    let tls = dest_tls(&tern, "mx:none.test", Duration::from_secs(20));
    assert_eq!(tls["summary"], "route (may)", "{tls}");
    assert!(
        tls["hosts"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("route tls=may")),
        "{tls}"
    );
    assert!(tern.events_with_id(4181).is_empty());
    // Tracked as delivered, and no delivery.tls.policy (written before it, by the same
    // writer, when there is one).
    tracked(&tern, &id, "delivery.delivered", Duration::from_secs(20));
    let track = crate::common::run(
        &mut tern.tern_command(&["track", "--json", &id]),
        Duration::from_secs(30),
    );
    let track = String::from_utf8_lossy(&track.stdout).into_owned();
    assert!(!track.contains("delivery.tls.policy"), "{track}");
}
