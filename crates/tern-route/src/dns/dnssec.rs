//! DNSSEC states of answers, TLSA answers and the trust anchor (for DANE, RFC 7672).
//!
//! Purpose: a validating [`Resolver`](super::Resolver) (built by
//! [`Resolver::validating`](super::Resolver::validating) over the same `[dns]` name
//! servers, same timeouts, its own bounded cache) asks with the DO bit and lets hickory
//! validate every RRset up to the trust anchor. This module turns what hickory says into
//! one [`Dnssec`] state per answer, kept in the cache next to the answer (key: name and
//! type), so a cached answer is never served with a better state than it had.
//!
//! States (RFC 4033 §5, RFC 7672 §2.1):
//! - an answer whose every record (CNAMEs of the chain included) hickory proved is
//!   [`Dnssec::Secure`]; any record bogus makes it [`Dnssec::Bogus`]; any not proven
//!   either way makes it [`Dnssec::Indeterminate`]; otherwise (a record of an unsigned
//!   zone below an insecure delegation) [`Dnssec::Insecure`];
//! - NXDOMAIN/NODATA is `Secure` when the response carried NSEC or NSEC3 records hickory
//!   proved (hickory checks they deny the name or type, and fails the lookup if they do
//!   not), `Insecure` when every authority record was proven insecure;
//! - hickory's "DNSSEC validation failed" is `Bogus`; a timeout, SERVFAIL or any other
//!   failure is `Indeterminate` (RFC 7672 §2.1.1 treats both alike: the mail waits).
//!
//! The trust anchor ([`TrustAnchor`]): DNSKEY records in zone file presentation form
//! (`name [ttl] IN DNSKEY flags 3 alg key`), root or any zone (a test zone's own key);
//! default: the IANA root KSKs hickory ships (20326 and 38696). DS records are refused
//! with a message saying so: hickory's validator takes keys, not digests.
//!
//! Trust: answers come from the network; TLSA data is bounded by the DNS message size
//! (64 KiB) and nothing here panics on it. The anchor file is read once, bounded
//! (64 KiB), without following a link.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::dnssec::{Proof, TrustAnchors};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

use super::answer::Outcome;
use super::{DnsConfig, DnsError};

/// Largest trust anchor file read.
const MAX_ANCHOR_BYTES: u64 = 64 * 1024;

/// What DNSSEC validation said about one answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dnssec {
    /// Every record, or the denial of existence, chains to the trust anchor.
    Secure,
    /// The answer lies below a proven insecure delegation (an unsigned zone).
    Insecure,
    /// Validation failed: signatures that do not verify, a DS matching no key, a denial
    /// without proof. The text says what hickory reported.
    Bogus(String),
    /// Not decided: the lookup failed (timeout, SERVFAIL, network), or this resolver does
    /// not validate, or the name was never asked (an address literal, an invalid name).
    Indeterminate(String),
}

impl Dnssec {
    /// Whether this is [`Dnssec::Secure`].
    pub fn is_secure(&self) -> bool {
        matches!(self, Dnssec::Secure)
    }

    /// The weaker of two states (bogus < indeterminate < insecure < secure): the state of
    /// an answer built from both.
    pub fn weaker(self, other: Dnssec) -> Dnssec {
        fn rank(d: &Dnssec) -> u8 {
            match d {
                Dnssec::Bogus(_) => 0,
                Dnssec::Indeterminate(_) => 1,
                Dnssec::Insecure => 2,
                Dnssec::Secure => 3,
            }
        }
        if rank(&other) < rank(&self) {
            other
        } else {
            self
        }
    }

    /// A short word for logs and events.
    pub fn as_str(&self) -> &'static str {
        match self {
            Dnssec::Secure => "secure",
            Dnssec::Insecure => "insecure",
            Dnssec::Bogus(_) => "bogus",
            Dnssec::Indeterminate(_) => "indeterminate",
        }
    }
}

impl std::fmt::Display for Dnssec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dnssec::Bogus(why) | Dnssec::Indeterminate(why) => {
                write!(f, "{} ({why})", self.as_str())
            }
            _ => f.write_str(self.as_str()),
        }
    }
}

/// An answer and the DNSSEC state it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked<T> {
    /// The answer, as the plain lookup gives it.
    pub answer: T,
    /// Its DNSSEC state.
    pub dnssec: Dnssec,
}

impl<T> Checked<T> {
    pub(crate) fn unasked(answer: T) -> Checked<T> {
        Checked {
            answer,
            dnssec: Dnssec::Indeterminate("not asked in DNS".to_owned()),
        }
    }
}

