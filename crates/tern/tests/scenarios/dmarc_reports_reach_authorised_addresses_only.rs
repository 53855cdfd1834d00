//! DMARC aggregate reports, end to end: Tern with `[dmarc_reports]` on gets observations
//! (through the test builds' hook, as the inbound verifier will hand them), and
//! `tern dmarc-reports send` queues the reports through Tern's own queue. They arrive
//! at an SMTP sink (aiosmtpd on loopback, found through the MX records of the scripted
//! DNS server) from the configured address, one message per authorised `mailto:`
//! address, with the RFC 7489 subject and file name; the attachment gunzips to XML that
//! validates against the RFC 7489 Appendix C schema (Python xmlschema) and holds the
//! rows with their counts. An address in another domain gets a report only when
//! `<domain>._report._dmarc.<its domain>` says `v=DMARC1` (event 4124 otherwise); an
//! `https:` URI is skipped (4123). A second send finds nothing due: a period is
//! reported once.

use std::io::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::peers::{DnsServer, SmtpPeer, delivering};
use crate::common::{free_port, python, require_python_modules};

const OBSERVATIONS: usize = 7;

fn observation(domain: &str, ip: &str, dkim: &str, rua: &[&str]) -> Value {
    json!({
        "at": 1_800_000_000u64,
        "source_ip": ip,
        "header_from": domain,
        "envelope_from": format!("bounces.{domain}"),
        "policy": {"domain": domain, "adkim": "relaxed", "aspf": "relaxed", "p": "reject",
                   "sp": "quarantine", "pct": 100, "fo": "1"},
        "rua": rua,
        "disposition": if dkim == "pass" { "none" } else { "reject" },
        "dkim_aligned": if dkim == "pass" { "pass" } else { "fail" },
        "spf_aligned": "fail",
        "overrides": [],
        "dkim": [{"domain": domain, "selector": "s1", "result": dkim}],
        "spf": {"domain": format!("bounces.{domain}"), "helo": false, "result": "softfail"},
    })
}

/// Validates the gzipped report in `message` against the schema and returns its
/// summary: {"domain", "filename", "subject", "rows": [[ip, count, dkim]...]}.
const CHECK: &str = r#"
import email, email.policy, gzip, json, sys, xmlschema
msg = email.message_from_bytes(open(sys.argv[1], 'rb').read(), policy=email.policy.default)
parts = [p for p in msg.walk() if p.get_content_type() == 'application/gzip']
assert len(parts) == 1, [p.get_content_type() for p in msg.walk()]
xml = gzip.decompress(parts[0].get_content())
schema = xmlschema.XMLSchema(sys.argv[2])
schema.validate(xml.decode())
import xml.etree.ElementTree as ET
root = ET.fromstring(xml)
rows = []
for r in root.findall('record'):
    rows.append([r.findtext('row/source_ip'), int(r.findtext('row/count')),
                 r.findtext('auth_results/dkim/result')])
