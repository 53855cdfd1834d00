//! Folding observations into the rows of aggregate reports (sans-I/O: no clock, no
//! files; times are parameters).
//!
//! A report is per policy domain and per period; its `<record>`s are the distinct
//! [`RowKey`]s seen, each with a count (RFC 7489 Appendix C `RecordType`).
//!
//! Trust: an observation is built by Tern's verifier, but most of its text comes from the
//! peer (the From domain, the envelope domain, DKIM `d=`/`s=`) or from DNS (the `rua`
//! URIs). [`clean`] bounds every string and list and removes what XML 1.0 cannot carry
//! (control characters) before anything is kept, so the store, the journal and the XML
//! writer only ever see bounded, printable text.
//!
//! Memory: a [`Period`] holds at most `max_domains` policy domains and `max_rows` rows
//! over all its domains. Past a cap, an observation that matches an existing row is
//! still counted; one that would need a new domain or a new row is dropped and counted
//! (per domain for a row, per period for a domain); a report states the rows it could
//! not keep in its `<error>` element.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::kind::{Kind, KindEvents, Row};
use crate::store::AddCounts;
use crate::{AlignedResult, Disposition, DkimResult, DmarcObservation, PolicyPublished, SpfResult};
use tern_events::catalog;

/// Longest domain name or short text kept (longer ones are cut).
pub const MAX_TEXT: usize = 255;
/// Longest `rua` URI kept.
pub const MAX_URI: usize = 512;
/// DKIM results kept per message (the verifier checks at most `max_signatures`).
pub const MAX_DKIM: usize = 8;
/// Override reasons kept per message.
pub const MAX_OVERRIDES: usize = 4;
/// `rua` URIs kept per domain (how many are used is `max_rua`).
pub const MAX_RUA: usize = 8;

/// What one `<record>` of a report is keyed by: everything in it but the count.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RowKey {
    /// `row/source_ip`
    pub source_ip: IpAddr,
    /// `policy_evaluated/disposition`
    pub disposition: Disposition,
    /// `policy_evaluated/dkim`
    pub dkim_aligned: AlignedResult,
    /// `policy_evaluated/spf`
    pub spf_aligned: AlignedResult,
    /// `policy_evaluated/reason/type`, each
    pub overrides: Vec<String>,
    /// `identifiers/header_from`
    pub header_from: String,
    /// `identifiers/envelope_from` (empty for the null sender)
    pub envelope_from: String,
    /// `auth_results/dkim`
    pub dkim: Vec<DkimResult>,
    /// `auth_results/spf`
    pub spf: SpfResult,
}

/// The DMARC aggregate report kind (the store's generic part, [`Kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dmarc;

static DMARC_EVENTS: KindEvents = KindEvents {
    dropped: &catalog::DMARC_OBSERVATIONS_DROPPED,
    capped: &catalog::DMARC_OBSERVATIONS_CAPPED,
    given_up: &catalog::DMARC_PERIOD_GIVEN_UP,
    store_failed: &catalog::DMARC_STORE_FAILED,
};

impl Kind for Dmarc {
    type Obs = DmarcObservation;
    type Policy = PolicyPublished;
    type Key = RowKey;
    const NAME: &'static str = "dmarc";

    fn clean(obs: DmarcObservation) -> Option<DmarcObservation> {
        clean(obs)
    }

    fn split(obs: DmarcObservation) -> Row<Dmarc> {
        Row {
            domain: obs.policy.domain.clone(),
            policy: obs.policy.clone(),
            rua: obs.rua.clone(),
            key: key_of(obs),
        }
    }

    fn join(row: Row<Dmarc>, at: u64) -> DmarcObservation {
        let key = row.key;
        DmarcObservation {
            at,
            source_ip: key.source_ip,
            header_from: key.header_from,
            envelope_from: key.envelope_from,
            policy: row.policy,
            rua: row.rua,
            disposition: key.disposition,
            dkim_aligned: key.dkim_aligned,
            spf_aligned: key.spf_aligned,
            overrides: key.overrides,
            dkim: key.dkim,
            spf: key.spf,
        }
    }