/// One TLSA record as published (RFC 6698 §2.1), the numbers as they are on the wire:
/// which of them are usable is the caller's rule (RFC 7672 §3.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsaRecord {
    /// Certificate usage.
    pub usage: u8,
    /// Selector.
    pub selector: u8,
    /// Matching type.
    pub matching: u8,
    /// Certificate association data.
    pub data: Vec<u8>,
}

/// Why a trust anchor file cannot be used. A configuration error: Tern does not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustAnchorError {
    /// The file could not be opened or read (a link is refused), or is over 64 KiB.
    #[error("reading the trust anchor {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// What failed.
        reason: String,
    },
    /// The text is not DNSKEY records in presentation form (DS records are refused).
    #[error("the trust anchor {path} is not usable: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// The keys validation starts from.
#[derive(Clone)]
pub struct TrustAnchor(Arc<TrustAnchors>);

impl std::fmt::Debug for TrustAnchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TrustAnchor")
    }
}

impl TrustAnchor {
    /// The IANA root zone's KSKs shipped with hickory.
    pub fn iana_root() -> TrustAnchor {
        TrustAnchor(Arc::new(TrustAnchors::default()))
    }

    /// DNSKEY records from `text` (presentation form, one record a line, comments after
    /// `;`).
    pub fn parse(text: &str, path: &str) -> Result<TrustAnchor, TrustAnchorError> {
        let parse_err = |reason: String| TrustAnchorError::Parse {
            path: path.to_owned(),
            reason,
        };
        // hickory's parser knows DNSKEY only; say clearly what else was found.
        for line in text.lines() {
            let line = line.split(';').next().unwrap_or_default();
            if line
                .split_whitespace()
                .any(|w| w.eq_ignore_ascii_case("DS"))
            {
                return Err(parse_err(
                    "DS records are not supported: give the zone's DNSKEY records (e.g. `kdig DNSKEY <zone>`, checked against the DS)".to_owned(),
                ));
            }
        }
        let anchors: TrustAnchors = text.parse().map_err(|e| parse_err(format!("{e}")))?;
        let keys = text
            .lines()
            .filter(|l| {
                l.split(';')
                    .next()
                    .unwrap_or_default()
                    .split_whitespace()
                    .any(|w| w.eq_ignore_ascii_case("DNSKEY"))
            })
            .count();
        if keys == 0 {
            return Err(parse_err("no DNSKEY record".to_owned()));
        }
        Ok(TrustAnchor(Arc::new(anchors)))
    }

    /// Reads and parses the file at `path` (not following a link, at most 64 KiB).
    pub fn from_file(path: &Path) -> Result<TrustAnchor, TrustAnchorError> {
        let shown = path.display().to_string();
        let read_err = |reason: String| TrustAnchorError::Read {
            path: shown.clone(),
            reason,
        };
        let file = open_nofollow(path).map_err(|e| read_err(e.to_string()))?;
        let mut text = String::new();
        file.take(MAX_ANCHOR_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| read_err(e.to_string()))?;
        if text.len() as u64 > MAX_ANCHOR_BYTES {
            return Err(read_err("larger than 64 KiB".to_owned()));
        }
        TrustAnchor::parse(&text, &shown)
    }

    pub(crate) fn into_hickory(self) -> Arc<TrustAnchors> {
        self.0
    }
}

fn open_nofollow(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NOFOLLOW: a link in the last component is refused (ELOOP).
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// `_<port>._tcp.<host>.` as a DNS name (`host` already validated and normalised).
pub(crate) fn tlsa_name(host: &str, port: u16) -> Option<Name> {
    Name::from_ascii(format!("_{port}._tcp.{host}.")).ok()
}

fn state_of_records<'a>(records: impl Iterator<Item = &'a Record>) -> Option<Dnssec> {
    let mut state: Option<Dnssec> = None;
    for r in records {
        let s = match r.proof {
            Proof::Secure => Dnssec::Secure,
            Proof::Insecure => Dnssec::Insecure,
            Proof::Bogus => Dnssec::Bogus(format!("{} {}", r.name, r.record_type())),
            Proof::Indeterminate => {
                Dnssec::Indeterminate(format!("{} {} not proven", r.name, r.record_type()))
            }
        };
        state = Some(match state {
            Some(prev) => prev.weaker(s),
            None => s,
        });
    }
    state
}

