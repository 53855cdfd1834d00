//! Mail from outside that Tern forwards is ARC-sealed: a message relayed to a relay
//! domain and one whose local recipient is an alias of a remote address both reach the
//! next hop (aiosmtpd) with one ARC set, `i=1; cv=none` (nothing to validate: the first
//! set), whose ARC-Authentication-Results is Tern's minimal one (verification is off
//! here), and dkimpy's `arc_verify` validates it against the published key. A byte
//! changed in the body breaks it (the check can fail). Each seal is event 4113 and is
//! counted in `tern_arc_seals_total{result="sealed"}`.

use std::time::Duration;

use crate::common::arc::{assert_sealed, section, verify};
use crate::common::dkim::generate;
use crate::common::free_port;
use crate::common::local::{local_section, maildir_route, open_tempdir};
use crate::common::peers::{DnsServer, SmtpPeer, delivering, send_with};

fn message(case: &str, to: &str) -> Vec<u8> {
    format!(
        "X-Case: {case}\r\nFrom: Ann <ann@origin.test>\r\nTo: <{to}>\r\nSubject: {case}\r\nDate: Sun, 6 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{case}@origin.test>\r\n\r\nHello from outside.\r\n"
    )
    .into_bytes()
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn forwarded_mail_gets_a_first_arc_set_that_dkimpy_validates() {
    let keys = tempfile::tempdir().unwrap();
    let key = generate(keys.path(), "forward.test", "arc", "rsa");
    let maps = tempfile::tempdir().unwrap();
    let mailboxes = maps.path().join("mailboxes");
    let aliases = maps.path().join("aliases");
    std::fs::write(&mailboxes, "alice@example.test  alice\n").unwrap();
    std::fs::write(&aliases, "fwd@example.test: friend@dest.test\n").unwrap();
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    dns.set_mx("dest.test", &[(10, "mx.dest.test")], 300);
    dns.set_a("mx.dest.test", "127.0.0.2".parse().unwrap(), 300);
    let sink = SmtpPeer::start_on("127.0.0.2", port, &[]);
    // 127.0.0.1 (the test client) is outside the relay networks: its mail to the relay
    // domain and to the alias only passes through.
    let root = open_tempdir();
    let tern = delivering(&dns, port, &maildir_route(&["example.test"], root.path()))
        .section("[relay]\ndomains = [\"dest.test\"]\nnetworks = [\"127.0.0.9/32\"]\n")
        .section(&local_section(
            &["example.test"],
            Some(&mailboxes),
            Some(&aliases),
            "",
        ))
        .section(&section(&key, ""))
        .start();
    send_with(
        tern.addr(),
        "MAIL FROM:<ann@origin.test>",
        &["RCPT TO:<a@dest.test>"],
        &message("relayed", "a@dest.test"),
    );
    send_with(
        tern.addr(),
        "MAIL FROM:<ann@origin.test>",
        &["RCPT TO:<fwd@example.test>"],
        &message("aliased", "fwd@example.test"),
    );
    let got = sink.wait_for(2, Duration::from_secs(30));
    assert_eq!(got.len(), 2);
    for r in &got {
        let text = String::from_utf8_lossy(&r.content).to_string();
        let case = if text.contains("X-Case: aliased") {
            assert_eq!(r.rcpts(), ["friend@dest.test"]);
            "aliased"
        } else {
            "relayed"
        };
        assert_sealed(&r.content, &[&key], 1, "none", case);
        // Compared unfolded (a long field is folded at a space).
        let unfolded = text.replace("\r\n\t", " ");
        assert!(
            unfolded.contains(
                "ARC-Authentication-Results: i=1; mx.tern.test; arc=none smtp.remote-ip=127.0.0.1\r\n"
            ),
            "{case}: {text}"
        );
        assert!(
            text.starts_with("ARC-Seal: "),
            "{case}: the set goes first: {text}"
        );
        assert_eq!(text.matches("ARC-Seal:").count(), 1, "{case}");
        // Tampering is caught.
        let mut bad = r.content.clone();
        let at = bad.len() - 6;
        bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
        let v = verify(&bad, &[&key]);
        assert_eq!(
            v["cv"], "fail",
            "{case}: a changed body still validates: {v}"
        );
    }
    let sealed = tern.wait_for_events(4113, 2, Duration::from_secs(10));
    assert!(
        sealed
            .iter()
            .all(|e| e["cv"] == "none" && e["instance"] == "1" && e["domain"] == "forward.test"),
        "{sealed:?}"
    );
    let metrics = crate::common::admin::Admin::of(&tern).get("/metrics").body;
    let line = "tern_arc_seals_total{result=\"sealed\"} 2";
    assert!(metrics.contains(line), "{line} in\n{metrics}");
}
