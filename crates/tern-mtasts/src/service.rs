//! The MTA-STS service the delivery workers ask: TXT lookup, cache rules, HTTPS fetch,
//! persistence and events.
//!
//! Invariants: no lock is held across an `.await` and never two at once (`state` and
//! `inflight` are each taken for a few map operations); lookups of one domain that
//! overlap are coalesced (one TXT lookup and at most one fetch; if the leader is
//! cancelled the waiters ask themselves); every lookup is bounded by the DNS timeout plus
//! `fetch_timeout`; cache files are written on the blocking pool.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tern_events::{EventLog, catalog, fields};
use tern_https::{HttpsError, Limits};
use tern_route::dns::Resolver;
use tokio::sync::watch;

use crate::cache::{Entries, Entry, Failure, Plan, Txt, plan};
use crate::policy::{Mode, TxtRecord, is_domain, parse_policy, parse_txt};
use crate::store::Store;

/// The `[mta_sts]` settings the service needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Bound on one policy fetch (resolution, connection, TLS, response).
    pub fetch_timeout: Duration,
    /// The largest policy file accepted.
    pub max_policy_bytes: usize,
    /// The most domains cached (memory and disk).
    pub cache_max_domains: usize,
    /// How long a failed fetch is not tried again.
    pub retry_failed: Duration,
    /// Extra trust anchors for the policy hosts (PEM).
    pub extra_roots_pem: Option<Vec<u8>>,
    /// Fetch from loopback, private and other non-public addresses too
    /// (`tern_https::address`); refused (`sts-policy-fetch-error`) when false.
    pub allow_private_addresses: bool,
}

/// Why no policy could be had although the domain announces one (RFC 8460 result types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailKind {
    /// `sts-policy-fetch-error`: DNS, connection, HTTP status, timeout, too large.
    FetchError,
    /// `sts-policy-invalid`: the file does not parse, or the wrong media type.
    Invalid,
    /// `sts-webpki-invalid`: the policy host's certificate failed the checks.
    WebpkiInvalid,
}

impl FailKind {
    /// RFC 8460's name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailKind::FetchError => "sts-policy-fetch-error",
            FailKind::Invalid => "sts-policy-invalid",
            FailKind::WebpkiInvalid => "sts-webpki-invalid",
        }
    }
}

/// A domain's MTA-STS state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// No policy: no TXT record, or `mode: none` (the reason).
    None(String),
    /// A policy in `enforce` or `testing` (fresh or cached).
    Policy(Arc<Entry>),
    /// The domain announces a policy but none could be had, and none is cached.
    Failed {
        /// The report's result type.
        kind: FailKind,
        /// Why (bounded).
        reason: String,
    },
}

/// Why the service could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The HTTPS client (the extra roots).
    #[error("MTA-STS HTTPS client: {0}")]
    Client(#[from] tern_https::SetupError),
}

struct State {
    entries: Entries,
    failures: HashMap<String, (Failure, Lookup)>,
}

type Inflight = HashMap<String, watch::Receiver<Option<Lookup>>>;

/// The MTA-STS service (one per process).
pub struct MtaSts {
    cfg: Config,
    client: tern_https::Client,
    resolver: Resolver,
    events: EventLog,
    store: Option<Store>,
    state: Mutex<State>,
    inflight: Mutex<Inflight>,
}

impl std::fmt::Debug for MtaSts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtaSts")
            .field("cfg", &self.cfg.fetch_timeout)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now() -> u64 {
    tern_watchdog::clock::unix_ms() / 1000
}

/// Removes the in-flight marker however the lookup ends.
struct InflightGuard<'a> {
    inflight: &'a Mutex<Inflight>,
    domain: &'a str,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        lock(self.inflight).remove(self.domain);
    }
}

