//! Rate limits shared by every node: a Redis backend of [`tern_limits::RateLimiter`]
//! (docs/cluster/limits.md).
//!
//! One call to Redis is one EVALSHA of [`GCRA`], a Lua script doing the GCRA of
//! `tern-limits` (`gcra.rs`) over every charge of the call at once, all or nothing,
//! atomically in Redis. The rate travels with each charge (as arguments), so the
//! backend has no configuration of its own.
//!
//! Borrowing: a busy bucket (at least [`BORROW_FROM`] units, refilling at least 10 a
//! second: see [`max_held`]) is not asked once per message. Each node borrows units of
//! it ahead (the script spends them with the charge,
//! only if they conform, never refusing for them) and spends them locally; it borrows
//! again, in a task of its own, when half of its batch is spent, so a busy bucket costs
//! one round trip per batch and the session never waits for it. The batch starts at 1,
//! doubles while the units run out within [`HOLD_MS`], halves when they do not, and is
//! at most [`max_held`] units, borrowed and asked for together.
//! Units unspent for [`HOLD_MS`] are given back to the bucket (one [`REFUND`] call per
//! sweep). What this costs in exactness: the cluster's admissions in any window exceed
//! the limit by at most the units held then, `nodes × max_held` (per node under 1/64 of
//! the limit and under 100 ms of its refill); a node that dies holding units keeps them
//! from the others for at most one period. A bucket not borrowed from (an hourly limit
//! of a few hundred messages) is exact: one round trip per check, as before.
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
//! transition (8002/8003). Units already borrowed stay this node's to spend.
//!
//! Locking: the table of borrowed units is one `std::sync::Mutex`, held for a lookup or
//! an update of the charges of one call, never across an `.await`, never with another
//! lock.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::time::Duration;

use redis::Script;
use tern_limits::{
    Charge, Decision, Key, MemoryLimiter, PendingAhead, PendingDecision, Rate, RateLimiter, Refusal,
};

use crate::Cluster;

/// A node holds at most `count / BORROW_FROM` units of a bucket: a bucket of fewer is
/// asked at every check.
pub const BORROW_FROM: u32 = 64;
/// The most units of one bucket a node holds (and has asked for) at once.
pub const MAX_HELD: u32 = 64;
/// A node holds at most what a bucket refills in this time (ms): a bucket refilling
/// fewer than 10 units a second (`600/1m`, any hourly limit under 36000) is asked at
/// every check.
pub const LEAD_MS: u64 = 100;
/// How long borrowed units stay this node's: unspent after this, they are given back.
pub const HOLD_MS: u64 = 1000;

/// The GCRA over all charges (see the module header). `KEYS[i]`: bucket `i`;
/// `ARGV[1]`: now (µs); then five per charge: emission interval (µs), count, cost,
/// period (µs), units to borrow. Answers `{0, g_1, …, g_n}` (allowed, all spent, `g_i`
/// units borrowed of bucket `i`) or `{1, i, wait_us, first}` (charge `i` refused, nothing
/// spent; `wait_us` -1: never).
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
  local b = 1 + (i - 1) * 5
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
local answer = {0}
for i = 1, n do
  local b = 1 + (i - 1) * 5
  local t = num(ARGV[b + 1])
  local count = num(ARGV[b + 2])
  local want = num(ARGV[b + 5])
  local got = 0
  if want > 0 and t > 0 then
    local tat = pending[KEYS[i]]
    got = math.max(0, math.min(want, math.floor((now + t * count - tat) / t)))
    pending[KEYS[i]] = tat + got * t
  end
  answer[i + 1] = got
end
for key, tat in pairs(pending) do
  local rep = num(redis.call('HGET', key, 'r'))
  redis.call('HSET', key, 't', string.format('%.0f', tat))
  local until_us = math.max(tat, rep) - now
  redis.call('PEXPIRE', key, math.max(1, math.ceil(until_us / 1000)))
end
return answer
"#,
    )
});

