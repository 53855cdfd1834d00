//! A small HTTPS client for the few requests Tern makes to the web: MTA-STS policy
//! fetches (RFC 8461 §3.3) and TLS-RPT reports posted to `https:` addresses (RFC 8460
//! §3).
//!
//! One request per connection, over hyper 1's HTTP/1.1 client connection
//! (`hyper::client::conn::http1`) on tokio-rustls with the ring provider:
//! - the host name is resolved through the [`Resolve`] the caller passes (Tern's
//!   `tern_route::dns::Resolver` implements it, so the `[dns]` servers and cache are
//!   used; tests pass a [`FixedResolver`]), and the addresses are tried in order;
//! - the certificate is checked strictly against webpki-roots plus optional extra PEM
//!   roots ([`ClientConfig::extra_roots_pem`]) and the URL's host name; TLS 1.2 and 1.3
//!   only; no client certificate;
//! - redirects are never followed (RFC 8461 §3.3): a 3xx is [`HttpsError::Status`];
//! - no proxy, no cookies, no caching, no compression asked;
//! - a total time bound covers resolution, connection, handshake, request and the whole
//!   body ([`Limits::timeout`]);
//! - the body is read up to [`Limits::max_body`] bytes: past it (announced by
//!   `Content-Length` or met while reading) the request fails with
//!   [`HttpsError::TooLarge`]; nothing past the bound is kept.
//! - the resolved addresses that are not public unicast (loopback, private, link-local,
//!   CGNAT, documentation, multicast...: the list in [`address`]) are never connected to
//!   unless [`ClientConfig::allow_private_addresses`] is set; when none is left the
//!   request fails with [`HttpsError::ForbiddenAddress`] before any connection. A domain's
//!   DNS thus cannot point Tern's requests at its own or its network's internal services.
//!
//! Invariants: nothing a server sends can panic this module or grow memory past
//! `max_body` plus hyper's own bounded header buffer; every request ends within
//! `timeout`. The connection task is aborted when the request ends, however it ends.
//! The addresses judged by the guard are the ones connected to (one resolution).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

pub mod address;

/// The boxed future [`Resolve::resolve`] returns.
pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<IpAddr>, String>> + Send + 'a>>;

/// Resolves a host name to the addresses to connect to, in the order to try them.
/// An error is a text for the report ([`HttpsError::Dns`]).
pub trait Resolve: Send + Sync {
    /// The addresses of `host` (a DNS name, lowercase, no trailing dot).
    fn resolve<'a>(&'a self, host: &'a str) -> ResolveFuture<'a>;
}

impl Resolve for tern_route::dns::Resolver {
    fn resolve<'a>(&'a self, host: &'a str) -> ResolveFuture<'a> {
        Box::pin(async move {
            self.addrs(host)
                .await
                .map(|a| a.as_ref().clone())
                .map_err(|e| e.to_string())
        })
    }
}

/// A fixed map of names to addresses (tests, or a pinned host).
#[derive(Debug, Clone, Default)]
pub struct FixedResolver {
    map: HashMap<String, Vec<IpAddr>>,
}

impl FixedResolver {
    /// An empty map: every name fails.
    pub fn new() -> FixedResolver {
        FixedResolver::default()
    }

    /// Adds `host` → `addrs`.
    pub fn with(mut self, host: &str, addrs: &[IpAddr]) -> FixedResolver {
        self.map.insert(host.to_ascii_lowercase(), addrs.to_vec());
        self
    }
}

impl Resolve for FixedResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> ResolveFuture<'a> {
        let found = self
            .map
            .get(&host.to_ascii_lowercase())
            .cloned()
            .ok_or_else(|| format!("{host}: no such name"));
        Box::pin(async move { found })
    }
}

