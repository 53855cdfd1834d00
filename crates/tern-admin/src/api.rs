//! The JSON API under `/api/v1`, with its OpenAPI document built from the same code.
//!
//! Every endpoint is registered through `utoipa_axum`'s `routes!`, which takes the path
//! and method from the handler's `#[utoipa::path]` annotation: a route cannot exist
//! without its entry in the document, nor the entry without the route. Each area of the
//! API is one module with a `routes()` function, merged here.

use std::sync::Arc;
pub use tern_watchdog::clock::unix_ms;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::state::AdminState;

/// The document's fixed part; the paths come from the routers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tern admin API",
        description = "Queues, destinations, configuration and workers of a running Tern (docs/ADMIN.md)."
    ),
    paths(crate::metrics::metrics, crate::cluster::proxy),
    modifiers(&BearerToken),
    security(("bearer" = []))
)]
struct ApiDoc;

/// Declares the bearer-token scheme every endpoint uses.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The body of every error answer (see [`ApiError`]).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// `{"code": "...", "message": "..."}`.
    pub error: ErrorDetail,
}

/// One error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code: bad_request, unauthorized, not_found, conflict, unavailable, internal,
    /// bad_gateway.
    pub code: String,
    /// For people.
    pub message: String,
    /// A refused configuration's problems, one per entry (`POST /reload` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<String>>,
}

/// Every API route, under `/api/v1`, with the document describing them.
pub fn routes() -> (axum::Router<Arc<AdminState>>, utoipa::openapi::OpenApi) {
    let v1 = OpenApiRouter::new()
        .routes(routes!(status))
        .merge(crate::dest::routes())
        .merge(crate::summary::routes())
        .merge(crate::control::routes())
        .merge(crate::reports::routes())
        .merge(crate::overview::routes())
        .merge(crate::track::routes())
        .merge(crate::queue::routes())
        .merge(crate::cluster::routes())
        .merge(crate::spool::routes());
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", v1)
        .split_for_parts();
    (router.merge(crate::cluster::proxy_route()), doc)
}

/// `GET /api/v1/status`'s body.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusBody {
    /// Tern's version.
    pub version: String,
    /// The server's process id.
    pub pid: u32,
    /// Seconds since the admin listener started.
    pub uptime_secs: u64,
    /// Every SMTP listener is bound (false while stopping).
    pub listeners_up: bool,
    /// The queue manager runs (`queue.deliver`).
    pub delivery: bool,
    /// The watchdog's snapshot of every worker (`tern_watchdog::Snapshot`); null when
    /// the watchdog is off.
    #[schema(value_type = Object)]
    pub workers: serde_json::Value,
    /// On a cluster node, the shared control plane's health (`tern_cluster::Health`:
    /// node, node_id, state `up`/`degraded`/`connecting`, since_ms, mode, failed_ops);
    /// absent on a node alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub cluster: Option<serde_json::Value>,
}

/// Version, uptime and the workers as the watchdog sees them.
#[utoipa::path(
    get,
    path = "/status",
    tag = "server",
    responses(
        (status = 200, description = "The server's state", body = StatusBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
    )
)]
async fn status(State(state): State<Arc<AdminState>>) -> Result<Json<StatusBody>, ApiError> {
    let workers = match &state.watchdog {
        Some(w) => {
            let snap = w.snapshot(w.now_ms(), unix_ms());
            serde_json::to_value(&snap).map_err(|e| ApiError::Internal(e.to_string()))?
        }
        None => serde_json::Value::Null,
    };
    Ok(Json(StatusBody {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        uptime_secs: state.started.elapsed().as_secs(),
        listeners_up: state.listeners_up(),
        delivery: state.queue.is_some(),
        workers,
        cluster: state
            .cluster
            .as_ref()
            .and_then(|c| serde_json::to_value(c.health()).ok()),
    }))
}
