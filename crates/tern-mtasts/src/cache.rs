//! The policy cache's rules, sans I/O (times are parameters, Unix seconds).
//!
//! RFC 8461 §5.1, as Tern applies it ([`plan`]):
//! - a cached policy is used until `fetched_at + max_age`;
//! - while it is valid, a TXT record whose `id` differs from the cached policy's means a
//!   new policy: it is fetched, and if that fails the cached one stays in force;
//! - while it is valid, a failed TXT lookup, or no TXT record at all, keeps it in force
//!   (a domain withdraws its policy by publishing `mode: none` under a new id, §8.3);
//! - without a valid cached policy, a TXT record means a fetch; no record means no
//!   policy;
//! - a fetch that failed is not tried again for `failure_secs` (remembered per domain
//!   with its reason), so a burst of mail to a domain whose policy host is down waits
//!   once, not once per message.
//!
//! [`Entries`] bounds the number of domains: when full, the entry that expires first
//! gives way.

use std::collections::HashMap;
use std::sync::Arc;

use crate::policy::Policy;

/// One domain's cached policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The policy domain (lowercase, no trailing dot).
    pub domain: String,
    /// The TXT `id` it was fetched under.
    pub id: String,
    /// The policy.
    pub policy: Policy,
    /// The policy file's text as fetched (persisted, parsed again when read back).
    pub text: String,
    /// When it was fetched.
    pub fetched_at: u64,
}

impl Entry {
    /// When it stops being usable.
    pub fn expires_at(&self) -> u64 {
        self.fetched_at.saturating_add(self.policy.max_age)
    }

    /// Whether it is still usable at `now`.
    pub fn valid_at(&self, now: u64) -> bool {
        now < self.expires_at()
    }
}

/// What the TXT lookup came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Txt {
    /// One valid record with this id.
    Id(String),
    /// No usable record (the reason).
    Absent(String),
    /// The lookup failed (the reason).
    Failed(String),
}

/// What to do for one lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Use the cached entry.
    UseCached,
    /// Fetch the policy under this id; on failure fall back to the cached entry if
    /// `cached_fallback`.
    Fetch {
        /// The TXT id.
        id: String,
        /// A valid cached entry exists (an older id).
        cached_fallback: bool,
    },
    /// A recent fetch under this id failed: answer as then (cached entry, or the failure).
    RecentFailure,
    /// No policy (the reason).
    NoPolicy(String),
}

/// A fetch failure remembered for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The TXT id the fetch was for.
    pub id: String,
    /// Until when it is not tried again.
    pub until: u64,
}

/// The decision for one lookup at `now` (module header).
pub fn plan(now: u64, cached: Option<&Entry>, failure: Option<&Failure>, txt: &Txt) -> Plan {
    let valid = cached.filter(|e| e.valid_at(now));
    match (valid, txt) {
        (Some(e), Txt::Id(id)) if *id == e.id => Plan::UseCached,
        (_, Txt::Id(id)) => {
            if failure.is_some_and(|f| f.id == *id && now < f.until) {
                Plan::RecentFailure
            } else {
                Plan::Fetch {
                    id: id.clone(),
                    cached_fallback: valid.is_some(),
                }
            }
        }
        (Some(_), Txt::Absent(_) | Txt::Failed(_)) => Plan::UseCached,
        (None, Txt::Absent(why)) => Plan::NoPolicy(why.clone()),
        (None, Txt::Failed(why)) => Plan::NoPolicy(format!("_mta-sts TXT lookup failed: {why}")),
    }
}

/// The cached entries, bounded in number.
#[derive(Debug)]
pub struct Entries {
    map: HashMap<String, Arc<Entry>>,
    max: usize,
}

impl Entries {
    /// An empty cache of at most `max` domains (at least 1).
    pub fn new(max: usize) -> Entries {
        Entries {
            map: HashMap::new(),
            max: max.max(1),
        }
    }

    /// The entry of `domain`.
    pub fn get(&self, domain: &str) -> Option<Arc<Entry>> {
        self.map.get(domain).cloned()
    }

