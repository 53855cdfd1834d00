//! Bounded DNS caches with exact TTLs, behind mail-auth's `ResolverCache` trait.
//!
//! Invariants: an entry is never returned after its `valid_until`; the table never holds
//! more than its capacity (when full, expired entries go first, then the entry nearest
//! to its expiry); the lock is held only for a few map operations, never across an
//! `.await` (the trait's methods are synchronous). Issue 20 may put a shared cache behind
//! the same trait.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Instant;

use mail_auth::{RecordSet, ResolverCache, Txt};

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

/// What one SPF evaluation's lookups found nothing for: RFC 7208 §4.6.4's "void
/// lookups" (an answer with no records, or a name that does not exist), which mail-auth
/// 0.13 does not count. Seen from the caches mail-auth consults around every lookup: a
/// name asked (a miss) that no answer followed (mail-auth stores only answers, never a
/// "not found"), or an answer with no record. Each name counts once whatever types were
/// asked of it (mail-auth asks an `exists` name for A and then AAAA), kept as a hash.
/// A failure that is not "not found" (a timeout) counts too, but then the evaluation's
/// result is `temperror`, which the count never changes.
#[derive(Debug, Default)]
pub struct VoidLedger {
    /// (names asked and not answered yet, names answered with no record)
    names: Mutex<(HashSet<u64>, HashSet<u64>)>,
}

impl VoidLedger {
    fn key<Q: Hash + ?Sized>(name: &Q) -> u64 {
        // SipHash with fixed keys: the same name hashes the same for the whole evaluation.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut h);
        h.finish()
    }

    fn note(&self, name: u64, asked: bool, answered: bool, void: bool) {
        if let Ok(mut n) = self.names.lock() {
            if asked {
                n.0.insert(name);
            }
            if answered {
                n.0.remove(&name);
            }
            if void {
                n.1.insert(name);
            }
        }
    }

    /// Void lookups so far: names without an answer or answered with no record.
    pub fn count(&self) -> usize {
        self.names.lock().map_or(0, |n| n.0.union(&n.1).count())
    }
}

/// An answer that may hold no record.
pub trait MaybeVoid {
    /// True for an answer with no record.
    fn is_void(&self) -> bool;
}

impl<T> MaybeVoid for RecordSet<T> {
    fn is_void(&self) -> bool {
        self.rrset.is_empty()
    }
}

impl MaybeVoid for Txt {
    fn is_void(&self) -> bool {
        // Records that are not SPF records are an answer (the evaluation decides what
        // they mean); a name without TXT records never reaches the cache.
        false
    }
}

/// A shared cache seen through one evaluation's [`VoidLedger`].
pub struct Counting<'a, C> {
    inner: &'a C,
    ledger: &'a VoidLedger,
}

impl<'a, C> Counting<'a, C> {
    /// `inner` with its lookups noted in `ledger`.
    pub fn new(inner: &'a C, ledger: &'a VoidLedger) -> Counting<'a, C> {
        Counting { inner, ledger }
    }
}

impl<K: Hash + Eq, V: MaybeVoid, C: ResolverCache<K, V>> ResolverCache<K, V> for Counting<'_, C> {
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let v = self.inner.get(name);
        let key = VoidLedger::key(name);
        match &v {
            None => self.ledger.note(key, true, false, false),
            Some(v) if v.is_void() => self.ledger.note(key, false, false, true),
            Some(_) => {}
        }
        v
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.remove(name)
    }

    fn insert(&self, key: K, value: V, valid_until: Instant) {
        // `K: Borrow<Q>` promises the key hashes as the name it was asked by.
        self.ledger
            .note(VoidLedger::key(&key), false, true, value.is_void());
        self.inner.insert(key, value, valid_until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn void_lookups_are_counted_once_per_name() {
        let shared: TtlCache<Box<str>, RecordSet<u8>> = TtlCache::new(10);
        let ledger = VoidLedger::default();
        let c = Counting::new(&shared, &ledger);
        let later = Instant::now() + Duration::from_secs(60);
        let set = |v: Vec<u8>| RecordSet {
            rrset: v.into(),
            dnssec_status: mail_auth::DnssecStatus::Indeterminate,
        };
        // Asked and answered: not void.
        assert!(c.get::<str>("a.test").is_none());
        c.insert("a.test".into(), set(vec![1]), later);
        assert_eq!(ledger.count(), 0);
        // Asked, never answered (NXDOMAIN), twice (A then AAAA): one void.
        assert!(c.get::<str>("nx.test").is_none());
        assert!(c.get::<str>("nx.test").is_none());
        assert_eq!(ledger.count(), 1);
        // Answered with no record: void, and again from the cache: still one.
        assert!(c.get::<str>("empty.test").is_none());
        c.insert("empty.test".into(), set(vec![]), later);
        assert_eq!(ledger.count(), 2);
        assert!(c.get::<str>("empty.test").is_some());
        assert_eq!(ledger.count(), 2);
        // A cached answer is not a lookup that failed.
        assert!(c.get::<str>("a.test").is_some());
        assert_eq!(ledger.count(), 2);
        // The shared cache got the answers.
        assert_eq!(shared.len(), 2);
    }

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
