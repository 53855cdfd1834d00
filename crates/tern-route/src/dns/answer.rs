//! Turning hickory's lookup results into Tern's answers and cache lifetimes.
//!
//! Purpose: the one place that decides what a DNS response means for mail routing and
//! how long it may be remembered. Pure functions, unit-tested without a network.
//!
//! Rules:
//! - Positive answers live for the smallest TTL among the answer records (CNAMEs of the
//!   chain included), clamped to `[min_ttl, max_ttl]`.
//! - NXDOMAIN and NODATA live for the negative TTL of the SOA in the response (hickory
//!   computes min(SOA TTL, SOA minimum)), or 60 s without an SOA, capped at
//!   `negative_ttl_max`. `min_ttl` does not apply to them.
//! - Everything else (SERVFAIL, REFUSED, timeouts, network errors, malformed answers) is
//!   [`DnsError::Temporary`] and lives `failure_ttl`.
//! - An MX answer whose every exchange is the root (`.`) is a null MX (RFC 7505, which
//!   defines a single `0 .` record; several or another preference are treated alike). A
//!   root exchange mixed with real ones is dropped.
//!
//! Trust: everything here comes from the network; nothing panics, and TTL arithmetic
//! saturates.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, Record};

use super::{DnsConfig, DnsError, MxAnswer, MxRecord};

/// Negative-cache lifetime when the response carries no SOA.
pub(crate) const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(60);

/// What one query came to.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// The answer section (records of the asked type and any CNAMEs leading there).
    Answer(Vec<Record>),
    /// The name exists but has no record of the asked type.
    NoData { negative_ttl: Option<u32> },
    /// The name does not exist.
    NxDomain { negative_ttl: Option<u32> },
    /// Anything else; the text says what.
    Failed(String),
}

impl Outcome {
    /// Classifies a hickory result; `None` means our own deadline passed.
    pub(crate) fn from_lookup(result: Option<Result<Lookup, NetError>>) -> Outcome {
        match result {
            None => Outcome::Failed("timed out".to_owned()),
            Some(Ok(lookup)) => Outcome::Answer(lookup.answers().to_vec()),
            Some(Err(NetError::Dns(HickoryDnsError::NoRecordsFound(no)))) => {
                match no.response_code {
                    ResponseCode::NXDomain => Outcome::NxDomain {
                        negative_ttl: no.negative_ttl,
                    },
                    ResponseCode::NoError => Outcome::NoData {
                        negative_ttl: no.negative_ttl,
                    },
                    code => Outcome::Failed(format!("server answered {code}")),
                }
            }
            Some(Err(NetError::Dns(HickoryDnsError::ResponseCode(code)))) => {
                Outcome::Failed(format!("server answered {code}"))
            }
            Some(Err(NetError::Timeout)) => Outcome::Failed("timed out".to_owned()),
            Some(Err(other)) => Outcome::Failed(other.to_string()),
        }
    }
}

impl DnsConfig {
    /// Cache lifetime of a positive answer whose smallest TTL is `ttl` seconds.
    pub(crate) fn positive_ttl(&self, ttl: u32) -> Duration {
        Duration::from_secs(u64::from(ttl))
            .max(self.min_ttl)
            .min(self.max_ttl)
    }

    /// Cache lifetime of NXDOMAIN/NODATA.
    pub(crate) fn negative_ttl(&self, ttl: Option<u32>) -> Duration {
        ttl.map_or(DEFAULT_NEGATIVE_TTL, |t| Duration::from_secs(u64::from(t)))
            .min(self.negative_ttl_max)
    }
}

fn min_ttl(records: &[Record]) -> u32 {
    records.iter().map(|r| r.ttl).min().unwrap_or(0)
}

/// Lowercase presentation form without the trailing dot; the root is `""`.
fn host_text(name: &hickory_resolver::proto::rr::Name) -> String {
    let text = name.to_lowercase().to_ascii();
    match text.strip_suffix('.') {
        Some(t) => t.to_owned(),
        None => text,
    }
}

