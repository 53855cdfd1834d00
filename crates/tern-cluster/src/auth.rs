//! AUTH failure counts and lockouts shared by every node: a Redis backend of
//! [`tern_auth::guard::FailureLedger`] (docs/cluster/limits.md, "AUTH lockouts").
//!
//! A brute force spread over N nodes meets the same thresholds as on one: every failure
//! is counted in Redis, and the lockout it starts holds on every node, because every
//! node asks Redis (the ledger's calls are futures, awaited by the AUTH exchange; AUTH
//! is not the hot path).
//!
//! Keys, per counted subject (`client:<address or /64>` or `user:<name>`), under one
//! hash tag per subject so that one script touches one shard:
//! - `{<prefix>:auth:<subject>}:f`: failures in the current window (INCR; PEXPIRE
//!   `window` at the first);
//! - `{<prefix>:auth:<subject>}:l`: present while locked out (SET PX `lockout`).
//!
//! Expiry is relative (PEXPIRE, SET PX): Redis's clock runs it, so node clocks do not
//! matter here. A lockout ends with a fresh count (the count key is deleted when the
//! lock is set), as in the memory ledger.
//!
//! Operations: a lockout check is one EXISTS; a failure is one EVALSHA of [`RECORD`]
//! (one per key counted: the client's, and the user's when named); a success is one DEL.
//!
//! Degraded: while the cluster is not up or a call fails, the node's own
//! [`MemoryLedger`] decides, its thresholds scaled by `cluster.local_share` (rounded up,
//! at least 1). What Redis counted is not copied into it: a lockout in force when Redis
//! became unreachable is lost for that time, and Redis's count goes on when it answers
//! again (if it kept its data). The failures counted locally stay local.

use std::sync::LazyLock;
use std::time::Instant;

use redis::Script;
use tern_auth::guard::{FailureKey, FailureLedger, MemoryLedger, Pending, Recorded, Threshold};

use crate::Cluster;
use crate::limits::scaled;

/// Counts one failure. `KEYS[1]`: the count, `KEYS[2]`: the lock; `ARGV`: max failures,
/// window ms, lockout ms. Answers `{failures, locked_now}`; while locked, `{max, 0}`.
static RECORD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local max = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {max, 0}
end
local n = redis.call('INCR', KEYS[1])
if n == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if n >= max then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  redis.call('DEL', KEYS[1])
  return {max, 1}
end
return {n, 0}
"#,
    )
});

/// The failure ledger shared through Redis, with this node's own as the fallback.
pub struct SharedLedger {
    cluster: Cluster,
    local: MemoryLedger,
}

impl std::fmt::Debug for SharedLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLedger").finish_non_exhaustive()
    }
}

impl SharedLedger {
    /// A ledger over `cluster`.
    pub fn new(cluster: Cluster) -> SharedLedger {
        SharedLedger {
            cluster,
            local: MemoryLedger::new(),
        }
    }

    /// The hash-tagged base of `key`'s Redis keys.
    fn base(&self, key: &FailureKey) -> String {
        format!(
            "{{{}}}",
            self.cluster.key(&format!("auth:{}:{key}", key.kind()))
        )
    }

    async fn locked(&self, key: &FailureKey, now: Instant) -> bool {
        if self.cluster.is_up() {
            let mut cmd = redis::cmd("EXISTS");
            cmd.arg(format!("{}:l", self.base(key)));
            if let Ok(n) = self.cluster.query::<i64>(&cmd).await {
                return n == 1;
            }
        }
        tern_metrics::get().cluster_local_decisions.inc();
        self.local.is_locked_now(key, now)
    }

    async fn record(&self, key: &FailureKey, limits: Threshold, now: Instant) -> Recorded {
        let max = limits.max_failures.max(1);
        if self.cluster.is_up() {
            let base = self.base(key);
            let window = u64::try_from(limits.window.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            let lockout = u64::try_from(limits.lockout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            let mut inv = RECORD.prepare_invoke();
            inv.key(format!("{base}:f"))
                .key(format!("{base}:l"))
                .arg(max)
                .arg(window)
                .arg(lockout);
            if let Ok(reply) = self.cluster.script::<Vec<i64>>(&inv).await
                && let [n, locked_now] = reply[..]
                && (0..=1).contains(&locked_now)
            {
                return Recorded {
                    failures: u32::try_from(n).unwrap_or(max).min(max),
                    locked_now: locked_now == 1,
                };
            }
        }
        tern_metrics::get().cluster_local_decisions.inc();
        let share = self.cluster.local_share();
        let local = Threshold {
            max_failures: scaled(max, share),
            ..limits
        };
        self.local.record_failure_now(key, local, now)
    }

    async fn forget(&self, key: &FailureKey) {
        self.local.clear_now(key);
        if self.cluster.is_up() {
            let mut cmd = redis::cmd("DEL");
            cmd.arg(format!("{}:f", self.base(key)));
            let _ = self.cluster.query::<i64>(&cmd).await;
        }
    }
}

impl FailureLedger for SharedLedger {
    fn is_locked<'a>(&'a self, key: &'a FailureKey, now: Instant) -> Pending<'a, bool> {
        Box::pin(self.locked(key, now))
    }

    fn record_failure<'a>(
        &'a self,
        key: &'a FailureKey,
        limits: Threshold,
        now: Instant,
    ) -> Pending<'a, Recorded> {
        Box::pin(self.record(key, limits, now))
    }

    fn clear<'a>(&'a self, key: &'a FailureKey) -> Pending<'a, ()> {
        Box::pin(self.forget(key))
    }
}
