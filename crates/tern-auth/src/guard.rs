//! Brute-force protection: failed authentications counted per client network (an IPv4
//! address, an IPv6 /64) and per user name; each failure is answered after a delay that
//! doubles with the failures counted, and at a threshold the client or the user is locked
//! out for a while (AUTH then gets `454 4.7.0` whatever the credentials; see
//! docs/SUBMISSION.md).
//!
//! The counts live behind [`FailureLedger`], whose calls answer with futures so that a
//! store shared by several nodes can keep them (`tern_cluster::auth::SharedLedger`:
//! Redis, one bounded round trip per call, this process's [`MemoryLedger`] while Redis
//! is away); [`MemoryLedger`] keeps them in this process and answers at once. The policy
//! ([`Guard`]) does no I/O of its own: every call takes the time.
//!
//! Bounds: the memory ledger holds at most [`MAX_KEYS`] keys; when full, keys whose
//! window has passed and that are not locked go first, then the oldest. A user name is
//! counted whether or not the user exists (so the counts tell nothing either), cut to
//! 255 octets and lower-cased.
//!
//! Concurrency: one mutex around the map, held for a lookup and an update, never across
//! an await, never with another lock.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Most keys the memory ledger keeps.
pub const MAX_KEYS: usize = 100_000;

/// What failures are counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FailureKey {
    /// A client network: the IPv4 address, or the IPv6 /64 (its first 8 octets).
    Client(IpAddr),
    /// A user name, lower-cased.
    User(String),
}

impl FailureKey {
    /// The key of a client address.
    pub fn client(ip: IpAddr) -> FailureKey {
        let ip = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let s = v6.segments();
                    IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
                }
            },
            v4 => v4,
        };
        FailureKey::Client(ip)
    }

    /// The key of a user name.
    pub fn user(name: &str) -> FailureKey {
        FailureKey::User(name.chars().take(255).collect::<String>().to_lowercase())
    }

    /// `client` or `user`, for events.
    pub fn kind(&self) -> &'static str {
        match self {
            FailureKey::Client(_) => "client",
            FailureKey::User(_) => "user",
        }
    }
}

impl std::fmt::Display for FailureKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailureKey::Client(IpAddr::V6(v6)) => write!(f, "{v6}/64"),
            FailureKey::Client(ip) => write!(f, "{ip}"),
            FailureKey::User(u) => f.write_str(u),
        }
    }
}

/// The thresholds for one kind of key.
#[derive(Debug, Clone, Copy)]
pub struct Threshold {
    /// Failures within `window` that start a lockout.
    pub max_failures: u32,
    /// How long failures are remembered (from the first of the window).
    pub window: Duration,
    /// How long a lockout lasts.
    pub lockout: Duration,
}

/// What recording a failure found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// Failures in the current window, this one included.
    pub failures: u32,
    /// True when this failure started a lockout.
    pub locked_now: bool,
}

/// A ledger's pending answer.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where failure counts are kept. Implementations must be cheap and resolve within a
/// short bound of their own (the memory one at its first poll; a shared store within its
/// operation bound, deciding locally when its server is away): they are awaited by
/// session tasks during AUTH.
pub trait FailureLedger: Send + Sync {
    /// True while `key` is locked out.
    fn is_locked<'a>(&'a self, key: &'a FailureKey, now: Instant) -> Pending<'a, bool>;
    /// Counts a failure for `key` and starts a lockout at the threshold.
    fn record_failure<'a>(
        &'a self,
        key: &'a FailureKey,
        limits: Threshold,
        now: Instant,
    ) -> Pending<'a, Recorded>;
    /// Forgets `key`'s failures (after a success).
    fn clear<'a>(&'a self, key: &'a FailureKey) -> Pending<'a, ()>;
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    since: Instant,
    locked_until: Option<Instant>,
    window: Duration,
}

impl Record {
    fn live(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|t| t > now)
            || now.saturating_duration_since(self.since) < self.window
    }
}

/// Failure counts in this process's memory.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    records: Mutex<HashMap<FailureKey, Record>>,
}

impl MemoryLedger {
    /// An empty ledger.
    pub fn new() -> MemoryLedger {
        MemoryLedger::default()
    }
}

impl FailureLedger for MemoryLedger {
    fn is_locked<'a>(&'a self, key: &'a FailureKey, now: Instant) -> Pending<'a, bool> {
        Box::pin(std::future::ready(self.is_locked_now(key, now)))
    }

