//! Message tracking and the log level: `GET /api/v1/track`, `GET|PUT /api/v1/log-level`
//! (docs/ADMIN.md, "Message tracking" and "Log level").
//!
//! `/track` reads the tracking files (`tern_events::tracking::search`, the same code
//! `tern track` uses) on the blocking pool, so a long scan never holds a runtime thread.
//! The log level is the event log's; a change is recorded as event 7065 and lasts until
//! the next reload (which applies `server.log_level` from the file) or restart.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use tern_events::Severity;
use tern_events::tracking::{self, MAX_LIMIT};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::ErrorBody;
use crate::error::ApiError;
use crate::state::AdminState;

/// Longest query accepted, characters.
const MAX_QUERY: usize = 998;
/// Records returned when `limit` is not given.
const DEFAULT_LIMIT: usize = 1000;

/// This area's routes, under `/api/v1`.
pub fn routes() -> OpenApiRouter<Arc<AdminState>> {
    OpenApiRouter::new()
        .routes(routes!(track))
        .routes(routes!(get_log_level, put_log_level))
}

/// `GET /track`'s parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrackParams {
    /// A queue id, a Message-ID (angle brackets optional) or an address.
    pub q: String,
    /// Most records returned (the newest), 1 to 10000; default 1000.
    pub limit: Option<usize>,
}

/// `GET /track`'s body.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrackBody {
    /// The query as given.
    pub query: String,
    /// The tracking records in time order: each the tracking log's line, a JSON object
    /// with `at_unix_ms`, `event`, `event_id`, `step`, `id` (queue id) and the event's
    /// fields.
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<serde_json::Value>,
    /// More records matched than `limit`; the oldest were left out.
    pub truncated: bool,
    /// The queue ids followed (the message's own, the DSNs it produced, or every message
    /// from or to an address), in the order first seen.
    pub ids: Vec<String>,
}

/// Follows a message through the tracking log: for a queue id its records and those of
/// the DSNs it produced; for a Message-ID every queue id that carried it; for an address
/// every message from or to it.
#[utoipa::path(
    get,
    path = "/track",
    tag = "tracking",
    params(TrackParams),
    responses(
        (status = 200, description = "The matching records, oldest first", body = TrackBody),
        (status = 400, description = "No query, or a limit out of range", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 500, description = "The tracking files could not be read", body = ErrorBody),
    )
)]
async fn track(
    State(state): State<Arc<AdminState>>,
    params: Result<Query<TrackParams>, QueryRejection>,
) -> Result<Json<TrackBody>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let q = params.q.trim().to_owned();
    if q.is_empty() || q.chars().count() > MAX_QUERY || q.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "q must be a queue id, a Message-ID or an address (1 to {MAX_QUERY} characters)"
        )));
    }
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let dir = state.tracking_dir.clone();
    let query = q.clone();
    let found = tokio::task::spawn_blocking(move || tracking::search(&dir, &query, limit))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| {
            ApiError::Internal(format!(
                "reading the tracking log in {}: {e}",
                state.tracking_dir.display()
            ))
        })?;
    Ok(Json(TrackBody {
        query: params.q,
        records: found.records,
        truncated: found.truncated,
        ids: found.ids,
    }))
}

/// The event log's level, in `GET` and `PUT /log-level`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LogLevel {
    /// debug, info, notice, warning or error.
    pub level: String,
}

/// The lowest severity written to the event log now.
#[utoipa::path(
    get,
    path = "/log-level",
    tag = "server",
    responses(
        (status = 200, description = "The current level", body = LogLevel),
        (status = 401, description = "No or wrong token", body = ErrorBody),
    )
)]
async fn get_log_level(State(state): State<Arc<AdminState>>) -> Json<LogLevel> {
    Json(LogLevel {
        level: state.events.min_severity().as_str().to_owned(),
    })
}

/// Changes the lowest severity written to the event log, at once (event 7065); the
/// tracking log is not affected. Lasts until the next reload or restart.
#[utoipa::path(
    put,
    path = "/log-level",
    tag = "server",
    request_body = LogLevel,
    responses(
        (status = 200, description = "The level now in force", body = LogLevel),
        (status = 400, description = "Not a level", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
    )
)]
async fn put_log_level(
    State(state): State<Arc<AdminState>>,
    body: Result<Json<LogLevel>, JsonRejection>,
) -> Result<Json<LogLevel>, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let level = Severity::parse(body.level.trim()).ok_or_else(|| {
        ApiError::BadRequest("level must be one of debug, info, notice, warning, error".into())
    })?;
    state.events.change_level(level, "api");
    Ok(Json(LogLevel {
        level: level.as_str().to_owned(),
    }))
}