/// Gives unspent borrowed units back. `KEYS[i]`: a bucket; `ARGV[i]`: the time they
/// stood for (µs), taken off its `t`. A bucket gone (expired, Redis restarted) is left.
static REFUND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
for i = 1, #KEYS do
  local d = tonumber(ARGV[i])
  local t = tonumber(redis.call('HGET', KEYS[i], 't'))
  if d ~= nil and t ~= nil and d > 0 then
    redis.call('HSET', KEYS[i], 't', string.format('%.0f', math.max(0, t - d)))
  end
end
return #KEYS
"#,
    )
});

/// The most buckets given back in one [`REFUND`] call.
const REFUND_BATCH: usize = 256;

/// Units of one bucket borrowed by this node (see the module header).
#[derive(Debug, Clone, Copy)]
struct Held {
    /// Borrowed, not spent.
    units: u32,
    /// Asked for in a call not answered yet.
    asked: u32,
    /// Units to hold after the next borrowing: 1 ..= the bucket's maximum.
    batch: u32,
    /// Wall-clock ms after which the unspent units are given back.
    until_ms: u64,
    /// When this node last asked Redis for units of the bucket.
    asked_ms: Option<u64>,
}

impl Held {
    /// Before asking again: asked twice within [`HOLD_MS`], the demand outgrew the
    /// batch, which doubles (at most `max`).
    fn grow(&mut self, now_ms: u64, max: u32) {
        if self
            .asked_ms
            .is_some_and(|t| now_ms < t.saturating_add(HOLD_MS))
        {
            self.batch = self.batch.saturating_mul(2).min(max);
        }
        self.asked_ms = Some(now_ms);
    }
}

/// A bucket of the table: its Redis key and its rate (a reloaded rate is a new bucket,
/// the old one's units going back at their own emission interval).
type Bucket = (String, u32, u64);

/// Units given back: the bucket's Redis key and the µs they stood for.
type Refund = (String, u64);

/// The most units of a bucket of `rate` a node holds: `min(MAX_HELD, count /
/// BORROW_FROM, what the bucket refills in LEAD_MS)`; 0: not borrowed from (exact).
pub fn max_held(rate: &Rate) -> u32 {
    let lead = u64::from(rate.count()).saturating_mul(LEAD_MS) / rate.period_ms().max(1);
    let lead = u32::try_from(lead).unwrap_or(u32::MAX);
    (rate.count() / BORROW_FROM).min(MAX_HELD).min(lead)
}

/// The emission interval of `rate` in µs (rounded up: never more than the rate).
fn emission_us(rate: &Rate) -> u64 {
    rate.period_ms()
        .saturating_mul(1000)
        .div_ceil(u64::from(rate.count().max(1)))
}

/// The rate limiter shared through Redis, with this node's share as the fallback.
pub struct SharedLimiter {
    cluster: Cluster,
    local: MemoryLimiter,
    held: Mutex<HashMap<Bucket, Held>>,
    max_keys: usize,
    me: Weak<SharedLimiter>,
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

/// One bucket of a call to Redis: the units it spends and those it borrows.
#[derive(Debug, Clone, Copy)]
struct Item<'a> {
    key: &'a str,
    rate: &'a Rate,
    cost: u32,
    borrow: u32,
}

/// One charge of a call as it goes to Redis: its index in the caller's slice and the
/// units it asks to borrow.
#[derive(Debug, Clone, Copy)]
struct Ask {
    index: usize,
    borrow: u32,
}

