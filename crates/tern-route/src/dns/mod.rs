//! DNS for mail routing: MX and address lookups with a cache whose lifetimes are exact.
//!
//! Purpose: [`Resolver`] asks the configured name servers (or the system's resolv.conf)
//! through hickory-resolver and keeps its own bounded cache, so TTL handling is ours,
//! exact and observable ([`Resolver::cache_stats`]). [`plan`] turns answers into the
//! ordered list of hosts to try.
//!
//! Hickory's own response cache is disabled (`cache_size = 0`: its moka map then stores
//! nothing, so it can never serve us an answer older than its TTL); its TTL clamps are set
//! to ours anyway so the TTLs it reports already match what we cache. Truncated UDP
//! answers are retried over TCP by hickory, because every name server is configured with
//! both a UDP and a TCP connection.
//!
//! Cache lifetimes are in [`answer`]'s header. An entry's lifetime starts when the query
//! is sent, so it never outlives the TTL the server gave. Lookups for the same name and
//! type that overlap are coalesced: one goes to the network, the others wait for it (if it
//! is cancelled, they ask themselves).
//!
//! Invariants: no lock is held across an `.await`; each mutex guards one map and is held
//! for one map operation. Every lookup is bounded by `DnsConfig::timeout`.
//!
//! Watchdog: each query sent to the network is one item on the resolver's heartbeat
//! (work waiting while in flight, progress when answered or timed out) with the lookup
//! timeout as its budget; cache hits and coalesced waiters are not counted. Since every
//! query is bounded by tokio's timer, a stall here means the runtime itself stopped
//! running timers: it is reported, never restarted.
//!
//! Trust: answers come from the network. Names are validated before they are asked;
//! nothing from an answer can panic or grow the cache past `cache_entries`.

mod answer;
mod cache;
pub mod dnssec;
pub mod plan;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RecordType};
use hickory_resolver::{ResolverBuilder, TokioResolver};
use tern_watchdog::Heartbeat;
use tokio::sync::watch;

pub use cache::{CacheStats, Clock, SystemClock};
pub use dnssec::{Checked, Dnssec, TlsaRecord, TrustAnchorError};

use answer::Outcome;
use cache::TtlCache;

/// A hickory resolver builder for `nameservers` (`address:port`, each over UDP and TCP, so
/// truncated answers are retried over TCP), or for the system's configuration
/// (`/etc/resolv.conf`) when the list is empty. Shared with the binary's client-name
/// (reverse DNS) resolver so both reach the same servers the same way.
pub fn resolver_builder(
    nameservers: &[SocketAddr],
) -> Result<ResolverBuilder<TokioRuntimeProvider>, NetError> {
    if nameservers.is_empty() {
        return TokioResolver::builder_tokio();
    }
    let servers = nameservers
        .iter()
        .map(|sa| {
            let conn = |protocol| {
                let mut c = ConnectionConfig::new(protocol);
                c.port = sa.port();
                c
            };
            NameServerConfig::new(
                sa.ip(),
                true,
                vec![conn(ProtocolConfig::Udp), conn(ProtocolConfig::Tcp)],
            )
        })
        .collect();
    Ok(TokioResolver::builder_with_config(
        ResolverConfig::from_parts(None, vec![], servers),
        TokioRuntimeProvider::default(),
    ))
}

/// Resolver settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Name servers to ask (UDP, TCP on truncation); empty means the system's resolv.conf
    /// (and /etc/hosts).
    pub nameservers: Vec<SocketAddr>,
    /// Bound on one lookup, retries and TCP fallback included. Default 5 s.
    pub timeout: Duration,
    /// Positive answers are cached at least this long. Default 0.
    pub min_ttl: Duration,
    /// Positive answers are cached at most this long. Default 1 day.
    pub max_ttl: Duration,
    /// How long a temporary failure (SERVFAIL, timeout, refused, network) is cached.
    /// Default 30 s.
    pub failure_ttl: Duration,
    /// Cap on how long NXDOMAIN and NODATA are cached. Default 1 h.
    pub negative_ttl_max: Duration,
    /// Maximum number of cached answers. Default 10 000.
    pub cache_entries: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(5),
            min_ttl: Duration::ZERO,
            max_ttl: Duration::from_secs(86_400),
            failure_ttl: Duration::from_secs(30),
            negative_ttl_max: Duration::from_secs(3_600),
            cache_entries: 10_000,
        }
    }
}

