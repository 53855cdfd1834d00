//! The client against a real `redis-server` on loopback: connect, operate, lose Redis
//! (degraded at once, operations fail fast), get it back (recovered by itself), and the
//! membership's heartbeat and dead-node notice.

mod common;

use std::time::{Duration, Instant};

use tern_cluster::{Cluster, ClusterError, HealthState};
use tern_events::EventLog;

use common::{Redis, config, free_port, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degrades_at_once_and_recovers_by_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let redis = Redis::start(dir.path(), port);
    let c = Cluster::start(&config(port, "n1", 1), EventLog::discard());
    until("up", async || c.is_up()).await;
    let _: () = c
        .query(redis::cmd("SET").arg(c.key("k")).arg("v"))
        .await
        .expect("set");
    let v: String = c
        .query(redis::cmd("GET").arg(c.key("k")))
        .await
        .expect("get");
    assert_eq!(v, "v");
    // A reply error is not an outage.
    let e = c
        .query::<i64>(redis::cmd("INCR").arg(c.key("k")))
        .await
        .expect_err("not an integer");
    assert!(matches!(e, ClusterError::Reply(_)), "{e:?}");
    assert!(c.is_up());

    drop(redis);
    // The first operation after the loss fails within the bound and degrades the node.
    let started = Instant::now();
    let e = c.query::<String>(redis::cmd("GET").arg(c.key("k"))).await;
    assert!(e.is_err());
    assert!(started.elapsed() < Duration::from_secs(2));
    until("degraded", async || c.state() == HealthState::Degraded).await;
    // Degraded: operations fail at once, without waiting on the network.
    let started = Instant::now();
    let e = c.query::<String>(redis::cmd("GET").arg(c.key("k"))).await;
    assert!(matches!(e, Err(ClusterError::Unavailable)), "{e:?}");
    assert!(started.elapsed() < Duration::from_millis(100));

    let _redis = Redis::start(dir.path(), port);
    until("recovered", async || c.is_up()).await;
    let _: () = c
        .query(redis::cmd("SET").arg(c.key("k")).arg("w"))
        .await
        .expect("set after recovery");
    c.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_see_each_other_and_a_dead_one_is_noticed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _redis = Redis::start(dir.path(), port);
    let reporter: tern_cluster::membership::Reporter =
        std::sync::Arc::new(|| serde_json::json!({"deferred": 3}));
    let a = Cluster::start(&config(port, "a", 1), EventLog::discard());
    let b = Cluster::start(&config(port, "b", 2), EventLog::discard());
    let ma = tern_cluster::membership::Membership::start(
        a.clone(),
        "http://127.0.0.1:1".into(),
        reporter.clone(),
    );
    let mb = tern_cluster::membership::Membership::start(
        b.clone(),
        "http://127.0.0.1:2".into(),
        reporter,
    );
    until("both listed", async || {
        tern_cluster::membership::nodes(&a)
            .await
            .map(|n| n.iter().filter(|x| x.alive).count() == 2)
            .unwrap_or(false)
    })
    .await;
    let nodes = tern_cluster::membership::nodes(&a).await.expect("nodes");
    assert_eq!(nodes[1].name, "b");
    assert_eq!(nodes[1].id, 2);
    assert_eq!(nodes[1].admin_url, "http://127.0.0.1:2");
    assert_eq!(nodes[1].report["deferred"], 3);
    // b dies without stopping cleanly: its heartbeat expires, a declares it dead, once;
    // it stays listed as dead (with its last heartbeat) until it is forgotten.
    drop(mb);
    b.stop();
    until("b declared dead", async || {
        let dead: Option<String> = a
            .query(redis::cmd("GET").arg(a.key("dead:b")))
            .await
            .unwrap_or(None);
        dead.as_deref() == Some("a")
    })
    .await;
    until("b listed as dead", async || {
        tern_cluster::membership::nodes(&a).await.is_ok_and(|n| {
            n.iter()
                .any(|x| x.name == "b" && !x.alive && x.dead_since_ms.is_some())
        })
    })
    .await;
    let nodes = tern_cluster::membership::nodes(&a).await.expect("nodes");
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    assert_eq!(nodes[1].admin_url, "http://127.0.0.1:2", "its last record");
    assert_eq!(nodes[1].report["deferred"], 3, "its last record");
    // A live node cannot be forgotten; a dead one can, once.
    assert!(matches!(
        tern_cluster::membership::forget(&a, "a").await,
        Err(tern_cluster::membership::ForgetError::Alive(_))
    ));
    tern_cluster::membership::forget(&a, "b")
        .await
        .expect("forget b");
    assert!(matches!(
        tern_cluster::membership::forget(&a, "b").await,
        Err(tern_cluster::membership::ForgetError::Unknown(_))
    ));
    let nodes = tern_cluster::membership::nodes(&a).await.expect("nodes");
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    // A clean stop removes the entry: no death.
    ma.stop().await;
    let nodes = tern_cluster::membership::nodes(&a).await.expect("nodes");
    assert!(nodes.is_empty(), "{nodes:?}");
    a.stop();
}
