//! `tern queue ...` against a running server, through its admin API with no flags: a
//! mailq-style list with the reason each message waits, filters as flags, `show` in text
//! and JSON, `export` byte for byte, actions by id and by filter (paged, with a summary
//! line), and the refusals. With the server stopped, `list` still reads the spool and
//! `delete` acts directly; the actions that need the queue say so.

use std::time::Duration;

use crate::common::peers::{DnsServer, SmtpPeer};
use crate::common::{Setup, Tern, run, send_one, simple_message};

fn cli(tern: &Tern, args: &[&str]) -> (bool, String, String) {
    let out = run(&mut tern.tern_command(args), Duration::from_secs(60));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn cli_queue_over_the_api() {
    let dns = DnsServer::start();
    let peer = SmtpPeer::start("127.0.0.3", &["tempfail-rcpt=defer"]);
    let mut tern = Setup::new()
        .dns(&dns.dns_section())
        .queue("[queue]\ndeliver = true\nmin_backoff_secs = 3600\nmax_backoff_secs = 3600\n")
        .section(&format!(
            "[[route]]\ndomains = [\"defer.test\", \"client.test\"]\ntransport = \"smtp\"\nhosts = [\"{}\"]\n",
            peer.addr
        ))
        .start();
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(send_one(
            tern.addr(),
            &format!("s{n}@client.test"),
            &[&format!("r{n}@defer.test"), &format!("q{n}@defer.test")],
            &simple_message(&format!("cli {n}"), "body"),
        ));
        tern.wait_for_events(4002, n + 1, Duration::from_secs(30));
    }

    // The list: mailq layout, the reason in parentheses, the total last.
    let (ok, out, err) = cli(&tern, &["queue", "list"]);
    assert!(ok, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("-Queue ID-"), "{out}");
    let row = lines.iter().position(|l| l.starts_with(&ids[0])).unwrap();
    assert!(lines[row].contains("deferred") && lines[row].ends_with("s0@client.test"));
    assert!(
        lines[row + 1].trim_start().starts_with("(450 4.2.0"),
        "the reason it waits: {out}"
    );
    assert_eq!(lines[row + 2].trim(), "r0@defer.test");
    assert_eq!(lines[row + 3].trim(), "q0@defer.test");
    assert!(
        lines.last().unwrap().ends_with("Kbytes in 4 Requests."),
        "{out}"
    );
    let (ok, out, _) = cli(
        &tern,
        &["queue", "list", "--sender", "S1@", "--min-attempts", "1"],
    );
    assert!(ok);
    assert!(out.contains(&ids[1]) && !out.contains(&ids[0]), "{out}");
    assert!(out.ends_with("in 1 Requests.\n"), "{out}");
    let (ok, out, _) = cli(&tern, &["queue", "list", "--min-age", "1h"]);
    assert!(ok);
    assert_eq!(out.trim(), "Mail queue is empty");
    let (ok, _, err) = cli(&tern, &["queue", "list", "--state", "frozen"]);
    assert!(!ok && err.contains("unknown state"), "{err}");
    let json = tern.queue_json(&["--destination", "defer.test", "--max-age", "10m"]);
    assert_eq!(json.len(), 4);
    assert_eq!(json[0]["destinations"], serde_json::json!(["defer.test"]));

    // show and export.
    let (ok, out, err) = cli(&tern, &["queue", "show", &ids[0]]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("State:      deferred"), "{out}");
    assert!(
        out.contains("r0@defer.test") && out.contains("450 4.2.0"),
        "{out}"
    );
    assert!(out.contains("Subject: cli 0"), "{out}");
    let (ok, out, _) = cli(&tern, &["queue", "show", "--json", &ids[0]]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["recipient_status"][1]["address"], "q0@defer.test");
    let file = tern.data_dir.join("export.eml");
    let (ok, _, err) = cli(
        &tern,
        &["queue", "export", &ids[0], "-o", file.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    let stored = tern
        .spooled()
        .into_iter()
        .find(|(l, _)| l.id.to_string() == ids[0])
        .unwrap()
        .1;
    assert_eq!(std::fs::read(&file).unwrap(), stored.body);
    let (ok, _, err) = cli(&tern, &["queue", "show", "not-an-id"]);
    assert!(!ok && err.contains("is not a queue id"), "{err}");

    // Actions: by id, then by filter (a page at a time, summary on stdout).
    let (ok, out, _) = cli(&tern, &["queue", "hold", &ids[0]]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), format!("{}: held", ids[0]));
    let (ok, out, _) = cli(&tern, &["queue", "retry", &ids[0]]);
    assert!(!ok);
    assert!(out.contains("release it instead"), "{out}");
    let (ok, out, _) = cli(
        &tern,
        &[
            "queue",
            "hold",
            "--sender",
            "client.test",
            "--state",
            "deferred",
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("hold: 3 matched, 3 done, 0 not done"), "{out}");
    let (ok, out, _) = cli(
        &tern,
        &["queue", "release", "--state", "hold", "--sender", "s3@"],
    );
    assert!(ok, "{out}");
    assert!(out.contains("release: 1 matched, 1 done"), "{out}");
    let (ok, out, _) = cli(&tern, &["queue", "bounce", &ids[1]]);
    assert!(ok, "{out}");
    assert!(out.contains("bounced"), "{out}");
    let got = peer.wait_for(1, Duration::from_secs(30));
    assert_eq!(got[0].rcpts(), ["s1@client.test"]);
    let (ok, out, _) = cli(&tern, &["queue", "delete", "--bounce", &ids[2]]);
    assert!(ok, "{out}");
    assert!(out.contains("with a bounce"), "{out}");
    peer.wait_for(2, Duration::from_secs(30));
    let (ok, _, err) = cli(&tern, &["queue", "delete"]);
    assert!(!ok && err.contains("give queue ids or a filter"), "{err}");
    let (ok, _, err) = cli(&tern, &["queue", "hold", "--bounce", &ids[0]]);
    assert!(!ok && err.contains("delete only"), "{err}");
    let (ok, out, _) = cli(&tern, &["queue", "delete", &ids[1]]);
    assert!(!ok && out.contains("not found"), "{out}");
    let json = tern.queue_json(&[]);
    let states: Vec<(&str, &str)> = json
        .iter()
        .map(|m| (m["id"].as_str().unwrap(), m["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [(ids[0].as_str(), "hold"), (ids[3].as_str(), "deferred")],
        "{json:?}"
    );

    // Server stopped: the list reads the spool; delete acts directly; retry cannot.
    tern.stop(Duration::from_secs(20));
    let (ok, out, _) = cli(&tern, &["queue", "list", "--state", "hold"]);
    assert!(ok, "{out}");
    assert!(out.contains(&ids[0]) && !out.contains(&ids[3]), "{out}");
    let (ok, _, err) = cli(&tern, &["queue", "retry", &ids[3]]);
    assert!(!ok && err.contains("no server is running"), "{err}");
    let (ok, out, _) = cli(&tern, &["queue", "delete", "--state", "hold"]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), format!("{}: deleted from hold", ids[0]));
    assert_eq!(tern.queue_json(&[]).len(), 1);
    // With no server the command writes the record itself: the event log and the
    // tracking log say who removed what, as they would with a server.
    let deleted: Vec<_> = tern
        .events_with_id(7001)
        .into_iter()
        .filter(|e| e["queue_id"] == ids[0].as_str())
        .collect();
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(deleted[0]["server"], "none");
    assert_eq!(deleted[0]["from_state"], "hold");
    let (ok, out, _) = cli(&tern, &["track", &ids[0]]);
    assert!(ok, "{out}");
    assert!(out.contains("deleted"), "{out}");
}
