//! The next hop's limits and the sender's NOTIFY wishes: a message over the peer's SIZE
//! bounces with 5.3.4, an SMTPUTF8 message to a peer without SMTPUTF8 bounces with 5.6.7,
//! NOTIFY=NEVER suppresses the bounce, NOTIFY=SUCCESS to a peer without DSN gets a
//! "relayed" notice from Tern, and a failure of a null-sender message is logged, never
//! bounced (no bounce loops).

use std::time::Duration;

use crate::common::peers::{DnsServer, SmtpPeer, delivering, parse_dsn_with_python, send_with};
use crate::common::{free_port, simple_message};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn size_smtputf8_and_notify_variants() {
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    dns.set_mx("client.test", &[(10, "mx.client.test")], 300);
    dns.set_a("mx.client.test", "127.0.0.4".parse().unwrap(), 300);
    dns.set_mx("small.test", &[(10, "mx.small.test")], 300);
    dns.set_a("mx.small.test", "127.0.0.2".parse().unwrap(), 300);
    dns.set_mx("ascii.test", &[(10, "mx.ascii.test")], 300);
    dns.set_a("mx.ascii.test", "127.0.0.3".parse().unwrap(), 300);
    dns.set_mx("nodsn.test", &[(10, "mx.nodsn.test")], 300);
    dns.set_a("mx.nodsn.test", "127.0.0.5".parse().unwrap(), 300);
    let small = SmtpPeer::start_on("127.0.0.2", port, &["size=2000", "permfail-rcpt=^never@"]);
    let ascii = SmtpPeer::start_on("127.0.0.3", port, &["no-smtputf8"]);
    let nodsn = SmtpPeer::start_on("127.0.0.5", port, &["no-dsn"]);
    let sender_mx = SmtpPeer::start_on("127.0.0.4", port, &["accept"]);
    let tern = delivering(&dns, port, "").start();

    let big = simple_message("big", &"0123456789".repeat(400));
    send_with(
        tern.addr(),
        "MAIL FROM:<s@client.test>",
        &["RCPT TO:<a@small.test>"],
        &big,
    );
    send_with(
        tern.addr(),
        "MAIL FROM:<s@client.test> SMTPUTF8",
        &["RCPT TO:<jörg@ascii.test>"],
        &simple_message("utf8", "grüße"),
    );
    // NOTIFY=NEVER: refused, but nobody is told.
    send_with(
        tern.addr(),
        "MAIL FROM:<s@client.test>",
        &["RCPT TO:<never@small.test> NOTIFY=NEVER"],
        &simple_message("never", "quiet"),
    );
    // A null-sender message that fails: logged, not bounced.
    send_with(
        tern.addr(),
        "MAIL FROM:<>",
        &["RCPT TO:<never@small.test>"],
        &simple_message("bounce of a bounce", "no loop"),
    );
    // NOTIFY=SUCCESS through a peer without DSN: Tern reports "relayed".
    send_with(
        tern.addr(),
        "MAIL FROM:<s@client.test>",
        &["RCPT TO:<ok@nodsn.test> NOTIFY=SUCCESS,FAILURE"],
        &simple_message("success", "tell me"),
    );
    nodsn.wait_for(1, Duration::from_secs(20));

    let reports = sender_mx.wait_for(3, Duration::from_secs(30));
    let mut seen: Vec<(String, String, String)> = reports
        .iter()
        .map(|b| {
            let dsn = parse_dsn_with_python(&b.content);
            let r = &dsn["recipients"][0];
            (
                r["Final-Recipient"].as_str().unwrap().to_string(),
                r["Action"].as_str().unwrap().to_string(),
                r["Status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    let mut want = vec![
        (
            "rfc822; a@small.test".to_string(),
            "failed".to_string(),
            "5.3.4".to_string(),
        ),
        (
            "rfc822; ok@nodsn.test".to_string(),
            "relayed".to_string(),
            "2.0.0".to_string(),
        ),
    ];
    let utf8 = seen
        .iter()
        .find(|(r, _, _)| r.contains("ascii.test"))
        .cloned()
        .expect("a bounce for the SMTPUTF8 message");
    assert_eq!(
        (utf8.1.as_str(), utf8.2.as_str()),
        ("failed", "5.6.7"),
        "{utf8:?}"
    );
    seen.retain(|(r, _, _)| !r.contains("ascii.test"));
    want.sort();
    assert_eq!(seen, want);
    assert!(small.received().is_empty() && ascii.received().is_empty());

    // The two quiet failures: logged as failed (4003), one suppressed for the null
    // sender (4005), and no report beyond the three above.
    let failed = tern.wait_for_events(4003, 4, Duration::from_secs(20));
    assert!(failed.len() >= 4, "{failed:?}");
    let suppressed = tern.wait_for_events(4005, 1, Duration::from_secs(10));
    assert_eq!(suppressed[0]["reason"], "null sender");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !tern.queue_json(&[]).is_empty() {
        assert!(std::time::Instant::now() < deadline, "queue never emptied");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sender_mx.received().len(), 3);
}
