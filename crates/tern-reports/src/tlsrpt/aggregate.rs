//! TLS-RPT observations in the generic store: the [`Tls`] kind (sans-I/O).
//!
//! A report is per policy domain and UTC day; inside it, per policy in force (RFC 8460
//! §4.4 `policies[]`). The store's rows are keyed by [`TlsRowKey`]: the policy, and
//! either nothing (a successful session) or the failure-details key (result type,
//! sending MTA address, receiving MX name and address, reason code). A report's summary
//! per policy is the sum of its success row and of its failure rows.
//!
//! Trust: the policy text comes from the destination's DNS or HTTPS server, the MX name
//! and the reason from its DNS and TLS stack. [`clean`] bounds every string and list
//! before anything is kept: at most [`MAX_POLICY_LINES`] policy lines and [`MAX_MX`]
//! `mx-host` entries, each at most [`MAX_TEXT`] octets, control characters removed.
//!
//! Caps: the store's `max_domains` and `max_rows` (rows over all domains), and at most
//! [`MAX_POLICIES`] distinct policies per domain (a domain's MTA-STS policy and TLSA
//! sets change rarely; more is a domain churning its records or an attack on memory).
//! A session that needs a new row past a cap is not kept and is counted (event 4168).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use tern_events::catalog;

use super::{TlsPolicyInForce, TlsResultType, TlsSessionObservation, TlsSessionResult};
use crate::aggregate::{DomainData, clean_text};
use crate::kind::{Kind, KindEvents, Row};

/// Longest text kept (domain names, policy lines, reason codes).
pub const MAX_TEXT: usize = 255;
/// `policy-string` lines kept per policy.
pub const MAX_POLICY_LINES: usize = 64;
/// `mx-host` entries kept per policy.
pub const MAX_MX: usize = 32;
/// Distinct policies kept per domain and period.
pub const MAX_POLICIES: usize = 16;

/// The TLS-RPT kind of the generic store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tls;

/// A failure-details row's key (RFC 8460 §4.4 `failure-details`, without the count).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FailureKey {
    /// `result-type`
    pub result_type: TlsResultType,
    /// `sending-mta-ip`
    pub sending_mta_ip: Option<IpAddr>,
    /// `receiving-mx-hostname`
    pub receiving_mx_hostname: Option<String>,
    /// `receiving-ip`
    pub receiving_ip: Option<IpAddr>,
    /// `failure-reason-code`
    pub failure_reason_code: Option<String>,
}

/// A counted row: the policy in force and, for a failure, its details.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TlsRowKey {
    /// The policy the sessions were held to.
    pub policy: TlsPolicyInForce,
    /// `None`: successful sessions.
    pub failure: Option<FailureKey>,
}

static TLS_EVENTS: KindEvents = KindEvents {
    dropped: &catalog::TLSRPT_OBSERVATIONS_DROPPED,
    capped: &catalog::TLSRPT_OBSERVATIONS_CAPPED,
    given_up: &catalog::TLSRPT_PERIOD_GIVEN_UP,
    store_failed: &catalog::TLSRPT_STORE_FAILED,
};

