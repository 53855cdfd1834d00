//! Destination limits: concurrent connections and messages per window for a
//! destination, a next hop or a group of MX hosts (`[[delivery.destination_limits]]`,
//! docs/CONFIG.md; across a cluster, docs/cluster/limits.md).
//!
//! - A limit matches a connection when one of its `next_hops` patterns matches the job's
//!   next hop, or one of its `mx_hosts` patterns matches the host connected to
//!   (`*.google.com`: every MX of one provider, whatever domain led there).
//! - `max_connections`: each new connection takes one **lease** of every limit it
//!   matches ([`LeaseBackend`]) before it is opened, and holds them as long as it is
//!   open, idle in the connection cache included; they are released when the connection
//!   is dropped ([`Lease`]'s `Drop`), so no way out of a worker keeps one.
//! - `max_messages`: each transaction spends one unit of every matching limit's rate
//!   (one all-or-nothing [`RateLimiter`] check, GCRA) before MAIL FROM.
//! - A refused lease or message is not a delivery failure: the worker waits in memory
//!   (polling with a backoff of 50 ms doubling to 1 s, or the rate's own retry time),
//!   for at most `delivery.destination_limit_wait_secs`; past that the job's recipients
//!   are deferred (4.4.5) and the destination is not marked down.
//!
//! Backends: [`MemoryLeases`] and the in-memory rate limiter hold the limits on this node
//! alone (useful on their own); a cluster node wires the Redis ones of `tern-cluster`
//! (the queue crate knows nothing of Redis).
//!
//! Events: 8011 when a limit is first found full (once per limit and kind per minute),
//! 8012 when a wait ran out. Refusals are counted
//! (`tern_destination_leases_refused_total`, `tern_destination_messages_delayed_total`).
//!
//! Locking: [`MemoryLeases`] and the event throttle each hold one `std::sync::Mutex`
//! for a map operation, never across an `.await`, never with another lock.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use serde::{Deserialize, Serialize};
use tern_events::{EventLog, catalog, fields};
use tern_limits::{Charge, Decision, Key, MemoryLimiter, Rate, RateLimiter};
use tern_route::NextHop;

/// Most destination limits configured.
pub const MAX_LIMITS: usize = 256;
/// Most patterns per limit.
pub const MAX_PATTERNS: usize = 256;

/// One `[[delivery.destination_limits]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationLimitConfig {
    /// The limit's name: in events, metrics, `tern dest` and the shared keys; unique,
    /// `[A-Za-z0-9._-]`, 1 to 64 characters.
    pub name: String,
    /// Next hops it covers: `example.com` or `mx:example.com` (mail to that domain by
    /// MX), `*.example.com` (every subdomain), or a relay route's name.
    #[serde(default)]
    pub next_hops: Vec<String>,
    /// MX host names it covers, whatever domain led there: `mx1.example.net`, or
    /// `*.google.com` (every host under it: one provider's MX).
    #[serde(default)]
    pub mx_hosts: Vec<String>,
    /// Connections open at once (across the cluster when `[cluster] enabled`).
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// Messages per window (`"N/period"`, e.g. `"600/1m"`), across the cluster when
    /// `[cluster] enabled`.
    #[serde(default)]
    pub max_messages: Option<Rate>,
}

/// Problems of the list, with their keys (`delivery.destination_limits[i].key`).
pub fn problems(limits: &[DestinationLimitConfig]) -> Vec<(String, String)> {
    let mut p = Vec::new();
    if limits.len() > MAX_LIMITS {
        p.push((
            "delivery.destination_limits".into(),
            format!("at most {MAX_LIMITS} limits"),
        ));
    }
    let mut names = std::collections::HashSet::new();
    for (i, l) in limits.iter().enumerate() {
        let key = |k: &str| format!("delivery.destination_limits[{i}].{k}");
        let name_ok = !l.name.is_empty()
            && l.name.len() <= 64
            && l.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !name_ok {
            p.push((key("name"), "1 to 64 characters of [A-Za-z0-9._-]".into()));
        } else if !names.insert(l.name.as_str()) {
            p.push((key("name"), format!("{:?} is used twice", l.name)));
        }
        if l.next_hops.is_empty() && l.mx_hosts.is_empty() {
            p.push((key("next_hops"), "name next_hops or mx_hosts".into()));
        }
        for (k, list) in [("next_hops", &l.next_hops), ("mx_hosts", &l.mx_hosts)] {
            if list.len() > MAX_PATTERNS {
                p.push((key(k), format!("at most {MAX_PATTERNS} patterns")));
            }
            for pat in list {
                let body = pat.strip_prefix("*.").unwrap_or(pat);
                if body.is_empty() || body.len() > 255 || body.contains('*') {
                    p.push((key(k), format!("{pat:?} is not a name or *.name pattern")));
                }
            }
        }
        if l.max_connections.is_none() && l.max_messages.is_none() {
            p.push((
                key("max_connections"),
                "set max_connections, max_messages or both".into(),
            ));
        }
        if l.max_connections == Some(0) {
            p.push((key("max_connections"), "must be at least 1".into()));
        }
    }
    p
}

