//! SMTP TLS reports (RFC 8460), end to end: Tern delivers over the default `may` route
//! to a peer offering STARTTLS (two sessions, each a success) and to one without it (a
//! session recorded as `starttls-not-supported`), both under `no-policy-found` (no DANE
//! or MTA-STS for them). `tern tls-reports send` then closes the period and, from each
//! domain's `_smtp._tls` TXT record on the scripted DNS server, sends the day's report:
//! to the `mailto:` address as a `multipart/report; report-type="tlsrpt"` message queued
//! through Tern's own queue (RFC 8460 §5.3 headers, subject and §5.1 file name), and to
//! the `https:` address as a POST of `application/tlsrpt+gzip` to a local HTTPS receiver
//! whose certificate chains to `tls_reports.https_ca_file`. Every report, unpacked,
//! validates against the JSON Schema written from RFC 8460 §4.4 and holds the counts of
//! the sessions. A second send finds nothing due.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::connectors::wait_until;
use crate::common::peers::{DnsServer, SmtpPeer, delivering_with};
use crate::common::tlsrpt::{HttpsReceiver, check, counts, pki};
use crate::common::{free_port, require_python_modules, run, send_one, simple_message};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn tls_reports_reach_mailto_and_https_and_validate() {
    require_python_modules(&["jsonschema", "aiosmtpd"]);
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(dir.path(), &["mx.secure.test", "rua.reports.test"]);
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    let tls_peer = SmtpPeer::start_on_with_tls("127.0.0.2", port, &cert, &key);
    let plain_peer = SmtpPeer::start_on("127.0.0.3", port, &["accept"]);
    let sink = SmtpPeer::start_on("127.0.0.4", port, &["accept"]);
    let receiver = HttpsReceiver::start("127.0.0.5".parse().unwrap(), &cert, &key);
    for (domain, ip) in [
        ("secure.test", "127.0.0.2"),
        ("plain.test", "127.0.0.3"),
        ("reports.test", "127.0.0.4"),
    ] {
        dns.set_mx(domain, &[(10, &format!("mx.{domain}"))], 300);
        dns.set_a(&format!("mx.{domain}"), ip.parse().unwrap(), 300);
    }
    dns.set_a("rua.reports.test", "127.0.0.5".parse().unwrap(), 300);
    let https = format!("https://rua.reports.test:{}/v1/tlsrpt", receiver.port);
    dns.set_txt(
        "_smtp._tls.secure.test",
        &[format!(
            "v=TLSRPTv1; rua=mailto:tlsrpt@reports.test,{https}"
        )],
        300,
    );
    dns.set_txt(
        "_smtp._tls.plain.test",
        &["v=TLSRPTv1; rua=mailto:tlsrpt@reports.test".to_string()],
        300,
    );

    let tern = delivering_with(&dns, port, "connection_cache_size = 0\n", "")
        .section(&format!(
            "[tls_reports]\nenabled = true\norg_name = \"Tern Test\"\nfrom = \"tlsrpt@mx.tern.test\"\ncontact = \"mailto:tlsrpt@mx.tern.test\"\nflush_secs = 1\nhttps_ca_file = \"{ca}\"\nhttps_allow_private_addresses = true\n"
        ))
        .start();
    tern.wait_for_events(4161, 1, Duration::from_secs(10));

    // Two sessions with STARTTLS (one at a time: no connection is reused), one without.
    for n in 1..=2 {
        send_one(
            tern.addr(),
            "s@client.test",
            &["a@secure.test"],
            &simple_message("tls", "x"),
        );
        tls_peer.wait_for(n, Duration::from_secs(20));
    }
    send_one(
        tern.addr(),
        "s@client.test",
        &["b@plain.test"],
        &simple_message("plain", "x"),
    );
    plain_peer.wait_for(1, Duration::from_secs(20));
    // The last session is in the journal (written in order, every flush_secs).
    let journal_dir = tern.data_dir.join("tls-reports");
    wait_until(Duration::from_secs(10), "the sessions are recorded", || {
        std::fs::read_dir(&journal_dir).is_ok_and(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("plain.test")))
        })
    });

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
    assert_eq!(summary["domains"], 2, "{summary}");
    assert_eq!(summary["queued"], 2, "{summary}");
    assert_eq!(summary["posted"], 1, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");

    // The mailto: reports, through Tern's queue.
    let got = sink.wait_for(2, Duration::from_secs(30));
    let mut ids = std::collections::BTreeMap::new();
    for r in &got {
        assert_eq!(r.rcpts(), ["tlsrpt@reports.test"]);
        assert_eq!(r.mail_from(), "tlsrpt@mx.tern.test");
        let checked = check(true, &r.content);
        let (report, meta) = (&checked["report"], &checked["meta"]);
        let domain = meta["domain"].as_str().unwrap().to_owned();
        assert_eq!(meta["submitter"], "mx.tern.test");
        assert_eq!(meta["from"], "tlsrpt@mx.tern.test");
        assert_eq!(report["organization-name"], "Tern Test");
        assert_eq!(report["contact-info"], "mailto:tlsrpt@mx.tern.test");
        let id = report["report-id"].as_str().unwrap().to_owned();
        let subject = meta["subject"].as_str().unwrap();
        assert_eq!(
            subject,
            format!("Report Domain: {domain} Submitter: mx.tern.test Report-ID: <{id}>")
        );
        let name = meta["filename"].as_str().unwrap();
        let pieces: Vec<&str> = name.trim_end_matches(".json.gz").split('!').collect();
        assert!(name.ends_with(".json.gz"), "{name}");
        assert_eq!(pieces.len(), 5, "{name}");
        assert_eq!((pieces[0], pieces[1]), ("mx.tern.test", domain.as_str()));
        let begin: u64 = pieces[2].parse().unwrap();
        assert_eq!(begin % 86_400, 0, "the period starts at a UTC day: {name}");
        let policy = &report["policies"][0]["policy"];
        assert_eq!(policy["policy-type"], "no-policy-found");
        assert_eq!(policy["policy-domain"], domain.as_str());
        match domain.as_str() {
            "secure.test" => assert_eq!(counts(report, "no-policy-found"), (2, 0)),
            "plain.test" => {
                assert_eq!(counts(report, "no-policy-found"), (0, 1));
                let d = &report["policies"][0]["failure-details"][0];
                assert_eq!(d["result-type"], "starttls-not-supported");
                assert_eq!(d["receiving-mx-hostname"], "mx.plain.test");
                assert_eq!(d["receiving-ip"], "127.0.0.3");
                assert_eq!(d["failed-session-count"], 1);
            }
            other => panic!("a report for {other}"),
        }
        ids.insert(domain, id);
    }
    assert_eq!(ids.len(), 2, "{ids:?}");

    // The https: report: the same report as secure.test's message.
    let posts = receiver.wait_for(1, Duration::from_secs(30));
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].path, "/v1/tlsrpt");
    assert_eq!(posts[0].content_type, "application/tlsrpt+gzip");
    let checked = check(false, &posts[0].body);
    assert_eq!(checked["report"]["report-id"], json!(ids["secure.test"]));
    assert_eq!(counts(&checked["report"], "no-policy-found"), (2, 0));
    assert_eq!(tern.events_with_id(4162).len(), 2);
    let posted = tern.events_with_id(4163);
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert_eq!(posted[0]["rua"], https.as_str());

    // Nothing is sent twice. (The new period holds the sessions that delivered the
    // reports to reports.test, which publishes no record: nothing to send for it.)
    let admin = crate::common::admin::Admin::of(&tern);
    let again = admin.post("/api/v1/tls-reports/send", &json!({}));
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["queued"], 0, "{}", again.body);
    assert_eq!(again.json()["posted"], 0, "{}", again.body);
    assert_eq!(again.json()["failed"], 0, "{}", again.body);
    assert_eq!(receiver.posts().len(), 1);
    assert_eq!(sink.count(), 2);
}
