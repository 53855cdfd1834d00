//! Client configuration and the TLS contexts built from it once per process.
//!
//! [`ClientContext::new`] builds two rustls client configurations up front so that no
//! connection pays for parsing roots:
//! - a verifying one (webpki-roots plus any extra PEM roots), used under
//!   [`TlsPolicy::Verify`], which checks the chain and that the certificate names the
//!   MX host;
//! - an opportunistic one for [`TlsPolicy::May`] and [`TlsPolicy::Encrypt`], which
//!   accepts any certificate, as Postfix does for `may`/`encrypt`: most MX certificates
//!   on the Internet would fail verification, and unauthenticated encryption still
//!   defeats passive eavesdropping. Its verifier still checks the handshake signature
//!   against the presented certificate, so the peer must hold that certificate's key.
//!
//! Both allow TLS 1.2 and 1.3 only, with rustls' default cipher suites from the ring
//! provider, passed explicitly (never the process-wide default provider).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// Outbound STARTTLS policy (Postfix `smtp_tls_security_level` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsPolicy {
    /// Never STARTTLS.
    None,
    /// STARTTLS when offered, any certificate; plaintext when not offered or when the
    /// server refuses the STARTTLS command.
    May,
    /// STARTTLS required, any certificate.
    Encrypt,
    /// STARTTLS required, certificate chain and name verified against `server_name`.
    Verify,
    /// STARTTLS required, the certificate matched against the host's DNSSEC-validated
    /// TLSA records ([`TlsRequest::dane`](crate::TlsRequest::dane), RFC 7672).
    Dane,
}

/// Per-stage time limits. `Default` is RFC 5321 §4.5.3.2 (connect: 30 s, the usual MTA
/// value; quit: 30 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// Waiting for the 220 greeting.
    pub greeting: Duration,
    /// EHLO/HELO reply.
    pub ehlo: Duration,
    /// STARTTLS reply plus the TLS handshake.
    pub starttls: Duration,
    /// MAIL reply (and the write of a pipelined command group).
    pub mail: Duration,
    /// Each RCPT reply.
    pub rcpt: Duration,
    /// DATA reply (354).
    pub data_start: Duration,
    /// Each write of a block of content.
    pub data_block: Duration,
    /// Final reply after the end-of-data marker.
    pub data_end: Duration,
    /// RSET reply.
    pub rset: Duration,
    /// QUIT write and reply together.
    pub quit: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(30),
            greeting: Duration::from_secs(300),
            ehlo: Duration::from_secs(300),
            starttls: Duration::from_secs(120),
            mail: Duration::from_secs(300),
            rcpt: Duration::from_secs(300),
            data_start: Duration::from_secs(120),
            data_block: Duration::from_secs(180),
            data_end: Duration::from_secs(600),
            rset: Duration::from_secs(60),
            quit: Duration::from_secs(30),
        }
    }
}

/// What the outbound client is configured with.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Name sent in EHLO/HELO; should be this host's FQDN with a matching A/AAAA.
    pub helo_name: String,
    /// Time limits.
    pub timeouts: Timeouts,
    /// Extra trust anchors (PEM certificates) for [`TlsPolicy::Verify`], added to
    /// webpki-roots.
    pub extra_roots_pem: Option<Vec<u8>>,
    /// The mark this process's own SMTP server puts in its greeting (Tern's binary makes
    /// one per process, `loop-check=<random hex>`). A server that greets with it is this
    /// very process, reached through one of its MX or relay hosts (a wildcard listener,
    /// NAT, a port forward): [`SmtpSession::connect`](crate::SmtpSession::connect) then
    /// says QUIT and fails with [`SessionError::LoopsBack`](crate::SessionError::LoopsBack)
    /// instead of relaying to itself. `None`: no check.
    pub loop_mark: Option<String>,
}

/// Why a [`ClientContext`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// `helo_name` is empty or contains characters that cannot go on a command line.
    #[error("invalid helo_name {0:?}")]
    HeloName(String),
    /// `extra_roots_pem` is not PEM, or a certificate in it is not a usable trust anchor.
    #[error("extra root certificates: {0}")]
    ExtraRoots(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The verifier could not be built (for example, no trust anchors at all).
    #[error("certificate verifier: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
}

/// Immutable, shareable state for all outbound sessions.
pub struct ClientContext {
    pub(crate) config: ClientConfig,
    pub(crate) verifying: Arc<rustls::ClientConfig>,
    pub(crate) opportunistic: Arc<rustls::ClientConfig>,
    /// The verifier of `verifying`, also run after an opportunistic handshake when an
    /// audit is asked (MTA-STS `testing`, [`ClientContext::audit`]).
    pub(crate) webpki: Arc<rustls::client::WebPkiServerVerifier>,
    /// For the per-connection DANE configuration (`dane.rs`).
    pub(crate) provider: Arc<rustls::crypto::CryptoProvider>,
}

