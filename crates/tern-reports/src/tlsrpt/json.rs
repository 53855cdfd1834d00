//! The report document of RFC 8460 §4.4 (sans-I/O): JSON, one per policy domain and
//! period, with one `policies[]` entry per policy in force.
//!
//! Written with serde structs of our own rather than mail-auth's `report` feature (it
//! would add `zip` and `quick-xml` to the build for the DMARC side we do not use, as
//! [`crate::xml`] notes). Field names are RFC 8460's exactly, checked by a test and by
//! the JSON Schema in `schema/rfc8460-report.schema.json` (the scenario validates
//! generated reports with it).
//!
//! The date range is the period's first and last second (`end-datetime` is the last
//! second covered, as RFC 8460's example writes `...T23:59:59Z`), in RFC 3339 UTC.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use super::aggregate::{FailureKey, Tls};
use super::{TlsPolicyInForce, TlsPolicyType, TlsResultType};
use crate::aggregate::{DomainData, Period};

/// Who sends the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitter {
    /// `organization-name`
    pub org_name: String,
    /// `contact-info`
    pub contact: String,
    /// The submitter's domain (report id, file name, `TLS-Report-Submitter`).
    pub domain: String,
}

/// The report (RFC 8460 §4.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Report {
    /// `organization-name`
    pub organization_name: String,
    /// `date-range`
    pub date_range: DateRange,
    /// `contact-info`
    pub contact_info: String,
    /// `report-id`
    pub report_id: String,
    /// `policies`
    pub policies: Vec<PolicyEntry>,
}

/// `date-range`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DateRange {
    /// `start-datetime`
    pub start_datetime: String,
    /// `end-datetime`
    pub end_datetime: String,
}

/// One `policies[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PolicyEntry {
    /// `policy`
    pub policy: PolicyDesc,
    /// `summary`
    pub summary: Summary,
    /// `failure-details` (left out when there are none)
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failure_details: Vec<FailureDetail>,
}

/// `policy`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PolicyDesc {
    /// `policy-type`
    pub policy_type: TlsPolicyType,
    /// `policy-string` (left out for `no-policy-found`)
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policy_string: Vec<String>,
    /// `policy-domain`
    pub policy_domain: String,
    /// `mx-host` (left out when empty)
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mx_host: Vec<String>,
}

/// `summary`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Summary {
    /// `total-successful-session-count`
    pub total_successful_session_count: u64,
    /// `total-failure-session-count`
    pub total_failure_session_count: u64,
}

/// One `failure-details` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct FailureDetail {
    /// `result-type`
    pub result_type: TlsResultType,
    /// `sending-mta-ip`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sending_mta_ip: Option<IpAddr>,
    /// `receiving-mx-hostname`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiving_mx_hostname: Option<String>,
    /// `receiving-ip`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiving_ip: Option<IpAddr>,
    /// `failed-session-count`
    pub failed_session_count: u64,
    /// `failure-reason-code`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason_code: Option<String>,
}

