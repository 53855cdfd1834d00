//! DMARC report data outlives a crash: observations recorded (through the test builds'
//! hook) are in the journal within `flush_secs`; after `kill -9` and a start without
//! the hook, the start reads them back (event 4121 counts them), and
//! `tern dmarc-reports send` queues a report whose XML holds every row with its count.
//! The Admin API's metrics show the observations as recorded before the kill.

use std::io::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::connectors::wait_until;
use crate::common::peers::{DnsServer, SmtpPeer, delivering};
use crate::common::{free_port, python, run};

const ROWS: &str = r#"
import email, email.policy, gzip, json, sys
import xml.etree.ElementTree as ET
msg = email.message_from_bytes(open(sys.argv[1], 'rb').read(), policy=email.policy.default)
part = [p for p in msg.walk() if p.get_content_type() == 'application/gzip'][0]
root = ET.fromstring(gzip.decompress(part.get_content()))
print(json.dumps(sorted([r.findtext('row/source_ip'), int(r.findtext('row/count'))]
                        for r in root.findall('record'))))
"#;

fn observation(ip: &str) -> Value {
    json!({
        "at": 1_800_000_000u64,
        "source_ip": ip,
        "header_from": "a.test",
        "envelope_from": "a.test",
        "policy": {"domain": "a.test", "adkim": "strict", "aspf": "relaxed", "p": "none",
                   "sp": "none", "pct": 100, "fo": "0"},
        "rua": ["mailto:dmarc@a.test"],
        "disposition": "none",
        "dkim_aligned": "pass",
        "spf_aligned": "pass",
        "overrides": [],
        "dkim": [],
        "spf": {"domain": "a.test", "helo": false, "result": "pass"},
    })
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn dmarc_report_data_survives_kill9() {
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    let sink = SmtpPeer::start_on("127.0.0.2", port, &[]);
    dns.set_mx("a.test", &[(10, "mx.a.test")], 300);
    dns.set_a("mx.a.test", "127.0.0.2".parse().unwrap(), 300);

    let dir = tempfile::tempdir().unwrap();
    let obs_file = dir.path().join("observations.jsonl");
    let mut f = std::fs::File::create(&obs_file).unwrap();
    for ip in ["192.0.2.1", "192.0.2.1", "192.0.2.1", "192.0.2.2"] {
        writeln!(f, "{}", observation(ip)).unwrap();
    }
    drop(f);
    let mut tern = delivering(&dns, port, "")
        .section("[dmarc_reports]\nenabled = true\nflush_secs = 1\n")
        .env("TERN_TEST_DMARC_OBSERVATIONS", obs_file.to_str().unwrap())
        .start();
    tern.wait_for_events(4121, 1, Duration::from_secs(10));
    // Synced to the journal within flush_secs.
    let journal_dir = tern.data_dir.join("dmarc-reports");
    wait_until(
        Duration::from_secs(10),
        "the journal holds the rows",
        || {
            std::fs::read_dir(&journal_dir)
                .map(|entries| {
                    entries.filter_map(Result::ok).any(|e| {
                        std::fs::read_to_string(e.path()).is_ok_and(|t| {
                            t.matches("\"t\":\"rows\"").count() >= 1 && t.contains("192.0.2.2")
                        })
                    })
                })
                .unwrap_or(false)
        },
    );
    tern.kill9();
    // The killed process's admin address is stale: the new one writes its own.
    let _ = std::fs::remove_file(tern.data_dir.join("admin.addr"));
    tern.unset_env("TERN_TEST_DMARC_OBSERVATIONS");
    tern.restart();
    let started = tern.wait_for_events(4121, 2, Duration::from_secs(10));
    let field = |k: &str| started[1][k].to_string().trim_matches('"').to_string();
    assert_eq!(field("messages"), "4", "{started:?}");
    assert_eq!(field("journals"), "1", "{started:?}");

    // The admin listener of the new process is up (the CLI goes through it).
    crate::common::admin::Admin::of(&tern);
    let out = run(
        &mut tern.tern_command(&["dmarc-reports", "send", "--json"]),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["queued"], 1, "{summary}");
    let got = sink.wait_for(1, Duration::from_secs(30));
    assert_eq!(got[0].rcpts(), ["dmarc@a.test"]);
    let file = dir.path().join("report.eml");
    std::fs::write(&file, &got[0].content).unwrap();
    let rows = python(ROWS, &[file.to_str().unwrap()], Duration::from_secs(30));
    assert!(
        rows.status.success(),
        "{}",
        String::from_utf8_lossy(&rows.stderr)
    );
    let rows: Value = serde_json::from_slice(&rows.stdout).unwrap();
    assert_eq!(rows, json!([["192.0.2.1", 3], ["192.0.2.2", 1]]));
    // The journal is gone once its only domain was reported.
    wait_until(Duration::from_secs(5), "the journal removed", || {
        std::fs::read_dir(&journal_dir).is_ok_and(|entries| {
            !entries
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().ends_with(".jnl"))
        })
    });
}
