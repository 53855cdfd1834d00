//! Destinations (next hops) over the API: their state as the queue's scheduler sees it,
//! and an administrator's retry, suspend and resume (docs/ADMIN.md, "Destinations").
//!
//! Everything goes through the scheduler's command channel
//! ([`tern_queue::QueueHandle::destinations`], [`tern_queue::QueueHandle::destination`]),
//! so the API never shares queue state with a lock. With delivery off
//! (`queue.deliver = false`) there is no scheduler: every endpoint here answers 503.
//!
//! Trust: the name in the path is bounded and only compared with known next hops.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use tern_queue::{DestinationAction, DestinationError, DestinationInfo, DestinationState};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::ErrorBody;
use crate::error::ApiError;
use crate::state::AdminState;

/// Longest destination name accepted in a path, octets.
const MAX_NAME: usize = 512;

/// The destination endpoints.
pub fn routes() -> OpenApiRouter<Arc<AdminState>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(act))
}

/// `GET /destinations`'s body.
#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationsBody {
    /// Every destination the queue knows, most queued first.
    pub destinations: Vec<Destination>,
    /// Every `[[delivery.destination_limits]]` entry, in configuration order, with the
    /// connections this node holds under it (docs/cluster/limits.md).
    pub limits: Vec<DestinationLimitView>,
}

/// One destination limit.
#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationLimitView {
    /// Its name.
    pub name: String,
    /// The next hops it covers (`example.com`, `*.example.com`, a relay route's name).
    pub next_hops: Vec<String>,
    /// The MX host patterns it covers (`*.google.com`).
    pub mx_hosts: Vec<String>,
    /// Connections open at once, at most (across the cluster on a cluster node).
    pub max_connections: Option<u32>,
    /// Messages per window, at most, `N/period` (across the cluster on a cluster node).
    pub max_messages: Option<String>,
    /// Connections this node holds a lease for now, idle cached ones included (with
    /// `max_connections`); the cluster's are the sum over its nodes (`tern dest list
    /// --cluster`).
    pub connections: Option<u64>,
    /// `cluster` when the limit is shared through Redis, `node` when it holds for this
    /// node alone.
    pub scope: String,
}

/// One destination (next hop).
#[derive(Debug, Serialize, ToSchema)]
pub struct Destination {
    /// The next hop, named for what it is: `mx:<domain>`, `smtp:[<host>]:<port>,...`
    /// (the relay hosts), `lmtp:unix:<socket>` or `lmtp:[<host>]:<port>`,
    /// `maildir:<root>`, `drop:<directory>` (printable ASCII, other octets as `%XX`).
    pub name: String,
    /// Messages waiting for it (jobs queued now plus deferred messages whose recipients
    /// go there).
    pub queued: usize,
    /// `active`, `down` (every host failed; nothing is tried until `down_until_unix_ms`)
    /// or `suspended` (by an administrator).
    pub state: String,
    /// While down: when it is tried again, Unix milliseconds.
    pub down_until_unix_ms: Option<u64>,
    /// Deliveries (connections) in progress, idle cached connections included.
    pub in_use: usize,
    /// The most deliveries at once (`queue.destination_concurrency`).
    pub limit: usize,
    /// Why it is down, or the last deferral of a message waiting for it.
    pub last_error: Option<String>,
    /// The TLS policy its hosts were last tried under and why (DANE over MTA-STS over the
    /// route's `tls`, docs/TLS.md); absent until an SMTP delivery to it was tried.
    pub tls: Option<DestinationTlsView>,
    /// In a cluster, while down or suspended: the node that set the mark (this node's
    /// name for its own; docs/cluster/state.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set_by: Option<String>,
}

/// A destination's TLS policy as last decided.
#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationTlsView {
    /// When it was decided, Unix milliseconds.
    pub decided_unix_ms: u64,
    /// The first usable host's policy, `<source> (<client policy>)` (`dane (dane)`,
    /// `mta-sts (verify)`, `mta-sts-testing (may)`, `route (may)`), or `refused` when the
    /// policy allows none of its hosts.
    pub summary: String,
    /// Per host, in the order tried.
    pub hosts: Vec<HostTlsView>,
}

/// One host's TLS policy.
#[derive(Debug, Serialize, ToSchema)]
pub struct HostTlsView {
    /// The host name.
    pub host: String,
    /// `<source> (<client policy>)`, or `refused`.
    pub policy: String,
    /// False when the policy in force forbids trying the host.
    pub usable: bool,
    /// Why, in words.
    pub reason: String,
}

impl From<DestinationInfo> for Destination {
    fn from(d: DestinationInfo) -> Destination {
        Destination {
            name: d.name,
            queued: d.queued,
            state: state_name(d.state).to_owned(),
            down_until_unix_ms: d.down_until_unix_ms,
            in_use: d.in_use,
            limit: d.limit,
            last_error: d.last_error,
            set_by: d.set_by,
            tls: d.tls.map(|t| DestinationTlsView {
                decided_unix_ms: t.decided_unix_ms,
                summary: t.summary,
                hosts: t
                    .hosts
                    .into_iter()
                    .map(|h| HostTlsView {
                        host: h.host,
                        policy: h.policy,
                        usable: h.usable,
                        reason: h.reason,
                    })
                    .collect(),
            }),
        }
    }
}

fn state_name(s: DestinationState) -> &'static str {
    match s {
        DestinationState::Active => "active",
        DestinationState::Down => "down",
        DestinationState::Suspended => "suspended",
    }
}

