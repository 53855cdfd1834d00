//! One permanently undeliverable message among a thousand good ones: the good ones are
//! each delivered exactly once and are not slowed; the bad one is tried once, produces
//! exactly one bounce (an RFC 3464 DSN to its sender, checked by Python's email package)
//! and is never tried again; the queue ends empty.
//!
//! "Bad" is each kind of permanent failure, one per round on the same server: a 5xx
//! from the next hop for that recipient (the same smarthost the good mail goes to, in
//! the same connections), a `reject` route, and a domain with a null MX (RFC 7505, from
//! the scripted DNS server). A first round without a bad message is the baseline.
//!
//! Timing is a sanity bound, not a benchmark: a round with a bad message may take at
//! most twice the slower of two baseline rounds (one before, one after; plus a second of
//! slack for the scheduler's timers on a shared 2-core machine). It catches a bad message that blocks or marks down the
//! destination the good ones share, which would cost whole backoff periods.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::peers::{DnsServer, SmtpPeer, delivering, parse_dsn_with_python};
use crate::common::{Tern, free_port, header_value, send_batch, simple_message};

const GOOD: usize = 1000;

#[derive(Debug, Clone, Copy)]
enum Bad {
    /// `550 5.1.1` to RCPT from the smarthost that takes the good mail.
    Refused,
    /// A `reject` route.
    RejectRoute,
    /// Null MX.
    NullMx,
}

impl Bad {
    fn recipient(self) -> &'static str {
        match self {
            Bad::Refused => "bad@relay.test",
            Bad::RejectRoute => "someone@blocked.test",
            Bad::NullMx => "someone@nullmx.test",
        }
    }

    fn status(self) -> &'static str {
        match self {
            Bad::Refused => "5.1.1",
            Bad::RejectRoute => "5.7.1",
            Bad::NullMx => "5.1.10",
        }
    }
}

fn queue_is_empty(tern: &Tern) -> bool {
    [
        "incoming", "active", "deferred", "hold", "poison", "records",
    ]
    .iter()
    .all(|d| tern.spool_files(d).is_empty())
}