/// Why a lookup gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The name does not exist (NXDOMAIN). Permanent: for a recipient domain this is a
    /// `5.1.2` bounce (see [`plan::PlanError::NxDomain`]).
    #[error("{name}: no such domain (NXDOMAIN)")]
    NxDomain {
        /// The name asked.
        name: String,
    },
    /// No usable answer now: SERVFAIL, REFUSED, timeout, network error. Retried later;
    /// maps to `4.4.3`.
    #[error("{name}: temporary DNS failure: {reason}")]
    Temporary {
        /// The name asked.
        name: String,
        /// What happened, for logs and delay notices.
        reason: String,
    },
    /// The text is not a domain name that can be asked (empty, too long, an address
    /// literal, bad IDNA). Never sent to the network, never cached.
    #[error("{name:?} is not a valid domain name")]
    InvalidName {
        /// The text given.
        name: String,
    },
    /// The resolver could not be built: unreadable resolv.conf or inconsistent settings.
    /// Only from [`Resolver::new`].
    #[error("cannot set up the DNS resolver: {reason}")]
    Setup {
        /// What is wrong.
        reason: String,
    },
}

impl DnsError {
    /// Whether retrying later may give another result.
    pub fn is_temporary(&self) -> bool {
        matches!(self, DnsError::Temporary { .. })
    }
}

/// One MX record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MxRecord {
    /// Lower is preferred.
    pub preference: u16,
    /// The mail host: lowercase, no trailing dot, never empty.
    pub exchange: String,
}

/// The MX answer of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxAnswer {
    /// MX records, in the order of the response; never empty.
    Records(Vec<MxRecord>),
    /// RFC 7505 null MX: the domain accepts no mail.
    NullMx,
    /// The domain exists but has no MX records: the implicit MX is the domain itself.
    NoMx,
}

/// Cache key: what was asked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    kind: Kind,
    /// Normalised name (lowercase, no trailing dot).
    name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Mx,
    Addrs,
    /// TLSA at `_<port>._tcp.<name>` (the key's name is the host's).
    Tlsa(u16),
    Txt,
}

/// A cached result; the variant always matches the key's [`Kind`].
#[derive(Debug, Clone)]
enum Cached {
    Mx(Result<Arc<MxAnswer>, DnsError>),
    Addrs(Result<Arc<Vec<IpAddr>>, DnsError>),
    Tlsa(Result<Arc<Vec<TlsaRecord>>, DnsError>),
    Txt(Result<Arc<Vec<String>>, DnsError>),
}

/// A cached result with the DNSSEC state of the answer it came from (meaningful only in a
/// validating resolver: [`Resolver::validating`]).
type Entry = (Cached, Dnssec);

type Inflight = HashMap<Key, watch::Receiver<Option<Entry>>>;

struct Inner {
    dns: TokioResolver,
    cfg: DnsConfig,
    clock: Arc<dyn Clock>,
    cache: Mutex<TtlCache<Key, Entry>>,
    inflight: Mutex<Inflight>,
    /// Queries on the network = work waiting; answers = progress.
    beat: Heartbeat,
}

/// The DNS resolver with Tern's cache. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("cfg", &self.inner.cfg)
            .field("cache", &self.cache_stats())
            .finish_non_exhaustive()
    }
}