impl SharedLimiter {
    /// A limiter over `cluster`; `max_keys` bounds the fallback table
    /// (`limits.max_tracked_keys`) and the table of borrowed units. Inside a Tokio
    /// runtime, a task gives back units unspent for [`HOLD_MS`] until the limiter is
    /// dropped.
    pub fn new(cluster: Cluster, max_keys: usize) -> Arc<SharedLimiter> {
        let limiter = Arc::new_cyclic(|me| SharedLimiter {
            cluster,
            local: MemoryLimiter::new(max_keys),
            held: Mutex::new(HashMap::new()),
            max_keys: max_keys.max(1),
            me: me.clone(),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let me = Arc::downgrade(&limiter);
            rt.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(HOLD_MS));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(limiter) = me.upgrade() else { return };
                    limiter.sweep(tern_watchdog::clock::unix_ms()).await;
                }
            });
        }
        limiter
    }

    /// The Redis key of a bucket.
    fn key(&self, key: &Key) -> String {
        format!(
            "{{{}}}:{}:{key}",
            self.cluster.key("rl"),
            key.kind().as_str()
        )
    }

    /// Units this node holds of the bucket of `charge` now (for tests and `tern dest`).
    pub fn held_units(&self, charge: &Charge) -> u32 {
        let bucket = (
            self.key(&charge.key),
            charge.rate.count(),
            charge.rate.period_ms(),
        );
        self.table().get(&bucket).map_or(0, |h| h.units)
    }

    /// Units this node has asked Redis for and not had an answer about yet.
    pub fn asking(&self) -> u32 {
        self.table().values().map(|h| h.asked).sum()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<Bucket, Held>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
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

    /// Takes what it can of `charges` from the units held (recorded in `spent`), and
    /// says what must go to Redis, with the units to borrow for each bucket. Lapsed
    /// units are moved to `refunds`. One lock, no `.await`.
    fn plan(
        &self,
        charges: &[Charge],
        buckets: &[Bucket],
        now_ms: u64,
        spent: &mut Vec<(usize, u32)>,
        refunds: &mut Vec<Refund>,
    ) -> Vec<Ask> {
        let mut asks = Vec::new();
        let mut table = self.table();
        for (index, (c, bucket)) in charges.iter().zip(buckets).enumerate() {
            let max = max_held(&c.rate);
            if max == 0 || (!table.contains_key(bucket) && table.len() >= self.max_keys) {
                // Too small to borrow from, or the table is full: asked per check.
                asks.push(Ask { index, borrow: 0 });
                continue;
            }
            let h = table.entry(bucket.clone()).or_insert(Held {
                units: 0,
                asked: 0,
                batch: 1,
                until_ms: now_ms.saturating_add(HOLD_MS),
                asked_ms: None,
            });
            if now_ms >= h.until_ms && h.units > 0 {
                refunds.push((
                    bucket.0.clone(),
                    u64::from(h.units).saturating_mul(emission_us(&c.rate)),
                ));
                h.units = 0;
                h.batch = (h.batch / 2).max(1);
            }
            if h.units >= c.cost {
                h.units -= c.cost;
                spent.push((index, c.cost));
                continue;
            }
            h.grow(now_ms, max);
            // The batch counts the unit spent with it.
            let borrow = h
                .batch
                .saturating_sub(1)
                .min(max.saturating_sub(h.units.saturating_add(h.asked)));
            h.asked = h.asked.saturating_add(borrow);
            asks.push(Ask { index, borrow });
        }
        asks
    }

    /// The buckets just spent from that are half spent, with the units to borrow ahead
    /// (marked as asked). One lock, no `.await`.
    fn plan_ahead(
        &self,
        charges: &[Charge],
        buckets: &[Bucket],
        spent: &[(usize, u32)],
        now_ms: u64,
    ) -> Vec<Ask> {
        let mut asks = Vec::new();
        let mut table = self.table();
        for &(index, _) in spent {
            let (Some(c), Some(bucket)) = (charges.get(index), buckets.get(index)) else {
                continue;
            };
            let Some(h) = table.get_mut(bucket) else {
                continue;
            };
            if h.asked > 0 || h.units.saturating_mul(2) > h.batch {
                continue;
            }
            let max = max_held(&c.rate);
            h.grow(now_ms, max);
            let borrow = h.batch.min(max).saturating_sub(h.units);
            if borrow > 0 {
                h.asked = borrow;
                asks.push(Ask { index, borrow });
            }
        }
        asks
    }

    /// Records an answer: the units `got` (in the order of `asks`) become this node's
    /// until `now + HOLD_MS`, what was asked is no longer pending, and `put_back` (units
    /// taken from those held for a call that spent nothing) returns to them.
    fn settle(
        &self,
        buckets: &[Bucket],
        asks: &[Ask],
        got: &[u32],
        put_back: &[(usize, u32)],
        now_ms: u64,
    ) {
        let mut table = self.table();
        for (n, ask) in asks.iter().enumerate() {
            let Some(h) = buckets.get(ask.index).and_then(|b| table.get_mut(b)) else {
                continue;
            };
            h.asked = h.asked.saturating_sub(ask.borrow);
            let units = got.get(n).copied().unwrap_or(0);
            if units > 0 {
                h.units = h.units.saturating_add(units);
                h.until_ms = now_ms.saturating_add(HOLD_MS);
            }
        }
        for &(index, cost) in put_back {
            if let Some(h) = buckets.get(index).and_then(|b| table.get_mut(b)) {
                h.units = h.units.saturating_add(cost);
            }
        }
    }

    /// One call of [`GCRA`] for `items`: `Some(Ok(borrowed))` (per item),
    /// `Some(Err(refusal))` (its charge an index of `items`), or `None` when Redis did
    /// not answer, or not sensibly.
    async fn call(&self, items: &[Item<'_>], now_ms: u64) -> Option<Result<Vec<u32>, Refusal>> {
        let mut inv = GCRA.prepare_invoke();
        inv.arg(now_ms.saturating_mul(1000));
        for item in items {
            inv.key(item.key);
            inv.arg(emission_us(item.rate))
                .arg(item.rate.count())
                .arg(item.cost)
                .arg(item.rate.period_ms().saturating_mul(1000))
                .arg(item.borrow);
        }
        tern_metrics::get().cluster_limit_calls.inc();
        let reply = self.cluster.script::<Vec<i64>>(&inv).await.ok()?;
        let asked: Vec<u32> = items.iter().map(|i| i.borrow).collect();
        match parse_reply(&reply, &asked)? {
            Answer::Allowed(got) => Some(Ok(got)),
            Answer::Refused(r) => Some(Err(r)),
        }
    }

    /// The items of a call for `asks` of `charges`, spending each charge's cost when
    /// `spend`.
    fn items<'a>(
        charges: &'a [Charge],
        buckets: &'a [Bucket],
        asks: &[Ask],
        spend: bool,
    ) -> Option<Vec<Item<'a>>> {
        asks.iter()
            .map(|ask| {
                let c = charges.get(ask.index)?;
                Some(Item {
                    key: &buckets.get(ask.index)?.0,
                    rate: &c.rate,
                    cost: if spend { c.cost } else { 0 },
                    borrow: ask.borrow,
                })
            })
            .collect()
    }

    /// [`RateLimiter::check_ahead`] (and `check`, with nothing ahead): see the module
    /// header. Units of `ahead` are set aside only for buckets the node does not borrow
    /// from (those are local already), and only when the call is made anyway or saves
    /// one (2 units or more wanted).
    async fn shared(
        &self,
        charges: &[Charge],
        ahead: &[Charge],
        now_ms: u64,
    ) -> (Decision, Vec<u32>) {
        let mut aside = vec![0; ahead.len()];
        if charges.is_empty() && ahead.is_empty() {
            return (Decision::Allowed, aside);
        }
        let buckets: Vec<Bucket> = charges
            .iter()
            .map(|c| (self.key(&c.key), c.rate.count(), c.rate.period_ms()))
            .collect();
        let mut spent = Vec::new();
        let mut refunds = Vec::new();
        let asks = self.plan(charges, &buckets, now_ms, &mut spent, &mut refunds);
        let up = self.cluster.is_up();
        if up {
            self.give_back_later(refunds);
        }
        let wanted: Vec<(usize, String)> = ahead
            .iter()
            .enumerate()
            .filter(|(_, c)| c.cost > 0 && max_held(&c.rate) == 0)
            .map(|(i, c)| (i, self.key(&c.key)))
            .collect();
        let worth = up
            && !wanted.is_empty()
            && (!asks.is_empty() || wanted.iter().any(|&(i, _)| ahead[i].cost >= 2));
        if asks.is_empty() && !worth {
            // Every charge spent from units held: no round trip.
            if !charges.is_empty() {
                tern_metrics::get().cluster_limit_local_spends.inc();
            }
            if up {
                self.borrow_ahead(charges, &buckets, &spent, now_ms);
            }
            return (Decision::Allowed, aside);
        }
        let items = Self::items(charges, &buckets, &asks, true).map(|mut items| {
            if worth {
                items.extend(wanted.iter().map(|(i, key)| Item {
                    key,
                    rate: &ahead[*i].rate,
                    cost: 0,
                    borrow: ahead[*i].cost,
                }));
            }
            items
        });
        let answer = match &items {
            Some(items) if up => self.call(items, now_ms).await,
            _ => None,
        };
        match answer {
            Some(Ok(got)) => {
                self.settle(&buckets, &asks, &got, &[], now_ms);
                if worth {
                    for (n, (i, _)) in wanted.iter().enumerate() {
                        if let (Some(slot), Some(g)) = (aside.get_mut(*i), got.get(asks.len() + n))
                        {
                            *slot = *g;
                        }
                    }
                }
                (Decision::Allowed, aside)
            }
            Some(Err(r)) if r.charge < asks.len() => {
                self.settle(&buckets, &asks, &[], &spent, now_ms);
                let refusal = Refusal {
                    charge: asks[r.charge].index,
                    ..r
                };
                (Decision::Refused(refusal), aside)
            }
            _ => {
                // Redis did not answer (or named a bucket it could not refuse): this
                // node decides alone, and sets nothing aside.
                self.settle(&buckets, &asks, &[], &spent, now_ms);
                if charges.is_empty() {
                    return (Decision::Allowed, aside);
                }
                (self.local(charges, now_ms), aside)
            }
        }
    }

    /// Borrows ahead, in a task of its own, for the buckets just spent from that are
    /// half spent.
    fn borrow_ahead(
        &self,
        charges: &[Charge],
        buckets: &[Bucket],
        spent: &[(usize, u32)],
        now_ms: u64,
    ) {
        let asks = self.plan_ahead(charges, buckets, spent, now_ms);
        if asks.is_empty() {
            return;
        }
        let (Some(me), Ok(rt)) = (self.me.upgrade(), tokio::runtime::Handle::try_current()) else {
            self.settle(buckets, &asks, &[], &[], now_ms);
            return;
        };
        let charges = charges.to_vec();
        let buckets = buckets.to_vec();
        rt.spawn(async move {
            let got = match Self::items(&charges, &buckets, &asks, false) {
                Some(items) => match me.call(&items, now_ms).await {
                    Some(Ok(got)) => got,
                    _ => Vec::new(),
                },
                None => Vec::new(),
            };
            me.settle(&buckets, &asks, &got, &[], now_ms);
        });
    }

    /// Gives `refunds` back to their buckets, in a task of its own.
    fn give_back_later(&self, refunds: Vec<Refund>) {
        if refunds.is_empty() {
            return;
        }
        let (Some(me), Ok(rt)) = (self.me.upgrade(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        rt.spawn(async move { me.refund(refunds).await });
    }

    async fn refund(&self, refunds: Vec<Refund>) {
        for part in refunds.chunks(REFUND_BATCH) {
            let mut inv = REFUND.prepare_invoke();
            for (key, us) in part {
                inv.key(key).arg(*us);
            }
            // Lost when Redis does not answer: the bucket then admits that many fewer
            // until its units' time has passed (at most one period).
            let _ = self.cluster.script::<i64>(&inv).await;
        }
    }

    /// Gives back the units unspent for [`HOLD_MS`] and forgets idle buckets.
    pub async fn sweep(&self, now_ms: u64) {
        let mut refunds = Vec::new();
        {
            let mut table = self.table();
            table.retain(|(key, count, period_ms), h| {
                if now_ms < h.until_ms || h.asked > 0 {
                    return true;
                }
                if h.units > 0
                    && let Ok(rate) = Rate::new(*count, *period_ms)
                {
                    refunds.push((
                        key.clone(),
                        u64::from(h.units).saturating_mul(emission_us(&rate)),
                    ));
                }
                false
            });
        }
        if !refunds.is_empty() && self.cluster.is_up() {
            self.refund(refunds).await;
        }
    }
}

/// A valid answer of [`GCRA`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// Every charge spent; the units borrowed of each bucket, in the order asked.
    Allowed(Vec<u32>),
    /// Nothing spent; `charge` is the index among the buckets asked.
    Refused(Refusal),
}

