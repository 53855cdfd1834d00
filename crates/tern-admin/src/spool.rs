//! `POST /api/v1/spool/adopt`: this running node takes over another node's spool
//! (docs/cluster/adopt.md, `tern spool adopt PATH`). It goes through the binary's
//! [`crate::Control`], which owns the spool, the queue and the cluster handle; the
//! request answers when the adoption has ended (every message merged and scheduled).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::ErrorBody;
use crate::error::ApiError;
use crate::state::{AdminState, AdoptRun, ControlError};

/// Longest path accepted.
const MAX_PATH: usize = 4096;

/// The spool endpoints.
pub fn routes() -> OpenApiRouter<Arc<AdminState>> {
    OpenApiRouter::new().routes(routes!(adopt))
}

/// `POST /api/v1/spool/adopt`'s body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdoptRequest {
    /// The spool directory to take over, as this node sees it (absolute).
    pub path: String,
}

/// Takes over another node's spool: its lock held throughout, fenced (a marker in it,
/// and `<prefix>:fence:<node>` in Redis on a cluster), every message in every state
/// merged here with its delivery record and crash count, then scheduled; its corrupt
/// entries moved into this spool's `corrupt/`. Run again after an interruption, it
/// completes the adoption. 409 when the path is this node's own spool, not a Tern
/// spool, locked by a live process, or another adoption is running.
#[utoipa::path(
    post,
    path = "/spool/adopt",
    tag = "server",
    request_body = AdoptRequest,
    responses(
        (status = 200, description = "The adoption ended", body = AdoptRun),
        (status = 400, description = "A bad body, or a path not absolute or too long", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 409, description = "The path cannot be adopted now", body = ErrorBody),
        (status = 503, description = "The server cannot adopt (stopping, or a spool error)", body = ErrorBody),
    )
)]
async fn adopt(
    State(state): State<Arc<AdminState>>,
    body: Bytes,
) -> Result<Json<AdoptRun>, ApiError> {
    let req: AdoptRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("bad JSON body: {e}")))?;
    if req.path.len() > MAX_PATH || !req.path.starts_with('/') || req.path.contains('\0') {
        return Err(ApiError::BadRequest(
            "path must be an absolute path of at most 4096 bytes".into(),
        ));
    }
    match state.control.adopt_spool(req.path).await {
        Ok(run) => Ok(Json(run)),
        Err(ControlError::Refused(problems)) => Err(ApiError::Refused(problems)),
        Err(ControlError::Unavailable(m)) => Err(ApiError::Unavailable(m)),
        Err(ControlError::Off(m) | ControlError::Conflict(m)) => Err(ApiError::Conflict(m)),
    }
}
