//! One DMARC aggregate report per domain and period for a cluster of nodes: what the
//! nodes exchange (a node's share of a closed period, encoded as JSON) and how the
//! shares merge (sans-I/O), plus [`ReportExchange`], the reporter's view of the shared
//! store (Redis in `tern-cluster`, adapted in the `tern` binary). A node alone has no
//! exchange (`Reporter.exchange` is `None`) and reports exactly as before.
//!
//! Invariants:
//! - A node marks a domain of a period sent only once its own report was queued, or once
//!   the exchange says the merged report included this node's data for that domain
//!   ([`ReportExchange::sent`]). Anything else is reported by the node itself after
//!   [`FALLBACK_AFTER`]: nothing observed is ever dropped.
//! - A share read from the exchange is a peer's input: its size is bounded
//!   ([`MAX_SHARE_BYTES`]), every row goes through the same cleaning as a local
//!   observation ([`Kind::clean`]) and the merged period stays within [`MERGE_CAPS`].

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::PolicyPublished;
use crate::aggregate::{Caps, Dmarc, Period, RowKey};
use crate::kind::{Kind, Row};

/// Largest share accepted (JSON bytes).
pub const MAX_SHARE_BYTES: usize = 32 << 20;
/// Nodes' shares merged per period (more are ignored; their nodes fall back).
pub const MAX_SHARES: usize = 64;
/// The caps of a merged period (the defaults of `[dmarc_reports]`).
pub const MERGE_CAPS: Caps = Caps {
    max_domains: 10_000,
    max_rows: 100_000,
};
/// How long the node holding a period's lease waits for every live node's share
/// before it merges what it has.
pub const COLLECT_WAIT: Duration = Duration::from_secs(120);
/// How long a period's lease lasts before another node may take it over (its holder
/// died or lost Redis).
pub const LEASE: Duration = Duration::from_secs(900);
/// How long a node waits for the merged report to include its data before it sends its
/// own report for the domains still open (2 × the run's retry).
pub const FALLBACK_AFTER: Duration = Duration::from_secs(1200);
/// Time before a run that waits on the cluster runs again.
pub const WAIT_RETRY: Duration = Duration::from_secs(15);
/// How long the exchange keeps a period's data.
pub const KEEP: Duration = Duration::from_secs(4 * 86_400);

/// A boxed future of the exchange (object-safe trait).
pub type ExFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// What [`ReportExchange::collect`] found for a period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    /// The nodes alive now.
    pub live: BTreeSet<String>,
    /// Each node's share (JSON, see [`encode`]).
    pub shares: BTreeMap<String, String>,
    /// Per node, the domains already reported with its data.
    pub sent: BTreeMap<String, BTreeSet<String>>,
}

/// The shared store of the cluster's report data.
pub trait ReportExchange: Send + Sync + 'static {
    /// This node's name.
    fn node(&self) -> &str;
    /// Stores this node's share of the period beginning at `begin`.
    fn publish(&self, begin: u64, share: String) -> ExFuture<'_, ()>;
    /// Takes (or confirms holding) the period's lease: `true` when this node merges.
    fn claim(&self, begin: u64) -> ExFuture<'_, bool>;
    /// Every share of the period, the live nodes and what was already reported.
    fn collect(&self, begin: u64) -> ExFuture<'_, Collected>;
    /// Records `(node, domain)` pairs whose data is reported (in a merged report, or
    /// by the node alone): no merge counts them again.
    fn mark_sent(&self, begin: u64, pairs: Vec<(String, String)>) -> ExFuture<'_, ()>;
    /// The domains whose merged report included this node's data.
    fn sent(&self, begin: u64) -> ExFuture<'_, BTreeSet<String>>;
}

#[derive(Debug, Serialize, Deserialize)]
struct WireDomain {
    domain: String,
    policy: PolicyPublished,
    rua: Vec<String>,
    rows: Vec<(RowKey, u64)>,
    dropped: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireShare {
    end: u64,
    domains: Vec<WireDomain>,
}

/// A node's share of a closed period: its (unreported) domains.
pub fn encode(period: &Period) -> String {
    let share = WireShare {
        end: period.end,
        domains: period
            .domains
            .iter()
            .map(|(d, data)| WireDomain {
                domain: d.clone(),
                policy: data.policy.clone(),
                rua: data.rua.clone(),
                rows: data.rows.iter().map(|(k, n)| (k.clone(), *n)).collect(),
                dropped: data.dropped,
            })
            .collect(),
    };
    serde_json::to_string(&share).unwrap_or_default()
}

/// Why a share was not merged.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShareError {
    /// Larger than [`MAX_SHARE_BYTES`].
    #[error("share too large")]
    TooLarge,
    /// Not the JSON of a share.
    #[error("share unreadable: {0}")]
    Unreadable(String),
}

/// The domains of a share (to know whose data a merged report holds).
pub fn domains_of(json: &str) -> Result<BTreeSet<String>, ShareError> {
    let share = parse(json)?;
    Ok(share
        .domains
        .into_iter()
        .map(|d| crate::aggregate::clean_text(&d.domain, crate::aggregate::MAX_TEXT).to_lowercase())
        .collect())
}

