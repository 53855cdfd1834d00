//! `GET /api/v1/cluster`: this node's view of the cluster (docs/CLUSTER.md): its own
//! health and every node's last heartbeat as Redis holds it. `tern cluster status`
//! prints it; `--cluster` commands use its `nodes[].admin_url` to fan out.
//!
//! On a node alone the answer is `409 conflict` (no cluster); while Redis is
//! unreachable, `nodes` is empty and `error` says why (the health says `degraded`).
//!
//! `DELETE /api/v1/cluster/nodes/{name}` forgets a dead node (`tern cluster forget`).
//!
//! `/api/v1/cluster/nodes/{name}/{rest}` (GET, POST, PUT, DELETE) is the proxy the web
//! viewer uses to see and act on any node through this one (docs/cluster/view.md): the
//! request goes to `<admin_url of name>/api/v1/{rest}` with this node's token and the
//! answer comes back as it is. Rules, so that the proxy is no more than what a browser
//! with the token could do against that node directly:
//! - only a node listed in Redis and alive, and only its plain-HTTP `admin_url`
//!   (`tern_cluster::membership::admin_endpoint`);
//! - only paths under `/api/v1/`, each segment neither empty nor `.`/`..` once decoded,
//!   never the proxy itself again (no chains);
//! - the token is sent only after the node proved it knows it (`/proof`, as the CLI
//!   does), on the same connection as the proof: whoever writes an `admin_url` into
//!   Redis cannot collect it, and no second connection can be answered by someone else;
//! - the request body is bounded by the listener's body limit, the answer by
//!   [`MAX_ANSWER`], the whole exchange by [`PROXY_TIMEOUT`]; only `Content-Type` goes
//!   out with the body, and only `Content-Type` and `Content-Disposition` come back.
//!
//! Invariant: the proxy never forwards the token to an endpoint that has not answered
//! this request's proof challenge, and a node that does not answer is a `502` within
//! [`PROXY_TIMEOUT`], never a hang.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::state::AdminState;

pub fn routes() -> OpenApiRouter<Arc<AdminState>> {
    OpenApiRouter::new()
        .routes(routes!(cluster))
        .routes(routes!(forget))
}

/// The proxy's route (`{rest}` is any path under `/api/v1/`), added outside
/// `utoipa_axum` because its last parameter spans segments; its document entry is
/// [`proxy`]'s annotation, listed in `api.rs`.
pub fn proxy_route() -> axum::Router<Arc<AdminState>> {
    axum::Router::new().route(
        "/api/v1/cluster/nodes/{name}/{*rest}",
        axum::routing::any(proxy),
    )
}

/// Longest answer passed back by the proxy, octets (an exported message can be large).
pub const MAX_ANSWER: usize = 64 * 1024 * 1024;
/// Bound of one proxied exchange: proof, request and the whole answer.
pub const PROXY_TIMEOUT: Duration = Duration::from_secs(30);

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

/// `DELETE /cluster/nodes/{name}`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ForgetBody {
    /// What was done.
    pub result: String,
}