/// Removes the in-flight marker of a lookup however the lookup ends (answer, error or
/// cancellation), so waiters never wait on a lookup nobody runs.
struct InflightGuard<'a> {
    inflight: &'a Mutex<Inflight>,
    key: &'a Key,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        lock(self.inflight).remove(self.key);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the maps inconsistent in a
    // way that matters (each operation is one map call), so poisoning is ignored.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Validates and normalises a name to ask: `(cache key text, absolute DNS name)`.
fn query_name(host: &str) -> Result<(String, Name), DnsError> {
    let invalid = || DnsError::InvalidName {
        name: host.to_owned(),
    };
    let norm = crate::name::normalize(host).into_owned();
    if norm.is_empty()
        || norm.len() > crate::name::MAX_DOMAIN_LEN
        || norm.starts_with('[')
        || norm.starts_with('.')
        || norm.contains("..")
        || norm.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid());
    }
    // The trailing dot makes the name absolute: no search list, no ndots games.
    let name = Name::from_utf8(format!("{norm}.")).map_err(|_| invalid())?;
    Ok((norm, name))
}

impl Resolver {
    /// Builds a resolver with the system clock.
    pub fn new(cfg: &DnsConfig) -> Result<Resolver, DnsError> {
        Resolver::with_clock(cfg, Arc::new(SystemClock))
    }

    /// Builds a resolver that reports its queries on `beat` (see the module header).
    pub fn with_heartbeat(cfg: &DnsConfig, beat: Heartbeat) -> Result<Resolver, DnsError> {
        Resolver::build(cfg, Arc::new(SystemClock), beat)
    }

    /// Builds a resolver reading time from `clock` (for cache expiry only; network
    /// timeouts use tokio's timer).
    pub fn with_clock(cfg: &DnsConfig, clock: Arc<dyn Clock>) -> Result<Resolver, DnsError> {
        Resolver::build(
            cfg,
            clock,
            Heartbeat::detached("dns", tern_watchdog::Kind::Dns),
        )
    }

    /// A DNSSEC-validating resolver over the same name servers (`cfg`), trusting
    /// `anchors` (see [`dnssec`]): every answer keeps its [`Dnssec`] state, read with
    /// [`Resolver::mx_checked`], [`Resolver::addrs_checked`] and [`Resolver::tlsa`].
    pub fn validating(
        cfg: &DnsConfig,
        anchors: dnssec::TrustAnchor,
        beat: Heartbeat,
    ) -> Result<Resolver, DnsError> {
        Resolver::build_with(cfg, Arc::new(SystemClock), beat, Some(anchors))
    }

    fn build(
        cfg: &DnsConfig,
        clock: Arc<dyn Clock>,
        beat: Heartbeat,
    ) -> Result<Resolver, DnsError> {
        Resolver::build_with(cfg, clock, beat, None)
    }

    fn build_with(
        cfg: &DnsConfig,
        clock: Arc<dyn Clock>,
        beat: Heartbeat,
        anchors: Option<dnssec::TrustAnchor>,
    ) -> Result<Resolver, DnsError> {
        if cfg.min_ttl > cfg.max_ttl {
            return Err(DnsError::Setup {
                reason: format!(
                    "min_ttl ({:?}) is greater than max_ttl ({:?})",
                    cfg.min_ttl, cfg.max_ttl
                ),
            });
        }
        if cfg.timeout.is_zero() {
            return Err(DnsError::Setup {
                reason: "the timeout must not be zero".to_owned(),
            });
        }
        let mut builder = resolver_builder(&cfg.nameservers).map_err(|e| DnsError::Setup {
            reason: format!("reading the system resolver configuration: {e}"),
        })?;
        let opts = builder.options_mut();
        // Two tries (attempts = 1 retry) inside our own overall deadline.
        opts.timeout = (cfg.timeout / 2).max(Duration::from_millis(50));
        opts.attempts = 1;
        opts.cache_size = 0;
        opts.positive_min_ttl = Some(cfg.min_ttl);
        opts.positive_max_ttl = Some(cfg.max_ttl);
        opts.negative_max_ttl = Some(cfg.negative_ttl_max);
        opts.preserve_intermediates = true;
        if !cfg.nameservers.is_empty() {
            opts.use_hosts_file = ResolveHosts::Never;
        }
        if let Some(anchors) = anchors {
            // Validation on (the DO bit set, every RRset checked up to the anchor);
            // hickory's DNSKEY/DS validation cache is its own and bounded.
            builder = builder.with_trust_anchor(anchors.into_hickory());
        }
        let dns = builder.build().map_err(|e| DnsError::Setup {
            reason: e.to_string(),
        })?;
        beat.set_budget(cfg.timeout);
        Ok(Resolver {
            inner: Arc::new(Inner {
                dns,
                cfg: cfg.clone(),
                clock,
                cache: Mutex::new(TtlCache::new(cfg.cache_entries)),
                inflight: Mutex::new(HashMap::new()),
                beat,
            }),
        })
    }

