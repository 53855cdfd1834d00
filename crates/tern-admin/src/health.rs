//! `/healthz` and `/readyz`, for supervisors and load balancers: no token needed.
//!
//! - `/healthz`: 200 whenever the admin listener answers: the process is alive and its
//!   runtime schedules tasks.
//! - `/readyz`: 200 only when every SMTP listener is bound, the spool is writable (a
//!   probe file is created, fsynced and removed in the spool directory) and the spool is
//!   not in back pressure; otherwise 503. The body names each check and its result.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use crate::state::AdminState;

/// `/readyz`'s body.
#[derive(Debug, Serialize)]
pub struct Readiness {
    /// All checks passed.
    pub ready: bool,
    /// Every SMTP listener is bound.
    pub listeners_up: bool,
    /// A probe file could be written and fsynced in the spool directory.
    pub spool_writable: bool,
    /// `None` when mail is accepted; otherwise why new mail gets 452 4.3.1.
    pub back_pressure: Option<String>,
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(state): State<Arc<AdminState>>) -> (StatusCode, Json<Readiness>) {
    let dir = state.spool.dir().to_path_buf();
    let spool_writable = !state.spool.is_read_only()
        && tokio::task::spawn_blocking(move || probe(&dir))
            .await
            .unwrap_or(false);
    let back_pressure = state.back_pressure.refusing().map(|r| r.to_string());
    let listeners_up = state.listeners_up();
    let ready = listeners_up && spool_writable && back_pressure.is_none();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            ready,
            listeners_up,
            spool_writable,
            back_pressure,
        }),
    )
}

/// Creates, fsyncs and removes a probe file in `dir`.
fn probe(dir: &std::path::Path) -> bool {
    let path = dir.join(format!(".readyz-probe-{}", std::process::id()));
    let ok = std::fs::File::create(&path)
        .and_then(|f| f.sync_all())
        .is_ok();
    let _ = std::fs::remove_file(&path);
    ok
}
