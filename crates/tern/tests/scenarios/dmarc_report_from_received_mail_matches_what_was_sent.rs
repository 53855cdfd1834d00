//! A DMARC aggregate report built from real mail, end to end, without the test hook:
//! clients on four loopback addresses send mail From `sender.test`, whose `_dmarc`
//! record (`p=reject; sp=quarantine; adkim=s; aspf=r; pct=100; fo=1`) asks for reports
//! at `agg@reports.test` (authorised by `sender.test._report._dmarc.reports.test`), to a
//! Tern that verifies it: three pass DMARC through SPF (the envelope domain's record
//! lists their address), two through a DKIM signature made by dkimpy (their envelope
//! domain has no SPF), two fail (unsigned, an address SPF refuses) and one fails with a
//! broken signature; the four failing ones are refused with `550`. After
//! `tern dmarc-reports send`, the one report arrives at the `rua` mailbox (an SMTP sink
//! the MX of `reports.test` names), validates against the RFC 7489 schema, and holds
//! one row per source with its count, its disposition, the aligned results, the
//! identifiers and the DKIM and SPF results, under the policy the domain published.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::connectors::wait_until;
use crate::common::peers::{DnsServer, SmtpPeer};
use crate::common::verify::{
    dkimpy_sign, first_field, message, publish_txt, result_of, rsa_key, send_from, stored,
    verifying,
};
use crate::common::{free_port, python, require_python_modules, run};

/// Validates the gzipped report of `argv[1]` against the schema `argv[2]` and prints
/// what the test checks.
const SUMMARY: &str = r#"
import email, email.policy, gzip, json, sys, xmlschema
import xml.etree.ElementTree as ET
msg = email.message_from_bytes(open(sys.argv[1], 'rb').read(), policy=email.policy.default)
parts = [p for p in msg.walk() if p.get_content_type() == 'application/gzip']
assert len(parts) == 1, [p.get_content_type() for p in msg.walk()]
xml = gzip.decompress(parts[0].get_content())
xmlschema.XMLSchema(sys.argv[2]).validate(xml.decode())
root = ET.fromstring(xml)
rows = []
for r in root.findall('record'):
    rows.append({
        'source_ip': r.findtext('row/source_ip'),
        'count': int(r.findtext('row/count')),
        'disposition': r.findtext('row/policy_evaluated/disposition'),
        'dkim': r.findtext('row/policy_evaluated/dkim'),
        'spf': r.findtext('row/policy_evaluated/spf'),
        'reasons': [e.findtext('type') for e in r.findall('row/policy_evaluated/reason')],
        'envelope_from': r.findtext('identifiers/envelope_from'),
        'header_from': r.findtext('identifiers/header_from'),
        'dkim_results': [[d.findtext('domain'), d.findtext('selector'), d.findtext('result')]
                         for d in r.findall('auth_results/dkim')],
        'spf_results': [[s.findtext('domain'), s.findtext('scope'), s.findtext('result')]
                        for s in r.findall('auth_results/spf')],
    })
policy = {e.tag: e.text for e in root.find('policy_published')}
print(json.dumps({
    'org': root.findtext('report_metadata/org_name'),
    'email': root.findtext('report_metadata/email'),
    'begin': int(root.findtext('report_metadata/date_range/begin')),
    'end': int(root.findtext('report_metadata/date_range/end')),
    'policy': policy,
    'rows': sorted(rows, key=lambda r: r['source_ip']),
    'subject': str(msg['subject']),
}))
"#;