fn parse(json: &str) -> Result<WireShare, ShareError> {
    if json.len() > MAX_SHARE_BYTES {
        return Err(ShareError::TooLarge);
    }
    serde_json::from_str(json).map_err(|e| ShareError::Unreadable(e.to_string()))
}

/// Adds a share to `into` (same row keys add their counts; the period's end is the
/// latest), skipping the domains in `skip`. Rows are cleaned like observations; a row
/// whose domain changes in cleaning is ignored.
pub fn merge(
    into: &mut Period,
    json: &str,
    skip: &BTreeSet<String>,
    caps: Caps,
) -> Result<(), ShareError> {
    let share = parse(json)?;
    if share.end > into.begin {
        into.end = into.end.max(share.end);
    }
    for d in share.domains {
        if skip.contains(&d.domain) {
            continue;
        }
        let mut kept = None;
        for (key, count) in d.rows {
            let obs = Dmarc::join(
                Row {
                    domain: d.domain.clone(),
                    policy: d.policy.clone(),
                    rua: d.rua.clone(),
                    key,
                },
                into.begin,
            );
            let Some(obs) = Dmarc::clean(obs) else {
                continue;
            };
            let row = Dmarc::split(obs);
            if row.domain != d.domain {
                continue;
            }
            into.add_count(&row.domain, &row.policy, &row.rua, row.key, count, caps);
            kept = Some(row.domain);
        }
        if let Some(domain) = kept {
            into.add_dropped(&domain, d.dropped);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::key_of;
    use crate::aggregate::tests::obs;

    fn period(rows: &[(&str, &str, u64)], end: u64) -> Period {
        let mut p = Period::new(86_400, end);
        for (ip, domain, n) in rows {
            let row = Dmarc::split(obs(domain, ip, "pass"));
            let key = key_of(Dmarc::join(row.clone(), 0));
            p.add_count(&row.domain, &row.policy, &row.rua, key, *n, MERGE_CAPS);
        }
        p
    }

    #[test]
    fn same_rows_add_their_counts_and_the_latest_end_wins() {
        let a = period(
            &[
                ("192.0.2.1", "example.org", 2),
                ("192.0.2.2", "example.org", 1),
            ],
            90_000,
        );
        let b = period(
            &[
                ("192.0.2.1", "example.org", 3),
                ("192.0.2.9", "other.test", 4),
            ],
            91_000,
        );
        let mut m = Period::new(86_400, 86_401);
        merge(&mut m, &encode(&a), &BTreeSet::new(), MERGE_CAPS).unwrap_or(());
        merge(&mut m, &encode(&b), &BTreeSet::new(), MERGE_CAPS).unwrap_or(());
        assert_eq!(m.end, 91_000);
        let org = m
            .domains
            .get("example.org")
            .map(|d| d.rows.values().copied().collect::<Vec<_>>());
        assert_eq!(org, Some(vec![5, 1]));
        let other: u64 = m
            .domains
            .get("other.test")
            .map_or(0, |d| d.rows.values().sum());
        assert_eq!(other, 4);
        assert_eq!(m.rows, 3);
    }

    #[test]
    fn skipped_domains_and_garbage_are_not_merged() {
        let a = period(
            &[
                ("192.0.2.1", "example.org", 2),
                ("192.0.2.9", "other.test", 4),
            ],
            90_000,
        );
        let mut m = Period::new(86_400, 86_401);
        let skip: BTreeSet<String> = ["other.test".to_owned()].into();
        merge(&mut m, &encode(&a), &skip, MERGE_CAPS).unwrap_or(());
        assert!(m.domains.contains_key("example.org"));
        assert!(!m.domains.contains_key("other.test"));
        assert!(matches!(
            merge(&mut m, "{\"end\":1,\"domains\":[{]}", &skip, MERGE_CAPS),
            Err(ShareError::Unreadable(_))
        ));
        let huge = " ".repeat(MAX_SHARE_BYTES + 1);
        assert_eq!(
            merge(&mut m, &huge, &skip, MERGE_CAPS),
            Err(ShareError::TooLarge)
        );
        assert_eq!(
            m.domains
                .get("example.org")
                .map(|d| d.rows.values().sum::<u64>()),
            Some(2)
        );
    }

    #[test]
    fn a_peer_cannot_exceed_the_caps_or_smuggle_control_characters() {
        let a = period(&[("192.0.2.1", "example.org", 1)], 90_000);
        let json = encode(&a).replace("example.org\"", "example.org\\u0007\"");
        let mut m = Period::new(86_400, 86_401);
        merge(&mut m, &json, &BTreeSet::new(), MERGE_CAPS).unwrap_or(());
        // The domain changed in cleaning: the row is ignored, not merged as another name.
        assert!(m.domains.is_empty());
        let b = period(
            &[("192.0.2.1", "a.test", 1), ("192.0.2.2", "b.test", 1)],
            90_000,
        );
        let caps = Caps {
            max_domains: 1,
            max_rows: 10,
        };
        merge(&mut m, &encode(&b), &BTreeSet::new(), caps).unwrap_or(());
        assert_eq!(m.domains.len(), 1);
        assert_eq!(m.dropped_domains, 1);
        assert_eq!(domains_of(&encode(&b)).map(|d| d.len()), Ok(2));
    }
}
