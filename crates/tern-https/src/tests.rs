//! Against a local rustls server with an rcgen CA, on loopback, with a fixed resolver.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

const HOST: &str = "mta-sts.example.test";

struct Pki {
    ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Tern https test CA");
    let ca = params.self_signed(&ca_key).unwrap();
    Pki {
        ca_pem: ca.pem(),
        issuer: rcgen::Issuer::new(params, ca_key),
    }
}

/// A leaf for `name`, expired when asked.
fn leaf(pki: &Pki, name: &str, expired: bool) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    if expired {
        params.not_before = time::OffsetDateTime::from_unix_timestamp(1_500_000_000).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(1_600_000_000).unwrap();
    }
    let cert = params.signed_by(&key, &pki.issuer).unwrap();
    (
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

type Answer = Arc<dyn Fn(&str, &[u8]) -> Option<Vec<u8>> + Send + Sync>;

/// A TLS server on 127.0.0.1 answering every request with `answer(head, body)`; `None`
/// holds the connection without answering. Stopped when dropped.
struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(cert: (CertificateDer<'static>, PrivateKeyDer<'static>), answer: Answer) -> Server {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.0], cert.1)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let answer = answer.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    if buf.len() > 65536 {
                        return;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                while buf.len() < head_end + length {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                match answer(&head, &buf[head_end..]) {
                    Some(reply) => {
                        let _ = tls.write_all(&reply).await;
                        let _ = tls.shutdown().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            });
        }
    });
    Server { addr, task }
}

fn reply(status: &str, ctype: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn client(pki: &Pki) -> Client {
    client_with(pki, true)
}

/// The tests' servers are on loopback: every client but the guard's allows it.
fn client_with(pki: &Pki, allow_private_addresses: bool) -> Client {
    Client::new(&ClientConfig {
        extra_roots_pem: Some(pki.ca_pem.clone().into_bytes()),
        user_agent: String::new(),
        allow_private_addresses,
    })
    .unwrap()
}

fn resolver() -> FixedResolver {
    FixedResolver::new().with(HOST, &[Ipv4Addr::LOCALHOST.into()])
}

fn url(server: &Server) -> String {
    format!(
        "https://{HOST}:{}/.well-known/mta-sts.txt",
        server.addr.port()
    )
}

const LIMITS: Limits = Limits {
    timeout: Duration::from_secs(5),
    max_body: 1024,
};

#[tokio::test]
async fn get_returns_the_body_and_sends_host_and_path() {
    let pki = pki();
    let server = serve(
        leaf(&pki, HOST, false),
        Arc::new(|head: &str, _: &[u8]| {
            assert!(
                head.starts_with("GET /.well-known/mta-sts.txt HTTP/1.1\r\n"),
                "{head}"
            );
            assert!(
                head.to_ascii_lowercase()
                    .contains(&format!("host: {HOST}:")),
                "{head}"
            );
            Some(reply(
                "200 OK",
                "text/plain; charset=utf-8",
                "version: STSv1\r\n",
            ))
        }),
    )
    .await;
    let r = client(&pki)
        .get(&resolver(), &url(&server), Some("text/plain"), LIMITS)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"version: STSv1\r\n");
}

#[tokio::test]
async fn certificate_problems_are_classified() {
    let pki = pki();
    let ok = |_: &str, _: &[u8]| Some(reply("200 OK", "text/plain", "x"));
    // Untrusted: the client does not know the CA.
    let server = serve(leaf(&pki, HOST, false), Arc::new(ok)).await;
    let stranger = Client::new(&ClientConfig {
        allow_private_addresses: true,
        ..ClientConfig::default()
    })
    .unwrap();
    let e = stranger
        .get(&resolver(), &url(&server), None, LIMITS)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            HttpsError::Certificate {
                problem: CertProblem::Untrusted,
                ..
            }
        ),
        "{e}"
    );
    // Another name.
    let server = serve(leaf(&pki, "other.example.test", false), Arc::new(ok)).await;
    let e = client(&pki)
        .get(&resolver(), &url(&server), None, LIMITS)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            HttpsError::Certificate {
                problem: CertProblem::NameMismatch,
                ..
            }
        ),
        "{e}"
    );
    // Expired.
    let server = serve(leaf(&pki, HOST, true), Arc::new(ok)).await;
    let e = client(&pki)
        .get(&resolver(), &url(&server), None, LIMITS)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            HttpsError::Certificate {
                problem: CertProblem::Expired,
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test]
async fn redirects_are_not_followed_and_other_statuses_fail() {
    let pki = pki();
    let server = serve(
        leaf(&pki, HOST, false),
        Arc::new(|_: &str, _: &[u8]| {
            Some(
                b"HTTP/1.1 301 Moved\r\nLocation: https://evil.test/\r\nContent-Length: 0\r\n\r\n"
                    .to_vec(),
            )
        }),
    )
    .await;
    let e = client(&pki)
        .get(&resolver(), &url(&server), None, LIMITS)
        .await
        .unwrap_err();
    assert_eq!(e, HttpsError::Status(301));
    let server = serve(
        leaf(&pki, HOST, false),
        Arc::new(|_: &str, _: &[u8]| Some(reply("404 Not Found", "text/plain", "no"))),
    )
    .await;
    let e = client(&pki)
        .get(&resolver(), &url(&server), None, LIMITS)
        .await
        .unwrap_err();
    assert_eq!(e, HttpsError::Status(404));
}

