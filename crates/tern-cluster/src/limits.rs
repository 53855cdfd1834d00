//! Rate limits shared by every node: a Redis backend of [`tern_limits::RateLimiter`]
//! (docs/cluster/limits.md).
//!
//! One call of [`SharedLimiter::check`] is one EVALSHA of [`GCRA`], a Lua script doing
//! the GCRA of `tern-limits` (`gcra.rs`) over every charge of the call at once, all or
//! nothing, atomically in Redis. The rate travels with each charge (as arguments), so
//! the backend has no configuration of its own.
//!
//! Keys: `{<prefix>:rl}:<kind>:<subject>`, a hash of `t` (the bucket's theoretical
//! arrival time) and `r` (refusals not reported again before this time), both in
//! microseconds of the callers' wall clock. Every key of one call must live on one Redis
//! Cluster shard, and one key meets other keys in other calls, so they all share the
//! hash tag `{<prefix>:rl}` (one shard carries every rate-limit key). Each key expires
//! (PEXPIRE, relative, so Redis's own clock does not matter) when its bucket is full
//! again and its refusal window is over: it then holds no information.
//!
//! Time: the script works in microseconds (every value below 2^53, exact in Lua's
//! doubles), from the `now_ms` the caller passes; nodes agree on time through their
//! clocks, which must be NTP-synced (a node whose clock is ahead by `d` spends as if
//! `d` later: up to `d × count / period` units early; one behind is refused a little
//! longer). Values read back are clamped: a `t` further ahead than one burst (garbage,
//! or a node far ahead) counts as one burst ahead, never as a lockout.
//!
//! Degraded: while the cluster is not up, or when the script fails (time-out, I/O, a
//! reply error), the call is decided by a [`MemoryLimiter`] of this node with every rate
//! scaled by `cluster.local_share` (count rounded up, at least 1). A failure is counted
//! (`tern_cluster_local_decisions_total`), never logged per operation: the core logs the
//! transition (8002/8003).

use std::sync::{Arc, LazyLock};

use redis::Script;
use tern_limits::{
    Charge, Decision, Key, MemoryLimiter, PendingDecision, Rate, RateLimiter, Refusal,
};

use crate::Cluster;

/// The GCRA over all charges (see the module header). `KEYS[i]`: bucket `i`;
/// `ARGV[1]`: now (µs); then four per charge: emission interval (µs), count, cost,
/// period (µs). Answers `{0}` (allowed, all spent) or `{1, i, wait_us, first}` (charge
/// `i` refused, nothing spent; `wait_us` -1: never).
static GCRA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local now = tonumber(ARGV[1])
local n = #KEYS
local pending = {}
local function num(v)
  local x = tonumber(v)
  if x == nil or x ~= x or x < 0 then return 0 end
  return math.floor(x)
end
local function refuse(key, i, wait, period)
  local rep = num(redis.call('HGET', key, 'r'))
  local first = 0
  if now >= rep then
    first = 1
    rep = now + period
    redis.call('HSET', key, 'r', string.format('%.0f', rep))
    local old = num(redis.call('HGET', key, 't'))
    redis.call('PEXPIRE', key, math.max(1, math.ceil((math.max(old, rep) - now) / 1000)))
  end
  return {1, i, wait, first}
end
for i = 1, n do
  local b = 1 + (i - 1) * 4
  local t = num(ARGV[b + 1])
  local count = num(ARGV[b + 2])
  local cost = num(ARGV[b + 3])
  local period = num(ARGV[b + 4])
  local limit = t * count
  if cost > count then
    return refuse(KEYS[i], i, -1, period)
  end
  local tat = pending[KEYS[i]]
  if tat == nil then
    tat = num(redis.call('HGET', KEYS[i], 't'))
    if tat > now + limit then tat = now + limit end
  end
  local new = math.max(tat, now) + cost * t
  if new - now > limit then
    return refuse(KEYS[i], i, new - now - limit, period)
  end
  pending[KEYS[i]] = new
end
for key, tat in pairs(pending) do
  local rep = num(redis.call('HGET', key, 'r'))
  redis.call('HSET', key, 't', string.format('%.0f', tat))
  local until_us = math.max(tat, rep) - now
  redis.call('PEXPIRE', key, math.max(1, math.ceil(until_us / 1000)))
end
return {0}
"#,
    )
});

/// The rate limiter shared through Redis, with this node's share as the fallback.
pub struct SharedLimiter {
    cluster: Cluster,
    local: MemoryLimiter,
}

impl std::fmt::Debug for SharedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimiter").finish_non_exhaustive()
    }
}

/// `rate` scaled by `share`: the count rounded up, at least 1, the same period.
pub fn local_rate(rate: &Rate, share: f64) -> Rate {
    let count = scaled(rate.count(), share);
    Rate::new(count, rate.period_ms()).unwrap_or(*rate)
}