const RECORD: &str = "v=DMARC1; p=reject; sp=quarantine; adkim=s; aspf=r; pct=100; fo=1; rua=mailto:agg@reports.test";

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn dmarc_report_from_received_mail_matches_what_was_sent() {
    require_python_modules(&["xmlschema", "aiosmtpd", "dkim"]);
    let schema = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tern-reports/schema/rfc7489-aggregate.xsd"
    );
    let keys = tempfile::tempdir().unwrap();
    let (key, p) = rsa_key(keys.path(), 2048);

    let mut dns = DnsServer::start();
    publish_txt(&mut dns, "sender.test", "v=spf1 ip4:127.0.0.5 -all");
    publish_txt(&mut dns, "_dmarc.sender.test", RECORD);
    publish_txt(
        &mut dns,
        "sel._domainkey.sender.test",
        &format!("v=DKIM1; k=rsa; p={p}"),
    );
    publish_txt(
        &mut dns,
        "sender.test._report._dmarc.reports.test",
        "v=DMARC1",
    );
    let port = free_port("127.0.0.2".parse().unwrap());
    let sink = SmtpPeer::start_on("127.0.0.2", port, &[]);
    dns.set_mx("reports.test", &[(10, "mx.reports.test")], 300);
    dns.set_a("mx.reports.test", "127.0.0.2".parse().unwrap(), 300);

    // The received mail stays in the hold queue; the reports go out by MX.
    let tern = verifying(&dns, "")
        .queue("[queue]\ndeliver = true\nmin_backoff_secs = 1\nmax_backoff_secs = 2\n")
        .section(&format!(
            "[delivery]\nconnect_timeout_secs = 2\ngreeting_timeout_secs = 3\ncommand_timeout_secs = 5\n\n[[route]]\ndomains = [\"dest.test\"]\ntransport = \"hold\"\n\n[[route]]\ndomains = [\"*\"]\ntransport = \"mx\"\nport = {port}\n"
        ))
        .section(
            "[dmarc_reports]\nenabled = true\norg_name = \"Tern Test\"\nemail = \"dmarc-reports@mx.tern.test\"\n",
        )
        .start();
    tern.wait_for_events(4121, 1, Duration::from_secs(10));

    let mut accepted = 0;
    let mut send = |source: &str, mail_from: &str, content: &[u8], dmarc: &str| {
        let sent = send_from(&tern, source, mail_from, content);
        if dmarc == "pass" {
            let id = sent
                .reply
                .queued_id()
                .unwrap_or_else(|| panic!("{source}: {}", sent.reply.text()));
            let ar = first_field(&stored(&tern, &id));
            assert_eq!(result_of(&ar, "dmarc").as_deref(), Some("pass"), "{ar}");
            accepted += 1;
        } else {
            assert_eq!(sent.reply.code, 550, "{source}: {}", sent.reply.text());
            assert!(sent.reply.text().contains("DMARC"), "{}", sent.reply.text());
        }
    };
    // DMARC pass through SPF: aligned (relaxed), no signature.
    for i in 0..3 {
        let m = message("news@sender.test", &format!("spf{i}"));
        send("127.0.0.5", "bounces@sender.test", &m, "pass");
    }
    // DMARC pass through DKIM (strict alignment: d= is the From domain); the envelope
    // domain has no SPF record.
    for i in 0..2 {
        let m = message("news@sender.test", &format!("dkim{i}"));
        let signed = dkimpy_sign(&m, "sel", "sender.test", &key);
        send("127.0.0.7", "list@elsewhere.test", &signed, "pass");
    }
    // DMARC fail: unsigned, from an address SPF refuses.
    for i in 0..2 {
        let m = message("ceo@sender.test", &format!("spoof{i}"));
        send("127.0.0.8", "ceo@sender.test", &m, "fail");
    }
    // DMARC fail: a signature the body no longer matches, SPF refused.
    let mut broken = dkimpy_sign(
        &message("ceo@sender.test", "broken"),
        "sel",
        "sender.test",
        &key,
    );
    let at = broken.len() - 4;
    broken[at] = b'X';
    send("127.0.0.9", "ceo@sender.test", &broken, "fail");
    assert_eq!(accepted, 5);

    // Every observation reached the writer thread (no hook: the sessions recorded them).
    let admin = crate::common::admin::Admin::of(&tern);
    let line = "tern_dmarc_observations_total{result=\"recorded\"} 8";
    wait_until(Duration::from_secs(10), "observations recorded", || {
        admin.get("/metrics").body.contains(line)
    });

    let out = run(
        &mut tern.tern_command(&["dmarc-reports", "send", "--json"]),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sent["queued"], 1, "{sent}");
    assert_eq!(sent["domains"], 1, "{sent}");

    let got = sink.wait_for(1, Duration::from_secs(30));
    assert_eq!(got.len(), 1);
    let report = &got[0];
    assert_eq!(report.rcpts(), ["agg@reports.test"]);
    assert_eq!(report.mail_from(), "dmarc-reports@mx.tern.test");
    let file = keys.path().join("report.eml");
    std::fs::write(&file, &report.content).unwrap();
    let checked = python(
        SUMMARY,
        &[file.to_str().unwrap(), schema],
        Duration::from_secs(60),
    );
    assert!(
        checked.status.success(),
        "the report does not validate:\n{}\n{}",
        String::from_utf8_lossy(&checked.stderr),
        String::from_utf8_lossy(&report.content)
    );
    let s: Value = serde_json::from_slice(&checked.stdout).unwrap();
    assert_eq!(s["org"], "Tern Test");
    assert_eq!(s["email"], "dmarc-reports@mx.tern.test");
    let (begin, end) = (s["begin"].as_u64().unwrap(), s["end"].as_u64().unwrap());
    assert_eq!(begin % 86_400, 0, "the period starts at a UTC day");
    assert!(end >= begin);
    assert!(
        s["subject"]
            .as_str()
            .unwrap()
            .starts_with("Report Domain: sender.test Submitter: mx.tern.test Report-ID: <"),
        "{}",
        s["subject"]
    );
    assert_eq!(
        s["policy"],
        json!({"domain": "sender.test", "adkim": "s", "aspf": "r", "p": "reject",
               "sp": "quarantine", "pct": "100", "fo": "1"})
    );
    let row = |ip: &str, count: u64, disposition: &str, dkim: &str, spf: &str| {
        (
            ip.to_string(),
            count,
            disposition.to_string(),
            dkim.to_string(),
            spf.to_string(),
        )
    };
    let rows = s["rows"].as_array().unwrap();
    let summary: Vec<_> = rows
        .iter()
        .map(|r| {
            row(
                r["source_ip"].as_str().unwrap(),
                r["count"].as_u64().unwrap(),
                r["disposition"].as_str().unwrap(),
                r["dkim"].as_str().unwrap(),
                r["spf"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            row("127.0.0.5", 3, "none", "fail", "pass"),
            row("127.0.0.7", 2, "none", "pass", "fail"),
            row("127.0.0.8", 2, "reject", "fail", "fail"),
            row("127.0.0.9", 1, "reject", "fail", "fail"),
        ],
        "{s}"
    );
    let detail: Vec<_> = rows
        .iter()
        .map(|r| {
            json!([
                r["envelope_from"],
                r["header_from"],
                r["dkim_results"],
                r["spf_results"],
                r["reasons"]
            ])
        })
        .collect();
    assert_eq!(
        detail,
        [
            json!([
                "sender.test",
                "sender.test",
                [],
                [["sender.test", "mfrom", "pass"]],
                []
            ]),
            json!([
                "elsewhere.test",
                "sender.test",
                [["sender.test", "sel", "pass"]],
                [["elsewhere.test", "mfrom", "none"]],
                []
            ]),
            json!([
                "sender.test",
                "sender.test",
                [],
                [["sender.test", "mfrom", "fail"]],
                []
            ]),
            json!([
                "sender.test",
                "sender.test",
                [["sender.test", "sel", "fail"]],
                [["sender.test", "mfrom", "fail"]],
                []
            ]),
        ],
        "{s}"
    );
    assert_eq!(sink.count(), 1, "one report, one address");
}
