//! Tern's inbound SMTP server.
//!
//! [`Server::start`] binds every configured listener and runs one accept loop per
//! listener; each accepted connection becomes a [`session::Session`] in its own task.
//! Shared, read-mostly state lives in [`SmtpShared`]; the relay policy sits in an
//! `ArcSwap` so a reload replaces it without readers ever waiting.
//!
//! Invariants:
//! - A session's failure (panic, I/O error, hostile peer) ends that session only; its
//!   connection slot and unfinished spool file are released by `Drop`.
//! - A listener stays usable under a flood of cheap connections: its `ConnectionLimiter`
//!   (`limits.rs`) limits connections per client network, keeps a reserve for relay
//!   networks, makes the longest idle session give way to a new client when full, and
//!   puts the listener in stress (shorter timeouts, tighter limits) when nearly full;
//!   every session's time is bounded (`session/clock.rs`).
//! - [`Server::shutdown`] stops accepting, tells idle sessions to close with 421, waits at
//!   most the grace period for sessions in the middle of a message, then aborts the rest.
//!   It always returns within the grace period plus a small constant.
//!
//! - Rate limits (`rate.rs`, docs/LIMITS.md) are checked in the session's own task, so
//!   the accept loop never waits on a limiter: a connection over its client network's
//!   rate gets `421 4.7.0` before the greeting and is closed.
//!
//! Watchdog ([`Server::start_watched`]): each accept loop has a keep-alive heartbeat
//! `listener.<name>`. It beats every watchdog tick while waiting for connections and
//! counts one item per accepted connection, so a loop that stops coming round (stuck in
//! its body, or its runtime no longer polling it) is reported as stalled. It is never
//! restarted: the loop owns the listening socket and the set of its sessions, and
//! aborting it would cut every session of the listener.

#![forbid(unsafe_code)]

pub mod config;
pub mod inbound_tls;
pub mod limits;
pub mod rate;
pub mod rdns;
pub mod received;
pub mod relay;
pub mod session;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_resolver::TokioResolver;
use tern_events::{EventLog, catalog, fields};
use tern_spool::MessageIntake;
use tern_spool::backpressure::BackPressure;
use tern_watchdog::{Heartbeat, Kind, Watchdog};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

pub use config::{AuthMode, ConfigProblem, ListenerConfig, RelayConfig, TlsMode};
pub use relay::RelayPolicy;

/// State shared by every listener and session.
pub struct SmtpShared {
    /// Tern's host name (greeting, Received header).
    pub hostname: String,
    /// Where accepted mail goes (the spool, or any other storage backend).
    pub intake: Arc<dyn MessageIntake>,
    /// Event log.
    pub events: EventLog,
    /// Spool back pressure (452 when refusing).
    pub back_pressure: BackPressure,
    /// Relay policy, swapped atomically on reload.
    pub relay: ArcSwap<RelayPolicy>,
    /// Resolver for client names; `None` disables reverse DNS.
    pub resolver: Option<TokioResolver>,
    /// Time allowed for the reverse lookup and its forward confirmation.
    pub rdns_timeout: Duration,
    /// Look up loopback clients too (otherwise they are `localhost`).
    pub rdns_lookup_loopback: bool,
    /// A word added to the greeting (`220 <hostname> ESMTP Tern <mark>`): the binary
    /// makes one per process (`loop-check=<random hex>`) and gives the same to its SMTP
    /// client, which so recognises a connection to this very server (docs/DELIVERY.md,
    /// "Mail to myself"). `None`: the plain greeting.
    pub loop_mark: Option<String>,
    /// Rate limits (`[limits]`, `rate.rs`): connections, messages and recipients per
    /// window; swapped on reload, the limiter's table kept.
    pub limits: rate::RateLimits,
    /// SMTP AUTH (`[auth]`): `None` when no listener offers it. Listeners with `auth =
    /// "optional"` or `"required"` use it.
    pub auth: Option<Arc<tern_auth::AuthService>>,
    /// Screening before the first command and greylisting (`[screen]`,
    /// docs/SCREENING.md): `None` screens nobody. Which listeners screen is their
    /// `screen` key.
    pub screen: Option<Arc<tern_screen::Screen>>,
    /// Inbound verification (`[verify]`, tern-authcheck, docs/FILTERING.md): `None` when
    /// off; swapped on reload (a session keeps the verifier it started a message with).
    pub verify: arc_swap::ArcSwapOption<tern_authcheck::Verifier>,
    /// Where DMARC observations go for the aggregate reports (`tern-reports`,
    /// docs/REPORTS.md): one per message whose DMARC record has `rua=`. `record()`
    /// returns at once. [`tern_reports::NoReports`] when `[dmarc_reports]` is off.
    pub dmarc_recorder: Arc<dyn tern_reports::DmarcRecorder>,
    /// Inbound TLS failures as events (`[tls_reports] inbound_events`, `inbound_tls.rs`):
    /// `None` when off.
    pub inbound_tls: Option<Arc<inbound_tls::InboundTlsEvents>>,
}

