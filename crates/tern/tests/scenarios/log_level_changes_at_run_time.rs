//! The log level changes while the server runs: a debug event (7063, a message taken
//! into active/) is in the event log only for mail delivered after `tern log-level debug`,
//! while the tracking log has both messages whatever the level. The API answers the
//! level, refuses a bad one with 400, needs the token; a reload applies
//! `server.log_level` from the file again. Every change is event 7065.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::admin::Admin;
use crate::common::{Setup, Tern, run, send_one, simple_message};

fn cli(tern: &Tern, args: &[&str]) -> String {
    let out = run(&mut tern.tern_command(args), Duration::from_secs(30));
    assert!(
        out.status.success(),
        "tern {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn debug_events_for(tern: &Tern, id: &str) -> usize {
    tern.events_with_id(7063)
        .iter()
        .filter(|e| e["queue_id"] == id)
        .count()
}

#[test]
fn log_level_changes_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let tern = Setup::new()
        .queue("[queue]\ndeliver = true\nmin_backoff_secs = 1\nmax_backoff_secs = 1\n")
        .section(&format!(
            "[[route]]\ndomains = [\"*\"]\ntransport = \"drop\"\ndir = {:?}\n",
            dir.path().display().to_string()
        ))
        .start();
    let admin = Admin::of(&tern);
    assert_eq!(cli(&tern, &["log-level"]).trim(), "info");

    let first = send_one(
        tern.addr(),
        "s@client.test",
        &["a@far.test"],
        &simple_message("one", "before"),
    );
    tern.wait_for_events(6030, 1, Duration::from_secs(20));
    assert_eq!(
        debug_events_for(&tern, &first),
        0,
        "no debug events at info"
    );

    assert_eq!(cli(&tern, &["log-level", "debug"]).trim(), "debug");
    let now = admin.get("/api/v1/log-level");
    assert_eq!(now.status, 200, "{now:?}");
    assert_eq!(now.json()["level"], "debug");
    let changes = tern.wait_for_events(7065, 1, Duration::from_secs(10));
    assert_eq!(changes[0]["level"], "debug");
    assert_eq!(changes[0]["from"], "info");
    assert_eq!(changes[0]["by"], "api");

    let second = send_one(
        tern.addr(),
        "s@client.test",
        &["b@far.test"],
        &simple_message("two", "after"),
    );
    tern.wait_for_events(6030, 2, Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(10);
    while debug_events_for(&tern, &second) == 0 {
        assert!(
            Instant::now() < deadline,
            "no debug event 7063 for {second} after the change"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(debug_events_for(&tern, &first), 0);
    let attempts: Vec<_> = tern
        .events_with_id(7064)
        .into_iter()
        .filter(|e| e["queue_id"] == second.as_str())
        .collect();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0]["result"], "delivered");

    // The tracking log has the queued step of both, whatever the level was.
    for id in [&first, &second] {
        let out = cli(&tern, &["track", "--json", id]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let steps: Vec<&str> = v["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["step"].as_str().unwrap())
            .collect();
        for want in ["received", "queued", "attempt", "delivered"] {
            assert!(steps.contains(&want), "{id}: {want} missing in {steps:?}");
        }
    }

    // Bad levels and bodies are refused; the token is needed.
    for body in [
        json!({"level": "loud"}),
        json!({"lvl": "debug"}),
        json!("debug"),
    ] {
        let a = admin.put("/api/v1/log-level", &body);
        assert_eq!(a.status, 400, "{body}: {a:?}");
        assert_eq!(a.json()["error"]["code"], "bad_request");
    }
    let bad = run(
        &mut tern.tern_command(&["log-level", "loud"]),
        Duration::from_secs(30),
    );
    assert!(!bad.status.success());
    for path in ["/api/v1/log-level", "/api/v1/track?q=x"] {
        let a = admin.get_with_auth(path, None);
        assert_eq!(a.status, 401, "{path}: {a:?}");
    }
    for query in [
        "",
        "?q=",
        "?q=x&limit=0",
        "?q=x&limit=10001",
        "?q=x&limit=many",
    ] {
        let a = admin.get(&format!("/api/v1/track{query}"));
        assert_eq!(a.status, 400, "{query}: {a:?}");
        assert_eq!(a.json()["error"]["code"], "bad_request");
    }
    let doc = admin.get("/api/v1/openapi.json").json();
    assert!(doc["paths"]["/api/v1/track"]["get"].is_object(), "{doc}");
    assert!(
        doc["paths"]["/api/v1/log-level"]["get"].is_object(),
        "{doc}"
    );
    assert!(
        doc["paths"]["/api/v1/log-level"]["put"].is_object(),
        "{doc}"
    );

    // A reload applies the file's level (info) again.
    let a = admin.put("/api/v1/log-level", &json!({"level": "warning"}));
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["level"], "warning");
    tern.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin.get("/api/v1/log-level").json()["level"] != "info" {
        assert!(
            Instant::now() < deadline,
            "the reload did not apply the file's level"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let changes = tern.wait_for_events(7065, 3, Duration::from_secs(10));
    let last = changes.last().unwrap();
    assert_eq!(last["by"], "reload");
    assert_eq!(last["from"], "warning");
    assert_eq!(last["level"], "info");
}
