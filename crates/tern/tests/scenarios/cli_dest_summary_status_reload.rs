//! The CLI over the admin API, against running servers with no extra flags: `tern dest
//! list|suspend|resume|retry` on a destination that is down, `tern queue summary`
//! (qshape table and JSON), `tern status` and `tern config show` from the API, `tern
//! reload` over the API (accepted and refused); and with the admin listener off, the
//! old ways: `tern reload` by SIGHUP and `tern status` from `status.json`.

use std::net::IpAddr;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::common::{Setup, Tern, free_port, run, send_one, simple_message};

fn cli(tern: &Tern, args: &[&str]) -> (bool, String, String) {
    let out: Output = run(&mut tern.tern_command(args), Duration::from_secs(30));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cli_json(tern: &Tern, args: &[&str]) -> Value {
    let (ok, out, err) = cli(tern, args);
    assert!(ok, "{args:?}: {out}{err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{args:?} printed {out:?}: {e}"))
}

#[test]
fn cli_dest_summary_status_reload() {
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let port = free_port(ip);
    let hop = format!("smtp:[127.0.0.1]:{port}");
    let tern = Setup::new()
        .queue("[queue]\ndeliver = true\nmin_backoff_secs = 300\nmax_backoff_secs = 600\n")
        .section(&format!(
            "[delivery]\nconnect_timeout_secs = 2\n[[route]]\ndomains = [\"down.test\"]\ntransport = \"smtp\"\nhosts = [\"127.0.0.1:{port}\"]\n"
        ))
        .start();
    // The CLI finds the server from admin.addr; wait for the server to write it.
    crate::common::admin::Admin::of(&tern);
    send_one(
        tern.addr(),
        "s@client.test",
        &["x@down.test"],
        &simple_message("one", "1"),
    );
    tern.wait_for_events(4006, 1, Duration::from_secs(20));

    // tern dest list: table and JSON.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let v = cli_json(&tern, &["dest", "list", "--json"]);
        if v["destinations"][0]["queued"] == 1 {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "never queued: {v}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(listed["destinations"][0]["name"], hop.as_str());
    assert_eq!(listed["destinations"][0]["state"], "down");
    let (ok, table, err) = cli(&tern, &["dest", "list"]);
    assert!(ok, "{table}{err}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("DESTINATION") && lines[0].contains("LAST ERROR"),
        "{table}"
    );
    assert!(
        lines[1].starts_with(&hop) && lines[1].contains("down") && lines[1].contains("0/20"),
        "{table}"
    );
    assert!(lines[1].contains("127.0.0.1"), "the last error: {table}");

    // Suspend, resume, and the refusals.
    let (ok, out, err) = cli(&tern, &["dest", "suspend", &hop]);
    assert!(ok && out.contains("suspended"), "{out}{err}");
    let (_, table, _) = cli(&tern, &["dest", "list"]);
    assert!(
        table.lines().nth(1).unwrap().contains("suspended"),
        "{table}"
    );
    let (ok, out, err) = cli(&tern, &["dest", "retry", &hop]);
    assert!(!ok, "retry of a suspended destination: {out}");
    assert!(err.contains("resume it"), "{err}");
    let v = cli_json(&tern, &["dest", "resume", &hop, "--json"]);
    assert_eq!(v["action"], "resume", "{v}");
    let (ok, _, err) = cli(&tern, &["dest", "retry", "mx:nowhere.test"]);
    assert!(!ok);
    assert!(err.contains("no destination mx:nowhere.test"), "{err}");

    // tern queue summary.
    let (ok, table, err) = cli(&tern, &["queue", "summary"]);
    assert!(ok, "{table}{err}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].contains("0-5m") && lines[0].contains("160m+"),
        "{table}"
    );
    assert!(lines[1].trim_start().starts_with("TOTAL"), "{table}");
    assert!(lines[2].trim_start().starts_with(&hop), "{table}");
    let fields: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(fields[1..3], ["1", "1"], "total, then 0-5m: {table}");
    let s = cli_json(&tern, &["queue", "summary", "--json", "--by", "domain"]);
    assert_eq!(s["rows"][0]["destination"], "down.test", "{s}");
    let (ok, _, err) = cli(&tern, &["queue", "summary", "--state", "nonsense"]);
    assert!(!ok && err.contains("unknown state"), "{err}");

    // tern status over the API.
    let (ok, out, err) = cli(&tern, &["status"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("listeners up") && out.contains("delivery on"),
        "{out}"
    );
    assert!(out.contains("queue.scheduler"), "the workers table: {out}");
    let v = cli_json(&tern, &["status", "--json"]);
    assert_eq!(v["source"], "api", "{v}");
    assert_eq!(v["running"], true);
    assert_eq!(v["pid"], tern.pid());
    assert!(v["snapshot"]["workers"].is_array(), "{v}");

    // tern config show.
    let (ok, toml_text, err) = cli(&tern, &["config", "show"]);
    assert!(ok, "{toml_text}{err}");
    let parsed: toml::Value = toml::from_str(&toml_text).expect("config show prints TOML");
    assert_eq!(parsed["queue"]["min_backoff_secs"].as_integer(), Some(300));
    assert_eq!(parsed["route"][0]["transport"].as_str(), Some("smtp"));
    let v = cli_json(&tern, &["config", "show", "--json"]);
    assert_eq!(v["queue"]["deliver"], true);

    // tern reload over the API: accepted, then refused by the server.
    let (ok, out, err) = cli(&tern, &["reload"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("reloaded"),
        "the server's answer, not a signal: {out}"
    );
    tern.wait_for_events(7024, 1, Duration::from_secs(10));
    tern.wait_for_events(1007, 1, Duration::from_secs(10));

    // The admin listener off: SIGHUP and status.json.
    let quiet = Setup::new().admin("[admin]\nenabled = false\n").start();
    let (ok, out, err) = cli(&quiet, &["reload"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("reload requested (server pid"), "{out}");
    quiet.wait_for_events(1007, 1, Duration::from_secs(10));
    assert!(quiet.events_with_id(7024).is_empty(), "not over the API");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let v = loop {
        let (_, out, _) = cli(&quiet, &["status", "--json"]);
        let v: Value = serde_json::from_str(out.trim()).unwrap_or_default();
        if v["snapshot"].is_object() {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no status.json: {out}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(v.get("source").is_none(), "from the file: {v}");
    assert_eq!(v["running"], true);
}
