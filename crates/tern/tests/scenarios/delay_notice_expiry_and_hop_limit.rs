//! Time and loops: a message that keeps being deferred gets one delay notice (the sender
//! asked with NOTIFY=DELAY) and, at the end of its queue lifetime, a bounce with 4.4.7
//! and the last error. A message that went through more hops than the limit bounces with
//! 5.4.6 without being sent anywhere.

use std::time::Duration;

use crate::common::peers::{DnsServer, SmtpPeer, parse_dsn_with_python, send_with};
use crate::common::{Setup, free_port, simple_message};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn one_delay_notice_then_an_expiry_bounce_and_a_hop_limit_bounce() {
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    dns.set_mx("client.test", &[(10, "mx.client.test")], 300);
    dns.set_a("mx.client.test", "127.0.0.4".parse().unwrap(), 300);
    dns.set_mx("slow.test", &[(10, "mx.slow.test")], 300);
    dns.set_a("mx.slow.test", "127.0.0.2".parse().unwrap(), 300);
    let slow = SmtpPeer::start_on("127.0.0.2", port, &["tempfail-rcpt=."]);
    let sender_mx = SmtpPeer::start_on("127.0.0.4", port, &["accept"]);
    let tern = Setup::new()
        .dns(&dns.dns_section())
        .queue(
            "[queue]\ndeliver = true\nmin_backoff_secs = 1\nmax_backoff_secs = 1\n\
             delay_notice_secs = 1\nmax_lifetime_secs = 5\nhop_limit = 50\n",
        )
        .section(&format!(
            "[[route]]\ndomains = [\"*\"]\ntransport = \"mx\"\nport = {port}\n"
        ))
        .start();

    send_with(
        tern.addr(),
        "MAIL FROM:<s@client.test>",
        &["RCPT TO:<a@slow.test> NOTIFY=DELAY,FAILURE"],
        &simple_message("slowly", "waiting"),
    );
    let mut hops = String::new();
    for n in 0..51 {
        hops.push_str(&format!(
            "Received: from hop{n}.test by hop{n}.test; Mon, 23 Nov 2026 10:00:00 +0000\r\n"
        ));
    }
    hops.push_str("Subject: looping\r\n\r\nround and round\r\n");
    send_with(
        tern.addr(),
        "MAIL FROM:<s@client.test>",
        &["RCPT TO:<b@slow.test>"],
        hops.as_bytes(),
    );

    let reports = sender_mx.wait_for(3, Duration::from_secs(40));
    let mut seen: Vec<(String, String, String)> = reports
        .iter()
        .map(|r| {
            let dsn = parse_dsn_with_python(&r.content);
            let rc = &dsn["recipients"][0];
            (
                rc["Final-Recipient"].as_str().unwrap().to_string(),
                rc["Action"].as_str().unwrap().to_string(),
                rc["Status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (
                "rfc822; a@slow.test".into(),
                "delayed".into(),
                "4.2.0".into()
            ),
            (
                "rfc822; a@slow.test".into(),
                "failed".into(),
                "4.4.7".into()
            ),
            (
                "rfc822; b@slow.test".into(),
                "failed".into(),
                "5.4.6".into()
            ),
        ]
    );
    assert!(slow.received().is_empty());
    tern.wait_for_events(4008, 1, Duration::from_secs(10));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !tern.queue_json(&[]).is_empty() {
        assert!(std::time::Instant::now() < deadline, "queue never emptied");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        sender_mx.received().len(),
        3,
        "one delay notice, two bounces"
    );
}