/// Sends one round and waits until the receiver has all its good messages and the queue
/// is empty again. Returns the time until the last good message arrived, and the bad
/// message's queue id.
fn round(
    tern: &Tern,
    receiver: &SmtpPeer,
    name: &str,
    bad: Option<Bad>,
) -> (Duration, Option<String>) {
    let mut messages: Vec<(String, Vec<u8>)> = (0..GOOD)
        .map(|i| {
            (
                format!("g{i}@relay.test"),
                simple_message(&format!("{name}-g{i}"), "a good message"),
            )
        })
        .collect();
    let bad_at = GOOD / 2;
    if let Some(b) = bad {
        messages.insert(
            bad_at,
            (
                b.recipient().to_string(),
                simple_message(&format!("{name}-bad"), "a message nobody takes"),
            ),
        );
    }
    let before = receiver.count();
    let started = Instant::now();
    let ids = send_batch(tern.addr(), 4, &messages);
    let deadline = started + Duration::from_secs(180);
    while receiver.count() < before + GOOD {
        assert!(
            Instant::now() < deadline,
            "round {name}: {} of {GOOD} delivered",
            receiver.count() - before
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !queue_is_empty(tern) {
        assert!(
            Instant::now() < deadline,
            "round {name}: the queue never emptied"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("round {name}: {GOOD} good messages delivered in {took:?}");
    (took, bad.map(|_| ids[bad_at].clone()))
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn each_kind_of_permanent_failure_bounces_once_and_slows_nothing() {
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.4".parse().unwrap());
    dns.set_mx("client.test", &[(10, "mx.client.test")], 300);
    dns.set_a("mx.client.test", "127.0.0.4".parse().unwrap(), 300);
    dns.set("nullmx.test", json!({"behaviour": "null_mx"}));
    let receiver = SmtpPeer::start("127.0.0.3", &["permfail-rcpt=^bad@"]);
    let sender_mx = SmtpPeer::start_on("127.0.0.4", port, &["accept"]);
    let routes = format!(
        "[[route]]\ndomains = [\"relay.test\"]\ntransport = \"smtp\"\nhosts = [\"{}\"]\n\
         [[route]]\ndomains = [\"blocked.test\"]\ntransport = \"reject\"\nreply = \"550 5.7.1 No mail for blocked.test here\"\n",
        receiver.addr
    );
    let tern = delivering(&dns, port, &routes).start();

    let (first_baseline, _) = round(&tern, &receiver, "baseline", None);
    let mut bad_ids: BTreeMap<String, Bad> = BTreeMap::new();
    let mut timed = Vec::new();
    for (n, bad) in [Bad::Refused, Bad::RejectRoute, Bad::NullMx]
        .into_iter()
        .enumerate()
    {
        let name = format!("{bad:?}");
        let (took, id) = round(&tern, &receiver, &name, Some(bad));
        let id = id.unwrap();
        timed.push((name.clone(), took));
        // Its bounce, and only one.
        let bounces = sender_mx.wait_for(n + 1, Duration::from_secs(30));
        assert_eq!(bounces.len(), n + 1, "one bounce per bad message");
        let bounce = bounces.last().unwrap();
        assert_eq!(
            bounce.mail_from(),
            "<>",
            "bounces come from the null sender"
        );
        assert_eq!(bounce.rcpts(), vec!["s@client.test".to_string()]);
        let dsn = parse_dsn_with_python(&bounce.content);
        assert_eq!(dsn["content_type"], "multipart/report", "{dsn}");
        assert_eq!(dsn["report_type"], "delivery-status", "{dsn}");
        assert_eq!(dsn["to"], "s@client.test", "{dsn}");
        let rcpts = dsn["recipients"].as_array().unwrap();
        assert_eq!(rcpts.len(), 1, "{dsn}");
        assert_eq!(
            rcpts[0]["Final-Recipient"],
            format!("rfc822; {}", bad.recipient()),
            "{dsn}"
        );
        assert_eq!(rcpts[0]["Action"], "failed", "{dsn}");
        assert_eq!(rcpts[0]["Status"], bad.status(), "{dsn}");
        assert!(
            dsn["returned"]
                .as_str()
                .unwrap()
                .contains(&format!("Subject: {name}-bad")),
            "the bounce returns the bad message's header: {dsn}"
        );
        bad_ids.insert(id, bad);
    }

    let (second_baseline, _) = round(&tern, &receiver, "baseline-again", None);
    let baseline = first_baseline.max(second_baseline);
    for (name, took) in timed {
        assert!(
            took <= baseline * 2 + Duration::from_secs(1),
            "round {name} took {took:?}, baseline {baseline:?}: the bad message slowed the good ones"
        );
    }

    // Every good message exactly once; the bad ones nowhere.
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    for r in receiver.received() {
        let subject = header_value(&r.content, "Subject").unwrap_or_default();
        *copies.entry(subject).or_default() += 1;
    }
    assert_eq!(copies.len(), 5 * GOOD, "every good message arrived");
    let repeated: Vec<_> = copies.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        repeated.is_empty(),
        "delivered more than once: {repeated:?}"
    );
    assert!(
        copies.keys().all(|s| s.contains("-g")),
        "only good messages reach the receiver"
    );

    // One attempt each: one failure event, never deferred or delivered; gone from the
    // queue, so nothing is left to retry.
    let events = tern.events();
    for (id, bad) in &bad_ids {
        let of = |eid: u64| {
            events
                .iter()
                .filter(|e| e["id"].as_u64() == Some(eid) && e["queue_id"] == id.as_str())
                .count()
        };
        assert_eq!(of(4003), 1, "{bad:?} ({id}) failed in exactly one attempt");
        assert_eq!(of(4002), 0, "{bad:?} ({id}) was never deferred");
        assert_eq!(of(4001), 0, "{bad:?} ({id}) was never delivered");
    }
    assert_eq!(
        events.iter().filter(|e| e["id"] == 4003).count(),
        3,
        "no good message failed"
    );
    assert_eq!(sender_mx.count(), 3, "exactly one bounce per bad message");
    assert!(queue_is_empty(&tern));
}
