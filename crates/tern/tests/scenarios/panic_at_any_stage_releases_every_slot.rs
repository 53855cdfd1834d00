//! The seed failure "a handled exception left a mutex owned and every other worker
//! blocked": a panic while one message is processed, at each stage and while holding each
//! kind of slot, ends that message's task only. The test build
//! (`--features tern/fault-injection`) panics at a chosen stage for messages that contain
//! a marker (`TERN_FAULT_PANIC_ON=<stage>:<marker>`).
//!
//! Each run allows ONE delivery at a time in total and per destination, so a slot that
//! was not given back would stop every later delivery: the twenty good messages sent after
//! the bad one can only arrive if the panicking task returned its slots. The bad message
//! counts one internal failure per panic (event 4013) and is poisoned at the threshold of
//! two (event 4012); it is never retried after that, and the queue holds nothing else.
//!
//! Stages and what they hold when they panic:
//! - `load`: message task, file moved to `active/` and read (in-process mark, spool file);
//! - `route`: message task, routed, before any job is handed out;
//! - `connect`: delivery worker holding the total and per-destination concurrency slot;
//! - `transaction`: delivery worker holding an open, greeted connection;
//! - `dsn`: message task building a bounce (the recipient was refused by a reject route);
//! - `finish`: message task with the results in hand, before its record is written. Here
//!   the peer already took the message, so each of the two attempts delivers it: the
//!   documented at-least-once window of one attempt.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::peers::{DnsServer, SmtpPeer};
use crate::common::{Setup, Tern, send_one, simple_message};

const MARKER: &str = "X-Fault: panic-marker";
const GOOD: usize = 20;

fn start(stage: &str, relay: &SmtpPeer, dns: &DnsServer) -> Tern {
    Setup::new()
        .dns(&dns.dns_section())
        .queue(
            "[queue]\ndeliver = true\nmin_backoff_secs = 1\nmax_backoff_secs = 1\n\
             poison_threshold = 2\nmax_concurrency = 1\ndestination_concurrency = 1\n",
        )
        .section(&format!(
            "[[route]]\ndomains = [\"relay.test\", \"client.test\"]\ntransport = \"smtp\"\n\
             hosts = [\"{}\"]\n\n[[route]]\ndomains = [\"refused.test\"]\n\
             transport = \"reject\"\nreply = \"550 5.1.1 no such user here\"\n",
            relay.addr
        ))
        .env("TERN_FAULT_PANIC_ON", &format!("{stage}:{MARKER}"))
        .start()
}

fn bad_message() -> Vec<u8> {
    format!("From: <s@client.test>\r\n{MARKER}\r\nSubject: bad one\r\n\r\nboom\r\n").into_bytes()
}

/// Copies of the bad message the peer received.
fn bad_copies(relay: &SmtpPeer) -> usize {
    relay
        .received()
        .iter()
        .filter(|r| String::from_utf8_lossy(&r.content).contains("Subject: bad one"))
        .count()
}

fn run_stage(stage: &str, bad_rcpt: &str, delivered_copies: usize) {
    let dns = DnsServer::start();
    let relay = SmtpPeer::start("127.0.0.3", &["accept"]);
    let mut tern = start(stage, &relay, &dns);
    let bad = send_one(tern.addr(), "s@client.test", &[bad_rcpt], &bad_message());
    let started = Instant::now();
    let mut good = BTreeSet::new();
    for n in 0..GOOD {
        let subject = format!("good {n}");
        send_one(
            tern.addr(),
            "s@client.test",
            &["r@relay.test"],
            &simple_message(&subject, "fine"),
        );
        good.insert(subject);
    }
    // Every good message arrives: no slot was kept by the panicking task.
    let limit = Duration::from_secs(30);
    let deadline = Instant::now() + limit;
    loop {
        let got: BTreeSet<String> = relay
            .received()
            .iter()
            .filter_map(|r| {
                let text = String::from_utf8_lossy(&r.content).into_owned();
                good.iter()
                    .find(|s| text.contains(&format!("Subject: {s}\r\n")))
                    .cloned()
            })
            .collect();
        if got == good {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stage {stage}: only {} of {GOOD} good messages delivered in {limit:?}: a slot \
             was not returned\n{}",
            got.len(),
            tern.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let flowed = started.elapsed();

    // The bad message: two internal failures at this stage, then poison.
    let poisoned = tern.wait_for_events(4012, 1, Duration::from_secs(30));
    assert_eq!(poisoned[0]["queue_id"], bad.as_str(), "stage {stage}");
    let failures = tern.events_with_id(4013);
    assert_eq!(failures.len(), 2, "stage {stage}: {failures:?}");
    for f in &failures {
        assert_eq!(f["queue_id"], bad.as_str());
        let where_ = f["stage"].as_str().unwrap_or_default();
        let expected = match stage {
            "connect" | "transaction" => "delivery worker",
            _ => "message task",
        };
        assert_eq!(where_, expected, "stage {stage}: {f}");
    }
    assert!(
        tern.is_running(),
        "stage {stage}: a panic must not end the process"
    );

    // Nothing else is left: the queue holds only the poisoned message (bounces to
    // client.test were delivered to the peer too).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let queue = tern.queue_json(&[]);
        let rest: Vec<_> = queue.iter().filter(|m| m["state"] != "poison").collect();
        if rest.is_empty() {
            assert_eq!(queue.len(), 1, "stage {stage}: {queue:?}");
            assert_eq!(queue[0]["id"], bad.as_str());
            let last = queue[0]["last_error"].as_str().unwrap_or_default();
            assert!(last.contains("internal error"), "stage {stage}: {last}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stage {stage}: left in the queue: {rest:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        bad_copies(&relay),
        delivered_copies,
        "stage {stage}: copies of the bad message at the peer"
    );
    eprintln!("stage {stage}: {GOOD} good messages delivered in {flowed:?} around the panics");
    tern.stop(Duration::from_secs(20));
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn panic_while_loading_a_message() {
    run_stage("load", "r@relay.test", 0);
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn panic_while_routing_a_message() {
    run_stage("route", "r@relay.test", 0);
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn panic_in_a_delivery_worker_holding_its_concurrency_slot() {
    run_stage("connect", "r@relay.test", 0);
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn panic_in_a_delivery_worker_holding_a_connection() {
    run_stage("transaction", "r@relay.test", 0);
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn panic_while_building_a_bounce() {
    run_stage("dsn", "nobody@refused.test", 0);
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn panic_after_delivery_before_the_record_is_written() {
    run_stage("finish", "r@relay.test", 2);
}
