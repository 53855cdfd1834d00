//! The pass cache: clients that passed the tests before the greeting, remembered so that
//! a good server pays the wait and the lists once (Postfix's postscreen cache).
//!
//! Two times per client, as postscreen keeps one per test:
//! - `greet_until`: until then the client skips the pre-greeting wait (`pass_ttl` after
//!   it passed it);
//! - `lists_until`: until then the client's list results are not asked again (the
//!   smaller of `pass_ttl` and an hour, postscreen's `postscreen_dnsbl_max_ttl`, so a
//!   server that gets listed is noticed within the hour). After that the lists are asked
//!   again before the greeting, without the wait.
//!
//! The cache sits behind [`PassCache`] so that several nodes can share one (issue 20:
//! Redis); [`MemoryPassCache`] is the in-process one, bounded in clients.

use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use crate::Pending;
use crate::table::ExpiringMap;

/// What a client passed, and until when (Unix ms; 0: never passed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Passed {
    /// The client skips the pre-greeting wait until then.
    pub greet_until: u64,
    /// The client's list results stand until then.
    pub lists_until: u64,
}

/// The pass cache. Implementations must be cheap (one map look-up or one round trip)
/// and may answer late: the session waits for the answer before its greeting.
pub trait PassCache: Send + Sync {
    /// What `client` passed, as of `now_ms` (expired times come back as 0).
    fn get<'a>(&'a self, client: IpAddr, now_ms: u64) -> Pending<'a, Passed>;
    /// Records what `client` passed (replacing what was there).
    fn put<'a>(&'a self, client: IpAddr, passed: Passed, now_ms: u64) -> Pending<'a, ()>;
}

/// The in-process pass cache: one mutex over a bounded map, held for one map operation.
pub struct MemoryPassCache {
    clients: Mutex<ExpiringMap<IpAddr, Passed>>,
}

impl MemoryPassCache {
    /// A cache of at most `capacity` clients.
    pub fn new(capacity: usize) -> MemoryPassCache {
        MemoryPassCache {
            clients: Mutex::new(ExpiringMap::new(capacity)),
        }
    }

    fn lookup(&self, client: IpAddr, now_ms: u64) -> Passed {
        let map = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let p = map.get(&client, now_ms).copied().unwrap_or_default();
        Passed {
            greet_until: if p.greet_until > now_ms {
                p.greet_until
            } else {
                0
            },
            lists_until: if p.lists_until > now_ms {
                p.lists_until
            } else {
                0
            },
        }
    }

    fn store(&self, client: IpAddr, passed: Passed, now_ms: u64) {
        let expires = passed.greet_until.max(passed.lists_until);
        let mut map = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if expires <= now_ms {
            map.remove(&client);
        } else {
            map.insert(client, passed, expires, now_ms);
        }
    }
}

impl PassCache for MemoryPassCache {
    fn get<'a>(&'a self, client: IpAddr, now_ms: u64) -> Pending<'a, Passed> {
        let p = self.lookup(client, now_ms);
        Box::pin(std::future::ready(p))
    }

    fn put<'a>(&'a self, client: IpAddr, passed: Passed, now_ms: u64) -> Pending<'a, ()> {
        self.store(client, passed, now_ms);
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_test_expires_on_its_own() {
        let c = MemoryPassCache::new(10);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(c.lookup(ip, 0), Passed::default());
        c.store(
            ip,
            Passed {
                greet_until: 1000,
                lists_until: 100,
            },
            0,
        );
        assert_eq!(c.lookup(ip, 50).lists_until, 100);
        let later = c.lookup(ip, 500);
        assert_eq!((later.greet_until, later.lists_until), (1000, 0));
        assert_eq!(c.lookup(ip, 1000), Passed::default());
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(c.lookup(other, 50), Passed::default());
    }
}
