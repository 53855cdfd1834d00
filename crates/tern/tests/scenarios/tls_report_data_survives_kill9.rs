//! TLS report data outlives a crash: the sessions Tern recorded while delivering (two
//! with STARTTLS, one without) are in the journal within `flush_secs`; after `kill -9`
//! the start reads them back (event 4161 counts them), and `tern tls-reports send`
//! sends reports that hold every session and validate against the RFC 8460 schema.

use std::time::Duration;

use serde_json::Value;

use crate::common::connectors::wait_until;
use crate::common::peers::{DnsServer, SmtpPeer, delivering_with};
use crate::common::tlsrpt::{check, counts, pki};
use crate::common::{free_port, require_python_modules, run, send_one, simple_message};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn tls_report_data_survives_kill9() {
    require_python_modules(&["jsonschema", "aiosmtpd"]);
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, key) = pki(dir.path(), &["mx.secure.test"]);
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    let tls_peer = SmtpPeer::start_on_with_tls("127.0.0.2", port, &cert, &key);
    let plain_peer = SmtpPeer::start_on("127.0.0.3", port, &["accept"]);
    let sink = SmtpPeer::start_on("127.0.0.4", port, &["accept"]);
    for (domain, ip) in [
        ("secure.test", "127.0.0.2"),
        ("plain.test", "127.0.0.3"),
        ("reports.test", "127.0.0.4"),
    ] {
        dns.set_mx(domain, &[(10, &format!("mx.{domain}"))], 300);
        dns.set_a(&format!("mx.{domain}"), ip.parse().unwrap(), 300);
        dns.set_txt(
            &format!("_smtp._tls.{domain}"),
            &["v=TLSRPTv1; rua=mailto:tlsrpt@reports.test".to_string()],
            300,
        );
    }
    let mut tern = delivering_with(&dns, port, "connection_cache_size = 0\n", "")
        .section("[tls_reports]\nenabled = true\nflush_secs = 1\n")
        .start();
    tern.wait_for_events(4161, 1, Duration::from_secs(10));
    for n in 1..=2 {
        send_one(
            tern.addr(),
            "s@client.test",
            &["a@secure.test"],
            &simple_message("t", "x"),
        );
        tls_peer.wait_for(n, Duration::from_secs(20));
    }
    send_one(
        tern.addr(),
        "s@client.test",
        &["b@plain.test"],
        &simple_message("p", "x"),
    );
    plain_peer.wait_for(1, Duration::from_secs(20));
    let journal_dir = tern.data_dir.join("tls-reports");
    wait_until(
        Duration::from_secs(10),
        "the journal holds the sessions",
        || {
            std::fs::read_dir(&journal_dir).is_ok_and(|entries| {
                entries.filter_map(Result::ok).any(|e| {
                    std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("plain.test"))
                })
            })
        },
    );
    tern.kill9();
    // The killed process's admin address is stale: the new one writes its own.
    let _ = std::fs::remove_file(tern.data_dir.join("admin.addr"));
    tern.restart();
    let started = tern.wait_for_events(4161, 2, Duration::from_secs(10));
    let field = |k: &str| started[1][k].to_string().trim_matches('"').to_string();
    assert_eq!(field("sessions"), "3", "{started:?}");
    assert_eq!(field("journals"), "1", "{started:?}");

    // The admin listener of the new process is up (the CLI goes through it).
    crate::common::admin::Admin::of(&tern);
    let out = run(
        &mut tern.tern_command(&["tls-reports", "send", "--json"]),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["queued"], 2, "{summary}");
    let got = sink.wait_for(2, Duration::from_secs(30));
    let mut seen = Vec::new();
    for r in &got {
        let checked = check(true, &r.content);
        let domain = checked["meta"]["domain"].as_str().unwrap().to_owned();
        let c = counts(&checked["report"], "no-policy-found");
        seen.push((domain, c));
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            ("plain.test".to_string(), (0, 1)),
            ("secure.test".to_string(), (2, 0))
        ]
    );
}
