//! A cluster-wide limit of 10 connections to a slow destination holds while three nodes
//! have mail for it: `[[delivery.destination_limits]]` with `max_connections = 10` for
//! `slow.test`, each node with 40 messages and room for 20 connections of its own
//! (`queue.destination_concurrency`), a sink on 127.0.3.1 that waits 150 ms before every
//! reply and records the most connections open at once. The sink never sees more than
//! 10 at once, does see 10 (so the limit, not a lack of demand, is what holds them), and
//! every message arrives, once. A refused lease is not a failure: no destination is
//! marked down and no wait runs out.

use std::time::Duration;

use crate::common::cluster::{RedisServer, start_nodes, wait_for_members};
use crate::common::peers::{DnsServer, SmtpPeer, delivering_with};
use crate::common::{send_batch, simple_message};

const PER_NODE: usize = 40;
const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn cluster_destination_connection_limit_holds_across_nodes() {
    let redis = RedisServer::start();
    let mut dns = DnsServer::start();
    dns.set_mx("slow.test", &[(10, "mx.slow.test")], 300);
    dns.set_a("mx.slow.test", "127.0.3.1".parse().unwrap(), 300);
    let sink = SmtpPeer::start("127.0.3.1", &["slow=150"]);
    let port = sink.port();
    let limit = "destination_limits = [{ name = \"slow\", next_hops = [\"slow.test\"], max_connections = 10 }]\n";
    let nodes = start_nodes(&redis, 3, "", |_| {
        delivering_with(&dns, port, &format!("connection_cache_idle_secs = 1\n{limit}"), "")
            .queue("[queue]\ndeliver = true\ndestination_concurrency = 20\nmin_backoff_secs = 1\nmax_backoff_secs = 2\n")
    });
    wait_for_members(&nodes, 3, LIMIT);

    std::thread::scope(|s| {
        for (n, t) in nodes.iter().enumerate() {
            s.spawn(move || {
                let messages: Vec<(String, Vec<u8>)> = (0..PER_NODE)
                    .map(|i| {
                        (
                            format!("r{n}x{i}@slow.test"),
                            simple_message(&format!("n{n} m{i}"), "slow"),
                        )
                    })
                    .collect();
                send_batch(t.addr(), 4, &messages);
            });
        }
    });

    let got = sink.wait_for(3 * PER_NODE, Duration::from_secs(120));
    assert_eq!(got.len(), 3 * PER_NODE, "every message, once");
    let (max_open, total) = sink.connections();
    assert!(
        max_open <= 10,
        "the sink saw {max_open} connections at once (limit 10)"
    );
    assert_eq!(
        max_open, 10,
        "the nodes together never reached the limit ({total} connections)"
    );
    for t in &nodes {
        // Waiting for a lease is normal flow: the limit is noted, nothing runs out and
        // the destination is not marked down.
        assert!(t.events_with_id(8012).is_empty(), "{}", t.log());
        assert!(
            t.events_with_id(4006).is_empty(),
            "a refused lease marked the destination down: {}",
            t.log()
        );
    }
    assert!(
        nodes.iter().any(|t| !t.events_with_id(8011).is_empty()),
        "no node noted the full limit"
    );
}
