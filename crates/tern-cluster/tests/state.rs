//! The shared state against a real `redis-server` on loopback (docs/cluster/state.md):
//! destination marks travel between two nodes both ways without echo, the later action
//! wins, a node re-reads everything after Redis comes back; the shared greylist and list
//! cache answer across nodes, and fall back to the in-process stores while degraded.

mod common;

use std::time::{Duration, Instant};

use tern_cluster::{Cluster, ClusterConfig};
use tern_events::EventLog;

use common::{Redis, config, free_port, until};

/// As [`config`], dead after a second.
fn config_1s(port: u16, name: &str, id: u16) -> ClusterConfig {
    ClusterConfig {
        dead_after_ms: 1000,
        ..config(port, name, id)
    }
}

use std::sync::{Arc, Mutex};
use tern_cluster::destinations::{DestMark, DestinationShare, MarkState};

type Seen = Arc<Mutex<Vec<DestMark>>>;

fn share(c: &Cluster) -> (DestinationShare, Seen) {
    let seen: Seen = Arc::default();
    let s = Arc::clone(&seen);
    let share = DestinationShare::start(
        c.clone(),
        Arc::new(move |m| s.lock().expect("lock").push(m)),
    );
    (share, seen)
}

fn mark(name: &str, state: MarkState, at_ms: u64, node: &str) -> DestMark {
    DestMark {
        name: name.into(),
        state,
        at_ms,
        node: node.into(),
    }
}

