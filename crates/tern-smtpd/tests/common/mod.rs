//! Test harness: a real Tern SMTP server, in process, on `127.0.0.1` port 0.
//!
//! [`TestServer::start`] opens a spool in a fresh temporary directory, builds the shared
//! state the binary would build (host name `mx.test`, relay domains `local.test` and
//! `.sub.test`, reverse DNS off) and starts one listener with the limits of [`Options`].
//! With TLS enabled, a self-signed certificate for `mx.test` is generated with rcgen and
//! written as PEM files into the same temporary directory.
//!
//! Invariants:
//! - Relay networks are empty unless a test asks otherwise, so the test client on
//!   127.0.0.1 is an outside client.
//! - Back pressure never refuses for lack of disk (the thresholds are zero: a test that saw
//!   `452 4.3.1` would be testing the machine's free disk space, not Tern); the queue limit
//!   is far above anything a test queues unless the test sets `max_queued_messages`.
//! - The spool handle returned is a clone of the server's, so what it lists is exactly what
//!   the server committed (committed means fsynced; `250 … queued as` comes after that).

#![allow(dead_code)]

pub mod runner;
pub mod script;
pub mod stored;
pub mod tls_client;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use arc_swap::ArcSwap;
use ipnet::IpNet;
use tempfile::TempDir;
use tern_events::EventLog;
use tern_smtpd::{ListenerConfig, RelayConfig, RelayPolicy, Server, SmtpShared, TlsMode};
use tern_spool::backpressure::{BackPressure, BackPressureConfig};
use tern_spool::{QueueState, Spool, StoredMessage};

/// Tern's host name in every test.
pub const HOSTNAME: &str = "mx.test";
/// The domains Tern receives mail for in every test.
pub const RELAY_DOMAINS: [&str; 2] = ["local.test", ".sub.test"];

/// What a test can choose about the server.
#[derive(Debug, Clone)]
pub struct Options {
    /// Client networks allowed to relay (default: none).
    pub relay_networks: Vec<IpNet>,
    /// The listener; `address`, `certificate` and `private_key` are set by the harness.
    pub listener: ListenerConfig,
    /// Generate a certificate and configure it (the TLS mode is `listener.tls`).
    pub certificate: bool,
    /// Look loopback clients up in DNS instead of calling them `localhost`.
    pub rdns_lookup_loopback: bool,
    /// Back pressure refuses MAIL while this many messages are queued.
    pub max_queued_messages: usize,
    /// `[auth]`; the harness sets `passwd_file` and `sender_login_map` from the lines
    /// below. Used when the listener has `auth` set.
    pub auth: tern_auth::AuthConfig,
    /// Lines of the passwd-file.
    pub auth_users: Vec<String>,
    /// Lines of the sender-login map (a map is configured when there is one).
    pub auth_senders: Vec<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            relay_networks: Vec::new(),
            listener: ListenerConfig {
                name: "test".into(),
                address: SocketAddr::from(([127, 0, 0, 1], 0)),
                ..ListenerConfig::default()
            },
            certificate: false,
            rdns_lookup_loopback: false,
            max_queued_messages: 1_000_000,
            auth: tern_auth::AuthConfig {
                // No failure delays in transcripts unless one asks for them.
                failure_delay_ms: 0,
                max_failure_delay_ms: 0,
                ..tern_auth::AuthConfig::default()
            },
            auth_users: Vec::new(),
            auth_senders: Vec::new(),
        }
    }
}

/// A running server with its spool.
pub struct TestServer {
    /// Where the listener accepts connections.
    pub addr: SocketAddr,
    /// The server's spool (a clone of its handle).
    pub spool: Spool,
    server: Option<Server>,
    dir: TempDir,
}