impl fmt::Debug for ClientContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientContext")
            .field("helo_name", &self.config.helo_name)
            .field("timeouts", &self.config.timeouts)
            .finish_non_exhaustive()
    }
}

impl ClientContext {
    /// Checks the configuration and builds both TLS configurations.
    pub fn new(config: ClientConfig) -> Result<Arc<ClientContext>, ClientError> {
        if config.helo_name.is_empty()
            || !config
                .helo_name
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
        {
            return Err(ClientError::HeloName(config.helo_name));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(pem) = &config.extra_roots_pem {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<_, _>>()
                .map_err(|e| ClientError::ExtraRoots(e.to_string()))?;
            if certs.is_empty() {
                return Err(ClientError::ExtraRoots("no certificate in PEM".into()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| ClientError::ExtraRoots(e.to_string()))?;
            }
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()?;
        let verifying = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();

        let any = AnyCertificate::new(&provider);
        let opportunistic = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(any)
            .with_no_client_auth();

        Ok(Arc::new(ClientContext {
            config,
            verifying: Arc::new(verifying),
            opportunistic: Arc::new(opportunistic),
            webpki: verifier,
            provider,
        }))
    }

    /// The MTA-STS `testing` audit (RFC 8461 §4.2): whether `chain` (end entity first),
    /// presented in a handshake already done, passes the checks of
    /// [`TlsPolicy::Verify`]: a chain to webpki-roots or the extra roots, valid now, and
    /// naming `server_name`. The handshake's signature was checked by the handshake's
    /// own verifier, so only the certificate checks run here.
    pub(crate) fn audit(
        &self,
        chain: &[CertificateDer<'_>],
        server_name: &str,
    ) -> Result<(), crate::TlsFailure> {
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|_| crate::TlsFailure::CertificateHostMismatch)?;
        let (end_entity, intermediates) = chain
            .split_first()
            .ok_or(crate::TlsFailure::ValidationFailure)?;
        self.webpki
            .verify_server_cert(end_entity, intermediates, &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| crate::TlsFailure::of_rustls(&e))
    }

    /// The configuration this context was built from.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }
}

/// Opportunistic TLS: accepts any certificate chain and name, but verifies that the
/// handshake was signed by the presented certificate's key. Also what the SMTP server's
/// tests use as their TLS client against fresh self-signed certificates.
#[derive(Debug)]
pub struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AnyCertificate {
    /// A verifier using `provider`'s signature algorithms.
    pub fn new(provider: &rustls::crypto::CryptoProvider) -> Arc<AnyCertificate> {
        Arc::new(AnyCertificate {
            algorithms: provider.signature_verification_algorithms,
        })
    }

    /// The signature algorithms it verifies with (DANE-TA chains use the same).
    pub(crate) fn algorithms(&self) -> &WebPkiSupportedAlgorithms {
        &self.algorithms
    }
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `TLSv1.3 TLS13_AES_256_GCM_SHA384`-style description of an established session.
pub(crate) fn describe(conn: &rustls::ClientConnection) -> String {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(v) => format!("{v:?}"),
        None => "TLS".to_string(),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|c| format!("{:?}", c.suite()))
        .unwrap_or_else(|| "unknown".into());
    format!("{version} {cipher}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ClientConfig {
        ClientConfig {
            helo_name: "mail.example.org".into(),
            timeouts: Timeouts::default(),
            extra_roots_pem: None,
            loop_mark: None,
        }
    }

    #[test]
    fn builds_with_webpki_roots() {
        let ctx = ClientContext::new(config()).unwrap();
        assert_eq!(ctx.config().timeouts.data_end, Duration::from_secs(600));
    }

    #[test]
    fn rejects_bad_helo_name_and_bad_roots() {
        let mut c = config();
        c.helo_name = "a b".into();
        assert!(matches!(
            ClientContext::new(c),
            Err(ClientError::HeloName(_))
        ));
        let mut c = config();
        c.extra_roots_pem = Some(b"not pem".to_vec());
        assert!(matches!(
            ClientContext::new(c),
            Err(ClientError::ExtraRoots(_))
        ));
    }

    #[test]
    fn accepts_rcgen_ca() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let mut c = config();
        c.extra_roots_pem = Some(ca.pem().into_bytes());
        ClientContext::new(c).unwrap();
    }
}
