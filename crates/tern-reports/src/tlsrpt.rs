//! The seam of SMTP TLS reporting (RFC 8460): what the delivery workers hand over about
//! each outbound session they tried for a domain, and the recorder they hand it to.
//!
//! A delivery worker (in `tern-queue`) makes one [`TlsSessionObservation`] per connection
//! attempt to a host of a destination domain, once the TLS outcome is known: a success
//! (STARTTLS done under the policy in force) or a failure of one of RFC 8460 §4.3's result
//! types. The policy in force is named as the report names it: `sts` with the policy's
//! text, `tlsa` with the records, or `no-policy-found`.
//!
//! Recording never blocks the worker and never fails the delivery: a recorder that cannot
//! keep an observation drops it and counts the drop. Everything after (the per-day
//! aggregation, the JSON report of RFC 8460 §4.4, sending it to the domain's `rua`) is
//! this crate's: [`aggregate`] (the [`Tls`] kind of the generic store), [`json`] (the
//! report), [`message`] (the `mailto:` message), [`record`] (the `_smtp._tls` record),
//! [`reporter`] (the task that sends), [`config`] (`[tls_reports]`).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub mod aggregate;
pub mod config;
pub mod json;
pub mod message;
pub mod record;
pub mod reporter;

pub use aggregate::Tls;
pub use config::TlsReportsConfig;

/// The policy a session was held to (RFC 8460 §4.4 `policy-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsPolicyType {
    /// DANE: usable TLSA records of the MX host (`tlsa`).
    Tlsa,
    /// MTA-STS: the domain's policy, enforce or testing (`sts`).
    Sts,
    /// Neither (`no-policy-found`).
    NoPolicyFound,
}

/// A failure's result type (RFC 8460 §4.3). Its serde name is the report's string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsResultType {
    /// The MX does not offer STARTTLS (or refused the command) while a policy requires it.
    StarttlsNotSupported,
    /// The certificate does not name the host the policy expects.
    CertificateHostMismatch,
    /// The certificate has expired.
    CertificateExpired,
    /// The certificate does not chain to a trusted root (MTA-STS) or to a DANE-TA record.
    CertificateNotTrusted,
    /// Another failure of the TLS negotiation or of its validation.
    ValidationFailure,
    /// The TLSA records are unusable or do not match the certificate.
    TlsaInvalid,
    /// DNSSEC validation of the MX or TLSA records failed (a bogus answer).
    DnssecInvalid,
    /// The MX has no usable TLSA records while the policy (`dane-only`) required DANE.
    DaneRequired,
    /// The MTA-STS policy could not be fetched (no cached one either).
    StsPolicyFetchError,
    /// The MTA-STS policy fetched is not valid.
    StsPolicyInvalid,
    /// The certificate of the policy host (`mta-sts.<domain>`) did not validate.
    StsWebpkiInvalid,
}

impl TlsResultType {
    /// The report's name (RFC 8460 §4.3), as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsResultType::StarttlsNotSupported => "starttls-not-supported",
            TlsResultType::CertificateHostMismatch => "certificate-host-mismatch",
            TlsResultType::CertificateExpired => "certificate-expired",
            TlsResultType::CertificateNotTrusted => "certificate-not-trusted",
            TlsResultType::ValidationFailure => "validation-failure",
            TlsResultType::TlsaInvalid => "tlsa-invalid",
            TlsResultType::DnssecInvalid => "dnssec-invalid",
            TlsResultType::DaneRequired => "dane-required",
            TlsResultType::StsPolicyFetchError => "sts-policy-fetch-error",
            TlsResultType::StsPolicyInvalid => "sts-policy-invalid",
            TlsResultType::StsWebpkiInvalid => "sts-webpki-invalid",
        }
    }
}

/// The policy in force, as the report describes it (RFC 8460 §4.4 `policy`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TlsPolicyInForce {
    /// Which kind.
    pub policy_type: TlsPolicyType,
    /// `policy-string`: the MTA-STS policy's lines, or each TLSA record in presentation
    /// form (`3 1 1 <hex>`); empty for `no-policy-found`.
    pub policy_string: Vec<String>,
    /// `policy-domain`: the recipient domain (MTA-STS) or the domain whose MX the TLSA
    /// records belong to. Lowercase, A-labels.
    pub policy_domain: String,
    /// `mx-host`: the MTA-STS policy's `mx` patterns, or the TLSA base host name.
    pub mx_host: Vec<String>,
}

/// What became of one session.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TlsSessionResult {
    /// TLS was negotiated and satisfied the policy.
    Success,
    /// It was not, for this reason.
    Failure {
        /// RFC 8460 §4.3.
        result_type: TlsResultType,
        /// `receiving-mx-hostname`.
        receiving_mx_hostname: Option<String>,
        /// `receiving-ip`.
        receiving_ip: Option<IpAddr>,
        /// `sending-mta-ip`, when known.
        sending_mta_ip: Option<IpAddr>,
        /// `failure-reason-code`: a short text (bounded by the recorder).
        failure_reason_code: Option<String>,
    },
}

/// One outbound session's TLS outcome under the policy in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSessionObservation {
    /// The policy the session was held to.
    pub policy: TlsPolicyInForce,
    /// The outcome.
    pub result: TlsSessionResult,
    /// When, Unix seconds (the report period is the UTC day of this time).
    pub at: u64,
}

/// Where the delivery workers hand their observations. `record` returns at once and
/// never fails the delivery.
pub trait TlsReportRecorder: Send + Sync {
    /// Keeps (or, when it cannot, drops and counts) one observation.
    fn record(&self, observation: TlsSessionObservation);
}

/// A recorder that keeps nothing: TLS reporting is off.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoTlsReports;

impl TlsReportRecorder for NoTlsReports {
    fn record(&self, _observation: TlsSessionObservation) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_types_serialise_to_rfc_8460_names() {
        for t in [
            TlsResultType::StarttlsNotSupported,
            TlsResultType::CertificateHostMismatch,
            TlsResultType::CertificateExpired,
            TlsResultType::CertificateNotTrusted,
            TlsResultType::ValidationFailure,
            TlsResultType::TlsaInvalid,
            TlsResultType::DnssecInvalid,
            TlsResultType::DaneRequired,
            TlsResultType::StsPolicyFetchError,
            TlsResultType::StsPolicyInvalid,
            TlsResultType::StsWebpkiInvalid,
        ] {
            let json = serde_json::to_string(&t).expect("serialise");
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
        assert_eq!(
            serde_json::to_string(&TlsPolicyType::NoPolicyFound).expect("serialise"),
            "\"no-policy-found\""
        );
    }
}
