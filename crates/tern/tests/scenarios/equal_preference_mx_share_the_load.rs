//! MX hosts of equal preference are shuffled on every attempt (RFC 5321 §5.1): over 200
//! messages, each of four hosts gets a fair share. Connections are not reused here
//! (max_messages_per_connection = 1), so every message makes its own choice.

use std::time::Duration;

use crate::common::peers::{DnsServer, SmtpPeer, delivering_with};
use crate::common::{SmtpClient, free_port, simple_message};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn four_equal_hosts_each_get_a_fair_share_of_200_messages() {
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    let hosts = ["h1", "h2", "h3", "h4"];
    let mx: Vec<(u16, String)> = hosts
        .iter()
        .map(|h| (10, format!("{h}.spread.test")))
        .collect();
    let mx_refs: Vec<(u16, &str)> = mx.iter().map(|(p, n)| (*p, n.as_str())).collect();
    dns.set_mx("spread.test", &mx_refs, 300);
    let mut peers = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let ip = format!("127.0.0.{}", i + 2);
        dns.set_a(&format!("{h}.spread.test"), ip.parse().unwrap(), 300);
        peers.push(SmtpPeer::start_on(&ip, port, &["accept"]));
    }
    let tern = delivering_with(&dns, port, "max_messages_per_connection = 1\n", "").start();

    let mut c = SmtpClient::connect(tern.addr()).unwrap();
    c.hello("client.test");
    for n in 0..200 {
        let r = c
            .send_message(
                "s@client.test",
                &[&format!("r{n}@spread.test")],
                &simple_message(&format!("m{n}"), "spread"),
            )
            .unwrap();
        assert_eq!(r.code, 250, "{}", r.text());
    }
    let _ = c.command("QUIT");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let total: usize = peers.iter().map(|p| p.received().len()).sum();
        if total >= 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {total} of 200 delivered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let counts: Vec<usize> = peers.iter().map(|p| p.received().len()).collect();
    assert_eq!(counts.iter().sum::<usize>(), 200, "{counts:?}");
    // Fair: a binomial(200, 1/4) share is 50 ± 6; 25 is far outside chance.
    assert!(counts.iter().all(|c| *c >= 25), "unfair spread: {counts:?}");
}
