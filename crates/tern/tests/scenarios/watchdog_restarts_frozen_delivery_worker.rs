//! Issue 4 §6, the watchdog: a delivery worker that freezes while it holds the only
//! connection slot of its destination (a fault injected by the test build,
//! `--features tern/fault-injection`: `TERN_FAULT_FREEZE_ON` makes the first worker whose
//! message contains the marker await forever, connection open) is noticed after
//! `stall_after_secs`: event 5001 names it once, `tern status` shows the stall, the
//! worker is restarted (event 5002), and then every message, the frozen one included,
//! reaches the receiver and the queue empties.

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::peers::{DnsServer, SmtpPeer};
use crate::common::{Setup, Tern, run, send_one, simple_message};

const MARKER: &str = "Subject: frozen in transit";
const NORMAL: usize = 4;

fn status(tern: &Tern, json: bool) -> Output {
    let args: &[&str] = if json {
        &["status", "--json"]
    } else {
        &["status"]
    };
    run(&mut tern.tern_command(args), Duration::from_secs(30))
}

fn status_json(tern: &Tern) -> Value {
    let out = status(tern, true);
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("tern status --json printed {text:?}: {e}"))
}

/// Polls `tern status --json` until `pred` holds for it; panics with the last one after
/// `limit`.
fn wait_for_status(
    tern: &Tern,
    limit: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let v = status_json(tern);
        if pred(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "tern status never showed {what} within {limit:?}; last:\n{v:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn delivery_workers(v: &Value) -> Vec<Value> {
    v["snapshot"]["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| w["kind"] == "delivery")
        .cloned()
        .collect()
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn a_frozen_delivery_worker_is_restarted_and_every_message_flows() {
    let dns = DnsServer::start();
    let relay = SmtpPeer::start("127.0.0.4", &["accept"]);
    let mut tern = Setup::new()
        .dns(&dns.dns_section())
        .queue(
            "[queue]\ndeliver = true\ndestination_concurrency = 1\nmin_backoff_secs = 1\nmax_backoff_secs = 2\n",
        )
        .section("[watchdog]\nstall_after_secs = 2\n")
        .section(&format!(
            "[[route]]\ndomains = [\"relay.test\"]\ntransport = \"smtp\"\nhosts = [\"{}\"]\n",
            relay.addr
        ))
        .env("TERN_FAULT_FREEZE_ON", MARKER)
        .start();

    let frozen_id = send_one(
        tern.addr(),
        "s@client.test",
        &["r@relay.test"],
        &simple_message(
            "frozen in transit",
            "the worker carrying this one freezes once",
        ),
    );
    // Its worker looked the relay up and connected (two steps of progress), then froze
    // holding the destination's only slot. Only then do the others come, so they must
    // wait behind it.
    let connected = wait_for_status(
        &tern,
        Duration::from_secs(20),
        "a connected delivery worker",
        |v| {
            delivery_workers(v)
                .iter()
                .any(|w| w["processed"].as_u64().is_some_and(|n| n >= 2))
        },
    );
    let worker = delivery_workers(&connected)[0]["name"]
        .as_str()
        .expect("worker name")
        .to_string();
    assert!(worker.starts_with("delivery#"), "{worker}");
    for n in 0..NORMAL {
        send_one(
            tern.addr(),
            "s@client.test",
            &["r@relay.test"],
            &simple_message(&format!("normal {n}"), "waits behind the frozen worker"),
        );
    }

    // Noticed once, naming the worker, and restarted.
    let stalled = tern.wait_for_events(5001, 1, Duration::from_secs(30));
    assert_eq!(stalled[0]["worker"], worker.as_str(), "{stalled:?}");
    assert_eq!(stalled[0]["kind"], "delivery");
    assert_eq!(stalled[0]["action"], "restart");
    let waited: u64 = stalled[0]["no_progress_ms"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("no_progress_ms");
    assert!(waited > 2000, "stalled before stall_after: {waited} ms");
    let seen = wait_for_status(&tern, Duration::from_secs(20), "the stall", |v| {
        v["snapshot"]["stalls"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["worker"] == worker.as_str() && r["restarted"] == true)
    });
    assert_eq!(seen["running"], true, "{seen:#}");
    assert_eq!(seen["stale"], false, "{seen:#}");
    let record = seen["snapshot"]["stalls"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["worker"] == worker.as_str()))
        .expect("stall record");
    assert_eq!(record["kind"], "delivery");
    let restarted = tern.wait_for_events(5002, 1, Duration::from_secs(20));
    assert_eq!(restarted[0]["worker"], worker.as_str());

    // Mail flows again: every message arrives, the frozen one through its retry.
    let got = relay.wait_for(NORMAL + 1, Duration::from_secs(30));
    assert_eq!(got.len(), NORMAL + 1, "each message once");
    assert!(
        got.iter()
            .any(|r| String::from_utf8_lossy(&r.content).contains(MARKER)),
        "the frozen message was delivered after the restart"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = tern.queue_json(&[]);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "queue never emptied: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let deferred = tern.events_with_id(4002);
    assert!(
        deferred.iter().any(|e| e["queue_id"] == frozen_id.as_str()),
        "the frozen message was deferred by the restart, not dropped: {deferred:?}"
    );

    // The episode ended with the worker; nothing was delivered before the stall was
    // reported, and it was reported once.
    let ended = tern.wait_for_events(5003, 1, Duration::from_secs(20));
    assert_eq!(ended[0]["worker"], worker.as_str());
    assert_eq!(ended[0]["how"], "ended");
    let events = tern.events();
    let first_stall = events
        .iter()
        .position(|e| e["id"] == 5001)
        .expect("5001 in the log");
    let first_delivery = events
        .iter()
        .position(|e| e["id"] == 4001)
        .expect("4001 in the log");
    assert!(
        first_stall < first_delivery,
        "a message was delivered while the destination's only worker was frozen"
    );
    assert_eq!(tern.events_with_id(5001).len(), 1, "one event per stall");

    // The readable form lists every kind of worker and the stall.
    let out = status(&tern, false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{text}", out.status);
    for needle in [
        "WORKER",
        "queue.scheduler",
        "listener.smtp",
        "spool.sync.incoming",
        "dns",
        "Recent stalls:",
        worker.as_str(),
        "restarted",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }

    // Stopped: status says so, and no snapshot is left to pass for a live one.
    tern.stop(Duration::from_secs(20));
    let out = status(&tern, false);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("not running"), "{text}");
    assert!(!tern.data_dir.join("status.json").exists());
}