/// How the client is set up (once per process).
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    /// Extra trust anchors (PEM certificates), added to webpki-roots: a private PKI, or
    /// the tests' CA.
    pub extra_roots_pem: Option<Vec<u8>>,
    /// `User-Agent` sent; `Tern` when empty.
    pub user_agent: String,
    /// Connect to loopback, private and other non-public addresses too (the list in
    /// [`address`]). Off by default: the host names come from other people's DNS. On for
    /// tests on loopback and for a private network whose policy hosts are internal.
    pub allow_private_addresses: bool,
}

/// The bounds of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Everything from resolution to the last byte of the body.
    pub timeout: Duration,
    /// The largest body accepted, in bytes.
    pub max_body: usize,
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// `extra_roots_pem` is not PEM, holds no certificate, or one is not a usable root.
    #[error("extra root certificates: {0}")]
    ExtraRoots(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// What was wrong with the server's certificate (rustls' classification), as TLS-RPT
/// needs it (`sts-webpki-invalid` and its details).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertProblem {
    /// Expired, or not yet valid.
    Expired,
    /// The chain does not lead to a trusted root.
    Untrusted,
    /// The certificate does not name the host.
    NameMismatch,
    /// Any other certificate problem (bad signature, revoked, unsupported...).
    Other,
}

impl CertProblem {
    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CertProblem::Expired => "certificate expired",
            CertProblem::Untrusted => "certificate not trusted",
            CertProblem::NameMismatch => "certificate does not name the host",
            CertProblem::Other => "certificate invalid",
        }
    }
}

impl fmt::Display for CertProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request failed. Every variant's text is bounded (names, numbers and library
/// messages, never the server's body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpsError {
    /// The URL is not `https://host[:port]/path` with a DNS host name.
    #[error("bad URL: {0}")]
    Url(String),
    /// The host name could not be resolved, or has no address.
    #[error("resolving {host}: {reason}")]
    Dns {
        /// The name asked.
        host: String,
        /// What the resolver said.
        reason: String,
    },
    /// Every address the host resolved to is loopback, private or otherwise not public
    /// (the list in [`address`]), and the client does not allow them
    /// ([`ClientConfig::allow_private_addresses`]); nothing was connected to.
    #[error(
        "{host} resolves only to non-public addresses ({addr}: {range}), which are not allowed"
    )]
    ForbiddenAddress {
        /// The host.
        host: String,
        /// The first address refused.
        addr: IpAddr,
        /// Its range, in words.
        range: &'static str,
    },
    /// No address accepted a TCP connection.
    #[error("connecting to {host}: {reason}")]
    Connect {
        /// The host.
        host: String,
        /// The last address's error.
        reason: String,
    },
    /// The server's certificate failed the checks.
    #[error("TLS with {host}: {problem}: {detail}")]
    Certificate {
        /// The host.
        host: String,
        /// Which check failed.
        problem: CertProblem,
        /// rustls' message.
        detail: String,
    },
    /// The TLS handshake failed for another reason (protocol version, alert...).
    #[error("TLS with {host}: {detail}")]
    Tls {
        /// The host.
        host: String,
        /// rustls' message.
        detail: String,
    },
    /// The HTTP exchange broke (malformed response, connection closed).
    #[error("HTTP: {0}")]
    Http(String),
    /// A status other than the one wanted: 200 for GET, 2xx for POST. Redirects land here
    /// too: they are never followed.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The body is larger than [`Limits::max_body`].
    #[error("response body larger than {limit} bytes")]
    TooLarge {
        /// The bound.
        limit: usize,
    },
    /// [`Limits::timeout`] passed.
    #[error("no complete response within {0:?}")]
    Timeout(Duration),
    /// The response's media type is not the one required (the value seen, bounded).
    #[error("content type {0:?} where {1} is required")]
    ContentType(String, &'static str),
}

/// A successful response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status (200 for GET; 2xx for POST).
    pub status: u16,
    /// The `Content-Type` field, if any (as sent, when it is visible ASCII).
    pub content_type: Option<String>,
    /// The body, at most [`Limits::max_body`] bytes.
    pub body: Vec<u8>,
}

