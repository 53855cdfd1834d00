//! Destination state shared by three nodes (docs/cluster/state.md):
//! - node 1 marks a relay host down (nothing listens: refused); within a second nodes 2
//!   and 3 list it down, set by node1, though they have no mail for it; the host comes
//!   back, and the mail nodes 2 and 3 then receive for it is held without connecting
//!   (the host sees no connection at all); a retry on node 3 releases it everywhere;
//! - an administrator suspends it on node 1; within a second nodes 2 and 3 list it
//!   suspended by node1 and hold their new mail without connecting; a resume on node 3
//!   releases it on every node.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::admin::Admin;
use crate::common::cluster::{RedisServer, start_nodes, wait_for_members};
use crate::common::peers::SmtpPeer;
use crate::common::{Setup, Tern, free_port, send_one, simple_message};

const LIMIT: Duration = Duration::from_secs(30);
/// The propagation the issue asks for.
const WITHIN: Duration = Duration::from_secs(1);

fn destination(t: &Tern, name: &str) -> Option<Value> {
    let a = Admin::of(t).get("/api/v1/destinations");
    assert_eq!(a.status, 200, "{a:?}");
    a.json()["destinations"]
        .as_array()
        .and_then(|l| l.iter().find(|d| d["name"] == name).cloned())
}

/// Waits until `t` lists `hop` in `state` set by `by`; how long it took.
fn wait_state(t: &Tern, hop: &str, state: &str, by: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let d = destination(t, hop);
        if d.as_ref()
            .is_some_and(|d| d["state"] == state && d["set_by"] == by)
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{} never listed {hop} {state} by {by}: {d:?}\n{}",
            t.addr(),
            t.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `t` deferred `n` deliveries whose reason contains `text`.
fn wait_deferrals(t: &Tern, text: &str, n: usize) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let got = t
            .events_with_id(4002)
            .iter()
            .filter(|e| e["reason"].as_str().unwrap_or("").contains(text))
            .count();
        if got >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} deferred {got} of {n} for {text:?}:\n{}",
            t.addr(),
            t.log()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn post(t: &Tern, path: &str) -> Value {
    let a = Admin::of(t).post(path, &json!({}));
    assert_eq!(a.status, 200, "{path}: {a:?}");
    a.json()
}

#[test]
fn cluster_destination_down_on_one_node_is_skipped_by_the_others() {
    let redis = RedisServer::start();
    let ip = "127.0.4.1";
    let port = free_port(ip.parse().expect("ip"));
    let hop = format!("smtp:[{ip}]:{port}");
    let seg = hop.replace('[', "%5B").replace(']', "%5D");
    let nodes = start_nodes(&redis, 3, "", |_| {
        Setup::new()
            .queue("[queue]\ndeliver = true\nmin_backoff_secs = 300\nmax_backoff_secs = 600\n")
            .section(&format!(
                "[delivery]\nconnect_timeout_secs = 2\n[[route]]\ndomains = [\"down.test\"]\ntransport = \"smtp\"\nhosts = [\"{ip}:{port}\"]\n"
            ))
    });
    wait_for_members(&nodes, 3, LIMIT);
    for t in &nodes {
        t.wait_for_events(8001, 1, LIMIT);
    }

    // Node 1: nothing listens, the destination goes down there (event 4006).
    send_one(
        nodes[0].addr(),
        "s@client.test",
        &["a@down.test"],
        &simple_message("one", "1"),
    );
    nodes[0].wait_for_events(4006, 1, LIMIT);
    let marked = Instant::now();
    for t in &nodes[1..] {
        wait_state(t, &hop, "down", "node1", LIMIT);
    }
    let seen = marked.elapsed();
    assert!(seen < WITHIN, "down mark seen by every node after {seen:?}");
    assert_eq!(
        destination(&nodes[0], &hop).expect("listed")["set_by"],
        "node1"
    );

    // The host is back, but the others hold their mail for it without connecting.
    let peer = SmtpPeer::start_on(ip, port, &["accept"]);
    for (i, t) in nodes[1..].iter().enumerate() {
        send_one(
            t.addr(),
            "s@client.test",
            &["b@down.test"],
            &simple_message("held", &i.to_string()),
        );
        wait_deferrals(t, "seen by node1", 1);
        let applied = t.wait_for_events(8021, 1, LIMIT);
        assert_eq!(applied[0]["node"], "node1", "{applied:?}");
        assert_eq!(applied[0]["state"], "down", "{applied:?}");
    }
    assert_eq!(peer.connections().1, 0, "no node connected to a down host");

    // A retry on node 3 releases it everywhere: node 1's and node 2's mail too.
    let r = post(&nodes[2], &format!("/api/v1/destinations/{seg}/retry"));
    assert_eq!(r["action"], "retry", "{r}");
    peer.wait_for(3, LIMIT);
    for t in &nodes {
        let deadline = Instant::now() + LIMIT;
        while !t.queue_json(&[]).is_empty() {
            assert!(Instant::now() < deadline, "{} kept mail", t.addr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // Suspended on node 1: the others list it suspended by node1 within a second...
    let started = Instant::now();
    post(&nodes[0], &format!("/api/v1/destinations/{seg}/suspend"));
    for t in &nodes[1..] {
        wait_state(t, &hop, "suspended", "node1", LIMIT);
    }
    let seen = started.elapsed();
    assert!(
        seen < WITHIN,
        "suspension seen by every node after {seen:?}"
    );
    // ...and hold their new mail without connecting.
    let before = peer.connections().1;
    for (i, t) in nodes.iter().enumerate() {
        send_one(
            t.addr(),
            "s@client.test",
            &["c@down.test"],
            &simple_message("suspended", &i.to_string()),
        );
        wait_deferrals(t, "suspended", 1);
    }
    assert_eq!(
        peer.connections().1,
        before,
        "no connection while suspended"
    );
    assert_eq!(peer.count(), 3);

    // A resume on node 3 releases it on every node.
    let r = post(&nodes[2], &format!("/api/v1/destinations/{seg}/resume"));
    assert_eq!(r["action"], "resume", "{r}");
    peer.wait_for(6, LIMIT);
    for t in &nodes[..2] {
        let ev = t.wait_for_events(8021, 2, LIMIT);
        assert!(
            ev.iter()
                .any(|e| e["state"] == "active" && e["node"] == "node3"),
            "{ev:?}"
        );
    }
    for t in &nodes {
        let d = destination(t, &hop);
        assert!(
            d.as_ref().is_none_or(|d| d["state"] == "active"),
            "{} still lists {d:?}",
            t.addr()
        );
    }
}