    fn record_failure<'a>(
        &'a self,
        key: &'a FailureKey,
        limits: Threshold,
        now: Instant,
    ) -> Pending<'a, Recorded> {
        Box::pin(std::future::ready(
            self.record_failure_now(key, limits, now),
        ))
    }

    fn clear<'a>(&'a self, key: &'a FailureKey) -> Pending<'a, ()> {
        self.clear_now(key);
        Box::pin(std::future::ready(()))
    }
}

impl MemoryLedger {
    /// [`FailureLedger::is_locked`], synchronously.
    pub fn is_locked_now(&self, key: &FailureKey, now: Instant) -> bool {
        let records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        records
            .get(key)
            .and_then(|r| r.locked_until)
            .is_some_and(|t| t > now)
    }

    /// [`FailureLedger::record_failure`], synchronously.
    pub fn record_failure_now(
        &self,
        key: &FailureKey,
        limits: Threshold,
        now: Instant,
    ) -> Recorded {
        let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        if !records.contains_key(key) && records.len() >= MAX_KEYS {
            records.retain(|_, r| r.live(now));
            if records.len() >= MAX_KEYS
                && let Some(oldest) = records
                    .iter()
                    .min_by_key(|(_, r)| r.since)
                    .map(|(k, _)| k.clone())
            {
                records.remove(&oldest);
            }
        }
        let r = records.entry(key.clone()).or_insert(Record {
            failures: 0,
            since: now,
            locked_until: None,
            window: limits.window,
        });
        if !r.live(now) {
            *r = Record {
                failures: 0,
                since: now,
                locked_until: None,
                window: limits.window,
            };
        }
        r.failures = r.failures.saturating_add(1);
        let locked = r.locked_until.is_some_and(|t| t > now);
        let locked_now = !locked && r.failures >= limits.max_failures;
        if locked_now {
            r.locked_until = Some(now + limits.lockout);
            // The lockout ends with a fresh count.
            r.since = now + limits.lockout;
            r.failures = 0;
            r.window = Duration::ZERO;
        }
        Recorded {
            failures: if locked_now {
                limits.max_failures
            } else {
                r.failures
            },
            locked_now,
        }
    }

    /// [`FailureLedger::clear`], synchronously.
    pub fn clear_now(&self, key: &FailureKey) {
        let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        if records.get(key).is_some_and(|r| r.locked_until.is_none()) {
            records.remove(key);
        }
    }
}

/// The brute-force policy's settings.
#[derive(Debug, Clone, Copy)]
pub struct GuardPolicy {
    /// Per client network.
    pub client: Threshold,
    /// Per user name.
    pub user: Threshold,
    /// Delay before the first failure reply; doubles with each failure counted.
    pub base_delay: Duration,
    /// Longest delay.
    pub max_delay: Duration,
}

/// A lockout that a failure started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lockout {
    /// Who is locked out.
    pub key: FailureKey,
    /// Failures counted.
    pub failures: u32,
    /// For how long.
    pub duration: Duration,
}

/// What the session does after a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureVerdict {
    /// Wait this long before answering.
    pub delay: Duration,
    /// Lockouts this failure started (one event each).
    pub lockouts: Vec<Lockout>,
}

/// The policy over a ledger.
#[derive(Clone)]
pub struct Guard {
    policy: GuardPolicy,
    ledger: Arc<dyn FailureLedger>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// A guard with `policy` over `ledger`.
    pub fn new(policy: GuardPolicy, ledger: Arc<dyn FailureLedger>) -> Guard {
        Guard { policy, ledger }
    }

    /// The policy in force.
    pub fn policy(&self) -> &GuardPolicy {
        &self.policy
    }

    /// Replaces the policy (a reload); the counts stay.
    pub fn with_policy(&self, policy: GuardPolicy) -> Guard {
        Guard {
            policy,
            ledger: Arc::clone(&self.ledger),
        }
    }

    /// True while the client's network is locked out.
    pub async fn client_locked(&self, ip: IpAddr, now: Instant) -> bool {
        self.ledger.is_locked(&FailureKey::client(ip), now).await
    }

    /// True while the user is locked out.
    pub async fn user_locked(&self, user: &str, now: Instant) -> bool {
        self.ledger.is_locked(&FailureKey::user(user), now).await
    }

