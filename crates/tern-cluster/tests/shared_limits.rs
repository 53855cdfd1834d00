//! The shared limits' Lua scripts against a real `redis-server` on loopback, with two
//! `Cluster` handles standing for two nodes: the GCRA over several charges (exactly the
//! limit across nodes, all or nothing, keys expiring), the local share while Redis is
//! away, connection leases (the maximum held across nodes, released on drop, a dead
//! node's leases lapsing), and AUTH failures counted across nodes.

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_auth::guard::{FailureKey, FailureLedger, Threshold};
use tern_cluster::Cluster;
use tern_cluster::auth::SharedLedger;
use tern_cluster::leases::SharedLeases;
use tern_cluster::limits::{HOLD_MS, SharedLimiter};
use tern_events::EventLog;

use common::{Redis, config, free_port, until};
use tern_limits::{Charge, ClientNet, Decision, Key, Rate, RateLimiter};
use tern_queue::destlimits::{LeaseAnswer, LeaseBackend};

/// A redis-server (stopped when dropped) and two nodes up on it.
struct Pair {
    redis: Redis,
    a: Cluster,
    b: Cluster,
    /// Redis's directory, removed when dropped.
    _dir: tempfile::TempDir,
}

async fn pair() -> Pair {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let redis = Redis::start(dir.path(), port);
    let a = Cluster::start(&config(port, "a", 1), EventLog::discard());
    let b = Cluster::start(&config(port, "b", 2), EventLog::discard());
    until("both up", async || a.is_up() && b.is_up()).await;
    Pair {
        redis,
        a,
        b,
        _dir: dir,
    }
}

impl Pair {
    /// A shared limiter on each node.
    fn limiters(&self) -> (Arc<SharedLimiter>, Arc<SharedLimiter>) {
        (
            SharedLimiter::new(self.a.clone(), 1000),
            SharedLimiter::new(self.b.clone(), 1000),
        )
    }
}

