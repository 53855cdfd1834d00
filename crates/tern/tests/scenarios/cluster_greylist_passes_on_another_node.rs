//! The greylist shared by two nodes (docs/cluster/state.md): a client greylisted on
//! node 1 retries on node 2 before the delay and is refused there too (the triplet's
//! first attempt is the one node 1 recorded); after the delay its retry on node 2
//! passes (event 2184 there), and from then its network is allowed on node 1 as well.
//! Every greylist key in Redis expires.

use std::time::{Duration, Instant};

use crate::common::cluster::{RedisServer, start_nodes, wait_for_members};
use crate::common::screen::{greet, rcpt, setup};

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn cluster_greylist_passes_on_another_node() {
    let redis = RedisServer::start();
    let nodes = start_nodes(&redis, 2, "", |_| {
        setup("greylist = true\ngreylist_delay = \"2s\"\n")
    });
    wait_for_members(&nodes, 2, LIMIT);
    for t in &nodes {
        t.wait_for_events(8001, 1, LIMIT);
    }
    let (one, two) = (nodes[0].addr(), nodes[1].addr());

    let started = Instant::now();
    let mut g = greet(one, "127.0.4.2");
    let (code, text) = rcpt(&mut g.client, "alice@sender.test", "bob@example.test");
    assert_eq!(code, 451, "greylisted on node 1: {text}");
    drop(g);

    // Node 2 knows the triplet: an early retry there is refused, not counted as new.
    let mut g = greet(two, "127.0.4.2");
    let (code, text) = rcpt(&mut g.client, "alice@sender.test", "bob@example.test");
    assert_eq!(code, 451, "early retry on node 2: {text}");
    let refusals = nodes[1].events_with_id(2183);
    assert!(
        refusals
            .iter()
            .all(|e| e["new"] != true && e["new"] != "true"),
        "node 2 did not see a new triplet: {refusals:?}"
    );

    // Retry on node 2 until it passes: never before the delay.
    let accepted = loop {
        let r = g
            .client
            .command("RCPT TO:<bob@example.test>")
            .expect("RCPT");
        if r.code == 250 {
            break started.elapsed();
        }
        assert_eq!(r.code, 451, "{}", r.text());
        assert!(started.elapsed() < LIMIT, "never accepted on node 2");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        accepted >= Duration::from_secs(2),
        "accepted after {accepted:?}"
    );

    // The network is allowed on node 1 too: another triplet passes at once there.
    let mut g1 = greet(one, "127.0.4.9");
    let (code, text) = rcpt(&mut g1.client, "carol@other.test", "dave@example.test");
    assert_eq!(code, 250, "network allowed on node 1: {text}");

    nodes[1].wait_for_events(2184, 1, LIMIT);

    // The keys expire (no triplet kept forever).
    let keys = redis.cli(&["--scan", "--pattern", "*gl:*"]);
    assert!(!keys.trim().is_empty(), "triplets in redis");
    for k in keys.lines().filter(|k| !k.is_empty()) {
        let ttl: i64 = redis.cli(&["PTTL", k]).trim().parse().unwrap_or(-9);
        assert!(ttl > 0, "{k} expires: {ttl}");
    }
}
