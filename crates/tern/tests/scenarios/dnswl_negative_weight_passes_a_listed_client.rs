//! An allow list (a `dnsbl` site of negative weight, postscreen's DNSWL): a client a
//! block list lists passes when an allow list lists it too and brings its score below
//! zero; it also skips greylisting (event 2189), where a client listed nowhere is
//! greylisted. The same client without the allow listing is refused (the test can fail).

use crate::common::peers::DnsServer;
use crate::common::screen::{greet, list, rcpt, setup};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn dnswl_negative_weight_passes_a_listed_client() {
    let mut dns = DnsServer::start();
    list(&mut dns, "127.0.0.4", "bl.test", "127.0.0.2");
    list(&mut dns, "127.0.0.4", "wl.test", "127.0.0.3");
    list(&mut dns, "127.0.1.4", "bl.test", "127.0.0.2");
    let tern = setup(
        "greet_wait = \"1s\"\n\
         dnsbl = [\"bl.test*2\", \"wl.test=127.0.[0..255].[0..255]*-5\"]\n\
         dnsbl_threshold = 2\n\
         dnsbl_action = \"enforce\"\n\
         greylist = true\n",
    )
    .dns(&dns.dns_section())
    .start();
    let addr = tern.addr();

    let mut g = greet(addr, "127.0.0.4");
    let (code, text) = rcpt(&mut g.client, "a@sender.test", "bob@example.test");
    assert_eq!(code, 250, "allow-listed, and not greylisted: {text}");

    // Listed by the block list alone: refused.
    let mut g = greet(addr, "127.0.1.4");
    let (code, text) = rcpt(&mut g.client, "a@sender.test", "bob@example.test");
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("blocked using bl.test"), "{text}");

    // Listed nowhere: greylisted (so greylisting is on and the allow listing skipped it).
    let mut g = greet(addr, "127.0.2.4");
    let (code, text) = rcpt(&mut g.client, "a@sender.test", "bob@example.test");
    assert_eq!(code, 451, "{text}");

    let allowed = tern.wait_for_events(2189, 1, std::time::Duration::from_secs(20));
    let e = allowed[0].to_string();
    assert!(
        e.contains("127.0.0.4") && e.contains("wl.test") && e.contains("\"score\":\"-3\""),
        "{e}"
    );
}
