//! A map whose entries expire, bounded in size: the in-process stores of this crate are
//! built on it. Sans I/O: times are parameters (Unix milliseconds).
//!
//! Invariant: the map never holds more than its capacity. An insert into a full map
//! first drops the expired entries; if that frees nothing, it drops the eighth of the
//! entries nearest to their expiry (so a flood of new keys costs one pass over the map
//! per eighth of its capacity, not one per key, and never evicts the long-lived entries,
//! such as passed greylist triplets, before the short-lived ones).

use std::collections::HashMap;
use std::hash::Hash;

/// A bounded map of entries with an expiry time.
#[derive(Debug)]
pub struct ExpiringMap<K, V> {
    entries: HashMap<K, (V, u64)>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V> ExpiringMap<K, V> {
    /// An empty map holding at most `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> ExpiringMap<K, V> {
        ExpiringMap {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// The value of `key` unless it expired by `now_ms`.
    pub fn get(&self, key: &K, now_ms: u64) -> Option<&V> {
        match self.entries.get(key) {
            Some((v, expires)) if *expires > now_ms => Some(v),
            _ => None,
        }
    }

    /// Sets `key` to `value` until `expires_ms`, making room if needed (module header).
    pub fn insert(&mut self, key: K, value: V, expires_ms: u64, now_ms: u64) {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.make_room(now_ms);
        }
        self.entries.insert(key, (value, expires_ms));
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Entries held (expired ones not yet dropped included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Every live entry with its expiry.
    pub fn live(&self, now_ms: u64) -> impl Iterator<Item = (&K, &V, u64)> {
        self.entries
            .iter()
            .filter(move |(_, (_, e))| *e > now_ms)
            .map(|(k, (v, e))| (k, v, *e))
    }

    /// Drops every entry expired by `now_ms`.
    pub fn purge(&mut self, now_ms: u64) {
        self.entries.retain(|_, (_, e)| *e > now_ms);
    }

    fn make_room(&mut self, now_ms: u64) {
        self.purge(now_ms);
        if self.entries.len() < self.capacity {
            return;
        }
        let drop = (self.capacity / 8).max(1);
        let mut expiries: Vec<u64> = self.entries.values().map(|(_, e)| *e).collect();
        let cut = drop.min(expiries.len()).saturating_sub(1);
        let (_, nth, _) = expiries.select_nth_unstable(cut);
        let limit = *nth;
        let mut dropped = 0;
        self.entries.retain(|_, (_, e)| {
            if dropped < drop && *e <= limit {
                dropped += 1;
                false
            } else {
                true
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_map_stays_bounded() {
        let mut m = ExpiringMap::new(16);
        m.insert("a", 1, 100, 0);
        assert_eq!(m.get(&"a", 99), Some(&1));
        assert_eq!(m.get(&"a", 100), None);
        // Long-lived entries survive a flood of short-lived ones.
        for i in 0..8u64 {
            m.insert(format!("keep{i}").leak() as &str, 0, 1_000_000, 0);
        }
        for i in 0..1000u64 {
            m.insert(format!("k{i}").leak() as &str, 2, 500 + i, 10);
            assert!(m.len() <= 16);
        }
        for i in 0..8u64 {
            assert!(
                m.get(&(format!("keep{i}").as_str()), 10).is_some(),
                "keep{i}"
            );
        }
        m.purge(2000);
        assert_eq!(m.len(), 8);
        assert_eq!(m.live(2000).count(), 8);
    }
}
