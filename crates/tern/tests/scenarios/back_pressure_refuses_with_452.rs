//! Back pressure: while the queue is full (`max_queued_messages`) or the spool disk is
//! short of space (`min_free_bytes`), MAIL gets `452 4.3.1` and mail already queued is
//! untouched. Event 3004 is logged once per change of state, never once per refusal.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use crate::common::{Setup, SmtpClient, send_one, simple_message};

const CHECK_INTERVAL_MS: u64 = 50;

fn assert_452(reply: &crate::common::Reply) {
    assert_eq!(reply.code, 452, "{}", reply.text());
    assert!(reply.lines[0].starts_with("4.3.1 "), "{}", reply.text());
}

/// Opens a session and tries MAIL; returns the reply.
fn try_mail(addr: std::net::SocketAddr) -> crate::common::Reply {
    let mut c = SmtpClient::connect(addr).unwrap();
    c.hello("client.test");
    let r = c.command("MAIL FROM:<late@client.test>").unwrap();
    let _ = c.command("QUIT");
    r
}

#[test]
fn full_queue_refuses_the_fourth_mail_and_logs_3004_once() {
    let mut tern = Setup::new()
        .section(&format!(
            "[back_pressure]\nmax_queued_messages = 3\nmin_free_bytes = 0\nmin_free_percent = 0.0\ncheck_interval_ms = {CHECK_INTERVAL_MS}\n"
        ))
        .start();
    let addr = tern.addr();
    let ids: Vec<String> = (0..3)
        .map(|i| {
            send_one(
                addr,
                "early@client.test",
                &[&format!("r{i}@localhost")],
                &simple_message(&format!("m{i}"), "queued before the limit"),
            )
        })
        .collect();

    // The fourth transaction, on a session that is already open.
    let mut c = SmtpClient::connect(addr).unwrap();
    c.hello("client.test");
    assert_452(&c.command("MAIL FROM:<fourth@client.test>").unwrap());
    // The session survives the refusal and may try again (and is refused again).
    assert_452(&c.command("MAIL FROM:<fourth@client.test>").unwrap());
    assert_eq!(
        c.command("RCPT TO:<x@localhost>").unwrap().code,
        503,
        "no transaction after a refused MAIL"
    );

    // Keep being refused across many evaluation periods of the back-pressure monitor.
    let until = Instant::now() + Duration::from_millis(CHECK_INTERVAL_MS * 10);
    let mut refusals = 2;
    while Instant::now() < until {
        assert_452(&try_mail(addr));
        refusals += 1;
    }
    tern.wait_for_events(3004, 1, Duration::from_secs(10));
    for _ in 0..3 {
        assert_452(&c.command("MAIL FROM:<fourth@client.test>").unwrap());
        refusals += 1;
    }
    let _ = c.command("QUIT");

    let queued = tern.queue_json(&[]);
    let listed: Vec<&str> = queued.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(listed, ids, "the three queued messages stay");

    tern.stop(Duration::from_secs(10));
    let on = tern.events_with_id(3004);
    assert_eq!(
        on.len(),
        1,
        "event 3004 once for {refusals} refused transactions: {on:?}"
    );
    assert_eq!(on[0]["reason"], "queue_full", "{on:?}");
    assert!(
        tern.events_with_id(3005).is_empty(),
        "back pressure never ended"
    );
    assert!(
        !tern.events_with_id(2010).is_empty(),
        "refusals are logged as 2010"
    );
}

#[test]
fn disk_below_min_free_bytes_refuses_the_first_mail() {
    let mut tern = Setup::new()
        .section(&format!(
            "[back_pressure]\nmin_free_bytes = {}\ncheck_interval_ms = {CHECK_INTERVAL_MS}\n",
            i64::MAX
        ))
        .start();
    let addr = tern.addr();
    let mut refusals = 0;
    let until = Instant::now() + Duration::from_millis(CHECK_INTERVAL_MS * 10);
    while refusals < 5 || Instant::now() < until {
        assert_452(&try_mail(addr));
        refusals += 1;
    }
    assert!(tern.queue_json(&[]).is_empty());
    tern.stop(Duration::from_secs(10));
    let on = tern.events_with_id(3004);
    assert_eq!(
        on.len(),
        1,
        "event 3004 once for {refusals} refused transactions: {on:?}"
    );
    assert_eq!(on[0]["reason"], "disk_space", "{on:?}");
}