/// True when `name` matches `pattern` (case-insensitive; `*.x` matches names under
/// `x`, not `x` itself).
fn matches(pattern: &str, name: &str) -> bool {
    let name = name.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            name.len() > suffix.len() + 1
                && name
                    .get(name.len() - suffix.len()..)
                    .is_some_and(|s| s.eq_ignore_ascii_case(suffix))
                && name.as_bytes().get(name.len() - suffix.len() - 1) == Some(&b'.')
        }
        None => pattern.trim_end_matches('.').eq_ignore_ascii_case(name),
    }
}

impl DestinationLimitConfig {
    fn covers(&self, hop: &NextHop, host: &str) -> bool {
        let by_hop = match hop {
            NextHop::Mx { domain } => {
                let d = domain.to_string();
                self.next_hops
                    .iter()
                    .any(|p| matches(p.strip_prefix("mx:").unwrap_or(p), &d))
            }
            other => {
                let n = other.to_string();
                self.next_hops.iter().any(|p| matches(p, &n))
            }
        };
        by_hop || self.mx_hosts.iter().any(|p| matches(p, host))
    }
}

/// A held connection lease: released when dropped.
pub struct Lease {
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Lease {
    /// A lease that runs `release` when dropped.
    pub fn new(release: impl FnOnce() + Send + Sync + 'static) -> Lease {
        Lease {
            release: Some(Box::new(release)),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(f) = self.release.take() {
            f();
        }
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lease")
    }
}

/// The answer of [`LeaseBackend::acquire`].
#[derive(Debug)]
pub enum LeaseAnswer {
    /// Taken.
    Granted(Lease),
    /// The limit is full; `scope` says who decided (`cluster` or `local`).
    Full {
        /// `cluster` (Redis) or `local` (this node alone, or degraded).
        scope: &'static str,
    },
}

/// A pending lease answer.
pub type PendingLease<'a> = Pin<Box<dyn Future<Output = LeaseAnswer> + Send + 'a>>;

/// Where connection leases are counted. `acquire` must resolve within a short bound of
/// its own (deciding locally when its server is away).
pub trait LeaseBackend: Send + Sync {
    /// Takes one lease of the limit `name`, whose maximum is `max`.
    fn acquire<'a>(&'a self, name: &'a str, max: u32) -> PendingLease<'a>;
    /// Leases of `name` this node holds now (for a shared backend, this node's part of
    /// the cluster's), when cheap to know; `None` otherwise.
    fn held(&self, name: &str) -> Option<u64>;
}

/// Leases counted in this process.
#[derive(Debug, Default)]
pub struct MemoryLeases {
    held: Arc<Mutex<HashMap<String, u32>>>,
}

impl MemoryLeases {
    /// No lease held.
    pub fn new() -> MemoryLeases {
        MemoryLeases::default()
    }

    /// Takes one lease of `name` if fewer than `max` are held (synchronously).
    pub fn try_acquire(&self, name: &str, max: u32) -> Option<Lease> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let n = held.entry(name.to_string()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        drop(held);
        let map = Arc::clone(&self.held);
        let name = name.to_string();
        Some(Lease::new(move || {
            let mut held = map.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = held.get_mut(&name) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    held.remove(&name);
                }
            }
        }))
    }

    /// Leases held of `name`.
    pub fn count(&self, name: &str) -> u32 {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.get(name).copied().unwrap_or(0)
    }
}

impl LeaseBackend for MemoryLeases {
    fn acquire<'a>(&'a self, name: &'a str, max: u32) -> PendingLease<'a> {
        let answer = match self.try_acquire(name, max) {
            Some(l) => LeaseAnswer::Granted(l),
            None => LeaseAnswer::Full { scope: "local" },
        };
        Box::pin(std::future::ready(answer))
    }

    fn held(&self, name: &str) -> Option<u64> {
        Some(u64::from(self.count(name)))
    }
}

/// Why a worker gave up waiting for a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitExpired {
    /// The limit.
    pub limit: String,
    /// The reply text the recipients are deferred with.
    pub reason: String,
}

