//! `[screen] dnsbl` (docs/SCREENING.md): the lists are asked while the client waits for
//! the greeting; a client whose score reaches `dnsbl_threshold` is refused, naming the
//! heaviest list, as postscreen words it. Under `enforce` the session goes on and every
//! RCPT gets `550 5.7.1`; under `drop` (after a reload) the client gets `521 5.7.1` and
//! the close. A client listed only by a lighter list stays under the threshold and is
//! accepted, and so is one whose answer is outside the list's filter. The refusal is
//! logged once per client network and window (event 2181) and counted every time.
//!
//! dnslib serves the A records of the reversed addresses under the zones.

use std::time::Duration;

use crate::common::peers::DnsServer;
use crate::common::screen::{greet, list, metric, rcpt, setup};

const LISTED: &str = "Service unavailable; client [127.0.0.2] blocked using bl.test";

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn dnsbl_listed_client_is_refused_naming_the_list() {
    let mut dns = DnsServer::start();
    // 127.0.0.2: both lists, score 3. 127.0.1.3: the light list only, score 1.
    // 127.0.2.5: the heavy list, but with an answer its filter does not accept.
    list(&mut dns, "127.0.0.2", "bl.test", "127.0.0.4");
    list(&mut dns, "127.0.0.2", "light.test", "127.0.0.2");
    list(&mut dns, "127.0.1.3", "light.test", "127.0.0.2");
    list(&mut dns, "127.0.2.5", "bl.test", "127.0.0.1");
    let tern = setup(
        "greet_wait = \"1s\"\n\
         dnsbl = [\"light.test\", \"bl.test=127.0.0.[2..11]*2\"]\n\
         dnsbl_threshold = 2\n\
         dnsbl_action = \"enforce\"\n",
    )
    .dns(&dns.dns_section())
    .start();
    let addr = tern.addr();

    // Listed: the greeting comes (in two lines), every RCPT is refused naming bl.test.
    for _ in 0..2 {
        let mut g = greet(addr, "127.0.0.2");
        assert_eq!(g.lines.len(), 2, "{:?}", g.lines);
        let (code, text) = rcpt(&mut g.client, "a@sender.test", "bob@example.test");
        assert_eq!(code, 550, "{text}");
        assert!(text.contains(&format!("5.7.1 {LISTED}")), "{text}");
        let again = g.client.command("RCPT TO:<carol@example.test>").unwrap();
        assert_eq!(again.code, 550, "{}", again.text());
    }

    // Under the threshold, or outside the filter: accepted.
    for client in ["127.0.1.3", "127.0.2.5"] {
        let mut g = greet(addr, client);
        let (code, text) = rcpt(&mut g.client, "a@sender.test", "bob@example.test");
        assert_eq!(code, 250, "{client}: {text}");
    }

    // Drop: 521 after the first greeting line, then the close.
    tern.replace_in_config("dnsbl_action = \"enforce\"", "dnsbl_action = \"drop\"");
    tern.signal(libc::SIGHUP);
    tern.wait_for_events(1007, 1, Duration::from_secs(20));
    let mut c =
        crate::common::SmtpClient::connect_from(addr, "127.0.0.2".parse().unwrap()).unwrap();
    let first = c.read_line().unwrap();
    assert!(first.starts_with("220-"), "{first}");
    let refusal = c.read_line().unwrap();
    assert_eq!(refusal, format!("521 5.7.1 {LISTED}"));
    assert!(c.read_line().is_err(), "the connection stays open");

    // Logged once for the network (three refusals), with the score and the lists.
    let ended = tern.wait_for_events(2002, 5, Duration::from_secs(20));
    assert!(ended.len() >= 5);
    let logged = tern.events_with_id(2181);
    assert_eq!(logged.len(), 1, "{logged:#?}");
    let e = logged[0].to_string();
    assert!(
        e.contains("\"score\":\"3\"") && e.contains("bl.test light.test") && e.contains("enforce"),
        "{e}"
    );
    assert_eq!(
        metric(&tern, "tern_smtp_screen_total{outcome=\"listed\"}"),
        3.0
    );
    assert_eq!(
        metric(&tern, "tern_smtp_screen_total{outcome=\"enforced\"}"),
        4.0
    );
    assert!(metric(&tern, "tern_smtp_rejected_total{reason=\"screen\"}") >= 5.0);
}