/// Forgets a dead node: it leaves the node list (`tern cluster status`) until it sends a
/// heartbeat again. A live node is refused.
#[utoipa::path(
    delete,
    path = "/cluster/nodes/{name}",
    tag = "cluster",
    params(("name" = String, Path, description = "The node's name")),
    responses(
        (status = 200, description = "Forgotten", body = ForgetBody),
        (status = 401, description = "No or wrong token", body = crate::api::ErrorBody),
        (status = 404, description = "No such node is listed", body = crate::api::ErrorBody),
        (status = 409, description = "The node is alive, or this node is not in a cluster", body = crate::api::ErrorBody),
        (status = 503, description = "Redis did not answer", body = crate::api::ErrorBody),
    )
)]
async fn forget(
    State(state): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Result<Json<ForgetBody>, ApiError> {
    let c = in_cluster(&state)?;
    use tern_cluster::membership::ForgetError;
    match tern_cluster::membership::forget(c, &name).await {
        Ok(()) => Ok(Json(ForgetBody {
            result: format!("node {name} forgotten"),
        })),
        Err(e @ ForgetError::Alive(_)) => Err(ApiError::Conflict(e.to_string())),
        Err(e @ ForgetError::Unknown(_)) => Err(ApiError::NotFound(e.to_string())),
        Err(e @ ForgetError::Cluster(_)) => Err(ApiError::Unavailable(e.to_string())),
    }
}

fn in_cluster(state: &AdminState) -> Result<&tern_cluster::Cluster, ApiError> {
    state.cluster.as_ref().ok_or_else(|| {
        ApiError::Conflict("this node is not in a cluster ([cluster] enabled = false)".into())
    })
}

/// Forwards a request to another node's admin API (see the module header): the answer is
/// that node's, passed back as it is.
#[utoipa::path(
    method(get, post, put, delete),
    path = "/api/v1/cluster/nodes/{name}/{rest}",
    tag = "cluster",
    params(
        ("name" = String, Path, description = "The node's name, as `GET /api/v1/cluster` lists it"),
        ("rest" = String, Path, description = "The path under the node's `/api/v1/` (e.g. `queue/<id>/hold`), with its query"),
    ),
    request_body(content = Option<Object>, description = "Passed on as it is (the proxied endpoint's body)"),
    responses(
        (status = 200, description = "The node's answer, as it is (any status it gave)", body = Object),
        (status = 400, description = "A path outside /api/v1/, or with empty, `.` or `..` segments", body = crate::api::ErrorBody),
        (status = 401, description = "No or wrong token", body = crate::api::ErrorBody),
        (status = 404, description = "No such node is listed", body = crate::api::ErrorBody),
        (status = 409, description = "This node is not in a cluster", body = crate::api::ErrorBody),
        (status = 502, description = "The node did not answer, did not prove it knows the token, or answered too much", body = crate::api::ErrorBody),
        (status = 503, description = "The node is dead, or Redis did not answer", body = crate::api::ErrorBody),
    )
)]
pub async fn proxy(
    State(state): State<Arc<AdminState>>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let c = in_cluster(&state)?;
    // Read from the path itself (no extractor that could refuse it with a text answer).
    let name = request
        .uri()
        .path()
        .strip_prefix("/api/v1/cluster/nodes/")
        .and_then(|r| r.split('/').next())
        .and_then(percent_decode)
        .unwrap_or_default();
    let (parts, body) = request.into_parts();
    let (method, uri, headers) = (parts.method, parts.uri, parts.headers);
    let body = axum::body::to_bytes(body, crate::MAX_BODY)
        .await
        .map_err(|e| ApiError::BadRequest(format!("the request body: {e}")))?;
    if !tern_cluster::config::valid_node_name(&name) {
        return Err(ApiError::NotFound(format!("no node {name:?} is listed")));
    }
    let rest = forwarded_path(uri.path()).ok_or_else(|| {
        ApiError::BadRequest(
            "the proxied path must be under /api/v1/ with no empty, . or .. segment, and not the proxy itself".into(),
        )
    })?;
    let nodes = tern_cluster::membership::nodes(c)
        .await
        .map_err(|e| ApiError::Unavailable(format!("the node list: {e}")))?;
    let node = nodes
        .into_iter()
        .find(|n| n.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("no node {name} is listed")))?;
    if !node.alive {
        return Err(ApiError::Unavailable(format!(
            "node {name} is dead (no heartbeat)"
        )));
    }
    let endpoint = tern_cluster::membership::admin_endpoint(&node.admin_url).ok_or_else(|| {
        ApiError::BadGateway(format!(
            "node {name}'s admin URL {:?} is not http://host:port",
            node.admin_url
        ))
    })?;
    let path_and_query = match uri.query() {
        Some(q) => format!("/api/v1/{rest}?{q}"),
        None => format!("/api/v1/{rest}"),
    };
    let content_type = headers.get(header::CONTENT_TYPE).cloned();
    let token = state.token.clone();
    let exchange = async {
        // The proof and the request on one connection: the token goes to the peer that
        // just proved it knows it, not to whoever answers a second connection.
        let mut conn = NodeConn::open(&endpoint).await?;
        prove(&mut conn, &endpoint, &token).await?;
        let mut req = Request::builder()
            .method(method)
            .uri(&path_and_query)
            .header(header::HOST, &endpoint)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let req = req
            .body(Body::from(body))
            .map_err(|e| format!("building the request: {e}"))?;
        conn.send(req).await
    };
    let (status, headers, bytes) = match tokio::time::timeout(PROXY_TIMEOUT, exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(why)) => {
            return Err(ApiError::BadGateway(format!(
                "node {name} ({endpoint}): {why}"
            )));
        }
        Err(_) => {
            return Err(ApiError::BadGateway(format!(
                "node {name} ({endpoint}) did not answer within {} s",
                PROXY_TIMEOUT.as_secs()
            )));
        }
    };
    // The node proved it knows the token, so a 401 from it is not the browser's token
    // being wrong: passed back as is, it would make the viewer forget a good token.
    if status == StatusCode::UNAUTHORIZED {
        return Err(ApiError::BadGateway(format!(
            "node {name} ({endpoint}) refused the token it proved it knows"
        )));
    }
    let mut resp = (status, bytes).into_response();
    for h in [header::CONTENT_TYPE, header::CONTENT_DISPOSITION] {
        if let Some(v) = headers.get(&h) {
            resp.headers_mut().insert(h, v.clone());
        }
    }
    Ok(resp)
}