    /// Counts a failure of `ip` (and of `user`, when the client named one).
    pub async fn failed(&self, ip: IpAddr, user: Option<&str>, now: Instant) -> FailureVerdict {
        let mut most = 0;
        let mut lockouts = Vec::new();
        let mut keys = vec![(FailureKey::client(ip), self.policy.client)];
        if let Some(u) = user {
            keys.push((FailureKey::user(u), self.policy.user));
        }
        for (key, limits) in keys {
            let r = self.ledger.record_failure(&key, limits, now).await;
            most = most.max(r.failures);
            if r.locked_now {
                lockouts.push(Lockout {
                    key,
                    failures: r.failures,
                    duration: limits.lockout,
                });
            }
        }
        FailureVerdict {
            delay: self.delay(most),
            lockouts,
        }
    }

    /// A success: the user's count starts again (the client's does not, or one valid
    /// account would let a client guess the others' passwords without limit).
    pub async fn succeeded(&self, user: &str) {
        self.ledger.clear(&FailureKey::user(user)).await;
    }

    /// The delay after the `n`th failure: base × 2^(n−1), at most `max_delay`.
    pub fn delay(&self, n: u32) -> Duration {
        let shift = n.saturating_sub(1).min(20);
        self.policy
            .base_delay
            .saturating_mul(1u32 << shift)
            .min(self.policy.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(client_max: u32, user_max: u32) -> Guard {
        let t = |m| Threshold {
            max_failures: m,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(300),
        };
        Guard::new(
            GuardPolicy {
                client: t(client_max),
                user: t(user_max),
                base_delay: Duration::from_millis(100),
                max_delay: Duration::from_millis(1000),
            },
            Arc::new(MemoryLedger::new()),
        )
    }

    #[tokio::test]
    async fn delays_grow_then_the_client_is_locked_out_for_a_while() {
        let g = guard(5, 100);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        let mut delays: Vec<u128> = Vec::new();
        for _ in 0..4 {
            delays.push(g.failed(ip, Some("a"), t0).await.delay.as_millis());
        }
        assert_eq!(delays, [100, 200, 400, 800]);
        assert!(!g.client_locked(ip, t0).await);
        let v = g.failed(ip, Some("a"), t0).await;
        assert_eq!(v.delay, Duration::from_millis(1000));
        assert_eq!(v.lockouts.len(), 1);
        assert_eq!(v.lockouts[0].key, FailureKey::Client(ip));
        assert!(g.client_locked(ip, t0 + Duration::from_secs(299)).await);
        assert!(!g.client_locked(ip, t0 + Duration::from_secs(301)).await);
        // A failure during the lockout does not start another one (one event per lockout).
        assert!(
            g.failed(ip, None, t0 + Duration::from_secs(1))
                .await
                .lockouts
                .is_empty()
        );
    }

    #[tokio::test]
    async fn ipv6_counts_per_64_and_users_per_name() {
        let g = guard(2, 3);
        let t0 = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2::ffff".parse().unwrap();
        g.failed(a, None, t0).await;
        assert_eq!(g.failed(b, None, t0).await.lockouts.len(), 1);
        assert!(
            g.client_locked("2001:db8:1:2:3:4:5:6".parse().unwrap(), t0)
                .await
        );
        assert!(
            !g.client_locked("2001:db8:1:3::1".parse().unwrap(), t0)
                .await
        );
        // The user is locked whatever address the failures came from.
        for i in 0..3u8 {
            g.failed(IpAddr::from([198, 51, 100, i]), Some("Bob"), t0)
                .await;
        }
        assert!(g.user_locked("bob", t0).await);
    }

    #[tokio::test]
    async fn window_expires_and_success_clears_the_user() {
        let g = guard(3, 3);
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let t0 = Instant::now();
        g.failed(ip, Some("u"), t0).await;
        g.failed(ip, Some("u"), t0).await;
        // After the window the count starts again.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(
            g.failed(ip, Some("u"), later).await.delay,
            Duration::from_millis(100)
        );
        g.succeeded("u").await;
        let v = g
            .failed(IpAddr::from([10, 0, 0, 1]), Some("u"), later)
            .await;
        assert_eq!(v.delay, Duration::from_millis(100));
    }

    #[test]
    fn the_memory_ledger_is_bounded() {
        let ledger = MemoryLedger::new();
        let t = Threshold {
            max_failures: 10,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(60),
        };
        let now = Instant::now();
        for i in 0..(MAX_KEYS as u32 + 10) {
            ledger.record_failure_now(&FailureKey::User(i.to_string()), t, now);
        }
        assert!(ledger.records.lock().unwrap().len() <= MAX_KEYS);
    }
}