    /// The MX answer of `domain` (cached).
    pub async fn mx(&self, domain: &str) -> Result<Arc<MxAnswer>, DnsError> {
        let (norm, name) = query_name(domain)?;
        let key = Key {
            kind: Kind::Mx,
            name: norm,
        };
        self.mx_with_state(domain, key, name).await.answer
    }

    /// [`Resolver::mx`] with the answer's DNSSEC state.
    pub async fn mx_checked(&self, domain: &str) -> Checked<Result<Arc<MxAnswer>, DnsError>> {
        match query_name(domain) {
            Ok((norm, name)) => {
                let key = Key {
                    kind: Kind::Mx,
                    name: norm,
                };
                self.mx_with_state(domain, key, name).await
            }
            Err(e) => Checked::unasked(Err(e)),
        }
    }

    async fn mx_with_state(
        &self,
        domain: &str,
        key: Key,
        name: Name,
    ) -> Checked<Result<Arc<MxAnswer>, DnsError>> {
        let this = self.clone();
        let query = async move {
            let (out, state) = this.ask(name, RecordType::MX).await;
            let (answer, ttl) = answer::mx_answer(domain, out, &this.inner.cfg);
            ((Cached::Mx(answer), state), ttl)
        };
        match self.cached(&key, query).await {
            (Cached::Mx(answer), dnssec) => Checked { answer, dnssec },
            (_, dnssec) => Checked {
                answer: Err(mismatch(domain)),
                dnssec,
            },
        }
    }

    /// The IPv4 then IPv6 addresses of `host` (cached). A and AAAA are asked together;
    /// CNAME chains are followed. An IP address in plain text is returned as is, without
    /// DNS. `Ok` with an empty list means the name exists without addresses.
    pub async fn addrs(&self, host: &str) -> Result<Arc<Vec<IpAddr>>, DnsError> {
        self.addrs_checked(host).await.answer
    }

