//! Concurrency per destination is capped (`queue.destination_concurrency`), and
//! connections are reused for several messages in a row: 40 messages to one slow
//! destination never see more than 3 connections at once, and far fewer connections than
//! messages.

use std::time::{Duration, Instant};

use crate::common::peers::{DnsServer, SmtpPeer};
use crate::common::{Setup, SmtpClient, free_port, simple_message};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn a_slow_destination_gets_at_most_its_limit_and_reused_connections() {
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    dns.set_mx("slow.test", &[(10, "mx.slow.test")], 300);
    dns.set_a("mx.slow.test", "127.0.0.2".parse().unwrap(), 300);
    let peer = SmtpPeer::start_on("127.0.0.2", port, &["slow=40"]);
    let tern = Setup::new()
        .dns(&dns.dns_section())
        .queue("[queue]\ndeliver = true\ndestination_concurrency = 3\nmin_backoff_secs = 1\n")
        .section(&format!(
            "[[route]]\ndomains = [\"*\"]\ntransport = \"mx\"\nport = {port}\n"
        ))
        .start();

    let mut c = SmtpClient::connect(tern.addr()).unwrap();
    c.hello("client.test");
    for n in 0..40 {
        let r = c
            .send_message(
                "s@client.test",
                &[&format!("r{n}@slow.test")],
                &simple_message(&format!("m{n}"), "slow"),
            )
            .unwrap();
        assert_eq!(r.code, 250);
    }
    let _ = c.command("QUIT");
    let deadline = Instant::now() + Duration::from_secs(60);
    while peer.received().len() < 40 {
        assert!(
            Instant::now() < deadline,
            "{} of 40 delivered",
            peer.received().len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (max_open, total) = peer.connections();
    assert!(
        (1..=3).contains(&max_open),
        "at most 3 at once, saw {max_open}"
    );
    assert!(
        total < 40,
        "connections were reused: {total} connections for 40 messages"
    );
}