/// One limit as `tern dest` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitInfo {
    /// Its name.
    pub name: String,
    /// The next hops it covers.
    pub next_hops: Vec<String>,
    /// The MX host patterns it covers.
    pub mx_hosts: Vec<String>,
    /// Connections open at once, at most.
    pub max_connections: Option<u32>,
    /// Messages per window, at most (`N/period`).
    pub max_messages: Option<String>,
    /// Connections this node holds a lease for now (open ones, idle cached ones
    /// included), when it has `max_connections`.
    pub connections: Option<u64>,
}

/// The destination limits in force with their backends.
pub struct DestinationLimits {
    limits: Vec<DestinationLimitConfig>,
    leases: Arc<dyn LeaseBackend>,
    rates: Arc<dyn RateLimiter>,
    wait: Duration,
    /// Last event per (limit, kind): one per minute.
    noted: Mutex<HashMap<(String, &'static str), Instant>>,
}

impl std::fmt::Debug for DestinationLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DestinationLimits")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Events about one limit are logged at most this often per node.
const NOTE_EVERY: Duration = Duration::from_secs(60);

impl DestinationLimits {
    /// `limits` held in this process alone.
    pub fn local(limits: &[DestinationLimitConfig], wait: Duration) -> DestinationLimits {
        DestinationLimits::new(
            limits,
            wait,
            Arc::new(MemoryLeases::new()),
            Arc::new(MemoryLimiter::new(MAX_LIMITS.max(16))),
        )
    }

    /// `limits` over the given backends (a cluster's, shared through Redis).
    pub fn new(
        limits: &[DestinationLimitConfig],
        wait: Duration,
        leases: Arc<dyn LeaseBackend>,
        rates: Arc<dyn RateLimiter>,
    ) -> DestinationLimits {
        DestinationLimits {
            limits: limits.to_vec(),
            leases,
            rates,
            wait,
            noted: Mutex::new(HashMap::new()),
        }
    }

    /// No limit at all.
    pub fn none() -> DestinationLimits {
        DestinationLimits::local(&[], Duration::from_secs(1))
    }

    /// The limits configured.
    pub fn limits(&self) -> &[DestinationLimitConfig] {
        &self.limits
    }

    /// Leases of `name` this node holds, when the backend knows cheaply.
    pub fn held(&self, name: &str) -> Option<u64> {
        self.leases.held(name)
    }

    /// Every limit with the connections this node holds under it, for `tern dest`.
    pub fn infos(&self) -> Vec<LimitInfo> {
        self.limits
            .iter()
            .map(|l| LimitInfo {
                name: l.name.clone(),
                next_hops: l.next_hops.clone(),
                mx_hosts: l.mx_hosts.clone(),
                max_connections: l.max_connections,
                max_messages: l.max_messages.map(|r| r.to_string()),
                connections: l.max_connections.and_then(|_| self.leases.held(&l.name)),
            })
            .collect()
    }

    /// The limits of a connection to `host` for `hop`.
    fn covering<'a>(
        &'a self,
        hop: &'a NextHop,
        host: &'a str,
    ) -> impl Iterator<Item = &'a DestinationLimitConfig> + 'a {
        self.limits.iter().filter(move |l| l.covers(hop, host))
    }

    /// True when no limit is configured (the hot path skips everything).
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    fn note(&self, limit: &str, what: &'static str) -> bool {
        let mut noted = self.noted.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let key = (limit.to_string(), what);
        match noted.get(&key) {
            Some(t) if now.saturating_duration_since(*t) < NOTE_EVERY => false,
            _ => {
                if noted.len() > 4 * MAX_LIMITS {
                    noted.clear();
                }
                noted.insert(key, now);
                true
            }
        }
    }