    /// [`Resolver::addrs`] with the DNSSEC state of the A and AAAA answers together (the
    /// weaker of the two). An IP address in plain text has no DNS and is
    /// [`Dnssec::Indeterminate`].
    pub async fn addrs_checked(&self, host: &str) -> Checked<Result<Arc<Vec<IpAddr>>, DnsError>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Checked::unasked(Ok(Arc::new(vec![ip])));
        }
        let (norm, name) = match query_name(host) {
            Ok(q) => q,
            Err(e) => return Checked::unasked(Err(e)),
        };
        let key = Key {
            kind: Kind::Addrs,
            name: norm,
        };
        let this = self.clone();
        let query = async move {
            let ((a, sa), (aaaa, sb)) = tokio::join!(
                this.ask(name.clone(), RecordType::A),
                this.ask(name, RecordType::AAAA)
            );
            let (answer, ttl) = answer::addrs_answer(host, a, aaaa, &this.inner.cfg);
            ((Cached::Addrs(answer), sa.weaker(sb)), ttl)
        };
        match self.cached(&key, query).await {
            (Cached::Addrs(answer), dnssec) => Checked { answer, dnssec },
            (_, dnssec) => Checked {
                answer: Err(mismatch(host)),
                dnssec,
            },
        }
    }

    /// The TLSA records at `_<port>._tcp.<host>` (cached), with their DNSSEC state.
    /// NXDOMAIN and NODATA are an empty list (RFC 7672 §2.2: no TLSA records); their state
    /// says whether that absence was proven.
    pub async fn tlsa(
        &self,
        host: &str,
        port: u16,
    ) -> Checked<Result<Arc<Vec<TlsaRecord>>, DnsError>> {
        let (norm, name) = match query_name(host).and_then(|(norm, _)| {
            let tlsa = dnssec::tlsa_name(&norm, port).ok_or_else(|| DnsError::InvalidName {
                name: host.to_owned(),
            })?;
            Ok((norm, tlsa))
        }) {
            Ok(q) => q,
            Err(e) => return Checked::unasked(Err(e)),
        };
        let key = Key {
            kind: Kind::Tlsa(port),
            name: norm,
        };
        let this = self.clone();
        let query = async move {
            let (out, state) = this.ask(name, RecordType::TLSA).await;
            let (answer, ttl) = dnssec::tlsa_answer(host, out, &this.inner.cfg);
            ((Cached::Tlsa(answer), state), ttl)
        };
        match self.cached(&key, query).await {
            (Cached::Tlsa(answer), dnssec) => Checked { answer, dnssec },
            (_, dnssec) => Checked {
                answer: Err(mismatch(host)),
                dnssec,
            },
        }
    }

    /// The TXT records of `name` (cached), each record's strings joined (RFC 7208 §3.3,
    /// RFC 8461 §3.1). NXDOMAIN and NODATA are an empty list: for the callers (MTA-STS,
    /// TLS-RPT) both mean "no record". Records that are not UTF-8 are dropped; at most
    /// [`answer::MAX_TXT_RECORDS`] records are kept.
    pub async fn txt(&self, name: &str) -> Result<Arc<Vec<String>>, DnsError> {
        let (norm, qname) = query_name(name)?;
        let key = Key {
            kind: Kind::Txt,
            name: norm,
        };
        let this = self.clone();
        let query = async move {
            let (out, state) = this.ask(qname, RecordType::TXT).await;
            let (answer, ttl) = answer::txt_answer(name, out, &this.inner.cfg);
            ((Cached::Txt(answer), state), ttl)
        };
        match self.cached(&key, query).await {
            (Cached::Txt(answer), _) => answer,
            _ => Err(mismatch(name)),
        }
    }

    /// Cache counters and size.
    pub fn cache_stats(&self) -> CacheStats {
        lock(&self.inner.cache).stats()
    }

    /// Drops every cached answer (for a configuration reload or an operator command).
    pub fn clear_cache(&self) {
        let mut cache = lock(&self.inner.cache);
        *cache = TtlCache::new(self.inner.cfg.cache_entries);
    }

    /// The bound on one lookup (`DnsConfig::timeout`).
    pub fn lookup_timeout(&self) -> Duration {
        self.inner.cfg.timeout
    }

    /// One query, bounded by the configured timeout, with the DNSSEC state of its answer.
    async fn ask(&self, name: Name, rtype: RecordType) -> (Outcome, Dnssec) {
        let item = self.inner.beat.item();
        let started = std::time::Instant::now();
        let lookup = self.inner.dns.lookup(name, rtype);
        let answer = tokio::time::timeout(self.inner.cfg.timeout, lookup)
            .await
            .ok();
        tern_metrics::get()
            .dns_lookup
            .observe_duration(started.elapsed());
        item.done();
        let state = dnssec::state_of(answer.as_ref());
        (Outcome::from_lookup(answer), state)
    }

    /// The cached value for `key`, or the result of `query` (which is then cached for the
    /// lifetime it returns, counted from before it started). Overlapping calls for one key
    /// share one query.
    async fn cached<F>(&self, key: &Key, query: F) -> Entry
    where
        F: Future<Output = (Entry, Duration)>,
    {
        let inner = &self.inner;
        let hit = lock(&inner.cache).get(key, inner.clock.now());
        if let Some(hit) = hit {
            tern_metrics::get().dns_cache_hits.inc();
            return hit;
        }
        tern_metrics::get().dns_cache_misses.inc();
        let leader = {
            let mut inflight = lock(&inner.inflight);
            match inflight.get(key) {
                Some(rx) => Err(rx.clone()),
                None => {
                    let (tx, rx) = watch::channel(None);
                    inflight.insert(key.clone(), rx);
                    Ok(tx)
                }
            }
        };
        match leader {
            Ok(tx) => {
                let _guard = InflightGuard {
                    inflight: &inner.inflight,
                    key,
                };
                let started = inner.clock.now();
                let (value, ttl) = query.await;
                let expires = started.checked_add(ttl).unwrap_or(started);
                lock(&inner.cache).insert(key.clone(), value.clone(), expires, inner.clock.now());
                tx.send_replace(Some(value.clone()));
                value
            }
            Err(mut rx) => {
                let shared = match rx.wait_for(Option::is_some).await {
                    Ok(value) => value.clone(),
                    Err(_) => None,
                };
                match shared {
                    Some(value) => value,
                    // The leader was cancelled: ask ourselves, without coalescing.
                    None => {
                        let started = inner.clock.now();
                        let (value, ttl) = query.await;
                        let expires = started.checked_add(ttl).unwrap_or(started);
                        lock(&inner.cache).insert(
                            key.clone(),
                            value.clone(),
                            expires,
                            inner.clock.now(),
                        );
                        value
                    }
                }
            }
        }
    }
}