/// The part of a proxy path to forward under `/api/v1/`: `None` when the path is not
/// the proxy's, when a segment is empty, `.` or `..` (decoded), holds a decoded `/` or
/// a backslash, or when it names the proxy again.
fn forwarded_path(path: &str) -> Option<String> {
    let after = path.strip_prefix("/api/v1/cluster/nodes/")?;
    let (_, rest) = after.split_once('/')?;
    if rest.is_empty() || rest.len() > 2048 {
        return None;
    }
    let mut decoded_segments = Vec::new();
    for seg in rest.split('/') {
        let d = percent_decode(seg)?;
        if d.is_empty() || d == "." || d == ".." || d.contains(['/', '\\']) {
            return None;
        }
        decoded_segments.push(d);
    }
    if decoded_segments.first().map(String::as_str) == Some("cluster")
        && decoded_segments.get(1).map(String::as_str) == Some("nodes")
    {
        return None;
    }
    Some(rest.to_string())
}

/// Percent-decodes a path segment; `None` when an escape is broken or the result is not
/// UTF-8 or holds a control character.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    let text = String::from_utf8(out).ok()?;
    (!text.chars().any(char::is_control)).then_some(text)
}

/// Asks the node on `conn` to prove it knows `token` (without sending it).
async fn prove(conn: &mut NodeConn, endpoint: &str, token: &str) -> Result<(), String> {
    let nonce = crate::auth::new_nonce();
    let req = Request::builder()
        .method(Method::GET)
        .uri(format!("/proof?nonce={nonce}"))
        .header(header::HOST, endpoint)
        .body(Body::empty())
        .map_err(|e| format!("building the proof request: {e}"))?;
    let (status, _, body) = conn.send(req).await?;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let answer = v["proof"].as_str().unwrap_or_default();
    if status == StatusCode::OK && crate::auth::verify_proof(token, &nonce, answer) {
        Ok(())
    } else {
        Err("it could not prove it knows the admin token; the token was not sent".into())
    }
}

/// One HTTP/1.1 connection to a node (requests one after the other on it); its driver
/// task is aborted when this is dropped, however the exchange ends. The caller bounds
/// the time.
struct NodeConn {
    sender: hyper::client::conn::http1::SendRequest<Body>,
    driver: tokio::task::JoinHandle<Result<(), hyper::Error>>,
}

impl Drop for NodeConn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl NodeConn {
    async fn open(endpoint: &str) -> Result<NodeConn, String> {
        let stream = tokio::net::TcpStream::connect(endpoint)
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        Ok(NodeConn {
            sender,
            driver: tokio::spawn(conn),
        })
    }

    /// One request; the answer's status, headers and body (at most [`MAX_ANSWER`]
    /// octets, read whole so the connection can carry the next request).
    async fn send(&mut self, req: Request<Body>) -> Result<(StatusCode, HeaderMap, Bytes), String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("the connection closed: {e}"))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(Body::new(body), MAX_ANSWER)
            .await
            .map_err(|e| format!("reading the answer (at most {MAX_ANSWER} octets): {e}"))?;
        Ok((parts.status, parts.headers, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_under_the_api_are_forwarded() {
        let f = |p: &str| forwarded_path(p);
        assert_eq!(
            f("/api/v1/cluster/nodes/n2/queue/00AB/hold").as_deref(),
            Some("queue/00AB/hold")
        );
        assert_eq!(
            f("/api/v1/cluster/nodes/n2/destinations/smtp%3A%5B10.0.0.5%5D%3A25/retry").as_deref(),
            Some("destinations/smtp%3A%5B10.0.0.5%5D%3A25/retry")
        );
        for bad in [
            "/api/v1/cluster/nodes/n2",
            "/api/v1/cluster/nodes/n2/",
            "/api/v1/cluster/nodes/n2/../../metrics",
            "/api/v1/cluster/nodes/n2/queue/%2e%2e/x",
            "/api/v1/cluster/nodes/n2/queue//x",
            "/api/v1/cluster/nodes/n2/a%2Fb",
            "/api/v1/cluster/nodes/n2/a%5Cb",
            "/api/v1/cluster/nodes/n2/a%zz",
            "/api/v1/cluster/nodes/n2/a%0a",
            "/api/v1/cluster/nodes/n2/cluster/nodes/n3/status",
            "/api/v1/cluster/nodes/n2/%63luster/nodes/n3/status",
        ] {
            assert_eq!(f(bad), None, "{bad}");
        }
    }
}
