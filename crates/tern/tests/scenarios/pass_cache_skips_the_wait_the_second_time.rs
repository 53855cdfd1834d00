//! The pass cache (`[screen] pass_ttl`): a client that passed the pre-greeting wait and
//! the lists is remembered, so its next connection is greeted at once (a single `220 `
//! line) and the lists are not asked again; a client not yet known still waits.

use std::time::Duration;

use crate::common::peers::DnsServer;
use crate::common::screen::{greet, metric, rcpt, setup};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn pass_cache_skips_the_wait_the_second_time() {
    let dns = DnsServer::start();
    let tern = setup("greet_wait = \"3s\"\ndnsbl = [\"bl.test\"]\n")
        .dns(&dns.dns_section())
        .start();
    let addr = tern.addr();

    let mut first = greet(addr, "127.0.0.2");
    assert_eq!(first.lines.len(), 2, "{:?}", first.lines);
    assert!(first.lines[0].starts_with("220-"), "{:?}", first.lines);
    assert!(first.waited >= Duration::from_secs(3), "{:?}", first.waited);
    assert_eq!(
        rcpt(&mut first.client, "a@s.test", "bob@example.test").0,
        250
    );
    assert_eq!(dns.queries_for("2.0.0.127.bl.test"), 1);

    let mut second = greet(addr, "127.0.0.2");
    assert_eq!(second.lines.len(), 1, "{:?}", second.lines);
    assert!(
        second.lines[0].starts_with("220 mx.tern.test"),
        "{:?}",
        second.lines
    );
    assert!(
        second.waited < Duration::from_secs(2),
        "{:?}",
        second.waited
    );
    assert_eq!(
        rcpt(&mut second.client, "a@s.test", "bob@example.test").0,
        250
    );
    assert_eq!(
        dns.queries_for("2.0.0.127.bl.test"),
        1,
        "the lists were asked again"
    );

    // Another client is not covered by the first one's pass.
    let other = greet(addr, "127.0.0.3");
    assert_eq!(other.lines.len(), 2, "{:?}", other.lines);

    assert_eq!(
        metric(&tern, "tern_smtp_screen_total{outcome=\"pass_cached\"}"),
        1.0
    );
    assert_eq!(
        metric(&tern, "tern_smtp_screen_total{outcome=\"passed\"}"),
        2.0
    );
}