    /// Takes a lease of every `max_connections` limit covering a connection to `host`
    /// for `hop`, waiting (bounded) while one is full. `Ok` with the leases to keep as
    /// long as the connection is open (empty when no limit applies).
    pub async fn connection_leases(
        &self,
        events: &EventLog,
        hop: &NextHop,
        host: &str,
    ) -> Result<Vec<Lease>, WaitExpired> {
        if self.limits.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + self.wait;
        let mut backoff = Duration::from_millis(50);
        'again: loop {
            let mut leases = Vec::new();
            for l in self.covering(hop, host) {
                let Some(max) = l.max_connections else {
                    continue;
                };
                match self.leases.acquire(&l.name, max).await {
                    LeaseAnswer::Granted(lease) => leases.push(lease),
                    LeaseAnswer::Full { scope } => {
                        // Release what this attempt took before waiting.
                        drop(leases);
                        tern_metrics::get().destination_leases_refused.inc();
                        if self.note(&l.name, "connections") {
                            events.emit(
                                &catalog::DESTINATION_LIMIT_REACHED,
                                fields!("limit" => l.name, "what" => "connections", "max" => max, "next_hop" => hop, "host" => host, "scope" => scope),
                            );
                        }
                        let now = Instant::now();
                        if now >= deadline {
                            return Err(self.expired(events, &l.name, "connections", hop));
                        }
                        let half = u64::try_from(backoff.as_millis() / 2).unwrap_or(500);
                        let jitter = Duration::from_millis(rand::random_range(0..=half));
                        tokio::time::sleep((backoff + jitter).min(deadline - now)).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                        continue 'again;
                    }
                }
            }
            return Ok(leases);
        }
    }

    /// Spends one message of every `max_messages` limit covering a transaction to
    /// `host` for `hop`, waiting (bounded) while one is spent.
    pub async fn message(
        &self,
        events: &EventLog,
        hop: &NextHop,
        host: &str,
    ) -> Result<(), WaitExpired> {
        if self.limits.is_empty() {
            return Ok(());
        }
        let covering: Vec<&DestinationLimitConfig> = self
            .covering(hop, host)
            .filter(|l| l.max_messages.is_some())
            .collect();
        let charges: Vec<Charge> = covering
            .iter()
            .filter_map(|l| {
                l.max_messages.map(|rate| Charge {
                    key: Key::destination_messages(&l.name),
                    rate,
                    cost: 1,
                })
            })
            .collect();
        if charges.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + self.wait;
        loop {
            let now_ms = tern_watchdog::clock::unix_ms();
            match self.rates.check(&charges, now_ms).await {
                Decision::Allowed => return Ok(()),
                Decision::Refused(r) => {
                    tern_metrics::get().destination_messages_delayed.inc();
                    let name = covering.get(r.charge).map_or("", |l| l.name.as_str());
                    if self.note(name, "messages") {
                        let max = covering
                            .get(r.charge)
                            .and_then(|l| l.max_messages)
                            .map(|m| m.to_string())
                            .unwrap_or_default();
                        events.emit(
                            &catalog::DESTINATION_LIMIT_REACHED,
                            fields!("limit" => name, "what" => "messages", "max" => max, "next_hop" => hop, "host" => host, "scope" => "cluster"),
                        );
                    }
                    let now = Instant::now();
                    let wait = r
                        .retry_after_ms
                        .map_or(self.wait, Duration::from_millis)
                        .max(Duration::from_millis(10));
                    if now >= deadline || r.retry_after_ms.is_none() || now + wait > deadline {
                        return Err(self.expired(events, name, "messages", hop));
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    fn expired(
        &self,
        events: &EventLog,
        limit: &str,
        what: &'static str,
        hop: &NextHop,
    ) -> WaitExpired {
        let what_key = if what == "connections" {
            "wait-connections"
        } else {
            "wait-messages"
        };
        if self.note(limit, what_key) {
            events.emit(
                &catalog::DESTINATION_LIMIT_WAIT_EXPIRED,
                fields!("limit" => limit, "what" => what, "next_hop" => hop, "waited_secs" => self.wait.as_secs()),
            );
        }
        WaitExpired {
            limit: limit.to_string(),
            reason: format!(
                "4.4.5 destination limit {limit} ({what}) full for {} s: waiting for a turn",
                self.wait.as_secs()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(next_hops: &[&str], mx_hosts: &[&str], max: u32) -> DestinationLimitConfig {
        DestinationLimitConfig {
            name: "l".into(),
            next_hops: next_hops.iter().map(|s| s.to_string()).collect(),
            mx_hosts: mx_hosts.iter().map(|s| s.to_string()).collect(),
            max_connections: Some(max),
            max_messages: None,
        }
    }

    fn mx(d: &str) -> NextHop {
        NextHop::Mx {
            domain: d.to_string(),
        }
    }

    #[test]
    fn patterns_match_next_hops_and_mx_hosts() {
        assert!(matches("*.google.com", "aspmx.l.google.com"));
        assert!(matches("*.google.com", "ASPMX.L.GOOGLE.COM."));
        assert!(!matches("*.google.com", "google.com"));
        assert!(!matches("*.google.com", "evilgoogle.com"));
        assert!(matches("example.com", "Example.COM"));
        let l = limit(&["example.com"], &["*.outlook.com"], 1);
        assert!(l.covers(&mx("example.com"), "mx.example.com"));
        assert!(!l.covers(&mx("example.org"), "mx.example.org"));
        assert!(l.covers(
            &mx("contoso.com"),
            "contoso-com.mail.protection.outlook.com"
        ));
        let l = limit(&["mx:example.com"], &[], 1);
        assert!(l.covers(&mx("example.com"), "h"));
        assert!(!l.covers(&mx("sub.example.com"), "h"));
        let l = limit(&["*.example.com"], &[], 1);
        assert!(l.covers(&mx("sub.example.com"), "h"));
    }

    #[test]
    fn problems_name_their_keys() {
        let mut bad = limit(&[], &[], 0);
        bad.name = "a b".into();
        let p = problems(&[bad]);
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert!(
            keys.contains(&"delivery.destination_limits[0].name"),
            "{p:?}"
        );
        assert!(
            keys.contains(&"delivery.destination_limits[0].next_hops"),
            "{p:?}"
        );
        assert!(
            keys.contains(&"delivery.destination_limits[0].max_connections"),
            "{p:?}"
        );
        assert!(problems(&[limit(&["a.b"], &["*.c.d"], 3)]).is_empty());
        let twice = [limit(&["a.b"], &[], 1), limit(&["c.d"], &[], 1)];
        assert_eq!(problems(&twice).len(), 1);
    }

    #[test]
    fn memory_leases_hold_the_maximum_and_come_back_on_drop() {
        let m = MemoryLeases::new();
        let a = m.try_acquire("x", 2);
        let b = m.try_acquire("x", 2);
        assert!(a.is_some() && b.is_some());
        assert!(m.try_acquire("x", 2).is_none());
        assert!(m.try_acquire("y", 2).is_some(), "limits are separate");
        drop(a);
        assert_eq!(m.count("x"), 1);
        assert!(m.try_acquire("x", 2).is_some());
    }

    #[tokio::test]
    async fn infos_show_the_connections_held() {
        let mut rated = limit(&[], &["*.rated.test"], 1);
        rated.name = "rated".into();
        rated.max_connections = None;
        rated.max_messages = Some("600/1m".parse().unwrap_or_else(|e| panic!("{e}")));
        let d = DestinationLimits::local(
            &[limit(&["slow.test"], &[], 2), rated],
            Duration::from_secs(1),
        );
        let LeaseAnswer::Granted(lease) = d.leases.acquire("l", 2).await else {
            panic!("a lease of 2");
        };
        let infos = d.infos();
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[0].name, "l");
        assert_eq!(infos[0].max_connections, Some(2));
        assert_eq!(infos[0].connections, Some(1));
        assert_eq!(infos[1].max_messages.as_deref(), Some("600/1m"));
        assert_eq!(infos[1].connections, None, "no connection limit, no count");
        drop(lease);
        assert_eq!(d.infos()[0].connections, Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_limit_waits_then_gives_up_without_a_failure() {
        let limits =
            DestinationLimits::local(&[limit(&["example.com"], &[], 1)], Duration::from_secs(5));
        let events = EventLog::discard();
        let hop = mx("example.com");
        let first = limits.connection_leases(&events, &hop, "mx").await;
        let Ok(held) = first else {
            panic!("first lease refused");
        };
        assert_eq!(held.len(), 1);
        // Full: the second waits, then gets it once the first is dropped.
        let waiter = limits.connection_leases(&events, &hop, "mx");
        let release = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(held);
        };
        let (got, ()) = tokio::join!(waiter, release);
        let Ok(second) = got else {
            panic!("lease not granted after the release");
        };
        // Held by the second now: a third gives up after the wait.
        let third = limits.connection_leases(&events, &hop, "mx").await;
        assert!(matches!(third, Err(WaitExpired { .. })));
        drop(second);
        // Other destinations are not limited.
        assert!(
            limits
                .connection_leases(&events, &mx("example.org"), "mx")
                .await
                .is_ok_and(|l| l.is_empty())
        );
    }

    #[tokio::test]
    async fn messages_per_window_wait_for_their_turn() {
        let rate: Rate = "2/1s".parse().unwrap_or_else(|e| panic!("{e}"));
        let cfg = DestinationLimitConfig {
            max_connections: None,
            max_messages: Some(rate),
            ..limit(&["example.com"], &[], 1)
        };
        let limits = DestinationLimits::local(&[cfg], Duration::from_secs(5));
        let events = EventLog::discard();
        let hop = mx("example.com");
        for _ in 0..4 {
            assert!(limits.message(&events, &hop, "mx").await.is_ok());
        }
    }
}