print(json.dumps({
    'domain': root.findtext('policy_published/domain'),
    'org': root.findtext('report_metadata/org_name'),
    'begin': int(root.findtext('report_metadata/date_range/begin')),
    'end': int(root.findtext('report_metadata/date_range/end')),
    'filename': parts[0].get_filename(),
    'subject': str(msg['subject']),
    'from': str(msg['from']),
    'rows': sorted(rows),
}))
"#;

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn dmarc_reports_reach_authorised_addresses_only() {
    require_python_modules(&["xmlschema", "aiosmtpd"]);
    let schema = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tern-reports/schema/rfc7489-aggregate.xsd"
    );
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    let sink = SmtpPeer::start_on("127.0.0.2", port, &[]);
    for domain in ["a.test", "reports.test", "other.test"] {
        dns.set_mx(domain, &[(10, &format!("mx.{domain}"))], 300);
        dns.set_a(&format!("mx.{domain}"), "127.0.0.2".parse().unwrap(), 300);
    }
    // reports.test takes reports about a.test; other.test published nothing.
    dns.set_txt(
        "a.test._report._dmarc.reports.test",
        &["v=DMARC1".to_string()],
        300,
    );

    let dir = tempfile::tempdir().unwrap();
    let obs_file = dir.path().join("observations.jsonl");
    let mut f = std::fs::File::create(&obs_file).unwrap();
    let a_rua = [
        "mailto:dmarc@a.test",
        "mailto:agg@reports.test!50k",
        "https://reports.test/dmarc",
    ];
    let b_rua = ["mailto:agg@other.test"];
    let mut all = Vec::new();
    for _ in 0..3 {
        all.push(observation("a.test", "192.0.2.1", "pass", &a_rua));
    }
    all.push(observation("a.test", "2001:db8::7", "fail", &a_rua));
    all.push(observation("a.test", "2001:db8::7", "fail", &a_rua));
    all.push(observation("b.test", "192.0.2.9", "pass", &b_rua));
    all.push(observation("b.test", "192.0.2.9", "pass", &b_rua));
    assert_eq!(all.len(), OBSERVATIONS);
    for o in &all {
        writeln!(f, "{o}").unwrap();
    }
    drop(f);

    let tern = delivering(&dns, port, "")
        .section(
            "[dmarc_reports]\nenabled = true\norg_name = \"Tern Test\"\nemail = \"dmarc-reports@mx.tern.test\"\nmax_rua = 3\n",
        )
        .env("TERN_TEST_DMARC_OBSERVATIONS", obs_file.to_str().unwrap())
        .start();
    tern.wait_for_events(4121, 1, Duration::from_secs(10));
    // The writer has taken every observation (counted in the metrics).
    let admin = crate::common::admin::Admin::of(&tern);
    let line = format!("tern_dmarc_observations_total{{result=\"recorded\"}} {OBSERVATIONS}");
    crate::common::connectors::wait_until(Duration::from_secs(10), "observations recorded", || {
        admin.get("/metrics").body.contains(&line)
    });

    let out = crate::common::run(
        &mut tern.tern_command(&["dmarc-reports", "send", "--json"]),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["queued"], 2, "{run}");
    assert_eq!(run["domains"], 2, "{run}");
    // https:, and other.test without its record.
    assert_eq!(run["skipped"], 2, "{run}");

    let got = sink.wait_for(2, Duration::from_secs(30));
    let mut rcpts: Vec<String> = got.iter().flat_map(|r| r.rcpts()).collect();
    rcpts.sort();
    assert_eq!(rcpts, ["agg@reports.test", "dmarc@a.test"]);
    for r in &got {
        assert_eq!(r.mail_from(), "dmarc-reports@mx.tern.test");
        let file = dir.path().join("report.eml");
        std::fs::write(&file, &r.content).unwrap();
        let checked = python(
            CHECK,
            &[file.to_str().unwrap(), schema],
            Duration::from_secs(60),
        );
        assert!(
            checked.status.success(),
            "the report does not validate:\n{}\n{}",
            String::from_utf8_lossy(&checked.stderr),
            String::from_utf8_lossy(&r.content)
        );
        let s: Value = serde_json::from_slice(&checked.stdout).unwrap();
        assert_eq!(s["domain"], "a.test");
        assert_eq!(s["org"], "Tern Test");
        assert_eq!(s["from"], "dmarc-reports@mx.tern.test");
        assert_eq!(
            s["rows"],
            json!([["192.0.2.1", 3, "pass"], ["2001:db8::7", 2, "fail"]])
        );
        let (begin, end) = (s["begin"].as_u64().unwrap(), s["end"].as_u64().unwrap());
        assert_eq!(begin % 86_400, 0, "the period starts at a UTC day");
        assert!(end >= begin);
        assert_eq!(
            s["filename"],
            format!("mx.tern.test!a.test!{begin}!{end}.xml.gz")
        );
        let subject = s["subject"].as_str().unwrap();
        assert!(
            subject.starts_with("Report Domain: a.test Submitter: mx.tern.test Report-ID: <"),
            "{subject}"
        );
    }
    let unauthorised = tern.events_with_id(4124);
    assert_eq!(unauthorised.len(), 1, "{unauthorised:?}");
    assert_eq!(unauthorised[0]["rua"], "agg@other.test");
    let skipped = tern.events_with_id(4123);
    assert!(
        skipped
            .iter()
            .any(|e| e["reason"] == "not mailto" && e["rua"] == "https://reports.test/dmarc"),
        "{skipped:?}"
    );

    // Nothing is sent twice: the period is done.
    let again = admin.post("/api/v1/dmarc-reports/send", &json!({}));
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["queued"], 0, "{}", again.body);
    assert_eq!(again.json()["periods"], 0, "{}", again.body);
    // Its journal is gone once every domain was reported.
    let journals: Vec<_> = std::fs::read_dir(tern.data_dir.join("dmarc-reports"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jnl"))
        .collect();
    assert!(journals.is_empty(), "{journals:?}");
    assert_eq!(sink.count(), 2);
}
