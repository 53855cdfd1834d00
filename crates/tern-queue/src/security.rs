//! The TLS policy in force for each host of a destination, and why (sans-I/O).
//!
//! Precedence (docs/TLS.md): **DANE over MTA-STS over the route's `tls`**, as RFC 8461 §2
//! and Postfix order them.
//! - DANE applies when the route says `dane` or `dane-only` and the host's MX and TLSA
//!   records are DNSSEC-secure and usable ([`DaneState::Usable`]): TLS required, the
//!   certificate matched against the records. A bogus answer ([`DaneState::Bogus`])
//!   defers: the host is not tried. Under `dane-only` a host without usable records is
//!   not tried either.
//! - Otherwise the domain's MTA-STS policy, when it has one: `enforce` tries only the MX
//!   hosts its `mx` patterns match, with `verify` (WebPKI chain and the MX name);
//!   `testing` connects as the route says and audits the certificate for the report.
//! - Otherwise the route's `tls` (`dane` falls back to `may`).
//!
//! Every decision names its source and reason ([`HostTls::reason`]); they go into the
//! attempt's events, the tracking record and the destinations' view. Each decision that
//! involves a policy (or none, for `no-policy-found`) also says how a session under it is
//! reported (RFC 8460, [`HostTls::report`]).
//!
//! Invariant: no path here weakens what the route asks. A route `verify`, `encrypt` or
//! `none` is what its administrator chose; MTA-STS and DANE only apply on top of `may`,
//! `dane` and `dane-only` (an administrator who set `none` or `encrypt` for a route keeps
//! exactly that, and the reason says so).

use std::sync::Arc;

use tern_deliver::{DaneTlsa, TlsPolicy as Wire, TlsRequest};
use tern_reports::tlsrpt::{TlsPolicyInForce, TlsPolicyType, TlsResultType};
use tern_route::TlsPolicy as RouteTls;

/// What DNSSEC said about one MX host, for a route that asks for DANE.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(dead_code)] // `Usable` and `Bogus` come with the DANE lookups (dane.rs).
pub(crate) enum DaneState {
    /// The route does not ask for DANE: no validated lookups were made.
    NotAsked,
    /// The MX and TLSA records are secure, and these records are usable.
    Usable(Arc<DaneTlsa>),
    /// No usable records: insecure MX or address records, no TLSA, or only unusable
    /// (PKIX) records. The reason says which.
    NotUsable(String),
    /// Validation failed (bogus): the host must not be tried.
    Bogus(String),
}

/// A domain's MTA-STS policy as the decision needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StsView {
    /// `enforce` (true) or `testing` (false). `none` policies never reach here.
    pub enforce: bool,
    /// The policy's `mx` patterns (`mail.example.com`, `*.example.net`), lowercase.
    pub mx: Vec<String>,
    /// The policy's text, one line each, for the report's `policy-string`.
    pub lines: Vec<String>,
    /// The TXT record's `id`.
    pub id: String,
}

/// The domain's MTA-STS state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StsState {
    /// MTA-STS is off for this route, or the domain publishes no policy (or `none`).
    None,
    /// A policy in force (fresh or cached).
    Policy(Arc<StsView>),
    /// The domain announces a policy, but it could not be fetched and none is cached:
    /// delivered as the route says, and reported with this result type.
    Failed {
        /// `sts-policy-fetch-error`, `sts-policy-invalid` or `sts-webpki-invalid`.
        result: TlsResultType,
        /// Why.
        reason: String,
    },
}

/// Where a host's policy came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    /// The host's TLSA records.
    Dane,
    /// The domain's MTA-STS policy in `enforce`.
    StsEnforce,
    /// The domain's MTA-STS policy in `testing`.
    StsTesting,
    /// The route's `tls`.
    Route,
}

impl Source {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Source::Dane => "dane",
            Source::StsEnforce => "mta-sts",
            Source::StsTesting => "mta-sts-testing",
            Source::Route => "route",
        }
    }
}

