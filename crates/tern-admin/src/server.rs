//! The router and the listener tasks.
//!
//! Each listener (TCP, Unix socket) is one task running its own accept loop over hyper's
//! HTTP/1 connection driver, with a graceful stop: [`AdminServer::shutdown`] signals
//! every task, then waits for each at most the grace period and aborts what is left, so a
//! stop is bounded even with a client that never finishes its request.
//!
//! Bounds, so that whoever can reach the port cannot hold the listener:
//! - at most `admin.max_connections` connections per listener; one past it is answered
//!   `503` and closed at once (the answer's write is bounded by one second);
//! - the headers of each request must arrive within `admin.header_timeout_secs` of the
//!   connection or of the previous answer (hyper's header read timeout, which also
//!   closes an idle kept-alive connection);
//! - one request, body included, must be answered within `admin.request_timeout_secs`,
//!   else `503` and the connection closes.
//!
//! A connection's slot is a semaphore permit owned by its task: released by `Drop` however
//! the connection ends.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::config::AdminConfig;
use crate::error::AdminError;
use crate::state::AdminState;
use crate::{MAX_BODY, api, auth, health, metrics, overview, viewer};

/// The running admin listener(s).
pub struct AdminServer {
    local_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Every route: the health endpoints and the viewer without a token; the API under
/// `/api/v1` (its OpenAPI document at `/api/v1/openapi.json`) with one.
pub fn router(state: Arc<AdminState>) -> Router {
    let (api, doc) = api::routes();
    let doc = Arc::new(doc);
    let api = api
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let doc = Arc::clone(&doc);
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        // Prometheus' default path, outside the API but behind the same token.
        .route("/metrics", get(metrics::metrics))
        .layer(from_fn_with_state(Arc::clone(&state), auth::require_token));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/proof", get(auth::prove))
        .merge(api)
        .fallback(viewer::serve)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

impl AdminServer {
    /// Binds the configured address and socket and starts serving `state`.
    pub async fn start(
        config: &AdminConfig,
        state: Arc<AdminState>,
    ) -> Result<AdminServer, AdminError> {
        if config.listen.is_none() && config.unix_socket.is_none() {
            return Err(AdminError::NoAddress);
        }
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        // The overview's sampler lives as long as the listener (ends at the stop signal).
        tasks.push(tokio::spawn(overview::sample(
            Arc::clone(&state),
            stop_rx.clone(),
        )));
        let app = router(state);
        let limits = Limits::of(config);
        let mut local_addr = None;
        if let Some(addr) = config.listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| AdminError::Bind { addr, source })?;
            local_addr = listener.local_addr().ok();
            let app = app.clone();
            let rx = stop_rx.clone();
            tasks.push(tokio::spawn(serve(listener, app, limits, rx)));
        }
        if let Some(path) = &config.unix_socket {
            let err = |source| AdminError::Socket {
                path: path.clone(),
                source,
            };
            // A socket left by an earlier run (the spool lock says none runs now).
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(err(e)),
            }
            let listener = tokio::net::UnixListener::bind(path).map_err(err)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
            let rx = stop_rx.clone();
            tasks.push(tokio::spawn(serve(listener, app, limits, rx)));
        }
        Ok(AdminServer {
            local_addr,
            stop,
            tasks,
        })
    }

    /// The bound TCP address (with the real port when 0 was configured).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Stops accepting, lets requests in progress finish for at most `grace`, then
    /// aborts the rest.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(grace, task).await.is_err() {
                abort.abort();
            }
        }
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// The connection bounds of one listener (see the module header).
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_connections: usize,
    header_timeout: Duration,
    request_timeout: Duration,
}

impl Limits {
    fn of(config: &AdminConfig) -> Limits {
        Limits {
            max_connections: config.max_connections.max(1),
            header_timeout: Duration::from_secs(config.header_timeout_secs.max(1)),
            request_timeout: Duration::from_secs(config.request_timeout_secs.max(1)),
        }
    }
}

/// Accepts connections from `accept` until `stop`, serving each with `app` within
/// `limits`; at the stop, lets the connections finish their request in progress (the
/// caller aborts this task when its grace period runs out, and with it every connection).
async fn serve<L: Accept>(listener: L, app: Router, limits: Limits, stop: watch::Receiver<bool>) {
    let app = app.layer(axum::middleware::from_fn_with_state(
        limits.request_timeout,
        request_deadline,
    ));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (closing, closing_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let io = tokio::select! {
            r = listener.accept_one() => match r {
                Ok(io) => io,
                Err(_) => {
                    // Typically EMFILE: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(stop.clone()) => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            conns.spawn(refuse(io));
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut closing = closing_rx.clone();
        conns.spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
            tokio::pin!(conn);
            let mut graceful = false;
            loop {
                tokio::select! {
                    _ = conn.as_mut() => break,
                    r = closing.wait_for(|c| *c), if !graceful => {
                        let _ = r;
                        graceful = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
    let _ = closing.send(true);
    while conns.join_next().await.is_some() {}
}

/// A listening socket the admin listener serves: TCP or Unix.
trait Accept: Send + 'static {
    /// The connection.
    type Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    /// The next connection.
    fn accept_one(&self) -> impl std::future::Future<Output = std::io::Result<Self::Io>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept_one(&self) -> std::io::Result<Self::Io> {
        self.accept().await.map(|(s, _)| s)
    }
}

impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept_one(&self) -> std::io::Result<Self::Io> {
        self.accept().await.map(|(s, _)| s)
    }
}

/// Answers a connection past the limit with `503` and closes it, within one second.
async fn refuse<IO: tokio::io::AsyncWrite + Unpin>(mut io: IO) {
    use tokio::io::AsyncWriteExt;
    let answer = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 27\r\nconnection: close\r\n\r\ntoo many admin connections\n";
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        io.write_all(answer).await?;
        io.shutdown().await
    })
    .await;
}

/// Middleware: the request's whole handling (its body read included) within `limit`,
/// else `503` and the connection closes.
async fn request_deadline(
    axum::extract::State(limit): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(r) => r,
        Err(_) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::CONNECTION, "close")],
            "the request took too long\n",
        )
            .into_response(),
    }
}
