//! A DNS list that never answers (dnslib drops the queries) costs the client at most the
//! resolver's timeout (`dns.timeout_ms`), however many such lists there are: they are
//! asked in parallel, each bounded, and one that does not answer counts as not listing
//! the client (event 2185, once per list and window; `list_unanswered` counted).

use std::time::Duration;

use serde_json::json;

use crate::common::peers::DnsServer;
use crate::common::screen::{greet, metric, rcpt, setup};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn dnsbl_list_that_never_answers_stays_within_its_bound() {
    let mut dns = DnsServer::start();
    for zone in ["slow1.test", "slow2.test", "slow3.test"] {
        dns.set(&format!("2.0.0.127.{zone}"), json!({"behaviour": "drop"}));
    }
    // dns.timeout_ms = 2000 in the tests' [dns] section.
    let tern = setup(
        "greet_wait = \"1s\"\n\
         dnsbl = [\"slow1.test*5\", \"slow2.test*5\", \"slow3.test*5\"]\n\
         dnsbl_action = \"drop\"\n",
    )
    .dns(&dns.dns_section())
    .start();

    let mut g = greet(tern.addr(), "127.0.0.2");
    assert!(g.waited >= Duration::from_secs(1), "{:?}", g.waited);
    // Three lists of 2 s each, in parallel: about 2 s, never 6.
    assert!(g.waited < Duration::from_millis(3500), "{:?}", g.waited);
    let (code, text) = rcpt(&mut g.client, "a@sender.test", "bob@example.test");
    assert_eq!(code, 250, "unanswered lists do not list: {text}");
    assert!(dns.queries_for("2.0.0.127.slow1.test") >= 1);

    let logged = tern.wait_for_events(2185, 3, Duration::from_secs(20));
    let zones: Vec<String> = logged.iter().map(|e| e["zone"].to_string()).collect();
    for zone in ["slow1.test", "slow2.test", "slow3.test"] {
        assert!(zones.iter().any(|z| z.contains(zone)), "{zones:?}");
    }
    assert_eq!(
        metric(&tern, "tern_smtp_screen_total{outcome=\"list_unanswered\"}"),
        3.0
    );
}