fn got(seen: &Seen) -> Vec<DestMark> {
    seen.lock().expect("lock").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_marks_travel_without_echo_and_survive_a_restart_of_redis() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let redis = Redis::start(dir.path(), port);
    let a = Cluster::start(&config_1s(port, "a", 1), EventLog::discard());
    let b = Cluster::start(&config_1s(port, "b", 2), EventLog::discard());
    until("up", async || a.is_up() && b.is_up()).await;
    let (sa, seen_a) = share(&a);
    let (sb, seen_b) = share(&b);

    let now = tern_watchdog::clock::unix_ms();
    let down = mark(
        "mx:down.test",
        MarkState::Down {
            until_ms: now + 60_000,
            reason: "refused".into(),
        },
        now,
        "a",
    );
    let started = Instant::now();
    sa.publish(down.clone());
    until("b sees a's mark", async || got(&seen_b).contains(&down)).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // B suspends; A sees it; neither sees its own change back.
    let sus = mark("mx:down.test", MarkState::Suspended, now + 1, "b");
    sb.publish(sus.clone());
    until("a sees b's suspension", async || {
        got(&seen_a).contains(&sus)
    })
    .await;
    // An older action (a clock behind, or made while degraded) loses to the later one.
    let old = mark("mx:down.test", MarkState::Active, now - 5_000, "a");
    sa.publish(old);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        got(&seen_b)
            .iter()
            .all(|m| m.node == "a" && m.state != MarkState::Active)
    );
    assert!(
        got(&seen_a).iter().all(|m| m.node == "b"),
        "no echo: {:?}",
        got(&seen_a)
    );
    assert!(
        got(&seen_b).iter().all(|m| m.node == "a"),
        "no echo: {:?}",
        got(&seen_b)
    );

    let other = mark("mx:other.test", MarkState::Suspended, now + 2, "b");
    sb.publish(other.clone());
    until("a sees b's other suspension", async || {
        got(&seen_a).contains(&other)
    })
    .await;
    seen_a.lock().expect("lock").clear();

    // Redis lost: A's resume waits; once Redis is back (empty), A writes it and B,
    // re-reading everything, applies it.
    drop(redis);
    until("degraded", async || !a.is_up() && !b.is_up()).await;
    let resume = mark(
        "mx:down.test",
        MarkState::Active,
        tern_watchdog::clock::unix_ms(),
        "a",
    );
    sa.publish(resume.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!got(&seen_b).contains(&resume));
    let _redis = Redis::start(dir.path(), port);
    until("b applies the resume made while degraded", async || {
        got(&seen_b).contains(&resume)
    })
    .await;
    // Redis came back empty: B wrote its marks of this run again, and A, re-reading
    // everything, applies them again.
    until("b's suspension written again", async || {
        got(&seen_a).contains(&other)
    })
    .await;
    // Garbage written by someone else is ignored.
    let _: i64 = a
        .query(
            redis::cmd("HSET")
                .arg(a.key("{dest}:marks"))
                .arg("mx:bad.test")
                .arg("{not json"),
        )
        .await
        .expect("hset");
    let _: i64 = a
        .query(redis::cmd("INCR").arg(a.key("{dest}:ver")))
        .await
        .expect("incr");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(got(&seen_b).iter().all(|m| m.name != "mx:bad.test"));
    // A restarted node (a new run of "a") applies its own marks of the previous run.
    let (_again, seen_again) = share(&a);
    until("a's previous run's mark applied at the start", async || {
        got(&seen_again).contains(&resume)
    })
    .await;
    drop(sa);
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screening_stores_are_shared_and_fall_back_when_degraded() {
    use tern_cluster::screening::{SharedGreylist, SharedListCache};
    use tern_screen::{GreylistStore, ListCache, MemoryGreylist, Policy, Verdict};
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let redis = Redis::start(dir.path(), port);
    let a = Cluster::start(&config_1s(port, "a", 1), EventLog::discard());
    let b = Cluster::start(&config_1s(port, "b", 2), EventLog::discard());
    until("up", async || a.is_up() && b.is_up()).await;
    let policy = Policy {
        delay_ms: 1000,
        window_ms: 60_000,
        expire_ms: 3_600_000,
    };
    let ga = SharedGreylist::new(a.clone(), Arc::new(MemoryGreylist::default()));
    let gb = SharedGreylist::new(b.clone(), Arc::new(MemoryGreylist::default()));
    let client: std::net::IpAddr = "192.0.2.7".parse().expect("ip");
    let t0 = 1_000_000;
    let v = ga.check(client, "s@x.test", "r@y.test", policy, t0).await;
    assert_eq!(
        v,
        Verdict::Greylisted {
            retry_in_ms: 1000,
            new: true
        }
    );
    let v = gb
        .check(client, "s@x.test", "r@y.test", policy, t0 + 400)
        .await;
    assert_eq!(
        v,
        Verdict::Greylisted {
            retry_in_ms: 600,
            new: false
        }
    );
    let v = gb
        .check(client, "s@x.test", "r@y.test", policy, t0 + 1000)
        .await;
    assert_eq!(v, Verdict::Passed { after_ms: 1000 });
    let other: std::net::IpAddr = "192.0.2.99".parse().expect("ip");
    let v = ga
        .check(other, "o@x.test", "p@y.test", policy, t0 + 1001)
        .await;
    assert_eq!(
        v,
        Verdict::NetworkAllowed,
        "the network is allowed on a too"
    );

    let la = SharedListCache::new(a.clone(), 100);
    let lb = SharedListCache::new(b.clone(), 100);
    let now = tern_watchdog::clock::unix_ms();
    let listed = vec![std::net::Ipv4Addr::new(127, 0, 0, 2)];
    la.put("7.2.0.192.zen.test", listed.clone(), now + 30_000, now)
        .await;
    assert_eq!(
        lb.get("7.2.0.192.zen.test", now).await,
        Some(listed.clone())
    );
    let ttl: i64 = b
        .query(redis::cmd("PTTL").arg(b.key("dnsbl:7.2.0.192.zen.test")))
        .await
        .expect("pttl");
    assert!(ttl > 0 && ttl <= 30_000, "the TTL is kept: {ttl}");

    // Degraded: each node decides alone with its in-process store.
    drop(redis);
    let _ = a.query::<String>(&redis::cmd("PING")).await;
    until("degraded", async || !a.is_up()).await;
    let fresh: std::net::IpAddr = "198.51.100.1".parse().expect("ip");
    let started = Instant::now();
    let v = ga.check(fresh, "s@x.test", "r@y.test", policy, t0).await;
    assert_eq!(
        v,
        Verdict::Greylisted {
            retry_in_ms: 1000,
            new: true
        }
    );
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "no wait on redis"
    );
    assert_eq!(
        la.get("7.2.0.192.zen.test", now).await,
        Some(listed),
        "local copy"
    );
    a.stop();
    b.stop();
}
