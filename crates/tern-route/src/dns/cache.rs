//! A bounded cache whose entries expire at an exact instant.
//!
//! Purpose: hold DNS answers (and failures) for exactly as long as their TTL allows. The
//! cache is pure: every method takes `now`, so tests drive time by hand and the
//! [`Resolver`](super::Resolver) reads its [`Clock`].
//!
//! Invariants: an entry is served only while `now < expires`; an entry whose expiry is
//! not after `now` is never stored (TTL 0 means "use once"). The number of entries never
//! exceeds the capacity: when full, an expired entry is evicted first, else the oldest
//! inserted one. `by_expiry` and `by_age` hold exactly one index entry per map entry.
//! All operations are O(log n); callers hold the surrounding mutex only for one call.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::Hash;
use std::time::Instant;

/// A source of the current time, injectable for tests.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Counters of a cache, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that were not in the cache (or had expired).
    pub misses: u64,
    /// Entries held now (expired ones included until evicted or looked up).
    pub entries: usize,
}

struct Slot<V> {
    value: V,
    expires: Instant,
    seq: u64,
}

pub(crate) struct TtlCache<K, V> {
    map: HashMap<K, Slot<V>>,
    by_expiry: BTreeMap<(Instant, u64), K>,
    by_age: BTreeMap<u64, K>,
    next_seq: u64,
    capacity: usize,
    hits: u64,
    misses: u64,
}

impl<K: Clone + Eq + Hash, V: Clone> TtlCache<K, V> {
    pub(crate) fn new(capacity: usize) -> Self {
        TtlCache {
            map: HashMap::new(),
            by_expiry: BTreeMap::new(),
            by_age: BTreeMap::new(),
            next_seq: 0,
            capacity,
            hits: 0,
            misses: 0,
        }
    }

    /// The value for `key` if it has not expired at `now`. Counts a hit or a miss.
    pub(crate) fn get(&mut self, key: &K, now: Instant) -> Option<V> {
        let live = match self.map.get(key) {
            Some(slot) if now < slot.expires => Some(slot.value.clone()),
            Some(_) => {
                self.remove(key);
                None
            }
            None => None,
        };
        match live {
            Some(_) => self.hits = self.hits.saturating_add(1),
            None => self.misses = self.misses.saturating_add(1),
        }
        live
    }

    /// Stores `value` until `expires` (exclusive), replacing any entry for `key`.
    pub(crate) fn insert(&mut self, key: K, value: V, expires: Instant, now: Instant) {
        self.remove(&key);
        if expires <= now || self.capacity == 0 {
            return;
        }
        while self.map.len() >= self.capacity {
            if !self.evict_one(now) {
                break;
            }
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.by_expiry.insert((expires, seq), key.clone());
        self.by_age.insert(seq, key.clone());
        self.map.insert(
            key,
            Slot {
                value,
                expires,
                seq,
            },
        );
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits,
            misses: self.misses,
            entries: self.map.len(),
        }
    }

    /// Evicts the entry that expired first if it has expired, else the oldest. Returns
    /// whether anything was evicted.
    fn evict_one(&mut self, now: Instant) -> bool {
        let expired = match self.by_expiry.first_key_value() {
            Some((&(expires, _), key)) if expires <= now => Some(key.clone()),
            _ => None,
        };
        let victim = expired.or_else(|| self.by_age.first_key_value().map(|(_, k)| k.clone()));
        match victim {
            Some(key) => {
                self.remove(&key);
                true
            }
            None => false,
        }
    }

    fn remove(&mut self, key: &K) {
        if let Some(slot) = self.map.remove(key) {
            self.by_expiry.remove(&(slot.expires, slot.seq));
            self.by_age.remove(&slot.seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn consistent<K: Clone + Eq + Hash, V: Clone>(c: &TtlCache<K, V>) {
        assert_eq!(c.map.len(), c.by_expiry.len());
        assert_eq!(c.map.len(), c.by_age.len());
        assert!(c.map.len() <= c.capacity);
    }

    #[test]
    fn entries_expire_exactly_at_their_instant() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(10);
        c.insert("a", 1, t0 + secs(2), t0);
        assert_eq!(c.get(&"a", t0), Some(1));
        assert_eq!(c.get(&"a", t0 + secs(2) - Duration::from_nanos(1)), Some(1));
        assert_eq!(c.get(&"a", t0 + secs(2)), None);
        assert_eq!(
            c.stats(),
            CacheStats {
                hits: 2,
                misses: 1,
                entries: 0
            }
        );
        consistent(&c);
    }

    #[test]
    fn zero_ttl_is_never_stored() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(10);
        c.insert("a", 1, t0, t0);
        assert_eq!(c.get(&"a", t0), None);
        // Replacing a live entry with an expired one removes it.
        c.insert("b", 1, t0 + secs(5), t0);
        c.insert("b", 2, t0, t0);
        assert_eq!(c.get(&"b", t0), None);
        assert_eq!(c.stats().entries, 0);
        consistent(&c);
    }

    #[test]
    fn replacing_keeps_indexes_consistent() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(3);
        for i in 0..10u64 {
            c.insert("k", i, t0 + secs(i + 1), t0);
            consistent(&c);
        }
        assert_eq!(c.get(&"k", t0 + secs(9)), Some(9));
        assert_eq!(c.stats().entries, 1);
    }

    #[test]
    fn full_cache_evicts_expired_first_then_oldest() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(3);
        c.insert(1, "old-long", t0 + secs(100), t0);
        c.insert(2, "short", t0 + secs(1), t0);
        c.insert(3, "mid", t0 + secs(50), t0);
        // At t0+2 entry 2 has expired: it goes, although 1 is older.
        c.insert(4, "new", t0 + secs(100), t0 + secs(2));
        let now = t0 + secs(3);
        assert_eq!(c.get(&1, now), Some("old-long"));
        assert_eq!(c.get(&2, now), None);
        assert_eq!(c.get(&3, now), Some("mid"));
        // Nothing has expired now: the oldest (1) goes.
        c.insert(5, "newer", t0 + secs(100), now);
        assert_eq!(c.get(&1, now), None);
        assert_eq!(c.get(&3, now), Some("mid"));
        assert_eq!(c.get(&4, now), Some("new"));
        assert_eq!(c.get(&5, now), Some("newer"));
        assert_eq!(c.stats().entries, 3);
        consistent(&c);
    }

    #[test]
    fn stays_bounded_under_churn() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(50);
        for i in 0..5_000u64 {
            let now = t0 + Duration::from_millis(i);
            c.insert(i % 300, i, now + Duration::from_millis(i % 97 + 1), now);
            assert!(c.stats().entries <= 50);
        }
        consistent(&c);
    }

    #[test]
    fn capacity_zero_stores_nothing() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(0);
        c.insert("a", 1, t0 + secs(10), t0);
        assert_eq!(c.get(&"a", t0), None);
    }
}