/// The MX answer for `name` and how long it may be cached.
pub(crate) fn mx_answer(
    name: &str,
    outcome: Outcome,
    cfg: &DnsConfig,
) -> (Result<Arc<MxAnswer>, DnsError>, Duration) {
    match outcome {
        Outcome::Answer(records) => {
            let ttl = cfg.positive_ttl(min_ttl(&records));
            let mx: Vec<MxRecord> = records
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some(MxRecord {
                        preference: mx.preference,
                        exchange: host_text(&mx.exchange),
                    }),
                    _ => None,
                })
                .collect();
            let answer = if mx.is_empty() {
                MxAnswer::NoMx
            } else if mx.iter().all(|r| r.exchange.is_empty()) {
                MxAnswer::NullMx
            } else {
                MxAnswer::Records(mx.into_iter().filter(|r| !r.exchange.is_empty()).collect())
            };
            (Ok(Arc::new(answer)), ttl)
        }
        Outcome::NoData { negative_ttl } => {
            (Ok(Arc::new(MxAnswer::NoMx)), cfg.negative_ttl(negative_ttl))
        }
        Outcome::NxDomain { negative_ttl } => (
            Err(DnsError::NxDomain {
                name: name.to_owned(),
            }),
            cfg.negative_ttl(negative_ttl),
        ),
        Outcome::Failed(reason) => (
            Err(DnsError::Temporary {
                name: name.to_owned(),
                reason: format!("MX lookup: {reason}"),
            }),
            cfg.failure_ttl,
        ),
    }
}

/// The most TXT records kept from one answer.
pub(crate) const MAX_TXT_RECORDS: usize = 16;

/// The TXT answer for `name` (each record's strings joined) and how long it may be cached.
pub(crate) fn txt_answer(
    name: &str,
    outcome: Outcome,
    cfg: &DnsConfig,
) -> (Result<Arc<Vec<String>>, DnsError>, Duration) {
    match outcome {
        Outcome::Answer(records) => {
            let ttl = cfg.positive_ttl(min_ttl(&records));
            let texts: Vec<String> = records
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(txt) => {
                        let bytes: Vec<u8> = txt
                            .txt_data
                            .iter()
                            .flat_map(|s| s.iter().copied())
                            .collect();
                        String::from_utf8(bytes).ok()
                    }
                    _ => None,
                })
                .take(MAX_TXT_RECORDS)
                .collect();
            (Ok(Arc::new(texts)), ttl)
        }
        Outcome::NoData { negative_ttl } | Outcome::NxDomain { negative_ttl } => {
            (Ok(Arc::new(Vec::new())), cfg.negative_ttl(negative_ttl))
        }
        Outcome::Failed(reason) => (
            Err(DnsError::Temporary {
                name: name.to_owned(),
                reason: format!("TXT lookup: {reason}"),
            }),
            cfg.failure_ttl,
        ),
    }
}

/// What one address family (A or AAAA) came to, with its cache lifetime.
enum Family {
    Addrs(Vec<IpAddr>, Duration),
    Empty(Duration),
    NxDomain(Duration),
    Failed(String),
}

fn family(outcome: Outcome, cfg: &DnsConfig) -> Family {
    match outcome {
        Outcome::Answer(records) => {
            let ttl = cfg.positive_ttl(min_ttl(&records));
            let addrs: Vec<IpAddr> = records
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })
                .collect();
            if addrs.is_empty() {
                Family::Empty(ttl)
            } else {
                Family::Addrs(addrs, ttl)
            }
        }
        Outcome::NoData { negative_ttl } => Family::Empty(cfg.negative_ttl(negative_ttl)),
        Outcome::NxDomain { negative_ttl } => Family::NxDomain(cfg.negative_ttl(negative_ttl)),
        Outcome::Failed(reason) => Family::Failed(reason),
    }
}