fn rate(s: &str) -> Rate {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn sender(domain: &str, r: Rate) -> Charge {
    Charge {
        key: Key::sender_domain_messages(domain),
        rate: r,
        cost: 1,
    }
}

fn client(last: u8, r: Rate) -> Charge {
    Charge {
        key: Key::client_messages(ClientNet::of(IpAddr::from([192, 0, 2, last]), 32, 64)),
        rate: r,
        cost: 1,
    }
}

const T0: u64 = 1_800_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcra_holds_the_limit_across_nodes_all_or_nothing() {
    let p = pair().await;
    let (la, lb) = p.limiters();
    let (a, b) = (&p.a, &p.b);
    let hourly = rate("5/1h");
    // Spread over two nodes, exactly 5 in the hour (each node alone would allow 5).
    let mut allowed = 0;
    let mut first_refusals = 0;
    for i in 0..12u64 {
        let l = if i % 2 == 0 { &la } else { &lb };
        match l.check(&[sender("example.com", hourly)], T0 + i).await {
            Decision::Allowed => allowed += 1,
            Decision::Refused(r) => {
                assert_eq!(r.charge, 0);
                assert!(r.retry_after_ms.is_some_and(|w| w > 0 && w <= 720_000));
                if r.first_in_window {
                    first_refusals += 1;
                }
            }
        }
    }
    assert_eq!(allowed, 5);
    assert_eq!(first_refusals, 1, "a refusal is reported once per window");
    // One unit comes back after period / count (12 min).
    assert_eq!(
        lb.check(&[sender("example.com", hourly)], T0 + 720_000)
            .await,
        Decision::Allowed
    );
    // The key expires when its bucket is full again: within an hour.
    let key = format!("{{{}}}:sender_domain_messages:example.com", a.key("rl"));
    let ttl: i64 = a.query(redis::cmd("PTTL").arg(&key)).await.expect("pttl");
    assert!(ttl > 0 && ttl <= 3_600_000, "{ttl}");

    // All or nothing: a refused second charge spends nothing of the first.
    let loose = rate("3/1h");
    let tight = rate("1/1h");
    assert_eq!(
        la.check(&[client(1, loose), sender("b.example", tight)], T0)
            .await,
        Decision::Allowed
    );
    let Decision::Refused(r) = lb
        .check(&[client(1, loose), sender("b.example", tight)], T0)
        .await
    else {
        panic!("the sender over its limit was allowed");
    };
    assert_eq!(r.charge, 1);
    // The client spent 1 of 3: two more fit, then none.
    for _ in 0..2 {
        assert_eq!(la.check(&[client(1, loose)], T0).await, Decision::Allowed);
    }
    assert!(matches!(
        lb.check(&[client(1, loose)], T0).await,
        Decision::Refused(_)
    ));
    // One key twice in a call counts twice.
    assert!(matches!(
        la.check(&[client(2, tight), client(2, tight)], T0).await,
        Decision::Refused(r) if r.charge == 1
    ));
    // Garbage written into a bucket is bounded: at worst one burst ahead.
    let garbage = format!("{{{}}}:client_messages:192.0.2.3/32", a.key("rl"));
    let _: () = a
        .query(
            redis::cmd("HSET")
                .arg(&garbage)
                .arg("t")
                .arg("99999999999999999999"),
        )
        .await
        .expect("hset");
    let Decision::Refused(r) = la.check(&[client(3, loose)], T0).await else {
        panic!("a full bucket allowed");
    };
    assert!(r.retry_after_ms.is_some_and(|w| w <= 1_200_000), "{r:?}");
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_buckets_are_borrowed_from_and_never_overspent() {
    let p = pair().await;
    let (la, lb) = p.limiters();
    let (a, b) = (&p.a, &p.b);
    // 640 a second: each node may hold up to 10 units (640 / 64).
    let big = rate("640/1s");
    let check = sender("big.example", big);
    let calls = || tern_metrics::get().cluster_limit_calls.get();
    let before = calls();
    let mut allowed = 0u32;
    let mut checks = 0u32;
    // The clock stands still: the bucket holds 640 and no more come back.
    for i in 0..800u32 {
        let l = if i % 2 == 0 { &la } else { &lb };
        checks += 1;
        if l.check(std::slice::from_ref(&check), T0).await == Decision::Allowed {
            allowed += 1;
        }
    }
    until("borrowing settles", async || la.asking() + lb.asking() == 0).await;
    let held = la.held_units(&check) + lb.held_units(&check);
    assert!(held <= 20, "at most 10 units a node: {held}");
    assert_eq!(
        allowed + held,
        640,
        "spent or held, never more than the limit"
    );
    // Most allowed checks spent borrowed units (each refused one is a call). The
    // counter is the process's: the other tests running at the same time only add to it
    // (a few dozen calls).
    let spending = (calls() - before).saturating_sub(u64::from(checks - allowed));
    eprintln!("{spending} calls to Redis for {allowed} allowed checks");
    assert!(
        u64::from(allowed) > spending * 3,
        "{spending} calls for {allowed}"
    );
    // Units unspent for HOLD_MS go back: the other node can then spend them (checked
    // at T0 again: to Redis, the clock still stands, and the bucket refills nothing).
    la.sweep(T0 + HOLD_MS).await;
    lb.sweep(T0 + HOLD_MS).await;
    assert_eq!(la.held_units(&check) + lb.held_units(&check), 0);
    let mut after = 0;
    for _ in 0..30 {
        if la.check(std::slice::from_ref(&check), T0).await == Decision::Allowed {
            after += 1;
        }
    }
    until("borrowing settles", async || la.asking() == 0).await;
    assert_eq!(
        after + la.held_units(&check),
        held,
        "every given-back unit, once"
    );

    // All or nothing with units held: a refused small bucket spends none of them.
    let other = sender("held.example", big);
    for _ in 0..40 {
        assert_eq!(
            lb.check(std::slice::from_ref(&other), T0).await,
            Decision::Allowed
        );
    }
    until("borrowing settles", async || lb.asking() == 0).await;
    let held = lb.held_units(&other);
    assert!(held > 0, "a busy bucket is borrowed from");
    let tight = rate("1/1h");
    assert_eq!(lb.check(&[client(9, tight)], T0).await, Decision::Allowed);
    let Decision::Refused(r) = lb.check(&[other.clone(), client(9, tight)], T0).await else {
        panic!("a spent bucket allowed");
    };
    assert_eq!(r.charge, 1, "the index in the caller's charges");
    assert_eq!(lb.held_units(&other), held, "the units taken went back");
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_set_aside_at_mail_are_spent_once_and_the_rest_given_back() {
    let p = pair().await;
    let (la, lb) = p.limiters();
    let rcpt = |cost: u32| Charge {
        key: Key::sender_domain_recipients("aside.example"),
        rate: rate("5/1h"),
        cost,
    };
    let calls = || tern_metrics::get().cluster_limit_calls.get();
    // MAIL FROM with 3 RCPTs pipelined: the message spent and 3 recipients set aside,
    // in one call.
    let before = calls();
    let (d, aside) = la
        .check_ahead(&[sender("aside.example", rate("10/1h"))], &[rcpt(3)], T0)
        .await;
    assert_eq!(d, Decision::Allowed);
    assert_eq!(aside, vec![3]);
    assert!(calls() - before >= 1);
    // The other node has what is left: 2, then a refusal.
    for _ in 0..2 {
        assert_eq!(lb.check(&[rcpt(1)], T0).await, Decision::Allowed);
    }
    assert!(matches!(
        lb.check(&[rcpt(1)], T0).await,
        Decision::Refused(_)
    ));
    // The transaction spent 1 of its 3: 2 go back, and the other node can spend them.
    la.give_back(&[rcpt(2)]);
    until("the units given back arrive", async || {
        lb.check(&[rcpt(1)], T0).await == Decision::Allowed
    })
    .await;
    assert_eq!(lb.check(&[rcpt(1)], T0).await, Decision::Allowed);
    assert!(matches!(
        lb.check(&[rcpt(1)], T0).await,
        Decision::Refused(_)
    ));
    // Only what conforms is set aside, and never refuses the message for it.
    let (d, aside) = la
        .check_ahead(&[sender("aside.example", rate("10/1h"))], &[rcpt(3)], T0)
        .await;
    assert_eq!(d, Decision::Allowed);
    assert_eq!(aside, vec![0], "the bucket is spent");
    // A refused message sets nothing aside.
    let tight = rate("1/1h");
    assert_eq!(
        la.check(&[sender("t.example", tight)], T0).await,
        Decision::Allowed
    );
    let other = Charge {
        key: Key::sender_domain_recipients("t.example"),
        rate: rate("5/1h"),
        cost: 3,
    };
    let (d, aside) = la
        .check_ahead(
            &[sender("t.example", tight)],
            std::slice::from_ref(&other),
            T0,
        )
        .await;
    assert!(matches!(d, Decision::Refused(r) if r.charge == 0));
    assert_eq!(aside, vec![0]);
    let (_, aside) = lb.check_ahead(&[], std::slice::from_ref(&other), T0).await;
    assert_eq!(aside, vec![3], "nothing of it was spent");
    p.a.stop();
    p.b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_each_node_keeps_its_local_share() {
    let p = pair().await;
    let (la, lb) = p.limiters();
    let (a, b) = (&p.a, &p.b);
    drop(p.redis);
    // The first call after the loss fails within the bound and is decided locally.
    let hourly = rate("9/1h");
    let started = Instant::now();
    let mut allowed = [0, 0];
    for (n, l) in [&la, &lb].iter().enumerate() {
        for i in 0..10u64 {
            if l.check(&[sender("example.com", hourly)], T0 + i).await == Decision::Allowed {
                allowed[n] += 1;
            }
        }
    }
    // One third of 9 on each node.
    assert_eq!(allowed, [3, 3]);
    assert!(started.elapsed() < Duration::from_secs(3));
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_borrowed_before_redis_goes_are_spent_first_then_the_local_share() {
    let p = pair().await;
    let (la, _) = p.limiters();
    // 640 a second (at most 10 held): busy enough to borrow from.
    let big = rate("640/1s");
    let check = sender("away.example", big);
    let spend = async |n: u32, at: u64| {
        let mut allowed = 0;
        for _ in 0..n {
            if la.check(std::slice::from_ref(&check), at).await == Decision::Allowed {
                allowed += 1;
            }
        }
        allowed
    };
    assert_eq!(spend(40, T0).await, 40);
    until("borrowing settles", async || la.asking() == 0).await;
    let held = la.held_units(&check);
    assert!(held > 0, "a busy bucket is borrowed from");
    drop(p.redis);
    // Redis gone: the units held are still this node's, spent without a call...
    let local_before = tern_metrics::get().cluster_local_decisions.get();
    assert_eq!(spend(held, T0).await, held);
    assert_eq!(la.held_units(&check), 0);
    // ...then the local share decides (ceil(640 / 3) = 214 in the same instant).
    assert_eq!(spend(300, T0).await, 214);
    assert!(tern_metrics::get().cluster_local_decisions.get() > local_before);
    // A sweep with Redis away forgets what it cannot give back, and does not wait.
    let started = Instant::now();
    la.sweep(T0 + HOLD_MS).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    p.a.stop();
    p.b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_hold_the_maximum_across_nodes_and_a_dead_nodes_lapse() {
    let p = pair().await;
    let (a, b) = (&p.a, &p.b);
    let la = SharedLeases::start(a.clone());
    let lb = SharedLeases::start(b.clone());
    let take = async |l: &SharedLeases| match l.acquire("slow", 3).await {
        LeaseAnswer::Granted(lease) => Some(lease),
        LeaseAnswer::Full { scope } => {
            assert_eq!(scope, "cluster");
            None
        }
    };
    let a1 = take(&la).await.expect("a1");
    let a2 = take(&la).await.expect("a2");
    let b1 = take(&lb).await.expect("b1");
    assert!(take(&lb).await.is_none(), "a fourth lease of 3");
    assert!(take(&la).await.is_none(), "a fourth lease of 3");
    // Released on drop: b gets one.
    drop(a1);
    until("a released lease is taken", async || {
        take(&lb).await.is_some_and(|l| {
            std::mem::forget(l);
            true
        })
    })
    .await;
    // Renewals keep the leases past their time to live (1 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(take(&lb).await.is_none(), "renewed leases lapsed");
    // Node a dies (no release, no renewal): its lease lapses within dead_after_ms.
    std::mem::forget(a2);
    drop(la);
    a.stop();
    let died = Instant::now();
    until("the dead node's lease lapses", async || {
        take(&lb).await.is_some_and(|l| {
            std::mem::forget(l);
            true
        })
    })
    .await;
    assert!(died.elapsed() < Duration::from_secs(5));
    drop(b1);
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failures_spread_over_nodes_lock_out_as_on_one() {
    let p = pair().await;
    let (a, b) = (&p.a, &p.b);
    let la: Arc<dyn FailureLedger> = Arc::new(SharedLedger::new(a.clone()));
    let lb: Arc<dyn FailureLedger> = Arc::new(SharedLedger::new(b.clone()));
    let t = Threshold {
        max_failures: 4,
        window: Duration::from_secs(60),
        lockout: Duration::from_secs(300),
    };
    let key = FailureKey::user("Mallory");
    let now = std::time::Instant::now();
    let mut started = 0;
    for i in 0..4 {
        let l = if i % 2 == 0 { &la } else { &lb };
        assert!(!l.is_locked(&key, now).await);
        let r = l.record_failure(&key, t, now).await;
        assert_eq!(r.failures, i + 1);
        if r.locked_now {
            started += 1;
        }
    }
    assert_eq!(started, 1, "the fourth failure, on either node, locks out");
    assert!(la.is_locked(&key, now).await);
    assert!(lb.is_locked(&FailureKey::user("mallory"), now).await);
    // A success elsewhere does not lift a lockout.
    lb.clear(&key).await;
    assert!(la.is_locked(&key, now).await);
    // Other keys are not locked.
    assert!(!la.is_locked(&FailureKey::user("alice"), now).await);

    // Without Redis: the local ledger with the local share (ceil(4 / 3) = 2).
    drop(p.redis);
    let other = FailureKey::user("eve");
    let _ = la.record_failure(&other, t, now).await;
    let r = la.record_failure(&other, t, now).await;
    assert!(r.locked_now, "{r:?}");
    assert!(la.is_locked(&other, now).await);
    assert!(!lb.is_locked(&other, now).await, "local to its node");
    a.stop();
    b.stop();
}
