//! What one connection's TLS must satisfy, beyond the [`TlsPolicy`] name, and why a TLS
//! set-up failed, in the terms of SMTP TLS reporting (RFC 8460 §4.3).
//!
//! The queue decides, per destination and host, which policy is in force (DANE over
//! MTA-STS over the route's `tls`, docs/TLS.md) and passes a [`TlsRequest`] to
//! [`SmtpSession::connect_with`](crate::SmtpSession::connect_with). A failure comes back
//! as a [`SessionError`](crate::SessionError) whose
//! [`tls_failure`](crate::SessionError::tls_failure) names its result type.

use std::sync::Arc;

use crate::context::TlsPolicy;

/// Why TLS could not be set up as required: RFC 8460 §4.3's result types that a session
/// (rather than a policy lookup) can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsFailure {
    /// STARTTLS not offered, or refused, while the policy requires TLS.
    StarttlsNotSupported,
    /// The certificate does not name the expected host.
    CertificateHostMismatch,
    /// The certificate has expired (or is not yet valid).
    CertificateExpired,
    /// The chain does not lead to a trusted root (or DANE-TA trust anchor).
    CertificateNotTrusted,
    /// No TLSA record of the host matched the certificate chain.
    TlsaInvalid,
    /// Any other failure of the handshake or of its validation.
    ValidationFailure,
}

impl TlsFailure {
    /// RFC 8460's name.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsFailure::StarttlsNotSupported => "starttls-not-supported",
            TlsFailure::CertificateHostMismatch => "certificate-host-mismatch",
            TlsFailure::CertificateExpired => "certificate-expired",
            TlsFailure::CertificateNotTrusted => "certificate-not-trusted",
            TlsFailure::TlsaInvalid => "tlsa-invalid",
            TlsFailure::ValidationFailure => "validation-failure",
        }
    }

    /// The result type of a failed handshake, from rustls' error.
    pub(crate) fn of_rustls(e: &rustls::Error) -> TlsFailure {
        use rustls::CertificateError as C;
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. } => TlsFailure::CertificateExpired,
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    TlsFailure::CertificateHostMismatch
                }
                C::UnknownIssuer => TlsFailure::CertificateNotTrusted,
                C::Other(_) => {
                    crate::dane::mismatch_of(e).map_or(TlsFailure::ValidationFailure, |m| m.failure)
                }
                _ => TlsFailure::ValidationFailure,
            },
            _ => TlsFailure::ValidationFailure,
        }
    }
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One TLSA record (RFC 6698 §2.1): certificate usage, selector, matching type and the
/// association data (the digest, or the full certificate / SPKI for matching type 0).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tlsa {
    /// 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE.
    pub usage: u8,
    /// 0 full certificate, 1 SubjectPublicKeyInfo.
    pub selector: u8,
    /// 0 exact, 1 SHA-256, 2 SHA-512.
    pub matching: u8,
    /// The association data.
    pub data: Vec<u8>,
}

/// The usable TLSA records of one MX host (validated as DNSSEC-secure by the resolver)
/// and the names a DANE-TA chain's certificate may carry (RFC 7672 §3.2.2: the TLSA base
/// domain, the MX host name, and the destination domain).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DaneTlsa {
    /// Usable records (DANE-TA and DANE-EE only; PKIX usages are dropped by the caller,
    /// RFC 7672 §3.1.3).
    pub records: Vec<Tlsa>,
    /// Reference identifiers for DANE-TA(2), lowercase.
    pub names: Vec<String>,
}

/// What one connection's TLS must satisfy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsRequest {
    /// The policy name (`none`, `may`, `encrypt`, `verify`, `dane`).
    pub policy: TlsPolicy,
    /// Under [`TlsPolicy::Dane`]: the records the certificate must match.
    pub dane: Option<Arc<DaneTlsa>>,
    /// MTA-STS `testing`: TLS is set up as `policy` says, and the certificate is also
    /// checked as `verify` would (chain and name), the outcome kept in
    /// [`SmtpSession::tls_audit`](crate::SmtpSession::tls_audit) for the report; it never
    /// fails the session.
    pub audit: bool,
}

impl TlsRequest {
    /// A request with no more than the policy.
    pub fn plain(policy: TlsPolicy) -> TlsRequest {
        TlsRequest {
            policy,
            dane: None,
            audit: false,
        }
    }
}