/// The DNSSEC state of one lookup's result (`None`: our own deadline passed). See the
/// module header.
pub(crate) fn state_of(result: Option<&Result<Lookup, NetError>>) -> Dnssec {
    match result {
        None => Dnssec::Indeterminate("timed out".to_owned()),
        Some(Ok(lookup)) => state_of_records(lookup.answers().iter())
            .unwrap_or_else(|| Dnssec::Indeterminate("empty answer".to_owned())),
        Some(Err(NetError::Dns(HickoryDnsError::NoRecordsFound(no)))) => {
            let authorities = no.authorities.as_deref().unwrap_or_default();
            let proven_denial = authorities.iter().any(|r| {
                r.proof == Proof::Secure
                    && matches!(r.record_type(), RecordType::NSEC | RecordType::NSEC3)
            });
            match state_of_records(authorities.iter()) {
                Some(Dnssec::Bogus(why)) => Dnssec::Bogus(why),
                _ if proven_denial => Dnssec::Secure,
                Some(Dnssec::Insecure) => Dnssec::Insecure,
                _ => Dnssec::Indeterminate("denial of existence without proof".to_owned()),
            }
        }
        Some(Err(NetError::Dns(HickoryDnsError::DnssecBogus))) => {
            Dnssec::Bogus("DNSSEC validation failed".to_owned())
        }
        Some(Err(NetError::Dns(HickoryDnsError::Nsec { proof, .. }))) => match proof {
            Proof::Bogus => Dnssec::Bogus("denial of existence does not validate".to_owned()),
            Proof::Insecure => Dnssec::Insecure,
            _ => Dnssec::Indeterminate("denial of existence not proven".to_owned()),
        },
        Some(Err(e)) => Dnssec::Indeterminate(e.to_string()),
    }
}

/// The TLSA answer for `host` and how long it may be cached (the same lifetimes as the
/// other answers, `answer.rs`).
pub(crate) fn tlsa_answer(
    host: &str,
    outcome: Outcome,
    cfg: &DnsConfig,
) -> (Result<Arc<Vec<TlsaRecord>>, DnsError>, Duration) {
    match outcome {
        Outcome::Answer(records) => {
            let ttl = cfg.positive_ttl(records.iter().map(|r| r.ttl).min().unwrap_or(0));
            let tlsa = records
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TLSA(t) => Some(TlsaRecord {
                        usage: t.cert_usage.into(),
                        selector: t.selector.into(),
                        matching: t.matching.into(),
                        data: t.cert_data.clone(),
                    }),
                    _ => None,
                })
                .collect();
            (Ok(Arc::new(tlsa)), ttl)
        }
        Outcome::NoData { negative_ttl } | Outcome::NxDomain { negative_ttl } => {
            (Ok(Arc::new(Vec::new())), cfg.negative_ttl(negative_ttl))
        }
        Outcome::Failed(reason) => (
            Err(DnsError::Temporary {
                name: host.to_owned(),
                reason: format!("TLSA lookup: {reason}"),
            }),
            cfg.failure_ttl,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weaker_orders_states() {
        let b = Dnssec::Bogus("x".into());
        let i = Dnssec::Indeterminate("y".into());
        assert_eq!(Dnssec::Secure.weaker(Dnssec::Insecure), Dnssec::Insecure);
        assert_eq!(Dnssec::Insecure.weaker(i.clone()), i);
        assert_eq!(i.clone().weaker(b.clone()), b);
        assert_eq!(Dnssec::Secure.weaker(Dnssec::Secure), Dnssec::Secure);
    }

    #[test]
    fn anchors_take_dnskey_and_refuse_ds() {
        let key = "dane.test. 3600 IN DNSKEY 257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpVXckHAeF+KkxLbxILfDLUT0rAK9iUzy1L53eKGQ==";
        assert!(TrustAnchor::parse(key, "t").is_ok());
        let ds = "dane.test. IN DS 2371 13 2 1F987CC6583E92DF0890718C42";
        assert!(matches!(
            TrustAnchor::parse(ds, "t"),
            Err(TrustAnchorError::Parse { .. })
        ));
        assert!(TrustAnchor::parse("; nothing\n", "t").is_err());
        assert!(TrustAnchor::parse("garbage here", "t").is_err());
    }

    #[test]
    fn anchor_file_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("anchor");
        std::fs::write(&real, "x. IN DNSKEY 257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpVXckHAeF+KkxLbxILfDLUT0rAK9iUzy1L53eKGQ==\n").unwrap();
        assert!(TrustAnchor::from_file(&real).is_ok());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(matches!(
            TrustAnchor::from_file(&link),
            Err(TrustAnchorError::Read { .. })
        ));
    }

    #[test]
    fn tlsa_names_and_answers() {
        assert_eq!(
            tlsa_name("mx.example.com", 25).unwrap().to_ascii(),
            "_25._tcp.mx.example.com."
        );
        let cfg = DnsConfig::default();
        let (none, _) = tlsa_answer(
            "mx",
            Outcome::NxDomain {
                negative_ttl: Some(30),
            },
            &cfg,
        );
        assert!(none.unwrap().is_empty());
        let (failed, ttl) = tlsa_answer("mx", Outcome::Failed("SERVFAIL".into()), &cfg);
        assert!(failed.is_err());
        assert_eq!(ttl, cfg.failure_ttl);
    }
}