fn mismatch(name: &str) -> DnsError {
    DnsError::Temporary {
        name: name.to_owned(),
        reason: "internal error: cache entry of the wrong kind".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names_are_validated_and_normalised() {
        let (norm, name) = query_name("MX.Example.COM.").unwrap();
        assert_eq!(norm, "mx.example.com");
        assert!(name.is_fqdn());
        for bad in [
            "",
            ".",
            "[192.0.2.1]",
            "a..b",
            "a b",
            &"a".repeat(300),
            ".a",
        ] {
            assert!(
                matches!(query_name(bad), Err(DnsError::InvalidName { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[tokio::test]
    async fn settings_are_checked() {
        let bad = DnsConfig {
            nameservers: vec!["127.0.0.1:53".parse().unwrap()],
            min_ttl: Duration::from_secs(10),
            max_ttl: Duration::from_secs(5),
            ..DnsConfig::default()
        };
        assert!(matches!(Resolver::new(&bad), Err(DnsError::Setup { .. })));
        let zero = DnsConfig {
            nameservers: vec!["127.0.0.1:53".parse().unwrap()],
            timeout: Duration::ZERO,
            ..DnsConfig::default()
        };
        assert!(matches!(Resolver::new(&zero), Err(DnsError::Setup { .. })));
    }

    #[tokio::test]
    async fn invalid_names_and_ip_text_never_reach_the_network() {
        // Port 9 on loopback: nothing answers there; reaching it would time out.
        let cfg = DnsConfig {
            nameservers: vec!["127.0.0.1:9".parse().unwrap()],
            timeout: Duration::from_secs(30),
            ..DnsConfig::default()
        };
        let r = Resolver::new(&cfg).unwrap();
        assert!(matches!(r.mx("").await, Err(DnsError::InvalidName { .. })));
        assert!(matches!(
            r.addrs("[192.0.2.1]").await,
            Err(DnsError::InvalidName { .. })
        ));
        assert_eq!(
            *r.addrs("192.0.2.7").await.unwrap(),
            vec!["192.0.2.7".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(r.cache_stats(), CacheStats::default());
    }
}