impl TestServer {
    /// Starts a server with `opts`.
    pub async fn start(opts: Options) -> TestServer {
        let dir = tempfile::tempdir().expect("create temporary directory");
        let events = EventLog::discard();
        let (spool, _report) =
            Spool::open(&dir.path().join("spool"), events.clone()).expect("open spool");
        let back_pressure = BackPressure::start(
            spool.clone(),
            BackPressureConfig {
                min_free_percent: 0.0,
                min_free_bytes: 0,
                max_queued_messages: opts.max_queued_messages,
                check_interval_ms: 1000,
            },
            events.clone(),
        );
        let relay = RelayConfig {
            domains: RELAY_DOMAINS.iter().map(|d| d.to_string()).collect(),
            networks: opts.relay_networks.clone(),
        };
        let auth = (opts.listener.auth != tern_smtpd::AuthMode::None).then(|| {
            use std::os::unix::fs::PermissionsExt;
            let write = |name: &str, lines: &[String]| {
                let path = dir.path().join(name);
                std::fs::write(&path, lines.join("\n") + "\n").expect("write auth file");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .expect("chmod auth file");
                path
            };
            let mut config = opts.auth.clone();
            config.passwd_file = Some(write("users", &opts.auth_users));
            if !opts.auth_senders.is_empty() {
                config.sender_login_map = Some(write("senders", &opts.auth_senders));
            }
            let (service, report) = tern_auth::AuthService::new(&config);
            assert!(!report.has_errors(), "auth files: {report:?}");
            service
        });
        let shared = Arc::new(SmtpShared {
            auth,
            verify: arc_swap::ArcSwapOption::empty(),
            dmarc_recorder: Arc::new(tern_reports::NoReports),
            inbound_tls: None,
            hostname: HOSTNAME.into(),
            intake: Arc::new(spool.clone()),
            events,
            back_pressure,
            relay: ArcSwap::from_pointee(RelayPolicy::new(&relay, HOSTNAME)),
            resolver: None,
            rdns_timeout: Duration::from_secs(1),
            rdns_lookup_loopback: opts.rdns_lookup_loopback,
            loop_mark: None,
            limits: tern_smtpd::rate::RateLimits::disabled(),
            screen: None,
        });
        let mut listener = opts.listener.clone();
        listener.address = SocketAddr::from(([127, 0, 0, 1], 0));
        if opts.certificate {
            let (cert, key) = write_certificate(&dir);
            listener.certificate = Some(cert);
            listener.private_key = Some(key);
        }
        let server = Server::start(shared, &[listener])
            .await
            .expect("start server");
        let addr = *server.local_addrs().first().expect("one bound address");
        TestServer {
            addr,
            spool,
            server: Some(server),
            dir,
        }
    }

    /// Asks the server to shut down and lets it finish in the background: idle sessions
    /// get `421 4.3.2`. When this returns, the shutdown signal has been sent (the shutdown
    /// future is polled once here, and sending the signal is the first thing it does). The
    /// returned task finishes when the server has stopped.
    pub async fn begin_shutdown(&mut self) -> tokio::task::JoinHandle<()> {
        let server = self.server.take().expect("server already shut down");
        let mut stopping = Box::pin(server.shutdown(Duration::from_secs(1)));
        let done =
            std::future::poll_fn(|cx| Poll::Ready(stopping.as_mut().poll(cx).is_ready())).await;
        tokio::spawn(async move {
            if !done {
                stopping.await;
            }
        })
    }

    /// Stops the server (if still running) and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown(Duration::from_secs(1)).await;
        }
    }

    /// Every message in a queued state (incoming, active, deferred, hold), read in full.
    pub fn queued_messages(&self) -> Vec<StoredMessage> {
        let listed = self.spool.list(None).expect("list spool");
        listed
            .into_iter()
            .filter(|m| QueueState::QUEUED.contains(&m.state))
            .map(|m| self.spool.read(m.state, m.id).expect("read queued message"))
            .collect()
    }
}

/// Generates a self-signed certificate for [`HOSTNAME`] and writes it and its key as PEM.
fn write_certificate(dir: &TempDir) -> (PathBuf, PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec![HOSTNAME.to_string()])
        .expect("generate certificate");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).expect("write certificate");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    (cert, key)
}

/// Parses `value` as a listener TLS mode as written in a transcript header.
pub fn tls_mode(value: &str) -> Option<TlsMode> {
    match value {
        "starttls" => Some(TlsMode::Starttls),
        "implicit" => Some(TlsMode::Implicit),
        "none" => Some(TlsMode::None),
        _ => None,
    }
}