impl MtaSts {
    /// Builds the service; with `data_dir`, the cache is read back from
    /// `<data_dir>/mta-sts/` (events 4153, 4154; 4155 when it cannot be used).
    pub fn new(
        cfg: Config,
        resolver: Resolver,
        events: EventLog,
        data_dir: Option<&Path>,
    ) -> Result<Arc<MtaSts>, SetupError> {
        let client = tern_https::Client::new(&tern_https::ClientConfig {
            extra_roots_pem: cfg.extra_roots_pem.clone(),
            user_agent: "Tern MTA-STS".into(),
            allow_private_addresses: cfg.allow_private_addresses,
        })?;
        let mut entries = Entries::new(cfg.cache_max_domains);
        let mut store = None;
        if let Some(data_dir) = data_dir {
            let dir = data_dir.join(crate::store::DIR_NAME);
            match Store::open(data_dir).and_then(|s| {
                s.load(now(), cfg.cache_max_domains, cfg.max_policy_bytes)
                    .map(|l| (s, l))
            }) {
                Ok((s, loaded)) => {
                    for q in &loaded.quarantined {
                        events.emit(
                            &catalog::MTA_STS_CACHE_QUARANTINED,
                            fields!(
                                "path" => q.path.display(),
                                "reason" => q.reason,
                                "moved_to" => q.moved_to.as_ref().map_or_else(|| "-".to_string(), |p| p.display().to_string()),
                            ),
                        );
                    }
                    events.emit(
                        &catalog::MTA_STS_CACHE_LOADED,
                        fields!(
                            "dir" => s.dir().display(),
                            "entries" => loaded.entries.len(),
                            "expired" => loaded.expired,
                            "quarantined" => loaded.quarantined.len(),
                        ),
                    );
                    let t = now();
                    for e in loaded.entries {
                        entries.insert(Arc::new(e), t);
                    }
                    store = Some(s);
                }
                Err(e) => events.emit(
                    &catalog::MTA_STS_CACHE_FAILED,
                    fields!("dir" => dir.display(), "domain" => "-", "error" => e),
                ),
            }
        }
        Ok(Arc::new(MtaSts {
            cfg,
            client,
            resolver,
            events,
            store,
            state: Mutex::new(State {
                entries,
                failures: HashMap::new(),
            }),
            inflight: Mutex::new(HashMap::new()),
        }))
    }

    /// The longest a [`lookup`](Self::lookup) takes: the TXT lookup and one fetch.
    pub fn time_bound(&self) -> Duration {
        self.resolver
            .lookup_timeout()
            .saturating_add(self.cfg.fetch_timeout)
    }

    /// The cached policy of `domain`, valid or not (for views).
    pub fn cached(&self, domain: &str) -> Option<Arc<Entry>> {
        lock(&self.state).entries.get(&domain.to_ascii_lowercase())
    }

    /// The MTA-STS state of `domain` (module header; rules in `cache.rs`).
    pub async fn lookup(&self, domain: &str) -> Lookup {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if !is_domain(&domain) {
            return Lookup::None("not a domain name".into());
        }
        let leader = {
            let mut inflight = lock(&self.inflight);
            match inflight.get(&domain) {
                Some(rx) => Err(rx.clone()),
                None => {
                    let (tx, rx) = watch::channel(None);
                    inflight.insert(domain.clone(), rx);
                    Ok(tx)
                }
            }
        };
        match leader {
            Ok(tx) => {
                let _guard = InflightGuard {
                    inflight: &self.inflight,
                    domain: &domain,
                };
                let answer = self.resolve(&domain).await;
                tx.send_replace(Some(answer.clone()));
                answer
            }
            Err(mut rx) => {
                let shared = match rx.wait_for(Option::is_some).await {
                    Ok(v) => v.clone(),
                    Err(_) => None,
                };
                match shared {
                    Some(answer) => answer,
                    None => self.resolve(&domain).await,
                }
            }
        }
    }

    async fn resolve(&self, domain: &str) -> Lookup {
        let txt = match self.resolver.txt(&format!("_mta-sts.{domain}")).await {
            Ok(records) => match parse_txt(&records) {
                TxtRecord::Id(id) => Txt::Id(id),
                TxtRecord::Absent(why) => Txt::Absent(why.to_string()),
            },
            Err(e) => Txt::Failed(e.to_string()),
        };
        let t = now();
        let (cached, failure) = {
            let st = lock(&self.state);
            (st.entries.get(domain), st.failures.get(domain).cloned())
        };
        let valid = cached.clone().filter(|e| e.valid_at(t));
        match plan(t, cached.as_deref(), failure.as_ref().map(|f| &f.0), &txt) {
            Plan::UseCached => match valid {
                Some(e) => answer(e),
                None => Lookup::None("no valid cached policy".into()),
            },
            Plan::NoPolicy(why) => Lookup::None(why),
            Plan::RecentFailure => match (valid, failure) {
                (Some(e), _) => answer(e),
                (None, Some((_, failed))) => failed,
                (None, None) => Lookup::None("no policy".into()),
            },
            Plan::Fetch {
                id,
                cached_fallback,
            } => {
                self.fetch_and_store(domain, id, valid.filter(|_| cached_fallback))
                    .await
            }
        }
    }

