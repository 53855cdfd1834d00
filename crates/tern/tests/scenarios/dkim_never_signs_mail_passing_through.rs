//! Only mail that is ours is signed. A client outside the relay networks sending to a
//! relay domain (mail passing through) is never signed, even From a signing domain;
//! the same message submitted locally (`tern sendmail`, through the pickup directory) is
//! signed and verifies; with `origins = ["authenticated"]` after a reload, neither is.

use std::time::Duration;

use crate::common::connectors::{assert_ok, sendmail};
use crate::common::dkim::{assert_signed_by, generate, section};
use crate::common::free_port;
use crate::common::peers::{DnsServer, SmtpPeer, delivering, send_with};

fn message(case: &str) -> Vec<u8> {
    format!("X-Case: {case}\r\nFrom: <s@ours.test>\r\nTo: <a@dest.test>\r\nSubject: {case}\r\n\r\nbody\r\n")
        .into_bytes()
}

fn case_of(content: &[u8]) -> String {
    String::from_utf8_lossy(content)
        .lines()
        .find_map(|l| l.strip_prefix("X-Case: ").map(str::to_string))
        .unwrap_or_default()
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn passing_through_is_unsigned_local_submission_is_signed() {
    let keys = tempfile::tempdir().unwrap();
    let ed = generate(keys.path(), "ours.test", "e1", "ed25519");
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    dns.set_mx("dest.test", &[(10, "mx.dest.test")], 300);
    dns.set_a("mx.dest.test", "127.0.0.2".parse().unwrap(), 300);
    let sink = SmtpPeer::start_on("127.0.0.2", port, &[]);
    // 127.0.0.1 (the test client) is not in the relay networks; dest.test is a relay
    // domain, so its mail is accepted from anyone: it only passes through.
    let tern = delivering(&dns, port, "")
        .section("[relay]\ndomains = [\"dest.test\"]\nnetworks = [\"127.0.0.9/32\"]\n")
        .section(&section(&[&ed], ""))
        .start();
    send_with(
        tern.addr(),
        "MAIL FROM:<s@ours.test>",
        &["RCPT TO:<a@dest.test>"],
        &message("through"),
    );
    let out = sendmail(
        &tern,
        &["-f", "s@ours.test", "a@dest.test"],
        &message("local"),
    );
    assert_ok(&out, "sendmail");
    let got = sink.wait_for(2, Duration::from_secs(30));
    assert_eq!(got.len(), 2);
    for r in &got {
        let signed = String::from_utf8_lossy(&r.content)
            .to_ascii_lowercase()
            .contains("dkim-signature:");
        match case_of(&r.content).as_str() {
            "through" => assert!(!signed, "mail passing through was signed"),
            "local" => assert_signed_by(&r.content, &[&ed], "local"),
            other => panic!("unknown case {other}"),
        }
    }

    // Only authenticated mail now: the local submission is no longer signed.
    tern.replace_in_config("[dkim]\n", "[dkim]\norigins = [\"authenticated\"]\n");
    let out = tern.tern_command(&["reload"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // `tern reload` may only have signalled (SIGHUP): wait for the reload itself.
    tern.wait_for_events(1007, 1, Duration::from_secs(20));
    let out = sendmail(
        &tern,
        &["-f", "s@ours.test", "a@dest.test"],
        &message("after"),
    );
    assert_ok(&out, "sendmail");
    let got = sink.wait_for(3, Duration::from_secs(30));
    let after = got.iter().find(|r| case_of(&r.content) == "after").unwrap();
    assert!(
        !String::from_utf8_lossy(&after.content)
            .to_ascii_lowercase()
            .contains("dkim-signature:"),
        "signed although no origin matches"
    );
}
