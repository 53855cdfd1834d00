//! `tern dest show NAME`: one destination in full. After a message to `plain.test` is
//! delivered (by MX, to a sink on 127.0.3.22), nothing waits for it and `tern dest list`
//! no longer lists it, but `tern dest show mx:plain.test` still answers: active, nothing
//! queued, and the TLS policy its host was last tried under, in text and in `--json`. A
//! destination never seen is refused by name, with a failing exit status.

use std::time::Duration;

use serde_json::Value;

use crate::common::peers::{DnsServer, SmtpPeer, delivering_with};
use crate::common::{Tern, run, send_one, simple_message};

fn cli(tern: &Tern, args: &[&str]) -> (bool, String, String) {
    let out = run(&mut tern.tern_command(args), Duration::from_secs(30));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn dest_show_remembers_a_destination_after_its_mail_is_gone() {
    let mut dns = DnsServer::start();
    dns.set_mx("plain.test", &[(10, "mx.plain.test")], 300);
    dns.set_a("mx.plain.test", "127.0.3.22".parse().unwrap(), 300);
    let sink = SmtpPeer::start("127.0.3.22", &[]);
    let tern = delivering_with(&dns, sink.port(), "", "").start();
    crate::common::admin::Admin::of(&tern);

    send_one(
        tern.addr(),
        "s@client.test",
        &["r@plain.test"],
        &simple_message("shown", "1"),
    );
    assert_eq!(sink.wait_for(1, Duration::from_secs(30)).len(), 1);
    // Delivered: the list forgets it once its job is done.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, out, err) = cli(&tern, &["dest", "list", "--json"]);
        assert!(ok, "{err}");
        let v: Value = serde_json::from_str(out.trim()).expect("json");
        if v["destinations"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still listed: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let (ok, text, err) = cli(&tern, &["dest", "show", "mx:plain.test"]);
    assert!(ok, "{text}{err}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "Destination mx:plain.test", "{text}");
    assert_eq!(lines[1], "State       active", "{text}");
    assert!(text.contains("Queued      0\n"), "{text}");
    let tls_line = lines
        .iter()
        .find(|l| l.starts_with("TLS "))
        .unwrap_or_else(|| panic!("no TLS line: {text}"));
    assert!(tls_line.contains("route (may)"), "{text}");
    assert!(tls_line.contains(", decided "), "{text}");
    assert!(
        lines.iter().any(|l| l.starts_with("  mx.plain.test  ")),
        "the host's line: {text}"
    );

    let (ok, out, err) = cli(&tern, &["dest", "show", "--json", "mx:plain.test"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["name"], "mx:plain.test");
    assert_eq!(v["queued"], 0);
    assert_eq!(v["tls"]["hosts"][0]["host"], "mx.plain.test");

    let (ok, out, err) = cli(&tern, &["dest", "show", "mx:never.test"]);
    assert!(!ok, "an unknown destination: {out}");
    assert!(
        err.contains("no destination mx:never.test is known"),
        "{err}"
    );
}
