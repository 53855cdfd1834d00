//! The DMARC report exchange (`tern_cluster::reports`) against a real `redis-server` on
//! 127.0.7.1: two nodes publish their shares, one holds the lease (and keeps it on a
//! second claim), the sent pairs reach only the node they name, garbage written by
//! anyone else is ignored or refused, and every key expires.

mod common;

use std::time::{Duration, Instant};

use tern_cluster::reports::{MAX_FIELDS, ReportKeys};
use tern_cluster::{Cluster, ClusterConfig};
use tern_events::EventLog;

use common::Redis;

const IP: &str = "127.0.7.1";

fn keys(port: u16, name: &str, id: u16) -> ReportKeys {
    let config = ClusterConfig {
        enabled: true,
        node_name: name.into(),
        node_id: id,
        redis: vec![format!("redis://{IP}:{port}")],
        ..ClusterConfig::default()
    };
    ReportKeys {
        cluster: Cluster::start(&config, EventLog::discard()),
        keep_ms: 60_000,
        lease_ms: 30_000,
    }
}

async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_lease_and_sent_pairs_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port_on(IP);
    let _redis = Redis::start_on(IP, dir.path(), port);
    let (a, b) = (keys(port, "n1", 1), keys(port, "n2", 2));
    until("up", || a.cluster.is_up() && b.cluster.is_up()).await;
    let begin = 86_400;

    a.publish(begin, "share-a").await.expect("publish a");
    b.publish(begin, "share-b").await.expect("publish b");
    assert!(a.claim(begin).await.expect("claim a"));
    assert!(!b.claim(begin).await.expect("claim b"));
    assert!(
        a.claim(begin).await.expect("a again"),
        "the holder keeps it"
    );
    assert!(
        b.claim(begin + 1).await.expect("other period"),
        "periods are independent"
    );

    let c = a.collect(begin).await.expect("collect");
    assert_eq!(c.shares.get("n1").map(String::as_str), Some("share-a"));
    assert_eq!(c.shares.get("n2").map(String::as_str), Some("share-b"));
    assert!(c.sent.is_empty());

    a.mark_sent(
        begin,
        &[
            ("n1".into(), "example.org".into()),
            ("n2".into(), "example.org".into()),
        ],
    )
    .await
    .expect("mark");
    // Garbage from anyone who can write to Redis: ignored.
    let sent_key = a.cluster.key(&format!("{{dmarc:{begin}}}:sent"));
    let data_key = a.cluster.key(&format!("{{dmarc:{begin}}}:data"));
    let _: i64 = a
        .cluster
        .query(
            redis::cmd("SADD")
                .arg(&sent_key)
                .arg("no-newline")
                .arg("Bad Node\nx.test"),
        )
        .await
        .expect("sadd");
    let _: i64 = a
        .cluster
        .query(redis::cmd("HSET").arg(&data_key).arg("Bad Node").arg("x"))
        .await
        .expect("hset");
    let mine = b.sent(begin).await.expect("sent");
    assert_eq!(mine.into_iter().collect::<Vec<_>>(), ["example.org"]);
    let c = b.collect(begin).await.expect("collect");
    assert_eq!(c.shares.len(), 2, "{:?}", c.shares.keys());
    assert_eq!(c.sent.len(), 2);

    // Every key of the period expires.
    for k in [
        &sent_key,
        &data_key,
        &a.cluster.key(&format!("{{dmarc:{begin}}}:lease")),
    ] {
        let ttl: i64 = a
            .cluster
            .query(redis::cmd("PTTL").arg(k))
            .await
            .expect("pttl");
        assert!(ttl > 0, "{k}: {ttl}");
    }

    // More shares than a period may hold: refused, not read.
    let mut fill = redis::cmd("HSET");
    fill.arg(&data_key);
    for i in 0..=MAX_FIELDS {
        fill.arg(format!("f{i}")).arg("x");
    }
    let _: i64 = a.cluster.query(&fill).await.expect("fill");
    assert!(a.collect(begin).await.is_err());
    a.cluster.stop();
    b.cluster.stop();
}
