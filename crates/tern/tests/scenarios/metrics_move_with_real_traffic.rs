//! The counters move with real traffic: three messages delivered to a sink peer, one
//! deferred by it (450 to its recipient), two recipients refused for relaying from an
//! outside client. `/metrics` (Prometheus text, behind the token) shows exactly those
//! amounts, the sessions in progress, the histograms and the queue states; `/overview`
//! reports the same states and totals and a history whose samples add up to the traffic.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::common::admin::Admin;
use crate::common::peers::{DnsServer, SmtpPeer, delivering};
use crate::common::{SmtpClient, free_port, send_one, simple_message};

/// `series{labels}` → value, from the text exposition (comments skipped).
fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn scrape(admin: &Admin) -> HashMap<String, f64> {
    let a = admin.get("/metrics");
    assert_eq!(a.status, 200, "{a:?}");
    assert!(
        a.content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{a:?}"
    );
    assert!(a.body.ends_with("# EOF\n"), "{}", a.body);
    parse(&a.body)
}

fn value(m: &HashMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("no {series} in {m:#?}"))
}

/// Polls `/metrics` until `done` holds (bounded), returning that scrape.
fn scrape_until(
    admin: &Admin,
    what: &str,
    limit: Duration,
    done: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let deadline = Instant::now() + limit;
    loop {
        let m = scrape(admin);
        if done(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "{what} within {limit:?}: {m:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn metrics_move_with_real_traffic() {
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.4".parse().unwrap());
    dns.set_mx("sink.test", &[(10, "mx.sink.test")], 300);
    dns.set_a("mx.sink.test", "127.0.0.4".parse().unwrap(), 300);
    let sink = SmtpPeer::start_on("127.0.0.4", port, &["accept", "tempfail-rcpt=^later@"]);
    let tern = delivering(&dns, port, "")
        // Only 127.0.0.1 may relay; 127.0.0.2 is an outside client.
        .section("[relay]\ndomains = []\nnetworks = [\"127.0.0.1/32\"]\n")
        .start();
    let admin = Admin::of(&tern);

    for auth in [None, Some("Bearer wrong")] {
        let a = admin.get_with_auth("/metrics", auth);
        assert_eq!(a.status, 401, "{auth:?}: {a:?}");
        assert_eq!(a.json()["error"]["code"], "unauthorized");
    }

    let before = scrape(&admin);
    assert_eq!(value(&before, "tern_messages_received_total"), 0.0);
    assert_eq!(
        value(&before, "tern_smtp_rejected_total{reason=\"relay_denied\"}"),
        0.0
    );

    // A session open now counts as in progress on its listener.
    let mut open = SmtpClient::connect(tern.addr()).unwrap();
    open.hello("client.test");
    scrape_until(
        &admin,
        "one session in progress",
        Duration::from_secs(10),
        |m| m.get("tern_smtp_sessions_in_progress{listener=\"smtp\"}") == Some(&1.0),
    );

    for i in 0..3 {
        send_one(
            tern.addr(),
            "s@client.test",
            &[&format!("ok{i}@sink.test")],
            &simple_message("counted", "delivered"),
        );
    }
    send_one(
        tern.addr(),
        "s@client.test",
        &["later@sink.test"],
        &simple_message("counted", "deferred"),
    );
    let outside: IpAddr = "127.0.0.2".parse().unwrap();
    let mut c = SmtpClient::connect_from(tern.addr(), outside).unwrap();
    c.hello("outside.test");
    assert_eq!(c.command("MAIL FROM:<s@outside.test>").unwrap().code, 250);
    for rcpt in ["a@elsewhere.test", "b@elsewhere.test"] {
        let r = c.command(&format!("RCPT TO:<{rcpt}>")).unwrap();
        assert_eq!(r.code, 554, "{}", r.text());
    }
    let _ = c.command("QUIT");
    let _ = open.command("QUIT");
    drop(open);

    sink.wait_for(3, Duration::from_secs(30));
    let m = scrape_until(
        &admin,
        "three delivered, one deferral, sessions closed",
        Duration::from_secs(30),
        |m| {
            m.get("tern_recipients_delivered_total") == Some(&3.0)
                && m.get("tern_recipients_deferred_total")
                    .is_some_and(|n| *n >= 1.0)
                && m.get("tern_smtp_sessions_in_progress{listener=\"smtp\"}") == Some(&0.0)
        },
    );
    assert_eq!(value(&m, "tern_messages_received_total"), 4.0);
    assert_eq!(value(&m, "tern_recipients_bounced_total"), 0.0);
    assert_eq!(
        value(&m, "tern_smtp_rejected_total{reason=\"relay_denied\"}"),
        2.0
    );
    assert_eq!(
        value(&m, "tern_smtp_rejected_total{reason=\"unknown_user\"}"),
        0.0
    );
    assert_eq!(
        value(&m, "tern_delivery_attempts_total{result=\"delivered\"}"),
        3.0
    );
    assert!(value(&m, "tern_delivery_attempts_total{result=\"deferred\"}") >= 1.0);
    assert_eq!(value(&m, "tern_smtp_accept_latency_seconds_count"), 4.0);
    assert_eq!(
        value(&m, "tern_smtp_accept_latency_seconds_bucket{le=\"+Inf\"}"),
        4.0
    );
    assert_eq!(value(&m, "tern_queue_time_to_delivery_seconds_count"), 3.0);
    assert!(value(&m, "tern_spool_fsync_seconds_count") >= 4.0);
    assert!(value(&m, "tern_dns_lookup_seconds_count") >= 1.0);
    // The first lookup is a miss; later messages reuse the open connection or hit the
    // cache, depending on timing.
    assert!(value(&m, "tern_dns_cache_misses_total") >= 1.0);
    assert!(m.contains_key("tern_dns_cache_hits_total"));
    assert_eq!(value(&m, "tern_destinations_down"), 0.0);
    assert_eq!(value(&m, "tern_messages_poisoned_total"), 0.0);
    // The watchdog is on by default: the scheduler is one of the workers.
    assert!(
        m.keys()
            .any(|k| k.starts_with("tern_worker_processed_total{worker=\"queue.scheduler\"")),
        "{m:#?}"
    );
    assert!(value(&m, "tern_workers") >= 1.0);
    // The deferred message is the only one queued: in deferred/ or, during a retry,
    // active/ (for an instant of a move, in both: polled).
    let queued = |m: &HashMap<String, f64>| -> f64 {
        ["incoming", "active", "deferred", "hold"]
            .iter()
            .map(|s| value(m, &format!("tern_queue_messages{{state=\"{s}\"}}")))
            .sum()
    };
    let m = scrape_until(&admin, "one message queued", Duration::from_secs(10), |m| {
        queued(m) == 1.0
    });
    assert_eq!(value(&m, "tern_queue_messages{state=\"poison\"}"), 0.0);
    assert_eq!(value(&m, "tern_queue_messages{state=\"corrupt\"}"), 0.0);

    // The overview: the same states and totals, and a history that adds up.
    let deadline = Instant::now() + Duration::from_secs(10);
    let o = loop {
        let a = admin.get("/api/v1/overview");
        assert_eq!(a.status, 200, "{a:?}");
        let o = a.json();
        let queued: u64 = ["incoming", "active", "deferred", "hold"]
            .iter()
            .map(|s| o["states"][*s].as_u64().unwrap())
            .sum();
        if queued == 1 {
            break o;
        }
        assert!(Instant::now() < deadline, "one message queued: {o}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let states = &o["states"];
    assert_eq!(states["poison"], 0, "{o}");
    assert_eq!(states["corrupt"], 0, "{o}");
    let totals = &o["totals"];
    assert_eq!(totals["received"], 4, "{o}");
    assert_eq!(totals["delivered"], 3, "{o}");
    assert_eq!(totals["rejected"], 2, "{o}");
    assert_eq!(totals["bounced"], 0, "{o}");
    assert!(totals["deferred"].as_u64().unwrap() >= 1, "{o}");
    assert_eq!(o["history"]["interval_secs"], 10);
    let doc = admin.get("/api/v1/openapi.json").json();
    assert!(doc["paths"]["/api/v1/overview"]["get"].is_object(), "{doc}");
    assert!(doc["paths"]["/metrics"]["get"].is_object(), "{doc}");
    let o = admin.get_with_auth("/api/v1/overview", None);
    assert_eq!(o.status, 401);

    // The first sample is taken at the start (deltas 0), the next after 10 s: wait for
    // the samples to account for all the traffic.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = admin.get("/api/v1/overview").json();
        let samples = o["history"]["samples"].as_array().unwrap().clone();
        assert!(!samples.is_empty(), "{o}");
        assert!(samples.len() <= 360);
        let sum = |k: &str| -> u64 { samples.iter().map(|s| s[k].as_u64().unwrap()).sum() };
        if sum("received") == 4 && sum("delivered") == 3 {
            let last = samples.last().unwrap();
            assert!(last["at_unix_ms"].as_u64().unwrap() > 0);
            assert!(last["queued"].as_u64().unwrap() <= 4, "{o}");
            break;
        }
        assert!(sum("received") <= 4 && sum("delivered") <= 3, "{o}");
        assert!(Instant::now() < deadline, "the history within 30 s: {o}");
        std::thread::sleep(Duration::from_millis(250));
    }
}