    async fn fetch_and_store(
        &self,
        domain: &str,
        id: String,
        fallback: Option<Arc<Entry>>,
    ) -> Lookup {
        match self.fetch(domain).await {
            Ok((policy, text)) => {
                let entry = Arc::new(Entry {
                    domain: domain.to_string(),
                    id,
                    policy,
                    text,
                    fetched_at: now(),
                });
                self.events.emit(
                    &catalog::MTA_STS_POLICY_FETCHED,
                    fields!(
                        "domain" => domain,
                        "policy_id" => entry.id,
                        "mode" => entry.policy.mode.as_str(),
                        "max_age" => entry.policy.max_age,
                        "mx" => entry.policy.mx.join(" "),
                    ),
                );
                let evicted = {
                    let mut st = lock(&self.state);
                    st.failures.remove(domain);
                    st.entries.insert(entry.clone(), now())
                };
                self.persist(entry.clone(), evicted).await;
                answer(entry)
            }
            Err((kind, reason)) => {
                self.events.emit(
                    &catalog::MTA_STS_FETCH_FAILED,
                    fields!(
                        "domain" => domain,
                        "policy_id" => id,
                        "result" => kind.as_str(),
                        "reason" => reason,
                        "fallback" => fallback.as_ref().map_or("none", |e| e.id.as_str()),
                    ),
                );
                let failed = Lookup::Failed { kind, reason };
                let until = now().saturating_add(self.cfg.retry_failed.as_secs());
                {
                    let mut st = lock(&self.state);
                    let t = now();
                    if st.failures.len() >= self.cfg.cache_max_domains {
                        st.failures.retain(|_, (f, _)| f.until > t);
                    }
                    if st.failures.len() < self.cfg.cache_max_domains {
                        st.failures
                            .insert(domain.to_string(), (Failure { id, until }, failed.clone()));
                    }
                }
                match fallback {
                    Some(e) => answer(e),
                    None => failed,
                }
            }
        }
    }

    /// GET `https://mta-sts.<domain>/.well-known/mta-sts.txt` and parse it.
    async fn fetch(
        &self,
        domain: &str,
    ) -> Result<(crate::policy::Policy, String), (FailKind, String)> {
        let url = format!("https://mta-sts.{domain}/.well-known/mta-sts.txt");
        let limits = Limits {
            timeout: self.cfg.fetch_timeout,
            max_body: self.cfg.max_policy_bytes,
        };
        let response = self
            .client
            .get(&self.resolver, &url, Some("text/plain"), limits)
            .await
            .map_err(|e| {
                let kind = fail_kind(&e);
                (kind, e.to_string())
            })?;
        let policy =
            parse_policy(&response.body).map_err(|e| (FailKind::Invalid, e.to_string()))?;
        // The body is UTF-8: the parser checked.
        let text = String::from_utf8_lossy(&response.body).into_owned();
        Ok((policy, text))
    }

    async fn persist(&self, entry: Arc<Entry>, evicted: Option<String>) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let domain = entry.domain.clone();
        let done = tokio::task::spawn_blocking(move || {
            if let Some(old) = evicted {
                let _ = store.remove(&old);
            }
            store
                .save(&entry)
                .map_err(|e| (store.dir().display().to_string(), e.to_string()))
        })
        .await;
        let failed = match done {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(e) => Some(("-".into(), e.to_string())),
        };
        if let Some((dir, error)) = failed {
            self.events.emit(
                &catalog::MTA_STS_CACHE_FAILED,
                fields!("dir" => dir, "domain" => domain, "error" => error),
            );
        }
    }
}

/// The RFC 8460 result type of a failed fetch. A policy host that resolves only to
/// forbidden (non-public) addresses is a fetch error: nothing was fetched.
fn fail_kind(e: &HttpsError) -> FailKind {
    match e {
        HttpsError::Certificate { .. } => FailKind::WebpkiInvalid,
        HttpsError::ContentType(..) => FailKind::Invalid,
        _ => FailKind::FetchError,
    }
}

fn answer(entry: Arc<Entry>) -> Lookup {
    if entry.policy.mode == Mode::None {
        Lookup::None(format!("policy id {} has mode none", entry.id))
    } else {
        Lookup::Policy(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_errors_map_to_their_report_result_types() {
        let forbidden = HttpsError::ForbiddenAddress {
            host: "mta-sts.example.com".into(),
            addr: std::net::Ipv4Addr::LOCALHOST.into(),
            range: "loopback (127.0.0.0/8)",
        };
        assert_eq!(fail_kind(&forbidden), FailKind::FetchError);
        assert_eq!(
            fail_kind(&HttpsError::Certificate {
                host: "h".into(),
                problem: tern_https::CertProblem::Expired,
                detail: String::new(),
            }),
            FailKind::WebpkiInvalid
        );
        assert_eq!(
            fail_kind(&HttpsError::ContentType("text/html".into(), "text/plain")),
            FailKind::Invalid
        );
        assert_eq!(
            fail_kind(&HttpsError::Timeout(Duration::from_secs(1))),
            FailKind::FetchError
        );
    }
}
