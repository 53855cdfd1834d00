//! The client side of TLS for transcripts: a rustls client that accepts any certificate.
//!
//! The server's certificate is self-signed and made fresh for each test, so there is no
//! trust anchor to check it against. The verifier therefore skips the chain and name
//! check, but it still verifies the handshake signatures with the certificate's key, so
//! the handshake is a real one: the verifier Tern's own SMTP client uses for
//! opportunistic TLS (`tern_deliver::context::AnyCertificate`).

use std::sync::Arc;

use rustls::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::ServerName;
use tern_deliver::context::AnyCertificate;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

fn connector() -> TlsConnector {
    let provider: CryptoProvider = rustls::crypto::ring::default_provider();
    let verifier = AnyCertificate::new(&provider);
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .expect("rustls protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// Performs the client handshake over `tcp`, naming the server `mx.test`.
pub async fn handshake(tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(super::HOSTNAME).expect("valid server name");
    connector().connect(name, tcp).await
}