/// `ceil(n × share)`, at least 1, at most `n` (a share is 0.0 to 1.0).
pub fn scaled(n: u32, share: f64) -> u32 {
    let share = if share.is_finite() {
        share.clamp(0.0, 1.0)
    } else {
        1.0
    };
    let v = (f64::from(n) * share).ceil();
    // In range by the clamp: 0 ..= n.
    let v = if v >= f64::from(n) { n } else { v as u32 };
    v.clamp(1, n.max(1))
}

impl SharedLimiter {
    /// A limiter over `cluster`; `max_keys` bounds the fallback table
    /// (`limits.max_tracked_keys`).
    pub fn new(cluster: Cluster, max_keys: usize) -> Arc<SharedLimiter> {
        Arc::new(SharedLimiter {
            cluster,
            local: MemoryLimiter::new(max_keys),
        })
    }

    /// The Redis key of a bucket.
    fn key(&self, key: &Key) -> String {
        format!(
            "{{{}}}:{}:{key}",
            self.cluster.key("rl"),
            key.kind().as_str()
        )
    }

    /// The decision of this node alone, with its share of every rate.
    fn local(&self, charges: &[Charge], now_ms: u64) -> Decision {
        tern_metrics::get().cluster_local_decisions.inc();
        let share = self.cluster.local_share();
        let scaled: Vec<Charge> = charges
            .iter()
            .map(|c| Charge {
                key: c.key.clone(),
                rate: local_rate(&c.rate, share),
                cost: c.cost,
            })
            .collect();
        self.local.check_now(&scaled, now_ms)
    }

    async fn shared(&self, charges: &[Charge], now_ms: u64) -> Decision {
        if charges.is_empty() {
            return Decision::Allowed;
        }
        if !self.cluster.is_up() {
            return self.local(charges, now_ms);
        }
        let mut inv = GCRA.prepare_invoke();
        inv.arg(now_ms.saturating_mul(1000));
        for c in charges {
            let period_us = c.rate.period_ms().saturating_mul(1000);
            let emission_us = period_us.div_ceil(u64::from(c.rate.count().max(1)));
            inv.key(self.key(&c.key));
            inv.arg(emission_us)
                .arg(c.rate.count())
                .arg(c.cost)
                .arg(period_us);
        }
        match self.cluster.script::<Vec<i64>>(&inv).await {
            Ok(reply) => match parse_reply(&reply, charges.len()) {
                Some(d) => d,
                None => self.local(charges, now_ms),
            },
            Err(_) => self.local(charges, now_ms),
        }
    }
}

/// The script's answer, validated: `None` for anything it cannot have said.
fn parse_reply(reply: &[i64], charges: usize) -> Option<Decision> {
    match reply {
        [0] => Some(Decision::Allowed),
        [1, i, wait, first] => {
            let index = usize::try_from(*i).ok()?.checked_sub(1)?;
            if index >= charges || !(0..=1).contains(first) {
                return None;
            }
            let retry_after_ms = match *wait {
                -1 => None,
                w if w >= 0 => Some(u64::try_from(w).ok()?.div_ceil(1000)),
                _ => return None,
            };
            Some(Decision::Refused(Refusal {
                charge: index,
                retry_after_ms,
                first_in_window: *first == 1,
            }))
        }
        _ => None,
    }
}

impl RateLimiter for SharedLimiter {
    fn check<'a>(&'a self, charges: &'a [Charge], now_ms: u64) -> PendingDecision<'a> {
        Box::pin(self.shared(charges, now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_share_rounds_up_and_keeps_at_least_one() {
        assert_eq!(scaled(10, 1.0 / 3.0), 4);
        assert_eq!(scaled(9, 1.0 / 3.0), 3);
        assert_eq!(scaled(1, 0.1), 1);
        assert_eq!(scaled(5, 0.0), 1);
        assert_eq!(scaled(5, 2.0), 5);
        assert_eq!(scaled(5, f64::NAN), 5);
        let r = Rate::new(100, 3_600_000).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(local_rate(&r, 0.25).count(), 25);
        assert_eq!(local_rate(&r, 0.25).period_ms(), 3_600_000);
    }

    #[test]
    fn replies_are_validated() {
        assert_eq!(parse_reply(&[0], 2), Some(Decision::Allowed));
        assert_eq!(
            parse_reply(&[1, 2, 1500, 1], 2),
            Some(Decision::Refused(Refusal {
                charge: 1,
                retry_after_ms: Some(2),
                first_in_window: true
            }))
        );
        assert!(matches!(
            parse_reply(&[1, 1, -1, 0], 1),
            Some(Decision::Refused(Refusal {
                retry_after_ms: None,
                ..
            }))
        ));
        for bad in [
            &[][..],
            &[2],
            &[1, 0, 0, 0],
            &[1, 3, 0, 0],
            &[1, 1, -5, 0],
            &[1, 1, 0, 7],
        ] {
            assert_eq!(parse_reply(bad, 2), None, "{bad:?}");
        }
    }
}