/// The HTTPS client. Cheap to clone; build once (root parsing happens here).
#[derive(Clone)]
pub struct Client {
    tls: tokio_rustls::TlsConnector,
    user_agent: String,
    allow_private: bool,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("user_agent", &self.user_agent)
            .field("allow_private", &self.allow_private)
            .finish_non_exhaustive()
    }
}

/// A parsed `https:` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    path_and_query: String,
}

/// The longest URL accepted.
const MAX_URL: usize = 2048;

fn parse_url(url: &str) -> Result<Target, HttpsError> {
    let bad = |why: &str| HttpsError::Url(format!("{why} ({:.100})", url));
    if url.len() > MAX_URL {
        return Err(bad("too long"));
    }
    let uri: hyper::Uri = url.parse().map_err(|_| bad("not a URI"))?;
    if uri.scheme_str().map(str::to_ascii_lowercase).as_deref() != Some("https") {
        return Err(bad("not https"));
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("user information is not allowed"));
    }
    let host = authority.host().trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty()
        || host.starts_with('[')
        || host.parse::<IpAddr>().is_ok()
        || ServerName::try_from(host.clone()).is_err()
    {
        return Err(bad("the host must be a DNS name"));
    }
    let port = authority.port_u16().unwrap_or(443);
    let path_and_query = uri
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    Ok(Target {
        host,
        port,
        path_and_query,
    })
}

/// The media type of a `Content-Type` value, lowercase, without parameters.
fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Aborts the connection task when the request ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn classify(host: &str, e: &std::io::Error) -> HttpsError {
    let Some(rustls_error) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return HttpsError::Tls {
            host: host.to_string(),
            detail: e.to_string(),
        };
    };
    use rustls::CertificateError as C;
    let problem = match rustls_error {
        rustls::Error::InvalidCertificate(c) => match c {
            C::Expired
            | C::ExpiredContext { .. }
            | C::NotValidYet
            | C::NotValidYetContext { .. } => CertProblem::Expired,
            C::UnknownIssuer => CertProblem::Untrusted,
            C::NotValidForName | C::NotValidForNameContext { .. } => CertProblem::NameMismatch,
            _ => CertProblem::Other,
        },
        other => {
            return HttpsError::Tls {
                host: host.to_string(),
                detail: other.to_string(),
            };
        }
    };
    HttpsError::Certificate {
        host: host.to_string(),
        problem,
        detail: rustls_error.to_string(),
    }
}

