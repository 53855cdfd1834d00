//! Bounded DNS caches with exact TTLs, behind mail-auth's `ResolverCache` trait.
//!
//! Invariants: an entry is never returned after its `valid_until`; the table never holds
//! more than its capacity (when full, expired entries go first, then the entry nearest
//! to its expiry); the lock is held only for a few map operations, never across an
//! `.await` (the trait's methods are synchronous). Issue 20 may put a shared cache behind
//! the same trait.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

use mail_auth::ResolverCache;

/// A bounded TTL cache.
pub struct TtlCache<K, V> {
    capacity: usize,
    map: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Hash + Eq + Clone, V: Clone> TtlCache<K, V> {
    /// A cache of at most `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> TtlCache<K, V> {
        TtlCache {
            capacity: capacity.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Entries held (expired ones included until they are dropped).
    pub fn len(&self) -> usize {
        self.map.lock().map_or(0, |m| m.len())
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get_at<Q>(&self, key: &Q, now: Instant) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut map = self.map.lock().ok()?;
        match map.get(key) {
            Some((v, until)) if *until > now => Some(v.clone()),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    fn insert_at(&self, key: K, value: V, until: Instant, now: Instant) {
        if until <= now {
            return;
        }
        let Ok(mut map) = self.map.lock() else {
            return;
        };
        if map.len() >= self.capacity && !map.contains_key(&key) {
            map.retain(|_, (_, u)| *u > now);
            if map.len() >= self.capacity
                && let Some(nearest) = map
                    .iter()
                    .min_by_key(|(_, (_, u))| *u)
                    .map(|(k, _)| k.clone())
            {
                map.remove(&nearest);
            }
        }
        map.insert(key, (value, until));
    }
}

impl<K: Hash + Eq + Clone, V: Clone> ResolverCache<K, V> for TtlCache<K, V> {
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get_at(name, Instant::now())
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.lock().ok()?.remove(name).map(|(v, _)| v)
    }

    fn insert(&self, key: K, value: V, valid_until: Instant) {
        self.insert_at(key, value, valid_until, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn entries_expire_exactly_and_the_table_stays_bounded() {
        let c: TtlCache<String, u32> = TtlCache::new(2);
        let now = Instant::now();
        let s = Duration::from_secs(1);
        c.insert_at("a".into(), 1, now + s, now);
        c.insert_at("b".into(), 2, now + 3 * s, now);
        assert_eq!(c.get_at("a", now), Some(1));
        assert_eq!(c.get_at("a", now + s), None, "expired at its valid_until");
        c.insert_at("a".into(), 1, now + 2 * s, now);
        // Full: the nearest to expiry ("a") gives way.
        c.insert_at("c".into(), 3, now + 5 * s, now);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get_at("a", now), None);
        assert_eq!(c.get_at("b", now), Some(2));
        assert_eq!(c.get_at("c", now), Some(3));
        // Already expired answers are not kept.
        c.insert_at("d".into(), 4, now, now);
        assert_eq!(c.get_at("d", now), None);
    }
}