/// The script's answer to a call that asked to borrow `asked[i]` units of bucket `i`,
/// validated: `None` for anything it cannot have said.
fn parse_reply(reply: &[i64], asked: &[u32]) -> Option<Answer> {
    match reply {
        [0, got @ ..] if got.len() == asked.len() => got
            .iter()
            .zip(asked)
            .map(|(&g, &a)| u32::try_from(g).ok().filter(|g| *g <= a))
            .collect::<Option<Vec<u32>>>()
            .map(Answer::Allowed),
        [1, i, wait, first] => {
            let index = usize::try_from(*i).ok()?.checked_sub(1)?;
            if index >= asked.len() || !(0..=1).contains(first) {
                return None;
            }
            let retry_after_ms = match *wait {
                -1 => None,
                w if w >= 0 => Some(u64::try_from(w).ok()?.div_ceil(1000)),
                _ => return None,
            };
            Some(Answer::Refused(Refusal {
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
        Box::pin(async move { self.shared(charges, &[], now_ms).await.0 })
    }

    fn check_ahead<'a>(
        &'a self,
        charges: &'a [Charge],
        ahead: &'a [Charge],
        now_ms: u64,
    ) -> PendingAhead<'a> {
        Box::pin(self.shared(charges, ahead, now_ms))
    }

    fn give_back(&self, unspent: &[Charge]) {
        if !self.cluster.is_up() {
            return;
        }
        let refunds = unspent
            .iter()
            .filter(|c| c.cost > 0)
            .map(|c| {
                (
                    self.key(&c.key),
                    u64::from(c.cost).saturating_mul(emission_us(&c.rate)),
                )
            })
            .collect();
        self.give_back_later(refunds);
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
        assert_eq!(
            parse_reply(&[0, 0, 0], &[0, 0]),
            Some(Answer::Allowed(vec![0, 0]))
        );
        assert_eq!(
            parse_reply(&[0, 3, 0], &[4, 0]),
            Some(Answer::Allowed(vec![3, 0]))
        );
        assert_eq!(
            parse_reply(&[1, 2, 1500, 1], &[0, 0]),
            Some(Answer::Refused(Refusal {
                charge: 1,
                retry_after_ms: Some(2),
                first_in_window: true
            }))
        );
        assert!(matches!(
            parse_reply(&[1, 1, -1, 0], &[0]),
            Some(Answer::Refused(Refusal {
                retry_after_ms: None,
                ..
            }))
        ));
        for bad in [
            &[][..],
            &[0],
            &[0, 0],
            &[0, 5, 0],
            &[0, -1, 0],
            &[2],
            &[1, 0, 0, 0],
            &[1, 3, 0, 0],
            &[1, 1, -5, 0],
            &[1, 1, 0, 7],
        ] {
            assert_eq!(parse_reply(bad, &[4, 0]), None, "{bad:?}");
        }
    }

    #[test]
    fn only_big_buckets_are_borrowed_from() {
        let r = |s: &str| s.parse::<Rate>().unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(max_held(&r("5/1h")), 0);
        assert_eq!(max_held(&r("63/1s")), 0);
        assert_eq!(max_held(&r("64/1s")), 1);
        assert_eq!(max_held(&r("640/1s")), 10);
        // Slow buckets stay exact whatever their size.
        assert_eq!(max_held(&r("1000/1h")), 0);
        assert_eq!(max_held(&r("35999/1h")), 0);
        assert_eq!(max_held(&r("36000/1h")), 1);
        assert_eq!(max_held(&r("600/1m")), 1);
        assert_eq!(max_held(&r("100000/1m")), MAX_HELD);
        assert_eq!(max_held(&r("1000000/1s")), MAX_HELD);
        assert_eq!(emission_us(&r("3/1s")), 333_334);
    }

    #[test]
    fn batches_double_while_asked_within_the_hold() {
        let mut h = Held {
            units: 0,
            asked: 0,
            batch: 1,
            until_ms: 0,
            asked_ms: None,
        };
        h.grow(1000, 64);
        assert_eq!(h.batch, 1, "the first ask");
        for (now, batch) in [(1500, 2), (1600, 4), (1700, 8), (1800, 16), (1900, 32)] {
            h.grow(now, 64);
            assert_eq!(h.batch, batch);
        }
        h.grow(1950, 40);
        assert_eq!(h.batch, 40, "never above the maximum");
        h.grow(1950 + HOLD_MS, 64);
        assert_eq!(h.batch, 40, "asked again after the hold: unchanged");
    }
}