fn clean_domain(s: &str) -> String {
    clean_text(s, MAX_TEXT)
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

fn clean_opt(s: Option<String>, lower: bool) -> Option<String> {
    let s = s?;
    let c = if lower {
        clean_domain(&s)
    } else {
        clean_text(&s, MAX_TEXT)
    };
    (!c.is_empty()).then_some(c)
}

/// The observation bounded and normalised, or `None` when it names no policy domain.
pub fn clean(obs: TlsSessionObservation) -> Option<TlsSessionObservation> {
    let domain = clean_domain(&obs.policy.policy_domain);
    if domain.is_empty() {
        return None;
    }
    let lines = |v: &[String], max: usize, lower: bool| -> Vec<String> {
        v.iter()
            .take(max)
            .map(|l| {
                if lower {
                    clean_domain(l)
                } else {
                    clean_text(l, MAX_TEXT)
                }
            })
            .filter(|l| !l.is_empty())
            .collect()
    };
    let policy = TlsPolicyInForce {
        policy_type: obs.policy.policy_type,
        policy_string: lines(&obs.policy.policy_string, MAX_POLICY_LINES, false),
        policy_domain: domain,
        mx_host: lines(&obs.policy.mx_host, MAX_MX, true),
    };
    let result = match obs.result {
        TlsSessionResult::Success => TlsSessionResult::Success,
        TlsSessionResult::Failure {
            result_type,
            receiving_mx_hostname,
            receiving_ip,
            sending_mta_ip,
            failure_reason_code,
        } => TlsSessionResult::Failure {
            result_type,
            receiving_mx_hostname: clean_opt(receiving_mx_hostname, true),
            receiving_ip,
            sending_mta_ip,
            failure_reason_code: clean_opt(failure_reason_code, false),
        },
    };
    Some(TlsSessionObservation {
        policy,
        result,
        at: obs.at,
    })
}

impl Kind for Tls {
    type Obs = TlsSessionObservation;
    type Policy = ();
    type Key = TlsRowKey;
    const NAME: &'static str = "tlsrpt";

    fn clean(obs: TlsSessionObservation) -> Option<TlsSessionObservation> {
        clean(obs)
    }

    fn split(obs: TlsSessionObservation) -> Row<Tls> {
        let failure = match obs.result {
            TlsSessionResult::Success => None,
            TlsSessionResult::Failure {
                result_type,
                receiving_mx_hostname,
                receiving_ip,
                sending_mta_ip,
                failure_reason_code,
            } => Some(FailureKey {
                result_type,
                sending_mta_ip,
                receiving_mx_hostname,
                receiving_ip,
                failure_reason_code,
            }),
        };
        Row {
            domain: obs.policy.policy_domain.clone(),
            policy: (),
            rua: Vec::new(),
            key: TlsRowKey {
                policy: obs.policy,
                failure,
            },
        }
    }

    fn join(row: Row<Tls>, at: u64) -> TlsSessionObservation {
        let result = match row.key.failure {
            None => TlsSessionResult::Success,
            Some(f) => TlsSessionResult::Failure {
                result_type: f.result_type,
                receiving_mx_hostname: f.receiving_mx_hostname,
                receiving_ip: f.receiving_ip,
                sending_mta_ip: f.sending_mta_ip,
                failure_reason_code: f.failure_reason_code,
            },
        };
        TlsSessionObservation {
            policy: row.key.policy,
            result,
            at,
        }
    }

    /// A new policy past [`MAX_POLICIES`] is refused. Rows are ordered by policy first,
    /// so a known policy is found in O(log n); only a new one counts the domain's
    /// policies (bounded by the rows kept).
    fn admits(data: &DomainData<Tls>, key: &TlsRowKey) -> bool {
        let probe = TlsRowKey {
            policy: key.policy.clone(),
            failure: None,
        };
        if data
            .rows
            .range(probe..)
            .next()
            .is_some_and(|(k, _)| k.policy == key.policy)
        {
            return true;
        }
        let mut policies = 0;
        let mut last: Option<&TlsPolicyInForce> = None;
        for k in data.rows.keys() {
            if last != Some(&k.policy) {
                policies += 1;
                last = Some(&k.policy);
                if policies >= MAX_POLICIES {
                    return false;
                }
            }
        }
        true
    }

    fn events() -> &'static KindEvents {
        &TLS_EVENTS
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::aggregate::{Added, Caps, Period};
    use crate::tlsrpt::TlsPolicyType;

    pub(crate) fn sts(domain: &str, id: u32) -> TlsPolicyInForce {
        TlsPolicyInForce {
            policy_type: TlsPolicyType::Sts,
            policy_string: vec![
                "version: STSv1".into(),
                "mode: enforce".into(),
                format!("mx: mx{id}.{domain}"),
                "max_age: 86400".into(),
            ],
            policy_domain: domain.into(),
            mx_host: vec![format!("mx{id}.{domain}")],
        }
    }

    pub(crate) fn ok(policy: &TlsPolicyInForce) -> TlsSessionObservation {
        TlsSessionObservation {
            policy: policy.clone(),
            result: TlsSessionResult::Success,
            at: 1_700_000_000,
        }
    }

    pub(crate) fn fail(
        policy: &TlsPolicyInForce,
        t: TlsResultType,
        ip: &str,
    ) -> TlsSessionObservation {
        TlsSessionObservation {
            policy: policy.clone(),
            result: TlsSessionResult::Failure {
                result_type: t,
                receiving_mx_hostname: Some("MX1.A.test.".into()),
                receiving_ip: Some(ip.parse().unwrap()),
                sending_mta_ip: None,
                failure_reason_code: Some("no STARTTLS".into()),
            },
            at: 1_700_000_000,
        }
    }

    fn row(o: TlsSessionObservation) -> Row<Tls> {
        Tls::split(clean(o).unwrap())
    }

    const CAPS: Caps = Caps {
        max_domains: 2,
        max_rows: 40,
    };

    #[test]
    fn successes_fold_into_one_row_and_failures_by_their_details() {
        let p1 = sts("a.test", 1);
        let mut p: Period<Tls> = Period::new(0, 86_400);
        assert_eq!(p.add(row(ok(&p1)), CAPS), Added::NewRow);
        assert_eq!(p.add(row(ok(&p1)), CAPS), Added::Counted);
        let f = fail(&p1, TlsResultType::StarttlsNotSupported, "192.0.2.1");
        assert_eq!(p.add(row(f.clone()), CAPS), Added::NewRow);
        assert_eq!(p.add(row(f), CAPS), Added::Counted);
        let other = fail(&p1, TlsResultType::StarttlsNotSupported, "192.0.2.2");
        assert_eq!(p.add(row(other), CAPS), Added::NewRow);
        let d = &p.domains["a.test"];
        assert_eq!(d.rows.len(), 3);
        assert_eq!(d.rows.values().sum::<u64>(), 5);
        let key = d.rows.keys().find(|k| k.failure.is_some()).unwrap();
        let fk = key.failure.as_ref().unwrap();
        assert_eq!(fk.receiving_mx_hostname.as_deref(), Some("mx1.a.test"));
    }

    #[test]
    fn policies_per_domain_are_capped_but_known_ones_still_count() {
        let mut p: Period<Tls> = Period::new(0, 86_400);
        for i in 0..MAX_POLICIES as u32 {
            assert_eq!(p.add(row(ok(&sts("a.test", i))), CAPS), Added::NewRow);
        }
        let over = sts("a.test", 999);
        assert_eq!(p.add(row(ok(&over)), CAPS), Added::RowCap);
        assert_eq!(p.domains["a.test"].dropped, 1);
        // A failure under a known policy is a new row and is kept.
        let f = fail(
            &sts("a.test", 3),
            TlsResultType::ValidationFailure,
            "192.0.2.1",
        );
        assert_eq!(p.add(row(f), CAPS), Added::NewRow);
        // Another domain has its own policies.
        assert_eq!(p.add(row(ok(&sts("b.test", 1))), CAPS), Added::NewRow);
        assert_eq!(p.add(row(ok(&sts("c.test", 1))), CAPS), Added::DomainCap);
    }

    #[test]
    fn clean_bounds_what_the_destination_controls() {
        let mut pol = sts("A.Test.", 1);
        pol.policy_string = (0..1000)
            .map(|i| format!("mx: {i}\r\n{}", "x".repeat(400)))
            .collect();
        pol.mx_host = vec!["MX.A.TEST".into(); 100];
        let mut o = fail(&pol, TlsResultType::CertificateExpired, "192.0.2.1");
        if let TlsSessionResult::Failure {
            failure_reason_code,
            ..
        } = &mut o.result
        {
            *failure_reason_code = Some(format!("bad\u{1}{}", "y".repeat(1000)));
        }
        let c = clean(o).unwrap();
        assert_eq!(c.policy.policy_domain, "a.test");
        assert_eq!(c.policy.policy_string.len(), MAX_POLICY_LINES);
        assert!(
            c.policy
                .policy_string
                .iter()
                .all(|l| l.len() <= MAX_TEXT && !l.contains('\r'))
        );
        assert_eq!(c.policy.mx_host.len(), MAX_MX);
        assert_eq!(c.policy.mx_host[0], "mx.a.test");
        let TlsSessionResult::Failure {
            failure_reason_code,
            ..
        } = c.result
        else {
            panic!("a failure");
        };
        let code = failure_reason_code.unwrap();
        assert!(code.starts_with("bady") && code.len() <= MAX_TEXT);
        let mut none = ok(&sts("", 1));
        none.policy.policy_domain = " \u{7} ".into();
        assert!(clean(none).is_none());
    }

    #[test]
    fn the_journal_keeps_a_days_sessions_across_a_restart() {
        use crate::journal::FileStore;
        use crate::store::ReportStore;
        use std::os::unix::fs::MetadataExt;
        const DAY: u64 = 86_400;
        let t0 = 20_000 * DAY + 60;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tls-reports");
        let caps = Caps {
            max_domains: 10,
            max_rows: 100,
        };
        let (s, _) = FileStore::<Tls>::open(&dir, caps, DAY, t0).unwrap();
        let p = sts("a.test", 1);
        s.add(
            vec![
                ok(&p),
                ok(&p),
                fail(&p, TlsResultType::CertificateExpired, "192.0.2.7"),
            ],
            t0,
        );
        s.flush().unwrap();
        // Not flushed: what a kill -9 loses.
        s.add(vec![ok(&p)], t0 + 1);
        drop(s);
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                assert_eq!(e.metadata().unwrap().mode() & 0o777, 0o600);
            }
        }
        let (s, report) = FileStore::<Tls>::open(&dir, caps, DAY, t0 + 5).unwrap();
        assert_eq!((report.journals, report.messages), (1, 3));
        s.close(t0 + 10, true).unwrap();
        let due = s.due();
        let d = &due[0].domains["a.test"];
        let successes: u64 = d
            .rows
            .iter()
            .filter(|(k, _)| k.failure.is_none())
            .map(|(_, n)| n)
            .sum();
        assert_eq!(successes, 2);
        assert_eq!(d.rows.len(), 2);
    }

    #[test]
    fn join_then_clean_gives_back_the_same_row() {
        let r = row(fail(
            &sts("a.test", 1),
            TlsResultType::DaneRequired,
            "2001:db8::1",
        ));
        let again = Tls::split(clean(Tls::join(r.clone(), 5)).unwrap());
        assert_eq!(again, r);
    }
}