    fn events() -> &'static KindEvents {
        &DMARC_EVENTS
    }

    fn account(c: &AddCounts) {
        use tern_metrics::dmarc_reports::Observation;
        let m = tern_metrics::get();
        m.dmarc_observations(Observation::Recorded, c.counted);
        m.dmarc_observations(Observation::DroppedDomains, c.domain_cap);
        m.dmarc_observations(Observation::DroppedRows, c.row_cap);
        m.dmarc_observations(Observation::Invalid, c.invalid);
    }

    fn count_dropped_full() {
        tern_metrics::get()
            .dmarc_observations(tern_metrics::dmarc_reports::Observation::DroppedFull, 1);
    }
}

/// One policy domain's data in a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainData<K: Kind = Dmarc> {
    /// What the report states once, as last seen in the period (DMARC: the one
    /// `policy_published`).
    pub policy: K::Policy,
    /// Its `rua` URIs as last seen.
    pub rua: Vec<String>,
    /// Rows and their counts.
    pub rows: BTreeMap<K::Key, u64>,
    /// Messages not counted because `max_rows` was reached.
    pub dropped: u64,
}

/// What [`Period::add`] did with an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Counted in an existing row.
    Counted,
    /// Counted in a new row.
    NewRow,
    /// Dropped: the period already has `max_domains` domains.
    DomainCap,
    /// Dropped: the period already has `max_rows` rows.
    RowCap,
}

/// The caps of one period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Policy domains per period.
    pub max_domains: usize,
    /// Rows per period, over all domains.
    pub max_rows: usize,
}

/// The data of one report period, `[begin, end)` in Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period<K: Kind = Dmarc> {
    /// First second covered.
    pub begin: u64,
    /// First second not covered (the report's `end` is `end - 1`).
    pub end: u64,
    /// Data per policy domain (lowercase), in name order.
    pub domains: BTreeMap<String, DomainData<K>>,
    /// Rows over all domains (kept equal to the sum, for the cap).
    pub rows: usize,
    /// Messages dropped because the period had `max_domains` domains.
    pub dropped_domains: u64,
}

impl<K: Kind> Period<K> {
    /// An empty period.
    pub fn new(begin: u64, end: u64) -> Period<K> {
        Period {
            begin,
            end,
            domains: BTreeMap::new(),
            rows: 0,
            dropped_domains: 0,
        }
    }

    /// Folds a cleaned observation's row in (see [`Kind::clean`]), within `caps`.
    pub fn add(&mut self, row: Row<K>, caps: Caps) -> Added {
        self.add_count(&row.domain, &row.policy, &row.rua, row.key, 1, caps)
    }

    /// Adds `count` messages of `key` to `domain` (also used when a journal is read
    /// back, with the same caps).
    pub fn add_count(
        &mut self,
        domain: &str,
        policy: &K::Policy,
        rua: &[String],
        key: K::Key,
        count: u64,
        caps: Caps,
    ) -> Added {
        if !self.domains.contains_key(domain) {
            if self.domains.len() >= caps.max_domains {
                self.dropped_domains = self.dropped_domains.saturating_add(count);
                return Added::DomainCap;
            }
            self.domains.insert(
                domain.to_owned(),
                DomainData {
                    policy: policy.clone(),
                    rua: rua.to_vec(),
                    rows: BTreeMap::new(),
                    dropped: 0,
                },
            );
        }
        let full = self.rows >= caps.max_rows;
        let Some(data) = self.domains.get_mut(domain) else {
            return Added::DomainCap;
        };
        if data.policy != *policy {
            data.policy = policy.clone();
        }
        if data.rua != rua {
            data.rua = rua.to_vec();
        }
        if let Some(n) = data.rows.get_mut(&key) {
            *n = n.saturating_add(count);
            return Added::Counted;
        }
        if full || !K::admits(data, &key) {
            data.dropped = data.dropped.saturating_add(count);
            return Added::RowCap;
        }
        data.rows.insert(key, count);
        self.rows += 1;
        Added::NewRow
    }

    /// Adds rows dropped by the cap (a journal read back).
    pub fn add_dropped(&mut self, domain: &str, dropped: u64) {
        if let Some(data) = self.domains.get_mut(domain) {
            data.dropped = data.dropped.saturating_add(dropped);
        }
    }

    /// Whether nothing was observed.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty() && self.dropped_domains == 0
    }
}

/// The row key of an observation.
pub fn key_of(obs: DmarcObservation) -> RowKey {
    RowKey {
        source_ip: obs.source_ip,
        disposition: obs.disposition,
        dkim_aligned: obs.dkim_aligned,
        spf_aligned: obs.spf_aligned,
        overrides: obs.overrides,
        header_from: obs.header_from,
        envelope_from: obs.envelope_from,
        dkim: obs.dkim,
        spf: obs.spf,
    }
}

