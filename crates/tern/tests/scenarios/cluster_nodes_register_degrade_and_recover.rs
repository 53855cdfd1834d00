//! Three nodes and one real redis-server: each node registers its heartbeat and sees the
//! others; queue ids carry the node's number; when Redis is killed every node says so
//! once (event 8002, `/readyz` `cluster: degraded`, still ready) and keeps accepting
//! mail; when Redis comes back each recovers by itself (event 8003) and re-registers.

use std::time::Duration;

use crate::common::Setup;
use crate::common::admin::Admin;
use crate::common::cluster::{RedisServer, start_nodes, wait_for_members};
use crate::common::peers::send_with;

const LIMIT: Duration = Duration::from_secs(30);

/// Queues one message on `t`; its queue id.
fn queue_message(t: &crate::common::Tern, n: usize) -> String {
    send_with(
        t.addr(),
        "MAIL FROM:<a@client.test>",
        &["RCPT TO:<b@localhost>"],
        format!("Subject: {n}\r\n\r\nbody {n}\r\n").as_bytes(),
    )
}

#[test]
fn cluster_nodes_register_degrade_and_recover() {
    let mut redis = RedisServer::start();
    let nodes = start_nodes(&redis, 3, "", |_| Setup::new());
    wait_for_members(&nodes, 3, LIMIT);

    // Queue ids: characters 12 and 13 carry the node number (1, 2, 3).
    for (i, t) in nodes.iter().enumerate() {
        let id = queue_message(t, i);
        let parsed = tern_spool::QueueId::parse(&id).expect("a queue id");
        assert_eq!(usize::from(parsed.node()), i + 1, "{id}");
        t.wait_for_events(8001, 1, LIMIT);
    }

    redis.kill();
    for t in &nodes {
        t.wait_for_events(8002, 1, LIMIT);
        let ready = Admin::of(t).get_with_auth("/readyz", None);
        assert_eq!(ready.status, 200, "degraded is still ready: {}", ready.body);
        assert_eq!(ready.json()["cluster"], "degraded", "{}", ready.body);
        // Mail still flows in (send_with asserts the 250).
        queue_message(t, 9);
    }

    redis.restart();
    for t in &nodes {
        t.wait_for_events(8003, 1, LIMIT);
        // One event per transition, however many operations failed.
        assert_eq!(t.events_with_id(8002).len(), 1, "{}", t.log());
    }
    // The heartbeats registered again in the new (empty) Redis.
    wait_for_members(&nodes, 3, LIMIT);
    for t in &nodes {
        let status = Admin::of(t).get("/api/v1/status").json();
        assert_eq!(status["cluster"]["state"], "up");
    }
}
