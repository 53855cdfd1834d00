//! One transaction, three fates: a recipient accepted, one refused for good, one refused
//! for now. The good one is delivered, exactly one bounce lists only the refused one
//! (checked field by field by Python's email package), and the retry carries only the
//! deferred recipient. No second bounce ever comes.

use std::time::Duration;

use crate::common::peers::{DnsServer, SmtpPeer, delivering, parse_dsn_with_python, send_with};
use crate::common::{free_port, simple_message};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn delivered_bounced_and_deferred_recipients_each_get_their_due() {
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    dns.set_mx("example.test", &[(10, "mx.example.test")], 300);
    dns.set_a("mx.example.test", "127.0.0.2".parse().unwrap(), 300);
    dns.set_mx("client.test", &[(10, "mx.client.test")], 300);
    dns.set_a("mx.client.test", "127.0.0.4".parse().unwrap(), 300);
    let mut peer = SmtpPeer::start_on(
        "127.0.0.2",
        port,
        &["permfail-rcpt=^bad@", "tempfail-rcpt=^later@"],
    );
    let sender_mx = SmtpPeer::start_on("127.0.0.4", port, &["accept"]);
    let tern = delivering(&dns, port, "").start();

    let content = simple_message("three fates", "hello");
    let id = send_with(
        tern.addr(),
        "MAIL FROM:<s@client.test> RET=HDRS ENVID=env-42",
        &[
            "RCPT TO:<good@example.test> ORCPT=rfc822;good@example.test",
            "RCPT TO:<bad@example.test> NOTIFY=FAILURE ORCPT=rfc822;Bad@Example.test",
            "RCPT TO:<later@example.test>",
        ],
        &content,
    );
    let first = peer.wait_for(1, Duration::from_secs(20));
    assert_eq!(first[0].rcpts(), vec!["good@example.test".to_string()]);

    let bounces = sender_mx.wait_for(1, Duration::from_secs(20));
    let bounce = &bounces[0];
    assert_eq!(
        bounce.mail_from(),
        "<>",
        "bounces come from the null sender"
    );
    assert_eq!(bounce.rcpts(), vec!["s@client.test".to_string()]);
    let dsn = parse_dsn_with_python(&bounce.content);
    assert_eq!(dsn["content_type"], "multipart/report");
    assert_eq!(dsn["report_type"], "delivery-status");
    assert_eq!(dsn["to"], "s@client.test", "{dsn}");
    assert_eq!(dsn["auto_submitted"], "auto-replied");
    assert_eq!(
        dsn["parts"],
        serde_json::json!([
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ])
    );
    assert_eq!(dsn["per_message"]["Reporting-MTA"], "dns; mx.tern.test");
    assert_eq!(dsn["per_message"]["Original-Envelope-Id"], "env-42");
    let rcpts = dsn["recipients"].as_array().unwrap();
    assert_eq!(
        rcpts.len(),
        1,
        "only the refused recipient is reported: {dsn}"
    );
    let r = &rcpts[0];
    assert_eq!(r["Final-Recipient"], "rfc822; bad@example.test");
    assert_eq!(r["Original-Recipient"], "rfc822;Bad@Example.test");
    assert_eq!(r["Action"], "failed");
    assert_eq!(r["Status"], "5.1.1");
    assert_eq!(r["Remote-MTA"], "dns; mx.example.test");
    let diag = r["Diagnostic-Code"].as_str().unwrap();
    assert!(diag.starts_with("smtp; 550"), "{diag}");
    let text = dsn["text"].as_str().unwrap();
    assert!(
        text.contains("bad@example.test") && text.contains("550"),
        "{text}"
    );
    assert!(!text.contains("good@example.test"), "{text}");
    assert!(
        dsn["returned"]
            .as_str()
            .unwrap()
            .contains("Subject: three fates"),
        "RET=HDRS returns the headers"
    );
    assert!(text.contains(&id) || dsn["returned"].as_str().unwrap().contains(&id));

    // The deferred recipient goes alone once the peer takes it.
    peer.restart(&["accept"]);
    let all = peer.wait_for(2, Duration::from_secs(30));
    assert_eq!(all[1].rcpts(), vec!["later@example.test".to_string()]);
    assert!(all[1].content.ends_with(&content));
    // The message leaves the queue and no second bounce is sent.
    tern.wait_for_events(4001, 2, Duration::from_secs(10));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !tern.queue_json(&[]).is_empty() {
        assert!(std::time::Instant::now() < deadline, "queue never emptied");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sender_mx.received().len(), 1, "exactly one bounce");
    assert_eq!(tern.events_with_id(4004).len(), 1, "one DSN queued");
}
