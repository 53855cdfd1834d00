//! The router and the listener tasks.
//!
//! Each listener (TCP, Unix socket) is one task running `axum::serve` with a graceful
//! stop: [`AdminServer::shutdown`] signals every task, then waits for each at most the
//! grace period and aborts what is left, so a stop is bounded even with a client that
//! never finishes its request.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use tokio::sync::watch;
use tokio::task::JoinHandle;

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
        let mut local_addr = None;
        if let Some(addr) = config.listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| AdminError::Bind { addr, source })?;
            local_addr = listener.local_addr().ok();
            let app = app.clone();
            let rx = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(stopped(rx))
                    .await;
            }));
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
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(stopped(rx))
                    .await;
            }));
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
