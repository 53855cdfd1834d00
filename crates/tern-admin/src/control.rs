//! The configuration over the API: `GET /config` (the effective configuration, secrets
//! redacted) and `POST /reload` (like SIGHUP) (docs/ADMIN.md, "Configuration and
//! reload"). Both go through the binary's [`crate::Control`], which owns the file.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use tern_events::{catalog, fields};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::ErrorBody;
use crate::error::ApiError;
use crate::state::{AdminState, ControlError};

/// The configuration endpoints.
pub fn routes() -> OpenApiRouter<Arc<AdminState>> {
    OpenApiRouter::new()
        .routes(routes!(config))
        .routes(routes!(reload))
}

/// `POST /reload`'s body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReloadBody {
    /// What was reloaded, for people.
    pub result: String,
}

/// The effective configuration: every section with its defaults filled in, as the
/// server runs it (parts that need a restart show the values in force), secrets such as
/// `admin.token` replaced by `"<redacted>"`.
#[utoipa::path(
    get,
    path = "/config",
    tag = "server",
    responses(
        (status = 200, description = "The effective configuration", body = Object),
        (status = 401, description = "No or wrong token", body = ErrorBody),
    )
)]
async fn config(State(state): State<Arc<AdminState>>) -> Json<serde_json::Value> {
    Json(state.control.effective_config())
}

/// Reloads the configuration file like SIGHUP: relay policy, routes, local maps and
/// queue settings. A file with problems is refused (400, every problem listed in
/// `error.problems`) and nothing changes.
#[utoipa::path(
    post,
    path = "/reload",
    tag = "server",
    responses(
        (status = 200, description = "Reloaded", body = ReloadBody),
        (status = 400, description = "The file was refused; nothing changed", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 503, description = "The server cannot reload now", body = ErrorBody),
    )
)]
async fn reload(State(state): State<Arc<AdminState>>) -> Result<Json<ReloadBody>, ApiError> {
    state
        .events
        .emit(&catalog::ADMIN_RELOAD_REQUESTED, fields!("via" => "api"));
    let control = Arc::clone(&state.control);
    // Reading and checking the file (and the local maps) is blocking work.
    let done = tokio::task::spawn_blocking(move || control.reload())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    match done {
        Ok(result) => Ok(Json(ReloadBody { result })),
        Err(ControlError::Refused(problems)) => Err(ApiError::Refused(problems)),
        Err(ControlError::Unavailable(m)) => Err(ApiError::Unavailable(m)),
        Err(ControlError::Off(m) | ControlError::Conflict(m)) => Err(ApiError::Conflict(m)),
    }
}