#[tokio::test]
async fn bodies_past_the_bound_fail_announced_or_not() {
    let pki = pki();
    let big = "x".repeat(LIMITS.max_body + 1);
    let announced = big.clone();
    let server = serve(
        leaf(&pki, HOST, false),
        Arc::new(move |_: &str, _: &[u8]| Some(reply("200 OK", "text/plain", &announced))),
    )
    .await;
    let e = client(&pki)
        .get(&resolver(), &url(&server), None, LIMITS)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        HttpsError::TooLarge {
            limit: LIMITS.max_body
        }
    );
    // Chunked, no length announced: stopped while reading.
    let server = serve(
        leaf(&pki, HOST, false),
        Arc::new(move |_: &str, _: &[u8]| {
            let mut r = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec();
            for _ in 0..4 {
                r.extend_from_slice(format!("{:x}\r\n{}\r\n", 400, "y".repeat(400)).as_bytes());
            }
            r.extend_from_slice(b"0\r\n\r\n");
            Some(r)
        }),
    )
    .await;
    let e = client(&pki)
        .get(&resolver(), &url(&server), None, LIMITS)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        HttpsError::TooLarge {
            limit: LIMITS.max_body
        }
    );
}

#[tokio::test]
async fn a_server_that_never_answers_is_bounded_in_time() {
    let pki = pki();
    let server = serve(leaf(&pki, HOST, false), Arc::new(|_: &str, _: &[u8]| None)).await;
    let limits = Limits {
        timeout: Duration::from_millis(500),
        max_body: 1024,
    };
    let started = Instant::now();
    let e = client(&pki)
        .get(&resolver(), &url(&server), None, limits)
        .await
        .unwrap_err();
    assert_eq!(e, HttpsError::Timeout(limits.timeout));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn content_type_dns_and_url_errors() {
    let pki = pki();
    let server = serve(
        leaf(&pki, HOST, false),
        Arc::new(|_: &str, _: &[u8]| Some(reply("200 OK", "text/html", "<p>"))),
    )
    .await;
    let e = client(&pki)
        .get(&resolver(), &url(&server), Some("text/plain"), LIMITS)
        .await
        .unwrap_err();
    assert!(matches!(e, HttpsError::ContentType(..)), "{e}");
    let e = client(&pki)
        .get(&FixedResolver::new(), &url(&server), None, LIMITS)
        .await
        .unwrap_err();
    assert!(matches!(e, HttpsError::Dns { .. }), "{e}");
    for bad in [
        "http://mta-sts.example.test/",
        "https://127.0.0.1/",
        "https://user@mta-sts.example.test/",
        "mta-sts.example.test",
    ] {
        let e = client(&pki)
            .get(&resolver(), bad, None, LIMITS)
            .await
            .unwrap_err();
        assert!(matches!(e, HttpsError::Url(_)), "{bad}: {e}");
    }
}

#[tokio::test]
async fn post_sends_the_body_and_accepts_any_2xx() {
    let pki = pki();
    let server = serve(
        leaf(&pki, HOST, false),
        Arc::new(|head: &str, body: &[u8]| {
            assert!(head.starts_with("POST /report HTTP/1.1\r\n"), "{head}");
            assert!(
                head.to_ascii_lowercase()
                    .contains("content-type: application/tlsrpt+gzip"),
                "{head}"
            );
            assert_eq!(body, b"\x1f\x8bpayload");
            Some(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n".to_vec())
        }),
    )
    .await;
    let r = client(&pki)
        .post(
            &resolver(),
            &format!("https://{HOST}:{}/report", server.addr.port()),
            "application/tlsrpt+gzip",
            b"\x1f\x8bpayload".to_vec(),
            LIMITS,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 202);
}

#[tokio::test]
async fn loopback_is_refused_by_default_and_allowed_when_asked() {
    let pki = pki();
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = requests.clone();
    let server = serve(
        leaf(&pki, HOST, false),
        Arc::new(move |_: &str, _: &[u8]| {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Some(reply("200 OK", "text/plain", "ok"))
        }),
    )
    .await;
    // A hostile domain's DNS points its policy host at loopback: nothing is sent.
    let guarded = client_with(&pki, false);
    let e = guarded
        .get(&resolver(), &url(&server), None, LIMITS)
        .await
        .unwrap_err();
    assert_eq!(
        e,
        HttpsError::ForbiddenAddress {
            host: HOST.into(),
            addr: Ipv4Addr::LOCALHOST.into(),
            range: "loopback (127.0.0.0/8)",
        }
    );
    // The same with a private address before it, and for a POST: the first is named.
    let both = FixedResolver::new().with(
        HOST,
        &["10.1.2.3".parse().unwrap(), Ipv4Addr::LOCALHOST.into()],
    );
    let e = guarded
        .post(&both, &url(&server), "text/plain", b"x".to_vec(), LIMITS)
        .await
        .unwrap_err();
    assert!(
        matches!(e, HttpsError::ForbiddenAddress { addr, .. } if addr == "10.1.2.3".parse::<IpAddr>().unwrap()),
        "{e}"
    );
    assert_eq!(
        requests.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no request reached the server"
    );
    // Allowed when the caller asks.
    let r = client_with(&pki, true)
        .get(&resolver(), &url(&server), None, LIMITS)
        .await
        .unwrap();
    assert_eq!(r.body, b"ok");
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 1);
}