    /// Number of domains.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Inserts `entry`; returns the domain evicted to make room, if any (expired entries
    /// go first, then the one expiring first).
    pub fn insert(&mut self, entry: Arc<Entry>, now: u64) -> Option<String> {
        let mut evicted = None;
        if !self.map.contains_key(&entry.domain) && self.map.len() >= self.max {
            self.map.retain(|_, e| e.valid_at(now));
            if self.map.len() >= self.max {
                let first = self
                    .map
                    .iter()
                    .min_by_key(|(_, e)| e.expires_at())
                    .map(|(d, _)| d.clone());
                if let Some(d) = first {
                    self.map.remove(&d);
                    evicted = Some(d);
                }
            }
        }
        self.map.insert(entry.domain.clone(), entry);
        evicted
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::policy::parse_policy;

    fn entry(domain: &str, id: &str, fetched_at: u64, max_age: u64) -> Entry {
        let text = format!("version: STSv1\nmode: enforce\nmx: mx.{domain}\nmax_age: {max_age}\n");
        Entry {
            domain: domain.into(),
            id: id.into(),
            policy: parse_policy(text.as_bytes()).unwrap(),
            text,
            fetched_at,
        }
    }

    #[test]
    fn a_cached_policy_is_used_until_it_expires() {
        let e = entry("example.com", "a", 1000, 100);
        let id = Txt::Id("a".into());
        assert_eq!(plan(1050, Some(&e), None, &id), Plan::UseCached);
        assert_eq!(
            plan(1099, Some(&e), None, &Txt::Failed("x".into())),
            Plan::UseCached
        );
        assert_eq!(
            plan(1099, Some(&e), None, &Txt::Absent("x".into())),
            Plan::UseCached
        );
        // Expired: fetched again under the same id; without TXT, no policy.
        assert_eq!(
            plan(1100, Some(&e), None, &id),
            Plan::Fetch {
                id: "a".into(),
                cached_fallback: false
            }
        );
        assert!(matches!(
            plan(1100, Some(&e), None, &Txt::Failed("x".into())),
            Plan::NoPolicy(_)
        ));
    }

    #[test]
    fn a_new_id_fetches_with_the_cached_policy_as_fallback() {
        let e = entry("example.com", "a", 1000, 100);
        assert_eq!(
            plan(1010, Some(&e), None, &Txt::Id("b".into())),
            Plan::Fetch {
                id: "b".into(),
                cached_fallback: true
            }
        );
        assert_eq!(
            plan(1010, None, None, &Txt::Id("b".into())),
            Plan::Fetch {
                id: "b".into(),
                cached_fallback: false
            }
        );
    }

    #[test]
    fn a_failed_fetch_is_not_repeated_within_its_window() {
        let f = Failure {
            id: "b".into(),
            until: 2000,
        };
        let b = Txt::Id("b".into());
        assert_eq!(plan(1500, None, Some(&f), &b), Plan::RecentFailure);
        assert!(matches!(plan(2000, None, Some(&f), &b), Plan::Fetch { .. }));
        // Another id is tried at once.
        assert!(matches!(
            plan(1500, None, Some(&f), &Txt::Id("c".into())),
            Plan::Fetch { .. }
        ));
    }

    #[test]
    fn the_cache_is_bounded_expired_then_earliest_expiry_first() {
        let mut c = Entries::new(2);
        assert_eq!(c.insert(Arc::new(entry("a.test", "1", 0, 50)), 10), None);
        assert_eq!(c.insert(Arc::new(entry("b.test", "1", 0, 500)), 10), None);
        assert_eq!(
            c.insert(Arc::new(entry("c.test", "1", 0, 900)), 10),
            Some("a.test".into())
        );
        assert_eq!(c.len(), 2);
        // Replacing a present domain evicts nothing.
        assert_eq!(c.insert(Arc::new(entry("c.test", "2", 0, 900)), 10), None);
        assert_eq!(c.get("c.test").unwrap().id, "2");
        // a.test's replacement expired at 60: dropped without counting as eviction.
        let mut c = Entries::new(1);
        c.insert(Arc::new(entry("a.test", "1", 0, 50)), 10);
        assert_eq!(c.insert(Arc::new(entry("b.test", "1", 0, 50)), 100), None);
    }
}
