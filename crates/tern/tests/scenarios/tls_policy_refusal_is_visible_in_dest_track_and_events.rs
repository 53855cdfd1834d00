//! Issue 19: the TLS policy in force for a destination, and a host it forbids, are visible
//! to an administrator in the three places the issue names: `tern dest` (table and JSON),
//! the attempt's event (4181 `delivery.tls.refused`) and `tern track`. The case: a route
//! with `tls = "dane-only"` to a domain the scripted DNS server answers unsigned, and
//! without the root's keys Tern's built-in trust anchor needs: the validated lookup fails,
//! so no host has usable TLSA records. The host is never connected to, the mail waits
//! with 4.7.5, and each view says why.

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::peers::{DnsServer, SmtpPeer, delivering_with};
use crate::common::{Tern, free_port, run, send_one, simple_message};

fn cli(tern: &Tern, args: &[&str]) -> (bool, String, String) {
    let out: Output = run(&mut tern.tern_command(args), Duration::from_secs(30));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn tls_policy_refusal_is_visible_in_dest_track_and_events() {
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    dns.set_mx("unsigned.test", &[(10, "mx.unsigned.test")], 300);
    dns.set_a("mx.unsigned.test", "127.0.0.2".parse().unwrap(), 300);
    let peer = SmtpPeer::start_on("127.0.0.2", port, &["accept"]);
    let routes = format!(
        "[[route]]\ndomains = [\"unsigned.test\"]\ntransport = \"mx\"\nport = {port}\ntls = \"dane-only\"\n"
    );
    let tern = delivering_with(&dns, port, "", &routes).start();
    crate::common::admin::Admin::of(&tern);

    let id = send_one(
        tern.addr(),
        "s@client.test",
        &["a@unsigned.test"],
        &simple_message("dane-only", "x"),
    );
    // The event: the host, and why it is not used.
    let refused = tern.wait_for_events(4181, 1, Duration::from_secs(20));
    assert_eq!(
        refused[0]["host"], "mx.unsigned.test[127.0.0.2]",
        "{refused:?}"
    );
    let reason = refused[0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.starts_with("4.7.5") && reason.contains("mx.unsigned.test"),
        "{reason}"
    );
    // Deferred, not delivered: the peer never saw a connection.
    tern.wait_for_events(4006, 1, Duration::from_secs(20));
    assert_eq!(peer.connections().1, 0, "nothing may be sent to the host");
    assert_eq!(peer.count(), 0);

    // tern dest: JSON, then the table with its per-host block.
    let deadline = Instant::now() + Duration::from_secs(20);
    let dest = loop {
        let (ok, out, err) = cli(&tern, &["dest", "list", "--json"]);
        assert!(ok, "{out}{err}");
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        let found = v["destinations"]
            .as_array()
            .and_then(|l| l.iter().find(|d| d["name"] == "mx:unsigned.test").cloned());
        if let Some(d) = found.filter(|d| !d["tls"].is_null()) {
            break d;
        }
        assert!(Instant::now() < deadline, "no TLS decision shown: {v}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(dest["tls"]["summary"], "refused", "{dest}");
    assert_eq!(
        dest["tls"]["hosts"][0]["host"], "mx.unsigned.test",
        "{dest}"
    );
    assert_eq!(dest["tls"]["hosts"][0]["usable"], false, "{dest}");
    assert!(
        dest["tls"]["hosts"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("4.7.5") && r.contains("mx.unsigned.test")),
        "{dest}"
    );
    let (ok, table, err) = cli(&tern, &["dest", "list"]);
    assert!(ok, "{err}");
    assert!(
        table.contains("TLS") && table.contains("refused"),
        "{table}"
    );
    assert!(table.contains("TLS of mx:unsigned.test:"), "{table}");
    assert!(table.contains("mx.unsigned.test  refused"), "{table}");

    // tern track: the refusal is in the message's history.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, out, err) = cli(&tern, &["track", &id]);
        if ok && out.contains("delivery.tls.refused") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "track does not show it: {out}{err}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