/// Combines the A and AAAA outcomes for `name`: IPv4 addresses first, then IPv6, each in
/// the order of the answer.
///
/// One family failing while the other has addresses is an answer (cached no longer than
/// `failure_ttl`, so the failed family is asked again soon); a failure with no addresses
/// from the other family is a failure. NXDOMAIN needs no addresses from either side.
pub(crate) fn addrs_answer(
    name: &str,
    a: Outcome,
    aaaa: Outcome,
    cfg: &DnsConfig,
) -> (Result<Arc<Vec<IpAddr>>, DnsError>, Duration) {
    use Family::*;
    let (a, aaaa) = (family(a, cfg), family(aaaa, cfg));
    let ok = |addrs: Vec<IpAddr>, ttl: Duration| (Ok(Arc::new(addrs)), ttl);
    match (a, aaaa) {
        (Addrs(mut v4, t4), Addrs(v6, t6)) => {
            v4.extend(v6);
            ok(v4, t4.min(t6))
        }
        (Addrs(v, t), Empty(o) | NxDomain(o)) | (Empty(o) | NxDomain(o), Addrs(v, t)) => {
            ok(v, t.min(o))
        }
        (Addrs(v, t), Failed(_)) | (Failed(_), Addrs(v, t)) => ok(v, t.min(cfg.failure_ttl)),
        (Failed(reason), _) | (_, Failed(reason)) => (
            Err(DnsError::Temporary {
                name: name.to_owned(),
                reason: format!("address lookup: {reason}"),
            }),
            cfg.failure_ttl,
        ),
        (NxDomain(t), NxDomain(o)) | (NxDomain(t), Empty(o)) | (Empty(o), NxDomain(t)) => (
            Err(DnsError::NxDomain {
                name: name.to_owned(),
            }),
            t.min(o),
        ),
        (Empty(t), Empty(o)) => ok(Vec::new(), t.min(o)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::rr::Name;
    use hickory_resolver::proto::rr::rdata::{A, AAAA, CNAME, MX};
    use std::str::FromStr;

    fn n(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    fn mx(pref: u16, exchange: &str, ttl: u32) -> Record {
        Record::from_rdata(
            n("example.test."),
            ttl,
            RData::MX(MX::new(pref, n(exchange))),
        )
    }

    fn a(ip: [u8; 4], ttl: u32) -> Record {
        Record::from_rdata(
            n("h.test."),
            ttl,
            RData::A(A::from(std::net::Ipv4Addr::from(ip))),
        )
    }

    fn aaaa(ip: &str, ttl: u32) -> Record {
        let ip: std::net::Ipv6Addr = ip.parse().unwrap();
        Record::from_rdata(n("h.test."), ttl, RData::AAAA(AAAA::from(ip)))
    }

    fn cfg() -> DnsConfig {
        DnsConfig::default()
    }

    #[test]
    fn txt_strings_are_joined_and_absence_is_an_empty_list() {
        use hickory_resolver::proto::rr::rdata::TXT;
        let rec = |parts: Vec<&[u8]>, ttl| {
            Record::from_rdata(
                n("_mta-sts.example.test."),
                ttl,
                RData::TXT(TXT::from_bytes(parts)),
            )
        };
        let out = Outcome::Answer(vec![
            rec(vec![b"v=STSv1; ", b"id=20261207;"], 600),
            rec(vec![b"\xff\xfe"], 300),
            rec(vec![b"other"], 900),
        ]);
        let (answer, ttl) = txt_answer("_mta-sts.example.test", out, &cfg());
        assert_eq!(
            answer.unwrap().as_slice(),
            ["v=STSv1; id=20261207;".to_string(), "other".to_string()]
        );
        assert_eq!(ttl, Duration::from_secs(300));
        let (answer, _) = txt_answer("x", Outcome::NxDomain { negative_ttl: None }, &cfg());
        assert!(answer.unwrap().is_empty());
        let (answer, ttl) = txt_answer("x", Outcome::Failed("SERVFAIL".into()), &cfg());
        assert!(answer.unwrap_err().is_temporary());
        assert_eq!(ttl, cfg().failure_ttl);
    }

    #[test]
    fn mx_records_lowercased_and_ttl_is_the_minimum() {
        let out = Outcome::Answer(vec![
            mx(10, "MX1.Example.Test.", 300),
            mx(20, "mx2.example.test.", 120),
            Record::from_rdata(n("example.test."), 30, RData::CNAME(CNAME(n("x.test.")))),
        ]);
        let (answer, ttl) = mx_answer("example.test", out, &cfg());
        assert_eq!(ttl, Duration::from_secs(30));
        let MxAnswer::Records(records) = answer.unwrap().as_ref().clone() else {
            panic!("not records");
        };
        assert_eq!(records[0].exchange, "mx1.example.test");
        assert_eq!(
            (records[1].preference, records[1].exchange.as_str()),
            (20, "mx2.example.test")
        );
    }

    #[test]
    fn null_mx_and_mixed_root() {
        let (answer, _) = mx_answer("d", Outcome::Answer(vec![mx(0, ".", 60)]), &cfg());
        assert_eq!(*answer.unwrap(), MxAnswer::NullMx);
        let (answer, _) = mx_answer(
            "d",
            Outcome::Answer(vec![mx(0, ".", 60), mx(10, "mx.test.", 60)]),
            &cfg(),
        );
        assert_eq!(
            *answer.unwrap(),
            MxAnswer::Records(vec![MxRecord {
                preference: 10,
                exchange: "mx.test".into()
            }])
        );
        let (answer, _) = mx_answer("d", Outcome::Answer(vec![]), &cfg());
        assert_eq!(*answer.unwrap(), MxAnswer::NoMx);
    }

    #[test]
    fn ttl_clamps() {
        let c = DnsConfig {
            min_ttl: Duration::from_secs(10),
            max_ttl: Duration::from_secs(100),
            negative_ttl_max: Duration::from_secs(40),
            failure_ttl: Duration::from_secs(7),
            ..DnsConfig::default()
        };
        let ttl = |recs| mx_answer("d", Outcome::Answer(recs), &c).1;
        assert_eq!(ttl(vec![mx(1, "a.", 0)]), Duration::from_secs(10));
        assert_eq!(ttl(vec![mx(1, "a.", 50)]), Duration::from_secs(50));
        assert_eq!(ttl(vec![mx(1, "a.", u32::MAX)]), Duration::from_secs(100));
        let neg = |t| mx_answer("d", Outcome::NoData { negative_ttl: t }, &c).1;
        assert_eq!(
            neg(Some(5)),
            Duration::from_secs(5),
            "min_ttl does not apply"
        );
        assert_eq!(neg(Some(500)), Duration::from_secs(40));
        assert_eq!(neg(None), Duration::from_secs(40));
        assert_eq!(
            DnsConfig::default().negative_ttl(None),
            DEFAULT_NEGATIVE_TTL
        );
        let (err, t) = mx_answer("d", Outcome::Failed("x".into()), &c);
        assert!(matches!(err, Err(DnsError::Temporary { .. })));
        assert_eq!(t, Duration::from_secs(7));
        let (err, t) = mx_answer(
            "d",
            Outcome::NxDomain {
                negative_ttl: Some(3),
            },
            &c,
        );
        assert!(matches!(err, Err(DnsError::NxDomain { .. })));
        assert_eq!(t, Duration::from_secs(3));
    }

    #[test]
    fn address_families_combine() {
        let c = DnsConfig {
            failure_ttl: Duration::from_secs(5),
            ..DnsConfig::default()
        };
        let v4 = || Outcome::Answer(vec![a([192, 0, 2, 1], 100)]);
        let v6 = || Outcome::Answer(vec![aaaa("2001:db8::1", 50)]);
        let nodata = || Outcome::NoData {
            negative_ttl: Some(20),
        };
        let nx = || Outcome::NxDomain {
            negative_ttl: Some(30),
        };
        let fail = || Outcome::Failed("SERVFAIL".into());

        let (r, t) = addrs_answer("h", v6(), v4(), &c);
        // The first argument is A: here it carries AAAA records, which still count.
        assert_eq!(r.unwrap().len(), 2);
        assert_eq!(t, Duration::from_secs(50));

        let (r, t) = addrs_answer("h", v4(), nodata(), &c);
        assert_eq!(*r.unwrap(), vec!["192.0.2.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(t, Duration::from_secs(20));

        let (r, t) = addrs_answer("h", v4(), fail(), &c);
        assert_eq!(r.unwrap().len(), 1);
        assert_eq!(t, Duration::from_secs(5));

        let (r, _) = addrs_answer("h", fail(), nodata(), &c);
        assert!(matches!(r, Err(DnsError::Temporary { .. })));
        let (r, _) = addrs_answer("h", nx(), fail(), &c);
        assert!(matches!(r, Err(DnsError::Temporary { .. })));

        let (r, t) = addrs_answer("h", nx(), nx(), &c);
        assert!(matches!(r, Err(DnsError::NxDomain { .. })));
        assert_eq!(t, Duration::from_secs(30));

        let (r, t) = addrs_answer("h", nodata(), nodata(), &c);
        assert!(r.unwrap().is_empty());
        assert_eq!(t, Duration::from_secs(20));
    }

    #[test]
    fn timeouts_are_failures() {
        assert!(matches!(Outcome::from_lookup(None), Outcome::Failed(_)));
        assert!(matches!(
            Outcome::from_lookup(Some(Err(NetError::Timeout))),
            Outcome::Failed(_)
        ));
        assert!(matches!(
            Outcome::from_lookup(Some(Err(NetError::Dns(HickoryDnsError::ResponseCode(
                ResponseCode::ServFail
            ))))),
            Outcome::Failed(_)
        ));
    }
}