/// The policy one host is tried under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostTls {
    /// What the connection's TLS must satisfy.
    pub request: TlsRequest,
    /// Where it came from.
    pub source: Source,
    /// Why, in words an administrator reads (bounded: built from names and short texts).
    pub reason: String,
    /// How sessions under it are reported (RFC 8460); `None`: not reported.
    pub report: Option<TlsPolicyInForce>,
    /// A failure known before connecting, reported for the session unless the
    /// certificate audit or STARTTLS already failed it: an MX host the MTA-STS policy in
    /// `testing` does not list (`validation-failure`, as `enforce` would refuse it; RFC
    /// 8461 §5, "testing": deliver, but report).
    pub known_failure: Option<TlsResultType>,
}

/// A host the policy forbids trying, and how that is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The reply text the recipients are deferred with (`4.7.5 ...`).
    pub reason: String,
    /// The report's result type and the policy it is filed under.
    pub report: Option<(TlsResultType, TlsPolicyInForce)>,
}

/// Whether `host` matches an MTA-STS `mx` pattern (RFC 8461 §4.1: exact, or `*.` for one
/// leftmost label).
pub(crate) fn sts_mx_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => host == pattern,
    }
}

fn tlsa_in_force(domain: &str, host: &str, d: &DaneTlsa) -> TlsPolicyInForce {
    TlsPolicyInForce {
        policy_type: TlsPolicyType::Tlsa,
        policy_string: d
            .records
            .iter()
            .map(|r| {
                let hex: String = r.data.iter().map(|b| format!("{b:02x}")).collect();
                format!("{} {} {} {}", r.usage, r.selector, r.matching, hex)
            })
            .collect(),
        policy_domain: domain.to_ascii_lowercase(),
        mx_host: vec![host.to_ascii_lowercase()],
    }
}

fn sts_in_force(domain: &str, sts: &StsView) -> TlsPolicyInForce {
    TlsPolicyInForce {
        policy_type: TlsPolicyType::Sts,
        policy_string: sts.lines.clone(),
        policy_domain: domain.to_ascii_lowercase(),
        mx_host: sts.mx.clone(),
    }
}

fn no_policy(domain: &str) -> TlsPolicyInForce {
    TlsPolicyInForce {
        policy_type: TlsPolicyType::NoPolicyFound,
        policy_string: Vec::new(),
        policy_domain: domain.to_ascii_lowercase(),
        mx_host: Vec::new(),
    }
}

fn wire(route: RouteTls) -> Wire {
    match route {
        RouteTls::None => Wire::None,
        RouteTls::May | RouteTls::Dane | RouteTls::DaneOnly => Wire::May,
        RouteTls::Encrypt => Wire::Encrypt,
        RouteTls::Verify => Wire::Verify,
    }
}