/// `POST /destinations/{name}/{action}`'s body.
#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationActionBody {
    /// The destination.
    pub name: String,
    /// `retry`, `suspend` or `resume`.
    pub action: String,
    /// What was done, for people.
    pub result: String,
}

fn queue(state: &AdminState) -> Result<&tern_queue::QueueHandle, ApiError> {
    state.queue.as_ref().ok_or_else(|| {
        ApiError::Unavailable("delivery is off (queue.deliver = false): no destinations".into())
    })
}

fn api_error(e: DestinationError) -> ApiError {
    match e {
        DestinationError::Unknown(_) => ApiError::NotFound(e.to_string()),
        DestinationError::Conflict(m) => ApiError::Conflict(m),
        DestinationError::Stopped => ApiError::Unavailable(e.to_string()),
    }
}

/// Every destination with its queue length, state, connections and last error, and the
/// destination limits with the connections held under each.
#[utoipa::path(
    get,
    path = "/destinations",
    tag = "destinations",
    responses(
        (status = 200, description = "Every destination, most queued first", body = DestinationsBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 503, description = "Delivery is off", body = ErrorBody),
    )
)]
async fn list(State(state): State<Arc<AdminState>>) -> Result<Json<DestinationsBody>, ApiError> {
    let list = queue(&state)?.destinations().await.map_err(api_error)?;
    let scope = if state.cluster.is_some() {
        "cluster"
    } else {
        "node"
    };
    let limits = state
        .destination_limits
        .as_ref()
        .map(|d| d.infos())
        .unwrap_or_default()
        .into_iter()
        .map(|l| DestinationLimitView {
            name: l.name,
            next_hops: l.next_hops,
            mx_hosts: l.mx_hosts,
            max_connections: l.max_connections,
            max_messages: l.max_messages,
            connections: l.connections,
            scope: scope.into(),
        })
        .collect();
    Ok(Json(DestinationsBody {
        destinations: list.into_iter().map(Destination::from).collect(),
        limits,
    }))
}

/// One destination: as `GET /destinations` lists it, or, when it has nothing waiting
/// and no mark, with the TLS policy its hosts were last tried under (remembered after its
/// mail is gone, for the last 10,000 destinations tried).
#[utoipa::path(
    get,
    path = "/destinations/{name}",
    tag = "destinations",
    params(
        ("name" = String, Path, description = "The destination, as `GET /destinations` names it"),
    ),
    responses(
        (status = 200, description = "The destination", body = Destination),
        (status = 400, description = "Malformed name", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 404, description = "Nothing known of it", body = ErrorBody),
        (status = 503, description = "Delivery is off", body = ErrorBody),
    )
)]
async fn show(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Result<Json<Destination>, ApiError> {
    check_name(&name)?;
    match queue(&state)?
        .destination_info(&name)
        .await
        .map_err(api_error)?
    {
        Some(d) => Ok(Json(Destination::from(d))),
        None => Err(ApiError::NotFound(format!(
            "no destination {name} is known (nothing waits for it, and no delivery to it was tried since the start)"
        ))),
    }
}

/// Retry a destination now (clear its down mark, try its waiting messages), suspend it
/// (no new connections; its messages wait, until resumed or a restart) or resume it.
#[utoipa::path(
    post,
    path = "/destinations/{name}/{action}",
    tag = "destinations",
    params(
        ("name" = String, Path, description = "The destination, as `GET /destinations` names it"),
        ("action" = String, Path, description = "retry, suspend or resume"),
    ),
    responses(
        (status = 200, description = "Done", body = DestinationActionBody),
        (status = 400, description = "Unknown action or malformed name", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 404, description = "No such destination", body = ErrorBody),
        (status = 409, description = "Not applicable now (resume of an active one, retry of a suspended one)", body = ErrorBody),
        (status = 503, description = "Delivery is off", body = ErrorBody),
    )
)]
async fn act(
    State(state): State<Arc<AdminState>>,
    Path((name, action)): Path<(String, String)>,
) -> Result<Json<DestinationActionBody>, ApiError> {
    let act = parse_action(&action)?;
    check_name(&name)?;
    let result = queue(&state)?
        .destination(&name, act)
        .await
        .map_err(api_error)?;
    Ok(Json(DestinationActionBody {
        name,
        action: act.as_str().to_owned(),
        result,
    }))
}

fn parse_action(action: &str) -> Result<DestinationAction, ApiError> {
    match action {
        "retry" => Ok(DestinationAction::Retry),
        "suspend" => Ok(DestinationAction::Suspend),
        "resume" => Ok(DestinationAction::Resume),
        _ => Err(ApiError::BadRequest(format!(
            "unknown action {:?}: retry, suspend or resume",
            action.chars().take(40).collect::<String>()
        ))),
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > MAX_NAME || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::BadRequest(format!(
            "a destination name is 1 to {MAX_NAME} printable ASCII characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_and_names_are_checked() {
        assert_eq!(parse_action("retry").ok(), Some(DestinationAction::Retry));
        assert_eq!(
            parse_action("suspend").ok(),
            Some(DestinationAction::Suspend)
        );
        assert_eq!(parse_action("resume").ok(), Some(DestinationAction::Resume));
        assert!(parse_action("flush").is_err());
        assert!(parse_action("Retry").is_err());
        assert!(check_name("mx:example.com").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("mx:a b").is_err());
        assert!(check_name(&"a".repeat(MAX_NAME + 1)).is_err());
    }
}
