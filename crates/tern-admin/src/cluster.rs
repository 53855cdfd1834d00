//! `GET /api/v1/cluster`: this node's view of the cluster (docs/CLUSTER.md): its own
//! health and every node's last heartbeat as Redis holds it. `tern cluster status`
//! prints it; `--cluster` commands use its `nodes[].admin_url` to fan out.
//!
//! On a node alone the answer is `409 conflict` (no cluster); while Redis is
//! unreachable, `nodes` is empty and `error` says why (the health says `degraded`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::state::AdminState;

pub fn routes() -> OpenApiRouter<Arc<AdminState>> {
    OpenApiRouter::new().routes(routes!(cluster))
}

/// `GET /api/v1/cluster`'s body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterBody {
    /// This node's name.
    pub node: String,
    /// This node's number (in its queue ids).
    pub node_id: u16,
    /// This node's health (`tern_cluster::Health`).
    #[schema(value_type = Object)]
    pub health: serde_json::Value,
    /// Every node listed in Redis, by name (`tern_cluster::membership::NodeInfo`:
    /// name, id, version, admin_url, started_ms, seen_ms, alive, report).
    #[schema(value_type = Vec<Object>)]
    pub nodes: Vec<serde_json::Value>,
    /// Why `nodes` could not be read, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// This node's view of the cluster.
#[utoipa::path(
    get,
    path = "/cluster",
    tag = "cluster",
    responses(
        (status = 200, description = "This node's health and every node's heartbeat", body = ClusterBody),
        (status = 401, description = "No or wrong token", body = crate::api::ErrorBody),
        (status = 409, description = "This node is not in a cluster", body = crate::api::ErrorBody),
    )
)]
async fn cluster(State(state): State<Arc<AdminState>>) -> Result<Json<ClusterBody>, ApiError> {
    let Some(c) = &state.cluster else {
        return Err(ApiError::Conflict(
            "this node is not in a cluster ([cluster] enabled = false)".into(),
        ));
    };
    let (nodes, error) = match tern_cluster::membership::nodes(c).await {
        Ok(n) => (
            n.iter()
                .filter_map(|x| serde_json::to_value(x).ok())
                .collect(),
            None,
        ),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    Ok(Json(ClusterBody {
        node: c.node().to_string(),
        node_id: c.node_id(),
        health: serde_json::to_value(c.health()).unwrap_or(serde_json::Value::Null),
        nodes,
        error,
    }))
}
