//! The DANE certificate check (RFC 7672 §3, RFC 7671): a rustls verifier built for one
//! connection from the host's DNSSEC-validated TLSA records ([`DaneTlsa`]).
//!
//! Rules:
//! - DANE-EE(3): the leaf certificate (selector 0) or its SubjectPublicKeyInfo (1),
//!   compared exactly (matching 0) or by SHA-256 (1) / SHA-512 (2). No name and no
//!   validity dates are checked (RFC 7672 §3.1.1: the key is what the record pins).
//! - DANE-TA(2): some certificate of the presented chain matches a record (same
//!   selectors and matching types); the chain from the leaf must validate up to that
//!   certificate used as the trust anchor (rustls-webpki: signatures, validity dates,
//!   basic constraints, server-auth usage), and the leaf must carry one of
//!   [`DaneTlsa::names`] (RFC 7672 §3.2.2).
//! - Any matching record is enough. Records of other usages, selectors or matching
//!   types never reach here (the queue drops them), and are ignored if they do.
//! - The handshake's signature is still verified with the provider's algorithms, so the
//!   peer must hold the key the records pin.
//!
//! A mismatch is a [`rustls::CertificateError::Other`] carrying a [`DaneMismatch`], which
//! [`TlsFailure::of_rustls`](crate::TlsFailure) reads as RFC 8460's `tlsa-invalid` (or
//! the certificate failure of a DANE-TA chain: expired, host mismatch).
//!
//! Trust: the certificates are the peer's; they are parsed by rustls-webpki only, and
//! every comparison is on bounded byte strings. Nothing here panics.

use std::sync::Arc;

use ring::digest;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};

use crate::security::{DaneTlsa, TlsFailure, Tlsa};

/// DANE-TA(2).
pub const USAGE_DANE_TA: u8 = 2;
/// DANE-EE(3).
pub const USAGE_DANE_EE: u8 = 3;

/// Why a certificate chain did not satisfy the TLSA records, with RFC 8460's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DANE: {detail}")]
pub struct DaneMismatch {
    /// The result type to report.
    pub failure: TlsFailure,
    /// What did not match, for logs and the deferral text.
    pub detail: String,
}

/// Whether a record is one this client can use (RFC 7672 §3.1.3: DANE-TA and DANE-EE,
/// selectors 0 and 1, matching types 0, 1 and 2; the data not empty, a digest of its
/// length).
pub fn usable(r: &Tlsa) -> bool {
    matches!(r.usage, USAGE_DANE_TA | USAGE_DANE_EE)
        && r.selector <= 1
        && match r.matching {
            0 => !r.data.is_empty(),
            1 => r.data.len() == 32,
            2 => r.data.len() == 64,
            _ => false,
        }
}

/// The bytes a record with `selector` looks at in `cert`; `None` when the certificate
/// cannot be parsed.
fn selected(cert: &CertificateDer<'_>, selector: u8) -> Option<Vec<u8>> {
    match selector {
        0 => Some(cert.as_ref().to_vec()),
        1 => {
            let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
            Some(parsed.subject_public_key_info().as_ref().to_vec())
        }
        _ => None,
    }
}

/// Whether `cert` matches record `r` (selector and matching type only; usage is the
/// caller's).
fn matches(cert: &CertificateDer<'_>, r: &Tlsa) -> bool {
    let Some(bytes) = selected(cert, r.selector) else {
        return false;
    };
    match r.matching {
        0 => bytes == r.data,
        1 => digest::digest(&digest::SHA256, &bytes).as_ref() == r.data.as_slice(),
        2 => digest::digest(&digest::SHA512, &bytes).as_ref() == r.data.as_slice(),
        _ => false,
    }
}

/// The verifier for one connection.
#[derive(Debug)]
pub struct DaneVerifier {
    tlsa: Arc<DaneTlsa>,
    /// The handshake signature is checked as opportunistic TLS checks it: against the
    /// presented certificate's key, with the provider's algorithms.
    handshake: Arc<crate::context::AnyCertificate>,
}

impl DaneVerifier {
    /// A verifier for `tlsa`, with `provider`'s signature algorithms.
    pub fn new(tlsa: Arc<DaneTlsa>, provider: &rustls::crypto::CryptoProvider) -> DaneVerifier {
        DaneVerifier {
            tlsa,
            handshake: crate::context::AnyCertificate::new(provider),
        }
    }

    /// The check itself, without rustls' types around it (unit-tested).
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), DaneMismatch> {
        let records: Vec<&Tlsa> = self.tlsa.records.iter().filter(|r| usable(r)).collect();
        if records
            .iter()
            .any(|r| r.usage == USAGE_DANE_EE && matches(end_entity, r))
        {
            return Ok(());
        }
        let mut last_chain_error = None;
        for r in records.iter().filter(|r| r.usage == USAGE_DANE_TA) {
            for ta in intermediates.iter().filter(|c| matches(c, r)) {
                match self.chain_to(end_entity, intermediates, ta, now) {
                    Ok(()) => return Ok(()),
                    Err(e) => last_chain_error = Some(e),
                }
            }
        }
        Err(last_chain_error.unwrap_or_else(|| DaneMismatch {
            failure: TlsFailure::TlsaInvalid,
            detail: format!(
                "no TLSA record ({}) matches the certificate chain",
                self.tlsa.records.len()
            ),
        }))
    }

    /// DANE-TA: the leaf chains to `ta` and names one of the reference names.
    fn chain_to(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        ta: &CertificateDer<'_>,
        now: UnixTime,
    ) -> Result<(), DaneMismatch> {
        let invalid = |failure, detail: String| DaneMismatch { failure, detail };
        let anchor = webpki::anchor_from_trusted_cert(ta).map_err(|e| {
            invalid(
                TlsFailure::TlsaInvalid,
                format!("the DANE-TA certificate cannot be a trust anchor: {e}"),
            )
        })?;
        let leaf = webpki::EndEntityCert::try_from(end_entity).map_err(|e| {
            invalid(
                TlsFailure::ValidationFailure,
                format!("the certificate cannot be parsed: {e}"),
            )
        })?;
        leaf.verify_for_usage(
            self.handshake.algorithms().all,
            &[anchor],
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| {
            let failure = match e {
                webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
                    TlsFailure::CertificateExpired
                }
                _ => TlsFailure::TlsaInvalid,
            };
            invalid(
                failure,
                format!("the chain does not validate to the DANE-TA certificate: {e}"),
            )
        })?;
        let named = self.tlsa.names.iter().any(|n| {
            ServerName::try_from(n.as_str())
                .is_ok_and(|sn| leaf.verify_is_valid_for_subject_name(&sn).is_ok())
        });
        if !named {
            return Err(invalid(
                TlsFailure::CertificateHostMismatch,
                format!(
                    "the certificate names none of {} (DANE-TA)",
                    self.tlsa.names.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates, now)
            .map(|()| ServerCertVerified::assertion())
            .map_err(|m| {
                rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(m))))
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.handshake.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.handshake.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.handshake.supported_verify_schemes()
    }
}

/// The DANE failure inside a rustls error, if it is one.
pub(crate) fn mismatch_of(e: &rustls::Error) -> Option<&DaneMismatch> {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            inner.downcast_ref::<DaneMismatch>()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