/// The policy `host` (an MX host of `domain`, or a relay host) is tried under, or why it
/// must not be tried. `sts` applies only to MX routes (the caller passes
/// [`StsState::None`] for relay hosts).
pub(crate) fn decide(
    route: RouteTls,
    domain: &str,
    host: &str,
    dane: &DaneState,
    sts: &StsState,
) -> Result<HostTls, Refusal> {
    // An administrator's explicit none/encrypt/verify is kept as it is.
    if matches!(route, RouteTls::None | RouteTls::Encrypt | RouteTls::Verify) {
        return Ok(HostTls {
            request: TlsRequest::plain(wire(route)),
            source: Source::Route,
            reason: format!("route tls={route}"),
            report: None,
            known_failure: None,
        });
    }
    match dane {
        DaneState::Usable(d) => {
            return Ok(HostTls {
                request: TlsRequest {
                    policy: Wire::Dane,
                    dane: Some(d.clone()),
                    audit: false,
                },
                source: Source::Dane,
                reason: format!("DANE: {} usable TLSA record(s) for {host}", d.records.len()),
                report: Some(tlsa_in_force(domain, host, d)),
                known_failure: None,
            });
        }
        DaneState::Bogus(why) => {
            return Err(Refusal {
                reason: format!("4.7.5 DNSSEC validation failed for {host}: {why}"),
                report: Some((
                    TlsResultType::DnssecInvalid,
                    TlsPolicyInForce {
                        policy_type: TlsPolicyType::Tlsa,
                        policy_string: Vec::new(),
                        policy_domain: domain.to_ascii_lowercase(),
                        mx_host: vec![host.to_ascii_lowercase()],
                    },
                )),
            });
        }
        DaneState::NotUsable(why) if route == RouteTls::DaneOnly => {
            return Err(Refusal {
                reason: format!("4.7.5 tls=dane-only and no usable TLSA records for {host}: {why}"),
                report: Some((
                    TlsResultType::DaneRequired,
                    TlsPolicyInForce {
                        policy_type: TlsPolicyType::Tlsa,
                        policy_string: Vec::new(),
                        policy_domain: domain.to_ascii_lowercase(),
                        mx_host: vec![host.to_ascii_lowercase()],
                    },
                )),
            });
        }
        DaneState::NotUsable(_) | DaneState::NotAsked => {}
    }
    let dane_note = match dane {
        DaneState::NotUsable(why) => format!("no DANE ({why}); "),
        _ => String::new(),
    };
    match sts {
        StsState::Policy(p) if p.enforce => {
            if p.mx.iter().any(|m| sts_mx_matches(m, host)) {
                Ok(HostTls {
                    request: TlsRequest::plain(Wire::Verify),
                    source: Source::StsEnforce,
                    reason: format!("{dane_note}MTA-STS enforce (id {}): {host} matches", p.id),
                    report: Some(sts_in_force(domain, p)),
                    known_failure: None,
                })
            } else {
                Err(Refusal {
                    reason: format!(
                        "4.7.5 MTA-STS policy of {domain} (enforce, id {}) does not list MX host {host}",
                        p.id
                    ),
                    report: Some((TlsResultType::ValidationFailure, sts_in_force(domain, p))),
                })
            }
        }
        StsState::Policy(p) => {
            let listed = p.mx.iter().any(|m| sts_mx_matches(m, host));
            Ok(HostTls {
                request: TlsRequest {
                    policy: wire(route),
                    dane: None,
                    audit: true,
                },
                source: Source::StsTesting,
                reason: format!(
                    "{dane_note}MTA-STS testing (id {}): tls={} as the route says, certificate audited{}",
                    p.id,
                    wire_name(wire(route)),
                    if listed {
                        ""
                    } else {
                        "; host not in the policy"
                    }
                ),
                report: Some(sts_in_force(domain, p)),
                known_failure: (!listed).then_some(TlsResultType::ValidationFailure),
            })
        }
        StsState::Failed { reason, .. } => Ok(HostTls {
            request: TlsRequest::plain(wire(route)),
            source: Source::Route,
            reason: format!("{dane_note}MTA-STS policy unavailable ({reason}); route tls={route}"),
            report: Some(no_policy(domain)),
            known_failure: None,
        }),
        StsState::None => Ok(HostTls {
            request: TlsRequest::plain(wire(route)),
            source: Source::Route,
            reason: format!("{dane_note}route tls={route}"),
            report: Some(no_policy(domain)),
            known_failure: None,
        }),
    }
}

fn wire_name(w: Wire) -> &'static str {
    match w {
        Wire::None => "none",
        Wire::May => "may",
        Wire::Encrypt => "encrypt",
        Wire::Verify => "verify",
        Wire::Dane => "dane",
    }
}

/// The report's result type of a session failure's TLS part.
pub(crate) fn result_type(f: tern_deliver::TlsFailure) -> TlsResultType {
    use tern_deliver::TlsFailure as F;
    match f {
        F::StarttlsNotSupported => TlsResultType::StarttlsNotSupported,
        F::CertificateHostMismatch => TlsResultType::CertificateHostMismatch,
        F::CertificateExpired => TlsResultType::CertificateExpired,
        F::CertificateNotTrusted => TlsResultType::CertificateNotTrusted,
        F::TlsaInvalid => TlsResultType::TlsaInvalid,
        F::ValidationFailure => TlsResultType::ValidationFailure,
    }
}

/// The policy each destination's hosts were last tried under, for the destinations'
/// view (`tern dest`, the viewer). Bounded: at most [`TlsBook::MAX`] destinations, the
/// one noted longest ago replaced when full. One mutex, held for a map operation, never
/// across an `.await`; a destination's entry is rebuilt at most every
/// [`TlsBook::REFRESH_MS`] while its hosts stay the same, so the hot path pays one
/// lookup.
#[derive(Debug, Default)]
pub struct TlsBook {
    inner: std::sync::Mutex<std::collections::HashMap<String, crate::requests::DestinationTls>>,
}