enum Method {
    Get { want_type: Option<&'static str> },
    Post { content_type: String, body: Bytes },
}

impl Client {
    /// Builds the TLS configuration: webpki-roots plus the extra roots.
    pub fn new(config: &ClientConfig) -> Result<Client, SetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(pem) = &config.extra_roots_pem {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<_, _>>()
                .map_err(|e| SetupError::ExtraRoots(e.to_string()))?;
            if certs.is_empty() {
                return Err(SetupError::ExtraRoots("no certificate in PEM".into()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| SetupError::ExtraRoots(e.to_string()))?;
            }
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let user_agent = if config.user_agent.is_empty() {
            "Tern".to_string()
        } else {
            config.user_agent.clone()
        };
        Ok(Client {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            user_agent,
            allow_private: config.allow_private_addresses,
        })
    }

    /// GET `url`; the status must be 200 and, when `want_type` is given, the media type
    /// that one (`text/plain`, parameters allowed).
    pub async fn get(
        &self,
        resolver: &dyn Resolve,
        url: &str,
        want_type: Option<&'static str>,
        limits: Limits,
    ) -> Result<Response, HttpsError> {
        self.bounded(resolver, url, Method::Get { want_type }, limits)
            .await
    }

    /// POST `body` as `content_type` to `url`; any 2xx status is success.
    pub async fn post(
        &self,
        resolver: &dyn Resolve,
        url: &str,
        content_type: &str,
        body: Vec<u8>,
        limits: Limits,
    ) -> Result<Response, HttpsError> {
        let method = Method::Post {
            content_type: content_type.to_string(),
            body: Bytes::from(body),
        };
        self.bounded(resolver, url, method, limits).await
    }

    async fn bounded(
        &self,
        resolver: &dyn Resolve,
        url: &str,
        method: Method,
        limits: Limits,
    ) -> Result<Response, HttpsError> {
        let target = parse_url(url)?;
        match tokio::time::timeout(
            limits.timeout,
            self.exchange(resolver, &target, method, limits.max_body),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(HttpsError::Timeout(limits.timeout)),
        }
    }

    async fn exchange(
        &self,
        resolver: &dyn Resolve,
        target: &Target,
        method: Method,
        max_body: usize,
    ) -> Result<Response, HttpsError> {
        let host = target.host.as_str();
        let addrs = resolver
            .resolve(host)
            .await
            .map_err(|reason| HttpsError::Dns {
                host: host.to_string(),
                reason,
            })?;
        if addrs.is_empty() {
            return Err(HttpsError::Dns {
                host: host.to_string(),
                reason: "no address".into(),
            });
        }
        let mut allowed = Vec::with_capacity(addrs.len().min(8));
        let mut refused = None;
        for ip in addrs.iter().take(8) {
            match address::forbidden_range(*ip) {
                Some(range) if !self.allow_private => {
                    refused.get_or_insert((*ip, range));
                }
                _ => allowed.push(*ip),
            }
        }
        if allowed.is_empty()
            && let Some((addr, range)) = refused
        {
            return Err(HttpsError::ForbiddenAddress {
                host: host.to_string(),
                addr,
                range,
            });
        }
        let mut last = String::new();
        let mut tcp = None;
        for ip in &allowed {
            match TcpStream::connect(SocketAddr::new(*ip, target.port)).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = format!("{ip}: {e}"),
            }
        }
        let tcp = tcp.ok_or_else(|| HttpsError::Connect {
            host: host.to_string(),
            reason: last,
        })?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| HttpsError::Url(format!("{host:?} is not a valid server name")))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| classify(host, &e))?;

        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| HttpsError::Http(e.to_string()))?;
        let _driver = AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));

        let authority = if target.port == 443 {
            host.to_string()
        } else {
            format!("{host}:{}", target.port)
        };
        let builder = Request::builder()
            .uri(target.path_and_query.as_str())
            .header(HOST, authority)
            .header(USER_AGENT, self.user_agent.as_str());
        let (request, want_type, post) = match method {
            Method::Get { want_type } => (
                builder
                    .method(hyper::Method::GET)
                    .body(Full::new(Bytes::new())),
                want_type,
                false,
            ),
            Method::Post { content_type, body } => (
                builder
                    .method(hyper::Method::POST)
                    .header(CONTENT_TYPE, content_type)
                    .header(CONTENT_LENGTH, body.len())
                    .body(Full::new(body)),
                None,
                true,
            ),
        };
        let request = request.map_err(|e| HttpsError::Url(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| HttpsError::Http(e.to_string()))?;

        let status = response.status().as_u16();
        let ok = if post {
            (200..300).contains(&status)
        } else {
            status == 200
        };
        if !ok {
            return Err(HttpsError::Status(status));
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(200).collect::<String>());
        if let Some(want) = want_type {
            let seen = content_type.as_deref().map(media_type).unwrap_or_default();
            if seen != want {
                return Err(HttpsError::ContentType(
                    content_type.unwrap_or_default(),
                    want,
                ));
            }
        }
        let announced = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if announced.is_some_and(|n| n > max_body as u64) {
            return Err(HttpsError::TooLarge { limit: max_body });
        }
        let mut body = response.into_body();
        let mut out: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| HttpsError::Http(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                if out.len().saturating_add(data.len()) > max_body {
                    return Err(HttpsError::TooLarge { limit: max_body });
                }
                out.extend_from_slice(&data);
            }
        }
        Ok(Response {
            status,
            content_type,
            body: out,
        })
    }
}

#[cfg(test)]
mod tests;
