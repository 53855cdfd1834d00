//! Greylisting (`[screen] greylist`, postgrey's rules): a new (client network, sender,
//! recipient) triplet gets `451 4.7.1 Greylisted`, and so does a retry before
//! `greylist_delay`; a retry after it is accepted, and from then the client's /24 is
//! allowed automatically: another address of it, with another sender and recipient,
//! passes at once, while another network is greylisted. A relay-network client is never
//! greylisted. The greylist survives a restart (`greylist.json`, mode 0600).

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use crate::common::screen::{greet, rcpt, setup};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn greylisting_defers_then_accepts_and_allows_the_network() {
    let mut tern = setup("greet_wait = \"1s\"\ngreylist = true\ngreylist_delay = \"3s\"\n").start();
    let addr = tern.addr();

    let mut g = greet(addr, "127.0.0.2");
    let started = Instant::now();
    let (code, text) = rcpt(&mut g.client, "alice@sender.test", "bob@example.test");
    assert_eq!(code, 451, "{text}");
    assert!(text.contains("4.7.1 Greylisted, see"), "{text}");
    // An early retry: still refused.
    let r = g.client.command("RCPT TO:<bob@example.test>").unwrap();
    assert_eq!(r.code, 451, "{}", r.text());

    // A relay network client is never greylisted.
    let mut lan = greet(addr, "127.0.0.1");
    assert_eq!(
        lan.lines.len(),
        1,
        "relay networks are not screened: {:?}",
        lan.lines
    );
    assert_eq!(
        rcpt(&mut lan.client, "x@sender.test", "y@example.test").0,
        250
    );

    // Retry until accepted (never before the delay), within a deadline.
    let accepted = loop {
        let r = g.client.command("RCPT TO:<bob@example.test>").unwrap();
        if r.code == 250 {
            break started.elapsed();
        }
        assert_eq!(r.code, 451, "{}", r.text());
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never accepted"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        accepted >= Duration::from_secs(3),
        "accepted after {accepted:?}"
    );

    // Auto-allow: the same /24, another triplet, at once; another /24 is greylisted.
    let mut same_net = greet(addr, "127.0.0.9");
    assert_eq!(
        rcpt(
            &mut same_net.client,
            "carol@other.test",
            "dave@example.test"
        )
        .0,
        250
    );
    let mut other_net = greet(addr, "127.0.1.9");
    assert_eq!(
        rcpt(
            &mut other_net.client,
            "carol@other.test",
            "dave@example.test"
        )
        .0,
        451
    );
    let passed = tern.wait_for_events(2184, 1, Duration::from_secs(20));
    assert!(
        passed[0].to_string().contains("127.0.0.0/24"),
        "{:?}",
        passed[0]
    );
    assert!(!tern.events_with_id(2183).is_empty());

    // Kept across a restart.
    drop((g, lan, same_net, other_net));
    tern.stop(Duration::from_secs(20));
    let file = tern.data_dir.join("greylist.json");
    let mode = std::fs::metadata(&file)
        .expect("greylist.json")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    tern.restart();
    tern.wait_for_events(2186, 1, Duration::from_secs(20));
    let mut back = greet(tern.addr(), "127.0.0.77");
    assert_eq!(
        rcpt(&mut back.client, "erin@new.test", "frank@example.test").0,
        250
    );
}