impl TlsBook {
    /// Destinations remembered.
    pub const MAX: usize = 10_000;
    /// How often a destination's entry is rebuilt while nothing changes.
    pub const REFRESH_MS: u64 = 10_000;

    /// Notes the decisions of a walk for `hop` (hosts in walk order, one line per host).
    pub(crate) fn note<'a>(
        &self,
        hop: &str,
        now_ms: u64,
        hosts: impl Iterator<Item = (&'a str, &'a Result<HostTls, Refusal>)>,
    ) {
        let Ok(mut map) = self.inner.lock() else {
            return;
        };
        if map
            .get(hop)
            .is_some_and(|e| now_ms.saturating_sub(e.decided_unix_ms) < Self::REFRESH_MS)
        {
            return;
        }
        let mut lines: Vec<crate::requests::HostTlsInfo> = Vec::new();
        for (host, d) in hosts {
            if lines.last().is_some_and(|l| l.host == host) || lines.len() >= 32 {
                continue;
            }
            lines.push(match d {
                Ok(h) => crate::requests::HostTlsInfo {
                    host: host.to_string(),
                    policy: format!("{} ({})", h.source.as_str(), wire_name(h.request.policy)),
                    usable: true,
                    reason: h.reason.clone(),
                },
                Err(r) => crate::requests::HostTlsInfo {
                    host: host.to_string(),
                    policy: "refused".into(),
                    usable: false,
                    reason: r.reason.clone(),
                },
            });
        }
        if map.len() >= Self::MAX && !map.contains_key(hop) {
            let oldest = map
                .iter()
                .min_by_key(|(_, e)| e.decided_unix_ms)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        let summary = summarize(&lines);
        map.insert(
            hop.to_string(),
            crate::requests::DestinationTls {
                decided_unix_ms: now_ms,
                summary,
                hosts: lines,
            },
        );
    }

    /// The last decisions for `hop`, if any.
    pub(crate) fn get(&self, hop: &str) -> Option<crate::requests::DestinationTls> {
        self.inner.lock().ok().and_then(|m| m.get(hop).cloned())
    }
}

