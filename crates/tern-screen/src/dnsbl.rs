//! Asking the DNS lists: every site at once, each bounded in time, answers cached by
//! their TTL.
//!
//! [`DnsLists::score`] asks every configured site in parallel (one task each) and waits
//! for all of them, each within `timeout`: a list that does not answer in time, or
//! fails, counts as not listing (and is named in [`Score::unanswered`]); so the whole
//! costs at most `timeout`, however many lists there are and however they fail.
//!
//! Answers are cached through [`ListCache`] by query name, for the smallest TTL of the
//! answer (positive) or the negative TTL of the SOA (no such name), held between 10 s
//! and one hour (60 s when a negative answer carries no SOA); failures are not cached,
//! so a list that comes back is asked at the next client. The cache sits behind the
//! trait so that several nodes can share one (issue 20: Redis); [`MemoryListCache`] is
//! the in-process one, bounded in entries.
//!
//! Trust: answers come from the network; only their A records' addresses are kept (at
//! most 16 per answer) and compared with the filters. Names asked are built from the
//! client's address and a zone validated at configuration time.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::rr::RData;

use crate::Pending;
use crate::sites::{Score, Site, SiteAnswer, query_name, score};
use crate::table::ExpiringMap;

/// Shortest time an answer is cached.
const MIN_CACHE: Duration = Duration::from_secs(10);
/// Longest time an answer is cached.
const MAX_CACHE: Duration = Duration::from_secs(3600);
/// Cache time of a negative answer without an SOA.
const DEFAULT_NEGATIVE: Duration = Duration::from_secs(60);
/// Addresses kept from one answer.
const MAX_ADDRESSES: usize = 16;

/// The cache of list answers, by query name.
pub trait ListCache: Send + Sync {
    /// The cached answer for `name`, unless expired by `now_ms`.
    fn get<'a>(&'a self, name: &'a str, now_ms: u64) -> Pending<'a, Option<Vec<Ipv4Addr>>>;
    /// Caches `answer` (empty: not listed) for `name` until `expires_ms`.
    fn put<'a>(
        &'a self,
        name: &'a str,
        answer: Vec<Ipv4Addr>,
        expires_ms: u64,
        now_ms: u64,
    ) -> Pending<'a, ()>;
}

/// The in-process list cache: one mutex over a bounded map, held for one map operation.
pub struct MemoryListCache {
    answers: Mutex<ExpiringMap<String, Vec<Ipv4Addr>>>,
}

impl MemoryListCache {
    /// A cache of at most `capacity` answers.
    pub fn new(capacity: usize) -> MemoryListCache {
        MemoryListCache {
            answers: Mutex::new(ExpiringMap::new(capacity)),
        }
    }
}

impl ListCache for MemoryListCache {
    fn get<'a>(&'a self, name: &'a str, now_ms: u64) -> Pending<'a, Option<Vec<Ipv4Addr>>> {
        let found = self
            .answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&name.to_owned(), now_ms)
            .cloned();
        Box::pin(std::future::ready(found))
    }

    fn put<'a>(
        &'a self,
        name: &'a str,
        answer: Vec<Ipv4Addr>,
        expires_ms: u64,
        now_ms: u64,
    ) -> Pending<'a, ()> {
        self.answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), answer, expires_ms, now_ms);
        Box::pin(std::future::ready(()))
    }
}

/// The lists' client: a resolver, the cache and the time bound of one query.
#[derive(Clone)]
pub struct DnsLists {
    resolver: TokioResolver,
    cache: Arc<dyn ListCache>,
    timeout: Duration,
}

impl DnsLists {
    /// Lists asked through `resolver` (built from Tern's `[dns]` settings), each query
    /// bounded by `timeout`, answers kept in `cache`.
    pub fn new(resolver: TokioResolver, cache: Arc<dyn ListCache>, timeout: Duration) -> DnsLists {
        DnsLists {
            resolver,
            cache,
            timeout,
        }
    }

    /// The time bound of one query (and so of [`DnsLists::score`]).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Asks every site about `client` in parallel and adds up the score.
    pub async fn score(&self, sites: &[Site], client: IpAddr) -> Score {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, site) in sites.iter().enumerate() {
            let lists = self.clone();
            let name = query_name(client, &site.zone);
            tasks.spawn(async move { (i, lists.ask(&name).await) });
        }
        let mut answers = vec![SiteAnswer::Unanswered; sites.len()];
        while let Some(done) = tasks.join_next().await {
            if let Ok((i, answer)) = done
                && let Some(slot) = answers.get_mut(i)
            {
                *slot = answer;
            }
        }
        score(sites, &answers)
    }

    /// One site's answer for `name`: from the cache, or asked within the time bound.
    async fn ask(&self, name: &str) -> SiteAnswer {
        let now = tern_watchdog::clock::unix_ms();
        if let Some(cached) = self.cache.get(name, now).await {
            return SiteAnswer::Addresses(cached);
        }
        let asked = tokio::time::timeout(self.timeout, self.resolver.ipv4_lookup(name)).await;
        let (answer, ttl) = match asked {
            Err(_) => return SiteAnswer::Unanswered,
            Ok(Ok(lookup)) => {
                let ttl = lookup.answers().iter().map(|r| r.ttl).min().unwrap_or(0);
                let addrs: Vec<Ipv4Addr> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::A(a) => Some(a.0),
                        _ => None,
                    })
                    .take(MAX_ADDRESSES)
                    .collect();
                (addrs, Duration::from_secs(u64::from(ttl)))
            }
            Ok(Err(NetError::Dns(HickoryDnsError::NoRecordsFound(no)))) => (
                Vec::new(),
                no.negative_ttl
                    .map_or(DEFAULT_NEGATIVE, |t| Duration::from_secs(u64::from(t))),
            ),
            Ok(Err(_)) => return SiteAnswer::Unanswered,
        };
        let keep = ttl.clamp(MIN_CACHE, MAX_CACHE);
        let expires = now.saturating_add(u64::try_from(keep.as_millis()).unwrap_or(u64::MAX));
        self.cache.put(name, answer.clone(), expires, now).await;
        SiteAnswer::Addresses(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_cache_keeps_answers_until_they_expire() {
        let c = MemoryListCache::new(4);
        let block = |f: Pending<'_, Option<Vec<Ipv4Addr>>>| {
            let mut f = f;
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            match f.as_mut().poll(&mut cx) {
                std::task::Poll::Ready(v) => v,
                std::task::Poll::Pending => panic!("the memory cache must not wait"),
            }
        };
        let name = "2.0.0.127.zen.example.";
        assert_eq!(block(c.get(name, 0)), None);
        drop(c.put(name, vec![Ipv4Addr::new(127, 0, 0, 2)], 1000, 0));
        assert_eq!(
            block(c.get(name, 999)),
            Some(vec![Ipv4Addr::new(127, 0, 0, 2)])
        );
        assert_eq!(block(c.get(name, 1000)), None);
    }
}
