//! One DMARC aggregate report per domain and period for a cluster (docs/cluster/state.md):
//! two nodes receive mail From `sender.test` (DMARC pass through SPF) from clients on
//! 127.0.7.x, node 1 three messages from 127.0.7.1, node 2 two from 127.0.7.1 and one
//! from 127.0.7.2. `POST /api/v1/dmarc-reports/send` on both nodes (repeated while they
//! wait on each other) gives ONE report at the `rua` mailbox, whose rows are the sums
//! over the nodes (127.0.7.1: 5, 127.0.7.2: 1); both nodes then hold nothing more to
//! report, and further runs send nothing.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::admin::Admin;
use crate::common::cluster::{RedisServer, start_nodes, wait_for_members};
use crate::common::connectors::wait_until;
use crate::common::peers::{DnsServer, SmtpPeer};
use crate::common::verify::{message, publish_txt, send_from, verifying};
use crate::common::{free_port, python, require_python_modules};

const LIMIT: Duration = Duration::from_secs(60);

/// Prints the rows of the gzipped report in the message `argv[1]`.
const ROWS: &str = r#"
import email, email.policy, gzip, json, sys
import xml.etree.ElementTree as ET
msg = email.message_from_bytes(open(sys.argv[1], 'rb').read(), policy=email.policy.default)
parts = [p for p in msg.walk() if p.get_content_type() == 'application/gzip']
assert len(parts) == 1
root = ET.fromstring(gzip.decompress(parts[0].get_content()))
rows = {r.findtext('row/source_ip'): int(r.findtext('row/count')) for r in root.findall('record')}
print(json.dumps({'rows': rows, 'id': root.findtext('report_metadata/report_id')}))
"#;

const RECORD: &str = "v=DMARC1; p=reject; rua=mailto:agg@reports.test";

#[test]
fn cluster_dmarc_report_sent_once_for_the_cluster() {
    require_python_modules(&["aiosmtpd"]);
    let mut dns = DnsServer::start();
    publish_txt(&mut dns, "sender.test", "v=spf1 ip4:127.0.7.0/24 -all");
    publish_txt(&mut dns, "_dmarc.sender.test", RECORD);
    publish_txt(
        &mut dns,
        "sender.test._report._dmarc.reports.test",
        "v=DMARC1",
    );
    let port = free_port("127.0.7.10".parse().unwrap());
    let sink = SmtpPeer::start_on("127.0.7.10", port, &[]);
    dns.set_mx("reports.test", &[(10, "mx.reports.test")], 300);
    dns.set_a("mx.reports.test", "127.0.7.10".parse().unwrap(), 300);

    let redis = RedisServer::start();
    let nodes = start_nodes(&redis, 2, "", |_| {
        verifying(&dns, "")
            .queue("[queue]\ndeliver = true\nmin_backoff_secs = 1\nmax_backoff_secs = 2\n")
            .section(&format!(
                "[delivery]\nconnect_timeout_secs = 2\ngreeting_timeout_secs = 3\ncommand_timeout_secs = 5\n\n[[route]]\ndomains = [\"dest.test\"]\ntransport = \"hold\"\n\n[[route]]\ndomains = [\"*\"]\ntransport = \"mx\"\nport = {port}\n"
            ))
            .section(
                "[dmarc_reports]\nenabled = true\norg_name = \"Tern Test\"\nemail = \"dmarc-reports@mx.tern.test\"\n",
            )
    });
    wait_for_members(&nodes, 2, LIMIT);
    for t in &nodes {
        t.wait_for_events(8001, 1, LIMIT);
    }

    let sends: [&[&str]; 2] = [
        &["127.0.7.1", "127.0.7.1", "127.0.7.1"],
        &["127.0.7.1", "127.0.7.1", "127.0.7.2"],
    ];
    for (t, sources) in nodes.iter().zip(sends) {
        for (i, source) in sources.iter().enumerate() {
            let m = message("news@sender.test", &format!("m{i}"));
            let sent = send_from(t, source, "bounces@sender.test", &m);
            assert!(sent.reply.queued_id().is_some(), "{}", sent.reply.text());
        }
        let admin = Admin::of(t);
        let line = "tern_dmarc_observations_total{result=\"recorded\"} 3";
        wait_until(Duration::from_secs(10), "observations recorded", || {
            admin.get("/metrics").body.contains(line)
        });
    }

    // Each node is asked to send; the lease holder waits for the other's share, so
    // the runs are repeated until the merged report is out.
    let admins: Vec<Admin> = nodes.iter().map(Admin::of).collect();
    let send = |a: &Admin| -> Value {
        let r = a.post("/api/v1/dmarc-reports/send", &json!({}));
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    };
    let deadline = Instant::now() + LIMIT;
    while sink.count() == 0 {
        for a in &admins {
            send(a);
        }
        assert!(Instant::now() < deadline, "no report at the rua mailbox");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Both nodes end with nothing left to report (the follower marks its domain sent
    // once it sees the merged report included its data).
    for a in &admins {
        let deadline = Instant::now() + LIMIT;
        loop {
            let r = send(a);
            if r["periods"] == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "still waiting: {r}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let got = sink.wait_for(1, Duration::from_secs(10));
    // Another round sends nothing more.
    for a in &admins {
        assert_eq!(send(a)["queued"], 0);
    }
    assert_eq!(sink.count(), 1, "one report for the cluster");
    let queued: usize = nodes.iter().map(|t| t.events_with_id(4122).len()).sum();
    assert_eq!(queued, 1, "one report queued in the cluster");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.eml");
    std::fs::write(&file, &got[0].content).unwrap();
    let out = python(ROWS, &[file.to_str().unwrap()], Duration::from_secs(30));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["rows"], json!({"127.0.7.1": 5, "127.0.7.2": 1}), "{s}");
    assert_eq!(got[0].rcpts(), ["agg@reports.test"]);

    // The period's keys expire.
    let keys = redis.cli(&["--scan", "--pattern", "*dmarc:*"]);
    assert!(!keys.trim().is_empty(), "report data in redis");
    for k in keys.lines().filter(|k| !k.is_empty()) {
        let ttl: i64 = redis.cli(&["PTTL", k]).trim().parse().unwrap_or(-9);
        assert!(ttl > 0, "{k} expires: {ttl}");
    }
}