/// One word or two for the destination: the first usable host's policy, `refused` when
/// none is usable.
fn summarize(lines: &[crate::requests::HostTlsInfo]) -> String {
    match lines.iter().find(|l| l.usable) {
        Some(l) => l.policy.clone(),
        None if lines.is_empty() => "-".into(),
        None => "refused".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_deliver::Tlsa;

    fn tlsa() -> Arc<DaneTlsa> {
        Arc::new(DaneTlsa {
            records: vec![Tlsa {
                usage: 3,
                selector: 1,
                matching: 1,
                data: vec![0xab; 32],
            }],
            names: vec!["mx.example.com".into()],
        })
    }

    fn sts(enforce: bool) -> StsState {
        StsState::Policy(Arc::new(StsView {
            enforce,
            mx: vec!["mx.example.com".into(), "*.backup.example.com".into()],
            lines: vec!["version: STSv1".into()],
            id: "20261207".into(),
        }))
    }

    #[test]
    fn the_book_keeps_one_entry_per_destination_and_refreshes_it_slowly() {
        let book = TlsBook::default();
        let dane = decide(
            RouteTls::Dane,
            "example.com",
            "mx.example.com",
            &DaneState::Usable(tlsa()),
            &StsState::None,
        );
        let refused = decide(
            RouteTls::May,
            "example.com",
            "evil.example.org",
            &DaneState::NotAsked,
            &sts(true),
        );
        book.note(
            "mx:example.com",
            1_000,
            [
                ("mx.example.com", &dane),
                ("mx.example.com", &dane),
                ("evil.example.org", &refused),
            ]
            .into_iter(),
        );
        let e = book.get("mx:example.com").unwrap();
        assert_eq!(e.hosts.len(), 2, "one line per host");
        assert_eq!(e.summary, "dane (dane)");
        assert!(!e.hosts[1].usable && e.hosts[1].reason.contains("does not list"));
        // Within the refresh time the entry is kept as it is.
        book.note(
            "mx:example.com",
            2_000,
            [("evil.example.org", &refused)].into_iter(),
        );
        assert_eq!(book.get("mx:example.com").unwrap().hosts.len(), 2);
        book.note(
            "mx:example.com",
            1_000 + TlsBook::REFRESH_MS,
            [("evil.example.org", &refused)].into_iter(),
        );
        assert_eq!(book.get("mx:example.com").unwrap().summary, "refused");
    }

    #[test]
    fn sts_patterns_match_exactly_or_one_leftmost_label() {
        assert!(sts_mx_matches("mx.example.com", "MX.example.com."));
        assert!(sts_mx_matches("*.example.com", "a.example.com"));
        assert!(!sts_mx_matches("*.example.com", "a.b.example.com"));
        assert!(!sts_mx_matches("*.example.com", "example.com"));
        assert!(!sts_mx_matches("mx.example.com", "mx.example.com.evil"));
    }

    #[test]
    fn dane_wins_over_sts_and_sts_over_the_route() {
        let d = decide(
            RouteTls::Dane,
            "example.com",
            "other.example.net",
            &DaneState::Usable(tlsa()),
            &sts(true),
        )
        .unwrap();
        assert_eq!((d.source, d.request.policy), (Source::Dane, Wire::Dane));
        let d = decide(
            RouteTls::Dane,
            "example.com",
            "mx.example.com",
            &DaneState::NotUsable("insecure".into()),
            &sts(true),
        )
        .unwrap();
        assert_eq!(
            (d.source, d.request.policy),
            (Source::StsEnforce, Wire::Verify)
        );
        let d = decide(
            RouteTls::May,
            "example.com",
            "x.backup.example.com",
            &DaneState::NotAsked,
            &sts(true),
        )
        .unwrap();
        assert_eq!(d.source, Source::StsEnforce);
        let d = decide(
            RouteTls::Dane,
            "example.com",
            "mx.example.com",
            &DaneState::NotUsable("no TLSA".into()),
            &StsState::None,
        )
        .unwrap();
        assert_eq!((d.source, d.request.policy), (Source::Route, Wire::May));
    }

    #[test]
    fn refusals_bogus_dane_only_and_hosts_outside_an_enforced_policy() {
        let e = decide(
            RouteTls::Dane,
            "example.com",
            "mx.example.com",
            &DaneState::Bogus("RRSIG".into()),
            &StsState::None,
        )
        .unwrap_err();
        assert_eq!(e.report.map(|r| r.0), Some(TlsResultType::DnssecInvalid));
        let e = decide(
            RouteTls::DaneOnly,
            "example.com",
            "mx.example.com",
            &DaneState::NotUsable("insecure".into()),
            &sts(true),
        )
        .unwrap_err();
        assert_eq!(e.report.map(|r| r.0), Some(TlsResultType::DaneRequired));
        let e = decide(
            RouteTls::May,
            "example.com",
            "evil.example.org",
            &DaneState::NotAsked,
            &sts(true),
        )
        .unwrap_err();
        assert!(e.reason.starts_with("4.7.5 MTA-STS"), "{}", e.reason);
    }

    #[test]
    fn testing_audits_and_explicit_route_policies_are_kept() {
        let d = decide(
            RouteTls::May,
            "example.com",
            "evil.example.org",
            &DaneState::NotAsked,
            &sts(false),
        )
        .unwrap();
        assert_eq!(
            (d.source, d.request.policy, d.request.audit),
            (Source::StsTesting, Wire::May, true)
        );
        // Not in the policy: reported as a validation failure whatever the certificate.
        assert_eq!(d.known_failure, Some(TlsResultType::ValidationFailure));
        let listed = decide(
            RouteTls::May,
            "example.com",
            "mx.example.com",
            &DaneState::NotAsked,
            &sts(false),
        )
        .unwrap();
        assert_eq!(
            (listed.source, listed.known_failure),
            (Source::StsTesting, None)
        );
        for r in [RouteTls::None, RouteTls::Encrypt, RouteTls::Verify] {
            let d = decide(
                r,
                "example.com",
                "evil.example.org",
                &DaneState::NotAsked,
                &sts(true),
            )
            .unwrap();
            assert_eq!((d.source, d.report), (Source::Route, None));
        }
    }
}
