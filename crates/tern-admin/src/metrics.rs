//! `GET /metrics`: the Prometheus text exposition (OpenMetrics 1.0) of
//! [`tern_metrics::get`], with what only exists at scrape time: messages per queue state,
//! counted from the spool directories' file names ([`tern_spool::Spool::count`], no file
//! is read), and the watchdog's workers. Behind the bearer token like the API; not under
//! `/api/v1` (where Prometheus' default `metrics_path` does not look).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use tern_metrics::{Scrape, WorkerSample};
use tern_spool::{QueueState, Spool};
use tern_watchdog::{Watchdog, WorkerState};

use crate::api::unix_ms;
use crate::error::ApiError;
use crate::state::AdminState;

/// The handler (registered in [`crate::router`] behind the token; described in the
/// OpenAPI document through `api::ApiDoc`'s `paths`, as it is outside `/api/v1`).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "metrics",
    responses(
        (status = 200, description = "Prometheus counters (OpenMetrics 1.0 text)",
         content_type = "application/openmetrics-text", body = String),
        (status = 401, description = "No or wrong token", body = crate::api::ErrorBody),
    )
)]
pub async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    let spool = state.spool.clone();
    // A state whose directory cannot be read is left out, not the whole scrape: the
    // counters matter most when the spool is in trouble.
    let queue_states = tokio::task::spawn_blocking(move || queue_states(&spool))
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(s, n)| Some((s.as_str(), u64::try_from(n.ok()?).ok()?)))
        .collect();
    let scrape = Scrape {
        queue_states,
        workers: state.watchdog.as_ref().map(workers),
    };
    match tern_metrics::get().render(&scrape) {
        Ok(text) => ([(CONTENT_TYPE, tern_metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => ApiError::Internal("the metrics could not be rendered".into()).into_response(),
    }
}

/// Messages per state, from the directories' names. Blocking.
pub(crate) fn queue_states(
    spool: &Spool,
) -> Vec<(QueueState, Result<usize, tern_spool::SpoolError>)> {
    QueueState::ALL
        .into_iter()
        .map(|s| (s, spool.count(s)))
        .collect()
}

/// The watchdog's workers now.
fn workers(w: &Watchdog) -> Vec<WorkerSample> {
    let snap = w.snapshot(w.now_ms(), unix_ms());
    snap.workers
        .iter()
        .map(|s| WorkerSample {
            name: s.name.clone(),
            kind: s.kind.as_str(),
            busy: s.state != WorkerState::Idle,
            stalled: s.state == WorkerState::Stalled,
            heartbeat_age_secs: s.last_progress_ms as f64 / 1000.0,
            processed: s.processed,
        })
        .collect()
}
