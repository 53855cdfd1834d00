//! A sender domain's hourly limit (`limits.sender_domain_messages = "7/1h"`) holds across
//! three nodes sharing one real redis-server: mail from one sender, spread over the
//! three nodes in turn, is accepted exactly 7 times in total (each node alone would take
//! 7: 21), the rest refused at MAIL FROM with `451 4.7.1`. Then Redis is killed: each
//! node decides alone with its local share, ceil(7 / 3) = 3 of a fresh sender's
//! messages (the degraded case), and mail keeps flowing.

use std::time::Duration;

use crate::common::cluster::{RedisServer, start_nodes, wait_for_members};
use crate::common::{Setup, SmtpClient, Tern, simple_message};

const LIMIT: Duration = Duration::from_secs(30);

/// Sends one message from `from` on `t`; the MAIL FROM reply's code and text (250 when
/// the message was queued).
fn try_send(t: &Tern, from: &str) -> (u16, String) {
    let mut c = SmtpClient::connect(t.addr()).expect("connect");
    c.hello("client.test");
    let r = c
        .send_message(from, &["r@localhost"], &simple_message("hourly", "body"))
        .map_or_else(|e| (0, e), |r| (r.code, r.text()));
    let _ = c.command("QUIT");
    r
}

#[test]
fn cluster_sender_hourly_limit_holds_across_nodes() {
    let mut redis = RedisServer::start();
    let nodes = start_nodes(&redis, 3, "", |_| {
        Setup::new().section("[limits]\nsender_domain_messages = \"7/1h\"\n")
    });
    wait_for_members(&nodes, 3, LIMIT);

    let mut accepted = [0usize; 3];
    for i in 0..30 {
        let n = i % 3;
        let (code, text) = try_send(&nodes[n], "alice@sender.test");
        match code {
            250 => accepted[n] += 1,
            _ => assert!(
                text.contains(
                    "451 4.7.1 Message rate limit exceeded for sender domain sender.test (7 per 1h"
                ),
                "{text}"
            ),
        }
    }
    assert_eq!(accepted.iter().sum::<usize>(), 7, "{accepted:?}");
    for (t, n) in nodes.iter().zip(accepted) {
        assert_eq!(t.spooled().len(), n, "{}", t.log());
    }

    // Degraded: each node keeps its share of a sender's allowance.
    redis.kill();
    for t in &nodes {
        t.wait_for_events(8002, 1, LIMIT);
    }
    for (i, t) in nodes.iter().enumerate() {
        let mut ok = 0;
        for _ in 0..6 {
            if try_send(t, "bob@degraded.test").0 == 250 {
                ok += 1;
            }
        }
        assert_eq!(ok, 3, "node {i}: ceil(7 x 1/3) while Redis is away");
    }
}