/// RFC 3339 UTC of Unix seconds (`YYYY-MM-DDThh:mm:ssZ`).
pub fn rfc3339(secs: u64) -> String {
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// The report's id: unique per domain, period and submitter, the same when a report is
/// built again (receivers de-duplicate by it).
pub fn report_id(domain: &str, begin: u64, end: u64, submitter: &str) -> String {
    crate::xml::report_id(domain, begin, end, submitter)
}

/// The report of `domain` for `period`.
pub fn build(
    submitter: &Submitter,
    period: &Period<Tls>,
    domain: &str,
    data: &DomainData<Tls>,
) -> Report {
    let end = period.end.saturating_sub(1).max(period.begin);
    let mut by_policy: BTreeMap<&TlsPolicyInForce, PolicyEntry> = BTreeMap::new();
    for (key, &count) in &data.rows {
        let entry = by_policy.entry(&key.policy).or_insert_with(|| PolicyEntry {
            policy: PolicyDesc {
                policy_type: key.policy.policy_type,
                policy_string: key.policy.policy_string.clone(),
                policy_domain: key.policy.policy_domain.clone(),
                mx_host: key.policy.mx_host.clone(),
            },
            summary: Summary::default(),
            failure_details: Vec::new(),
        });
        match &key.failure {
            None => {
                entry.summary.total_successful_session_count = entry
                    .summary
                    .total_successful_session_count
                    .saturating_add(count);
            }
            Some(f) => {
                entry.summary.total_failure_session_count = entry
                    .summary
                    .total_failure_session_count
                    .saturating_add(count);
                entry.failure_details.push(detail(f, count));
            }
        }
    }
    Report {
        organization_name: submitter.org_name.clone(),
        date_range: DateRange {
            start_datetime: rfc3339(period.begin),
            end_datetime: rfc3339(end),
        },
        contact_info: submitter.contact.clone(),
        report_id: report_id(domain, period.begin, end, &submitter.domain),
        policies: by_policy.into_values().collect(),
    }
}

fn detail(f: &FailureKey, count: u64) -> FailureDetail {
    FailureDetail {
        result_type: f.result_type,
        sending_mta_ip: f.sending_mta_ip,
        receiving_mx_hostname: f.receiving_mx_hostname.clone(),
        receiving_ip: f.receiving_ip,
        failed_session_count: count,
        failure_reason_code: f.failure_reason_code.clone(),
    }
}

impl Report {
    /// The JSON text.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising these structs cannot fail (no maps with non-string keys).
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Sessions counted (successes, failures).
    pub fn totals(&self) -> (u64, u64) {
        self.policies.iter().fold((0, 0), |(s, f), p| {
            (
                s.saturating_add(p.summary.total_successful_session_count),
                f.saturating_add(p.summary.total_failure_session_count),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Caps;
    use crate::kind::Kind;
    use crate::tlsrpt::TlsPolicyInForce;
    use crate::tlsrpt::aggregate::tests::{fail, ok, sts};

    pub(crate) fn sample() -> (Period<Tls>, Submitter) {
        let caps = Caps {
            max_domains: 10,
            max_rows: 100,
        };
        let mut p: Period<Tls> = Period::new(19_000 * 86_400, 19_001 * 86_400);
        let pol = sts("a.test", 1);
        let none = TlsPolicyInForce {
            policy_type: TlsPolicyType::NoPolicyFound,
            policy_string: vec![],
            policy_domain: "a.test".into(),
            mx_host: vec![],
        };
        let mut add = |o| {
            p.add(Tls::split(Tls::clean(o).unwrap()), caps);
        };
        for _ in 0..3 {
            add(ok(&pol));
        }
        add(fail(&pol, TlsResultType::CertificateExpired, "192.0.2.1"));
        add(fail(&pol, TlsResultType::CertificateExpired, "192.0.2.1"));
        add(ok(&none));
        add(fail(
            &none,
            TlsResultType::StarttlsNotSupported,
            "2001:db8::25",
        ));
        (
            p,
            Submitter {
                org_name: "Tern Test".into(),
                contact: "mailto:tls@mx.example".into(),
                domain: "mx.example".into(),
            },
        )
    }

    #[test]
    fn the_report_has_rfc_8460_field_names_and_counts() {
        let (p, s) = sample();
        let r = build(&s, &p, "a.test", &p.domains["a.test"]);
        let v: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(v["organization-name"], "Tern Test");
        assert_eq!(v["contact-info"], "mailto:tls@mx.example");
        assert_eq!(v["date-range"]["start-datetime"], "2022-01-08T00:00:00Z");
        assert_eq!(v["date-range"]["end-datetime"], "2022-01-08T23:59:59Z");
        assert!(v["report-id"].as_str().unwrap().ends_with("@mx.example"));
        let policies = v["policies"].as_array().unwrap();
        assert_eq!(policies.len(), 2);
        let sts = policies
            .iter()
            .find(|p| p["policy"]["policy-type"] == "sts")
            .unwrap();
        assert_eq!(sts["policy"]["policy-domain"], "a.test");
        assert_eq!(sts["policy"]["mx-host"][0], "mx1.a.test");
        assert_eq!(sts["policy"]["policy-string"][1], "mode: enforce");
        assert_eq!(sts["summary"]["total-successful-session-count"], 3);
        assert_eq!(sts["summary"]["total-failure-session-count"], 2);
        let d = &sts["failure-details"][0];
        assert_eq!(d["result-type"], "certificate-expired");
        assert_eq!(d["receiving-ip"], "192.0.2.1");
        assert_eq!(d["receiving-mx-hostname"], "mx1.a.test");
        assert_eq!(d["failed-session-count"], 2);
        assert_eq!(d["failure-reason-code"], "no STARTTLS");
        assert!(d.get("sending-mta-ip").is_none());
        let none = policies
            .iter()
            .find(|p| p["policy"]["policy-type"] == "no-policy-found")
            .unwrap();
        assert!(none["policy"].get("policy-string").is_none());
        assert_eq!(none["summary"]["total-successful-session-count"], 1);
        assert_eq!(
            none["failure-details"][0]["result-type"],
            "starttls-not-supported"
        );
        assert_eq!(r.totals(), (4, 3));
    }

    #[test]
    fn the_same_period_gives_the_same_report_id() {
        let (p, s) = sample();
        let a = build(&s, &p, "a.test", &p.domains["a.test"]);
        let b = build(&s, &p, "a.test", &p.domains["a.test"]);
        assert_eq!(a.report_id, b.report_id);
        let mut q = p.clone();
        q.end -= 3600;
        assert_ne!(
            build(&s, &q, "a.test", &q.domains["a.test"]).report_id,
            a.report_id
        );
    }
}