/// One listener's configuration plus what was built from it.
pub struct ListenerContext {
    /// Shared state.
    pub shared: Arc<SmtpShared>,
    /// The listener's configuration.
    pub config: ListenerConfig,
    /// TLS acceptor when a certificate is configured and TLS is not disabled.
    pub tls: Option<TlsAcceptor>,
    limiter: limits::ConnectionLimiter,
}

impl ListenerContext {
    /// A context for a session that no listener accepted (`tern sendmail -bs`): the
    /// listener's limits and timeouts from `config`, no TLS, no connection limits.
    pub fn local(shared: Arc<SmtpShared>, config: ListenerConfig) -> Arc<ListenerContext> {
        Arc::new(ListenerContext {
            shared,
            limiter: limits::ConnectionLimiter::new(limits::LimiterConfig::simple(1, 1)),
            config,
            tls: None,
        })
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A listener's address could not be bound.
    #[error("listener {name} ({address}): {source}")]
    Bind {
        /// Listener name.
        name: String,
        /// Address.
        address: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// A listener's certificate or key could not be loaded.
    #[error("listener {name}: {source}")]
    Tls {
        /// Listener name.
        name: String,
        /// Cause.
        source: tls::TlsSetupError,
    },
}

/// A running SMTP server.
pub struct Server {
    shutdown: watch::Sender<bool>,
    loops: JoinSet<()>,
    addrs: Vec<SocketAddr>,
}

impl Server {
    /// Binds every listener and starts accepting.
    pub async fn start(
        shared: Arc<SmtpShared>,
        listeners: &[ListenerConfig],
    ) -> Result<Server, ServerError> {
        Server::start_watched(shared, listeners, None).await
    }

    /// [`Server::start`], with each accept loop registered with `watchdog` (see the
    /// crate header).
    pub async fn start_watched(
        shared: Arc<SmtpShared>,
        listeners: &[ListenerConfig],
        watchdog: Option<&Watchdog>,
    ) -> Result<Server, ServerError> {
        let (shutdown, _) = watch::channel(false);
        let mut bound = Vec::new();
        for config in listeners {
            let tls = match (&config.certificate, &config.private_key, config.tls) {
                (_, _, TlsMode::None) => None,
                (Some(cert), Some(key), _) => Some(tls::load_acceptor(cert, key).map_err(
                    |source| ServerError::Tls {
                        name: config.name.clone(),
                        source,
                    },
                )?),
                _ => None,
            };
            let listener = bind(config.address).map_err(|source| ServerError::Bind {
                name: config.name.clone(),
                address: config.address,
                source,
            })?;
            let events = shared.events.clone();
            let name = config.name.clone();
            let max = config.max_connections;
            let limiter = limits::ConnectionLimiter::on_stress_change(
                config.limiter_config(),
                move |change| {
                    let event = if change.entered {
                        &catalog::SMTP_STRESS_ON
                    } else {
                        &catalog::SMTP_STRESS_OFF
                    };
                    events.emit(
                        event,
                        fields!("listener" => name, "in_use" => change.in_use, "max_connections" => max),
                    );
                },
            );
            let ctx = Arc::new(ListenerContext {
                shared: Arc::clone(&shared),
                limiter,
                config: config.clone(),
                tls,
            });
            bound.push((ctx, listener));
        }
        let mut loops = JoinSet::new();
        let mut addrs = Vec::new();
        for (ctx, listener) in bound {
            let addr = listener.local_addr().unwrap_or(ctx.config.address);
            addrs.push(addr);
            shared.events.emit(
                &catalog::LISTENER_STARTED,
                fields!("listener" => ctx.config.name, "address" => addr, "tls" => format!("{:?}", ctx.config.tls).to_lowercase()),
            );
            let name = format!("listener.{}", ctx.config.name);
            let liveness = match watchdog {
                Some(w) => Liveness {
                    beat: w.register(name, Kind::Listener),
                    every: Some(w.tick_interval()),
                },
                None => Liveness {
                    beat: Heartbeat::detached(name, Kind::Listener),
                    every: None,
                },
            };
            loops.spawn(accept_loop(ctx, listener, shutdown.subscribe(), liveness));
        }
        Ok(Server {
            shutdown,
            loops,
            addrs,
        })
    }

    /// The bound addresses, in listener order (useful with port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops accepting, closes idle sessions with 421, lets sessions inside a message
    /// finish for up to `grace`, then aborts whatever is left.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let all_done = async { while self.loops.join_next().await.is_some() {} };
        if tokio::time::timeout(grace + Duration::from_secs(1), all_done)
            .await
            .is_err()
        {
            self.loops.abort_all();
            while self.loops.join_next().await.is_some() {}
        }
    }
}

/// Binds with SO_REUSEADDR, and IPV6_V6ONLY for IPv6 so that `0.0.0.0` and `[::]`
/// listeners can coexist on one port.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// An accept loop's heartbeat and how often it beats while waiting (`None`: not
/// watched, no beats needed).
struct Liveness {
    beat: Heartbeat,
    every: Option<Duration>,
}

async fn accept_loop(
    ctx: Arc<ListenerContext>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    liveness: Liveness,
) {
    let beat = liveness.beat;
    let mut ticks = liveness.every.map(|every| {
        let mut t = tokio::time::interval(every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    beat.keep_alive(true);
    // Resolved once per listener: counting a session is then one atomic add.
    let in_progress = tern_metrics::get().smtp_sessions(&ctx.config.name);
    let mut sessions: JoinSet<()> = JoinSet::new();
    loop {
        while sessions.try_join_next().is_some() {}
        beat.busy(false);
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = session::wait_for_shutdown(&mut shutdown) => break,
            () = next_tick(&mut ticks) => {
                beat.beat();
                continue;
            }
        };
        beat.busy(true);
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                ctx.shared.events.emit(
                    &catalog::ACCEPT_FAILED,
                    fields!("listener" => ctx.config.name, "error" => e),
                );
                // Typically EMFILE: back off briefly instead of spinning.
                tokio::time::sleep(Duration::from_millis(100)).await;
                // The loop is alive (event 1006 reports the failure itself).
                beat.beat();
                continue;
            }
        };
        // Relay-network clients may use the reserve (decided once, at admission).
        let trusted = ctx.shared.relay.load().client_may_relay(peer.ip());
        match ctx.limiter.acquire(peer.ip(), trusted) {
            Ok(admitted) => {
                let ctx = Arc::clone(&ctx);
                let rx = shutdown.clone();
                let counted = in_progress.enter();
                sessions.spawn(async move {
                    let _counted = counted;
                    session::Session::run(ctx, tcp, peer, admitted.slot, trusted, rx).await;
                });
            }
            Err(hit) => {
                tern_metrics::get().reject(tern_metrics::Reject::Limits);
                ctx.shared.events.emit(
                    &catalog::SMTP_CONNECTION_LIMIT,
                    fields!("client" => peer.ip(), "limit" => format!("{hit:?}"), "listener" => ctx.config.name),
                );
                let hostname = ctx.shared.hostname.clone();
                sessions.spawn(refuse(tcp, hostname));
            }
        }
        beat.progress();
    }
    // Not accepting any more: nothing to watch while the sessions finish.
    drop(beat);
    drop(listener);
    // Idle sessions saw the same shutdown signal and are closing with 421; sessions in
    // the middle of a message finish it. The caller bounds this wait with the grace
    // period and aborts us (and so every session in `sessions`) when it runs out.
    while sessions.join_next().await.is_some() {}
}

/// The next liveness tick; never, when the loop is not watched.
async fn next_tick(ticks: &mut Option<tokio::time::Interval>) {
    match ticks {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn refuse(mut tcp: TcpStream, hostname: String) {
    let msg = format!("421 4.7.0 {hostname} Too many connections, try again later\r\n");
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        tcp.write_all(msg.as_bytes()).await?;
        tcp.shutdown().await
    })
    .await;
}
