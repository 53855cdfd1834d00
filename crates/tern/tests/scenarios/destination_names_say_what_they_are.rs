//! Destinations are named for what they are, and every view shows the same name: an
//! `lmtp` route to a Unix socket that is not there (its path has a space and slashes)
//! and an `smtp` route to a relay host that refuses connections both go down; event
//! 4006, `GET /api/v1/destinations`, `tern dest list`, `tern queue summary` and the
//! suspension (CLI, then event 7021) all use `lmtp:unix:<path with %20>` and
//! `smtp:[127.0.0.1]:<port>`, never a route's position (`smtp:0` before issue 16).

use std::net::IpAddr;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::local::local_section;
use crate::common::{Setup, Tern, free_port, run, send_one, simple_message, toml_str};

fn cli_json(tern: &Tern, args: &[&str]) -> Value {
    let out: Output = run(&mut tern.tern_command(args), Duration::from_secs(30));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{args:?} printed {text:?}: {e}"))
}

fn names(v: &Value, list: &str, key: &str) -> Vec<String> {
    v[list]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d[key].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn destination_names_say_what_they_are() {
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let port = free_port(ip);
    let sockets = tempfile::tempdir().unwrap();
    let socket = sockets.path().join("no dovecot").join("lmtp");
    let maps = tempfile::tempdir().unwrap();
    let mailboxes = maps.path().join("mailboxes");
    std::fs::write(&mailboxes, "alice@lmtp.test alice\n").unwrap();
    let routes = format!(
        "[delivery]\nconnect_timeout_secs = 2\n\
         [[route]]\ndomains = [\"relay.test\"]\ntransport = \"smtp\"\nhosts = [\"127.0.0.1:{port}\"]\n\
         [[route]]\ndomains = [\"lmtp.test\"]\ntransport = \"lmtp\"\nserver = {}\n",
        toml_str(&format!("unix:{}", socket.display())),
    );
    let tern = Setup::new()
        .queue("[queue]\ndeliver = true\nmin_backoff_secs = 300\nmax_backoff_secs = 600\n")
        .section(&local_section(&["lmtp.test"], Some(&mailboxes), None, ""))
        .section(&routes)
        .start();
    crate::common::admin::Admin::of(&tern);

    let relay = format!("smtp:[127.0.0.1]:{port}");
    let lmtp = format!("lmtp:unix:{}", socket.display()).replace(' ', "%20");
    assert!(lmtp.contains("/no%20dovecot/lmtp"), "{lmtp}");

    send_one(
        tern.addr(),
        "s@client.test",
        &["x@relay.test"],
        &simple_message("to the relay", "1"),
    );
    send_one(
        tern.addr(),
        "s@client.test",
        &["alice@lmtp.test"],
        &simple_message("to lmtp", "2"),
    );
    let down = tern.wait_for_events(4006, 2, Duration::from_secs(20));
    let mut seen: Vec<String> = down
        .iter()
        .filter_map(|e| e["next_hop"].as_str().map(str::to_owned))
        .collect();
    seen.sort();
    let mut expected = vec![lmtp.clone(), relay.clone()];
    expected.sort();
    assert_eq!(seen, expected, "{down:?}");

    // The API and `tern dest list` name them alike (once the deferrals are counted).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = cli_json(&tern, &["dest", "list", "--json"]);
        let mut listed = names(&v, "destinations", "name");
        listed.sort();
        let queued = v["destinations"]
            .as_array()
            .is_some_and(|a| a.iter().all(|d| d["queued"] == 1));
        if listed == expected && queued {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never listed as {expected:?}: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = run(
        &mut tern.tern_command(&["dest", "list"]),
        Duration::from_secs(30),
    );
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    for name in &expected {
        assert!(
            table.lines().any(|l| l.starts_with(name.as_str())),
            "{name} not in\n{table}"
        );
    }

    // The queue summary routes the waiting recipients to the same names.
    let s = cli_json(&tern, &["queue", "summary", "--json"]);
    let mut rows = names(&s, "rows", "destination");
    rows.sort();
    assert_eq!(rows, expected, "{s}");

    // An action by that name: its slashes and `%` travel escaped in the URL path.
    let v = cli_json(&tern, &["dest", "suspend", &lmtp, "--json"]);
    assert_eq!(v["name"], lmtp.as_str(), "{v}");
    let ev = tern.wait_for_events(7021, 1, Duration::from_secs(20));
    assert_eq!(ev[0]["next_hop"], lmtp.as_str());
    let v = cli_json(&tern, &["dest", "list", "--json"]);
    let suspended: Vec<String> = v["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["state"] == "suspended")
        .filter_map(|d| d["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(suspended, vec![lmtp.clone()], "{v}");
}
