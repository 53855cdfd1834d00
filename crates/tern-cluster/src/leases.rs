//! Connection leases shared by every node: the Redis backend of
//! [`tern_queue::destlimits::LeaseBackend`] (docs/cluster/limits.md), after KumoMTA's
//! shared throttles.
//!
//! A destination limit's open connections are the members of one sorted set,
//! `{<prefix>:dest:<limit>}:leases`, each scored by the time its lease expires (Redis's
//! own clock, `TIME`, so node clocks do not matter here). Taking a lease is one EVALSHA
//! of [`ACQUIRE`]: drop the expired members, count the rest, add this one if under the
//! maximum. The node renews every lease it holds every `cluster.heartbeat_ms`
//! ([`RENEW`], one call per limit with leases held, sent together on the multiplexed
//! connection), each for `cluster.dead_after_ms`: the leases of a node that dies lapse
//! at most that long after its last renewal. A lease is released when its connection
//! is dropped (ZREM in a task of its own: a drop cannot wait); if that is lost (Redis
//! away, the process ending), the lease lapses the same way.
//!
//! Degraded: while the cluster is not up, or when a call fails, the node takes leases
//! against its own count of the connections it holds for the limit (leases taken from
//! Redis included), at most `ceil(max × cluster.local_share)`. A renewal with `XX` does
//! not re-add a lease Redis lost (a restarted Redis starts empty): until those
//! connections close, the cluster may then hold more than the maximum.
//!
//! Locking: the registry of held leases is one `std::sync::Mutex`, held for a map
//! operation or a copy, never across an `.await`, never with another lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use redis::Script;
use tern_queue::destlimits::{Lease, LeaseAnswer, LeaseBackend, MemoryLeases, PendingLease};

use crate::Cluster;
use crate::limits::scaled;

/// Takes a lease. `KEYS[1]`: the set; `ARGV`: member, max, ttl ms. Answers `{1, held}`
/// (taken) or `{0, held}` (full).
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[2]) then
  return {0, n}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, n + 1}
"#,
    )
});

/// Renews leases still held. `KEYS[1]`: the set; `ARGV[1]`: ttl ms, then members.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"#,
    )
});

/// Held leases: member → the set it is in.
type Registry = Arc<Mutex<HashMap<String, String>>>;

/// Connection leases shared through Redis.
pub struct SharedLeases {
    cluster: Cluster,
    local: MemoryLeases,
    held: Registry,
    serial: AtomicU64,
    nonce: u64,
    ttl_ms: u64,
}

impl std::fmt::Debug for SharedLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLeases").finish_non_exhaustive()
    }
}

impl SharedLeases {
    /// The backend, and its renewal task (on the current runtime; it ends when the
    /// backend is dropped).
    pub fn start(cluster: Cluster) -> Arc<SharedLeases> {
        let config = cluster.config();
        let ttl_ms = config.dead_after_ms.max(1000);
        let every = Duration::from_millis(config.heartbeat_ms.clamp(100, ttl_ms / 2));
        let leases = Arc::new(SharedLeases {
            local: MemoryLeases::new(),
            held: Arc::new(Mutex::new(HashMap::new())),
            serial: AtomicU64::new(0),
            nonce: rand::random(),
            ttl_ms,
            cluster,
        });
        let weak = Arc::downgrade(&leases);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(l) = weak.upgrade() else {
                    return;
                };
                l.renew().await;
            }
        });
        leases
    }

    /// The set of the limit `name`.
    pub fn set_key(&self, name: &str) -> String {
        format!("{{{}}}:leases", self.cluster.key(&format!("dest:{name}")))
    }

    /// Leases this node holds through Redis now.
    pub fn held_here(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Renews every lease held (one call per set, all sent at once).
    pub async fn renew(&self) {
        if !self.cluster.is_up() {
            return;
        }
        let mut by_set: HashMap<String, Vec<String>> = HashMap::new();
        {
            let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            for (member, set) in held.iter() {
                by_set.entry(set.clone()).or_default().push(member.clone());
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (set, members) in by_set {
            let cluster = self.cluster.clone();
            let ttl = self.ttl_ms;
            tasks.spawn(async move {
                let mut inv = RENEW.prepare_invoke();
                inv.key(set).arg(ttl);
                for m in members {
                    inv.arg(m);
                }
                let _ = cluster.script::<i64>(&inv).await;
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    fn local_answer(&self, name: &str, max: u32) -> LeaseAnswer {
        tern_metrics::get().cluster_local_decisions.inc();
        match self
            .local
            .try_acquire(name, scaled(max, self.cluster.local_share()))
        {
            Some(l) => LeaseAnswer::Granted(l),
            None => LeaseAnswer::Full { scope: "local" },
        }
    }

    async fn take(&self, name: &str, max: u32) -> LeaseAnswer {
        if !self.cluster.is_up() {
            return self.local_answer(name, max);
        }
        let set = self.set_key(name);
        let member = format!(
            "{}:{:016x}:{}",
            self.cluster.node(),
            self.nonce,
            self.serial.fetch_add(1, Ordering::Relaxed)
        );
        let mut inv = ACQUIRE.prepare_invoke();
        inv.key(&set).arg(&member).arg(max).arg(self.ttl_ms);
        match self.cluster.script::<Vec<i64>>(&inv).await {
            Ok(r) if r.first() == Some(&1) => {
                // Counted here too, so that a fall-back to the local share sees it.
                let counted = self.local.try_acquire(name, u32::MAX);
                self.held
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(member.clone(), set.clone());
                let held = Arc::clone(&self.held);
                let cluster = self.cluster.clone();
                LeaseAnswer::Granted(Lease::new(move || {
                    drop(counted);
                    held.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&member);
                    if let Ok(rt) = tokio::runtime::Handle::try_current() {
                        rt.spawn(async move {
                            let mut cmd = redis::cmd("ZREM");
                            cmd.arg(set).arg(member);
                            let _ = cluster.query::<i64>(&cmd).await;
                        });
                    }
                }))
            }
            Ok(r) if r.first() == Some(&0) => LeaseAnswer::Full { scope: "cluster" },
            _ => self.local_answer(name, max),
        }
    }
}

impl LeaseBackend for SharedLeases {
    fn acquire<'a>(&'a self, name: &'a str, max: u32) -> PendingLease<'a> {
        Box::pin(self.take(name, max))
    }

    fn held(&self, name: &str) -> Option<u64> {
        // Every lease this node holds is counted locally too (taken through Redis or,
        // degraded, from the local share).
        Some(u64::from(self.local.count(name)))
    }
}