/// The first second of the period of length `interval` holding `at` (periods are
/// aligned to the Unix epoch, hence to UTC days when `interval` divides a day).
pub fn period_begin(at: u64, interval: u64) -> u64 {
    let interval = interval.max(1);
    at - at % interval
}

/// Text bounded to `max` bytes (cut at a character boundary), control characters
/// removed (XML 1.0 cannot carry most of them), surrounding white space trimmed.
pub fn clean_text(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.trim().chars() {
        if c.is_control() || c == '\u{fffe}' || c == '\u{ffff}' {
            continue;
        }
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

fn clean_domain(s: &str) -> String {
    clean_text(s, MAX_TEXT).to_lowercase()
}

/// One of `allowed`, or `other` when the value is not (the reports' result types are
/// closed lists).
fn one_of(s: &str, allowed: &[&'static str], other: &'static str) -> String {
    let s = s.trim().to_ascii_lowercase();
    allowed
        .iter()
        .find(|a| **a == s)
        .map_or(other, |a| *a)
        .to_owned()
}

const DKIM_RESULTS: &[&str] = &[
    "none",
    "pass",
    "fail",
    "policy",
    "neutral",
    "temperror",
    "permerror",
];
const SPF_RESULTS: &[&str] = &[
    "none",
    "neutral",
    "pass",
    "fail",
    "softfail",
    "temperror",
    "permerror",
];
const OVERRIDES: &[&str] = &[
    "forwarded",
    "sampled_out",
    "trusted_forwarder",
    "mailing_list",
    "local_policy",
    "other",
];

/// The observation bounded and normalised, or `None` when it names no policy domain.
pub fn clean(obs: DmarcObservation) -> Option<DmarcObservation> {
    let domain = clean_domain(&obs.policy.domain);
    if domain.is_empty() {
        return None;
    }
    let policy = PolicyPublished {
        domain,
        pct: obs.policy.pct.min(100),
        fo: clean_text(&obs.policy.fo, 16),
        ..obs.policy
    };
    let mut overrides: Vec<String> = obs
        .overrides
        .iter()
        .take(MAX_OVERRIDES)
        .map(|o| one_of(o, OVERRIDES, "other"))
        .collect();
    overrides.sort();
    overrides.dedup();
    let dkim = obs
        .dkim
        .iter()
        .take(MAX_DKIM)
        .map(|d| DkimResult {
            domain: clean_domain(&d.domain),
            selector: clean_text(&d.selector, MAX_TEXT),
            result: one_of(&d.result, DKIM_RESULTS, "permerror"),
        })
        .collect();
    Some(DmarcObservation {
        at: obs.at,
        source_ip: obs.source_ip,
        header_from: clean_domain(&obs.header_from),
        envelope_from: clean_domain(&obs.envelope_from),
        policy,
        rua: obs
            .rua
            .iter()
            .take(MAX_RUA)
            .map(|u| clean_text(u, MAX_URI))
            .filter(|u| !u.is_empty())
            .collect(),
        disposition: obs.disposition,
        dkim_aligned: obs.dkim_aligned,
        spf_aligned: obs.spf_aligned,
        overrides,
        dkim,
        spf: SpfResult {
            domain: clean_domain(&obs.spf.domain),
            helo: obs.spf.helo,
            result: one_of(&obs.spf.result, SPF_RESULTS, "permerror"),
        },
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{Alignment, Policy};

    pub(crate) fn obs(domain: &str, ip: &str, dkim: &str) -> DmarcObservation {
        DmarcObservation {
            at: 1_700_000_000,
            source_ip: ip.parse().unwrap(),
            header_from: domain.to_owned(),
            envelope_from: domain.to_owned(),
            policy: PolicyPublished {
                domain: domain.to_owned(),
                adkim: Alignment::Relaxed,
                aspf: Alignment::Relaxed,
                p: Policy::Reject,
                sp: Policy::Reject,
                pct: 100,
                fo: "0".into(),
            },
            rua: vec![format!("mailto:dmarc@{domain}")],
            disposition: Disposition::None,
            dkim_aligned: AlignedResult::Pass,
            spf_aligned: AlignedResult::Fail,
            overrides: vec![],
            dkim: vec![DkimResult {
                domain: domain.to_owned(),
                selector: "s1".into(),
                result: dkim.into(),
            }],
            spf: SpfResult {
                domain: domain.to_owned(),
                helo: false,
                result: "softfail".into(),
            },
        }
    }

    fn row(domain: &str, ip: &str, dkim: &str) -> Row<Dmarc> {
        Dmarc::split(obs(domain, ip, dkim))
    }

    const CAPS: Caps = Caps {
        max_domains: 2,
        max_rows: 3,
    };

    #[test]
    fn same_source_and_results_count_in_one_row() {
        let mut p: Period = Period::new(0, 86_400);
        assert_eq!(
            p.add(row("a.test", "192.0.2.1", "pass"), CAPS),
            Added::NewRow
        );
        assert_eq!(
            p.add(row("a.test", "192.0.2.1", "pass"), CAPS),
            Added::Counted
        );
        assert_eq!(
            p.add(row("a.test", "192.0.2.2", "pass"), CAPS),
            Added::NewRow
        );
        assert_eq!(
            p.add(row("a.test", "192.0.2.1", "fail"), CAPS),
            Added::NewRow
        );
        let rows = &p.domains["a.test"].rows;
        assert_eq!(rows.len(), 3);
        assert_eq!(rows.values().sum::<u64>(), 4);
        assert_eq!(p.rows, 3);
    }

    #[test]
    fn caps_drop_new_domains_and_rows_but_count_known_rows() {
        let mut p: Period = Period::new(0, 86_400);
        p.add(row("a.test", "192.0.2.1", "pass"), CAPS);
        p.add(row("b.test", "192.0.2.1", "pass"), CAPS);
        assert_eq!(
            p.add(row("c.test", "192.0.2.1", "pass"), CAPS),
            Added::DomainCap
        );
        assert_eq!(p.dropped_domains, 1);
        p.add(row("a.test", "192.0.2.2", "pass"), CAPS);
        assert_eq!(
            p.add(row("a.test", "192.0.2.3", "pass"), CAPS),
            Added::RowCap
        );
        assert_eq!(
            p.add(row("b.test", "192.0.2.3", "pass"), CAPS),
            Added::RowCap
        );
        assert_eq!(
            p.add(row("a.test", "192.0.2.2", "pass"), CAPS),
            Added::Counted
        );
        assert_eq!(p.domains["a.test"].dropped, 1);
        assert_eq!(p.domains["b.test"].dropped, 1);
        assert_eq!(p.rows, 3);
        assert!(!p.domains.contains_key("c.test"));
    }

    #[test]
    fn clean_bounds_and_normalises_what_peers_control() {
        let mut o = obs("A.Test", "192.0.2.1", "PASS");
        o.header_from = format!("x\u{1}y{}", "z".repeat(1000));
        o.dkim = (0..100)
            .map(|i| DkimResult {
                domain: format!("d{i}.test"),
                selector: "s\r\n<x>".into(),
                result: "weird".into(),
            })
            .collect();
        o.overrides = vec!["FORWARDED".into(), "made_up".into(), "forwarded".into()];
        o.spf.result = "SoftFail".into();
        o.rua = vec![String::new(); 50];
        let c = clean(o).unwrap();
        assert_eq!(c.policy.domain, "a.test");
        assert!(c.header_from.len() <= MAX_TEXT);
        assert!(c.header_from.starts_with("xyzz"));
        assert_eq!(c.dkim.len(), MAX_DKIM);
        assert_eq!(c.dkim[0].selector, "s<x>");
        assert_eq!(c.dkim[0].result, "permerror");
        assert_eq!(c.overrides, ["forwarded", "other"]);
        assert_eq!(c.spf.result, "softfail");
        assert!(c.rua.is_empty());
        let mut none = obs("", "192.0.2.1", "pass");
        none.policy.domain = " \u{7} ".into();
        assert!(clean(none).is_none());
    }

    #[test]
    fn text_is_cut_at_a_character_boundary() {
        let s = "é".repeat(200);
        let c = clean_text(&s, 255);
        assert!(c.len() <= 255);
        assert_eq!(c.chars().count(), 127);
    }

    #[test]
    fn periods_align_to_the_interval() {
        assert_eq!(period_begin(1_700_000_000, 86_400), 1_699_920_000);
        assert_eq!(period_begin(86_400, 86_400), 86_400);
        assert_eq!(period_begin(3_599, 3_600), 0);
    }
}
