//! `/api/v1/queue...`: the queue's messages, one in detail, its raw content, and the
//! administrators' actions on one message or on every message a filter matches
//! (docs/ADMIN.md, "Queues").
//!
//! Reads go to the spool (on the blocking pool). Actions go to the queue's scheduler
//! (`tern_queue::QueueHandle::admin`), which refuses them while it processes the message
//! and otherwise runs them so that nothing else touches the message meanwhile. With
//! delivery off (`queue.deliver = false`) no queue runs and nothing processes mail, so
//! delete (without a bounce), hold, release and resubmit act on the spool directly;
//! retry and bounce need the queue and answer 503.
//!
//! Bounds: a page holds at most [`crate::MAX_PAGE`] messages; the header section shown is
//! at most [`MAX_HEAD`] octets and [`MAX_HEADERS`] fields; a bulk action's `failed` list
//! holds at most [`crate::MAX_PAGE`] entries (`failed_count` has them all).

pub mod filter;
mod headers;

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tern_events::{catalog, fields};
use tern_queue::{AdminAction, AdminDone, AdminRefusal};
use tern_spool::{QueueId, QueueState, SpoolError};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{ErrorBody, unix_ms};
use crate::error::ApiError;
use crate::state::AdminState;
use filter::{Entry, Filter, FilterSpec, Summary, reply_of, status_name};

pub use headers::parse_headers;

/// Most octets of the content read for the header section.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields shown.
pub const MAX_HEADERS: usize = 1000;
/// Default page size.
pub const DEFAULT_LIMIT: usize = 100;

/// The queue's routes.
pub fn routes() -> OpenApiRouter<Arc<AdminState>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(detail))
        .routes(routes!(raw))
        .routes(routes!(act_one))
        .routes(routes!(act_bulk))
}

/// `GET /queue`'s parameters (for the document; parsed by [`parse_list_query`]).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct ListParams {
    /// incoming, active, deferred, hold, poison or corrupt.
    state: Option<String>,
    /// Case-insensitive substring of a recipient domain still to be delivered.
    destination: Option<String>,
    /// Case-insensitive substring of the sender.
    sender: Option<String>,
    /// Case-insensitive substring of a recipient.
    recipient: Option<String>,
    /// At least this old, seconds.
    min_age_secs: Option<u64>,
    /// At most this old, seconds.
    max_age_secs: Option<u64>,
    /// At least this many delivery attempts.
    min_attempts: Option<u32>,
    /// Case-insensitive substring of the last error or a recipient's last reply.
    error: Option<String>,
    /// Page size, at most 1000 (default 100).
    limit: Option<usize>,
    /// Messages to skip (default 0).
    offset: Option<usize>,
}

/// Parses the list's query: every key at most once, no unknown key.
pub fn parse_list_query(pairs: &[(String, String)]) -> Result<(Filter, usize, usize), String> {
    let mut spec = FilterSpec::default();
    let (mut limit, mut offset) = (None, None);
    let mut seen = std::collections::BTreeSet::new();
    fn num<T: std::str::FromStr>(k: &str, v: &str) -> Result<T, String> {
        v.parse()
            .map_err(|_| format!("{k} must be a non-negative integer, not {v:?}"))
    }
    for (k, v) in pairs {
        if !seen.insert(k.as_str()) {
            return Err(format!("{k} is given twice"));
        }
        let v = v.clone();
        match k.as_str() {
            "state" => spec.state = Some(v),
            "destination" => spec.destination = Some(v),
            "sender" => spec.sender = Some(v),
            "recipient" => spec.recipient = Some(v),
            "error" => spec.error = Some(v),
            "min_age_secs" => spec.min_age_secs = Some(num(k, &v)?),
            "max_age_secs" => spec.max_age_secs = Some(num(k, &v)?),
            "min_attempts" => spec.min_attempts = Some(num(k, &v)?),
            "limit" => limit = Some(num::<usize>(k, &v)?),
            "offset" => offset = Some(num::<usize>(k, &v)?),
            other => return Err(format!("unknown parameter {other:?}")),
        }
    }
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit > crate::MAX_PAGE {
        return Err(format!("limit must be at most {}", crate::MAX_PAGE));
    }
    Ok((Filter::from_spec(spec)?, limit, offset.unwrap_or(0)))
}

/// `GET /queue`'s body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ListBody {
    /// Messages matching the filter (all pages).
    pub total: usize,
    /// As requested.
    pub offset: usize,
    /// As requested.
    pub limit: usize,
    /// This page, oldest first.
    pub messages: Vec<Summary>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// The queue's messages, filtered and paged.
#[utoipa::path(
    get,
    path = "/queue",
    tag = "queue",
    params(ListParams),
    responses(
        (status = 200, description = "One page of messages, oldest first", body = ListBody),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
    )
)]
async fn list(
    State(state): State<Arc<AdminState>>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<ListBody>, ApiError> {
    let (filter, limit, offset) = parse_list_query(&pairs).map_err(ApiError::BadRequest)?;
    let spool = state.spool.clone();
    let now = unix_ms();
    let (total, entries) =
        blocking(move || filter::page(&spool, &filter, now, offset, limit)).await?;
    let messages = entries.iter().map(|e| e.summary(now)).collect();
    Ok(Json(ListBody {
        total,
        offset,
        limit,
        messages,
    }))
}

fn parse_id(s: &str) -> Result<QueueId, ApiError> {
    QueueId::parse(s).map_err(|_| ApiError::BadRequest(format!("{s:?} is not a queue id")))
}

fn not_found(id: QueueId) -> ApiError {
    ApiError::NotFound(format!("no message {id} in the queue"))
}

/// One attempt in a recipient's history.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HistoryEntry {
    /// When the attempt finished, Unix ms.
    pub at_unix_ms: u64,
    /// delivered, deferred or failed.
    pub result: String,
    /// The host that answered, if any.
    pub remote: Option<String>,
    /// Its reply.
    pub reply: Option<String>,
}

/// One recipient in detail.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RecipientView {
    /// The address.
    pub address: String,
    /// pending, deferred, delivered or failed.
    pub status: String,
    /// Attempts that included this recipient.
    pub attempts: u32,
    /// The last reply about it.
    pub last_reply: Option<String>,
    /// The host of the last reply.
    pub remote: Option<String>,
    /// A DSN covering it was queued.
    pub dsn_sent: bool,
    /// The last attempts, oldest first (at most 5; none kept for messages of more than
    /// 1000 recipients).
    pub history: Vec<HistoryEntry>,
}

/// `GET /queue/{id}`'s body: the summary and the rest.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Detail {
    /// The list's fields.
    #[serde(flatten)]
    pub summary: Summary,
    /// Where the file is (for a message resident in a segment: the segment and the
    /// offset of its record, see docs/SPOOL.md).
    pub path: String,
    /// The envelope as stored (null for corrupt entries).
    #[schema(value_type = Object)]
    pub envelope: serde_json::Value,
    /// Each recipient's status and attempts.
    pub recipient_status: Vec<RecipientView>,
    /// The header fields, `[name, value]`, unfolded, in order (values as raw text).
    #[schema(value_type = Vec<Vec<String>>)]
    pub headers: Vec<(String, String)>,
    /// The header section was longer than shown.
    pub headers_truncated: bool,
    /// Times the message was being processed when Tern died or a task failed.
    pub crashes: u32,
    /// A delay notice was sent.
    pub delay_notice_sent: bool,
}

fn detail_of(entry: &Entry, head: &[u8], path: String, now: u64) -> Detail {
    let rec = entry.record.as_ref();
    let env = entry.listed.envelope.as_ref();
    let recipient_status = env
        .map(|e| {
            e.recipients
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let rr = rec.and_then(|rec| rec.recipients.get(i));
                    let status = rr.map_or(&r.status, |rr| &rr.status);
                    let mut history: Vec<HistoryEntry> = rr
                        .map(|rr| {
                            rr.history
                                .iter()
                                .map(|h| HistoryEntry {
                                    at_unix_ms: u64::try_from(h.at_micros / 1000).unwrap_or(0),
                                    result: h.result.clone(),
                                    remote: h.remote.clone(),
                                    reply: h.reply.clone(),
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    // A record from before the history was kept: its last result.
                    if history.is_empty()
                        && let Some(rr) = rr
                        && rr.attempts > 0
                        && let Some(reply) = reply_of(&rr.status)
                    {
                        history.push(HistoryEntry {
                            at_unix_ms: rec
                                .and_then(|r| r.last_attempt_micros)
                                .map_or(0, |m| u64::try_from(m / 1000).unwrap_or(0)),
                            result: status_name(&rr.status).to_owned(),
                            remote: rr.remote_mta.clone(),
                            reply: Some(reply.to_owned()),
                        });
                    }
                    RecipientView {
                        address: r.address.clone(),
                        status: status_name(status).to_owned(),
                        attempts: rr.map_or(0, |rr| rr.attempts),
                        last_reply: reply_of(status).map(str::to_owned),
                        remote: rr.and_then(|rr| rr.remote_mta.clone()),
                        dsn_sent: rr.is_some_and(|rr| rr.dsn_sent),
                        history,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let (headers, headers_truncated) = parse_headers(head, MAX_HEADERS);
    Detail {
        summary: entry.summary(now),
        path,
        envelope: env
            .and_then(|e| serde_json::to_value(e).ok())
            .unwrap_or(serde_json::Value::Null),
        recipient_status,
        headers,
        headers_truncated,
        crashes: rec.map_or(0, |r| r.crashes),
        delay_notice_sent: rec.is_some_and(|r| r.delay_notice_sent),
    }
}

/// One message in detail.
#[utoipa::path(
    get,
    path = "/queue/{id}",
    tag = "queue",
    params(("id" = String, Path, description = "Queue id")),
    responses(
        (status = 200, description = "The message", body = Detail),
        (status = 400, description = "Not a queue id", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 404, description = "No such message", body = ErrorBody),
    )
)]
async fn detail(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Json<Detail>, ApiError> {
    let id = parse_id(&id)?;
    let spool = state.spool.clone();
    let now = unix_ms();
    let found = blocking(move || {
        let Some(entry) = filter::entry_of(&spool, id)? else {
            return Ok(None);
        };
        let st = entry.listed.state;
        let head = if st == QueueState::Corrupt {
            Vec::new()
        } else {
            match spool.peek(st, id, MAX_HEAD) {
                Ok(p) => p.head,
                Err(SpoolError::NotFound | SpoolError::Corrupt(_)) => Vec::new(),
                Err(e) => return Err(e),
            }
        };
        let path = spool.location(st, id);
        Ok(Some((entry, head, path)))
    })
    .await?;
    let (entry, head, path) = found.ok_or_else(|| not_found(id))?;
    Ok(Json(detail_of(&entry, &head, path, now)))
}

/// The message as stored (content with Tern's Received field; checksum verified).
#[utoipa::path(
    get,
    path = "/queue/{id}/raw",
    tag = "queue",
    params(("id" = String, Path, description = "Queue id")),
    responses(
        (status = 200, description = "The message", content_type = "message/rfc822", body = String),
        (status = 400, description = "Not a queue id", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 404, description = "No such message", body = ErrorBody),
        (status = 409, description = "Quarantined as corrupt, or damaged", body = ErrorBody),
    )
)]
async fn raw(
    State(state): State<Arc<AdminState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let spool = state.spool.clone();
    let got = tokio::task::spawn_blocking(move || {
        let Some(st) = spool.find(id, &QueueState::ALL) else {
            return Err(SpoolError::NotFound);
        };
        if st == QueueState::Corrupt {
            return Ok(None);
        }
        spool.read(st, id).map(|m| Some(m.body))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let body = match got {
        Ok(Some(body)) => body,
        Ok(None) | Err(SpoolError::Corrupt(_)) => {
            return Err(ApiError::Conflict(format!(
                "{id} is quarantined as corrupt: its content cannot be verified (see {}.reason in corrupt/)",
                id
            )));
        }
        Err(SpoolError::NotFound) => return Err(not_found(id)),
        Err(e) => return Err(ApiError::Internal(e.to_string())),
    };
    Ok((
        [
            (header::CONTENT_TYPE, "message/rfc822".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}.eml\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// The body of `POST /queue/{id}/{action}` (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// `delete` only: bounce to the sender for the recipients not yet delivered.
    #[serde(default)]
    pub bounce: bool,
}

/// An action's answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ActionResult {
    /// Queue id.
    pub id: String,
    /// The action.
    pub action: String,
    /// What happened.
    pub result: String,
    /// Where the message was.
    pub from_state: String,
}

fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("bad JSON body: {e}")))
}

fn parse_action(name: &str, bounce: bool) -> Result<AdminAction, ApiError> {
    let action = AdminAction::parse(name, bounce).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no action {name:?}: use delete, hold, release, retry, bounce or resubmit"
        ))
    })?;
    if bounce && name != "delete" {
        return Err(ApiError::BadRequest(
            "bounce is a flag of delete only".into(),
        ));
    }
    Ok(action)
}

/// Runs one action through the queue, or on the spool when no queue runs.
async fn perform(
    state: &AdminState,
    id: QueueId,
    action: AdminAction,
) -> Result<AdminDone, ApiError> {
    let refused = |r: AdminRefusal| match r {
        AdminRefusal::NotFound(id) => not_found(id),
        AdminRefusal::Conflict(t) => ApiError::Conflict(t),
        AdminRefusal::Unavailable(t) => ApiError::Unavailable(t),
        AdminRefusal::Failed(t) => ApiError::Internal(t),
    };
    match &state.queue {
        Some(q) => q.admin(id, action).await.map_err(refused),
        None => directly(state, id, action).await,
    }
}

/// Delivery is off: nothing processes mail, so the spool may be changed directly.
async fn directly(
    state: &AdminState,
    id: QueueId,
    action: AdminAction,
) -> Result<AdminDone, ApiError> {
    let spool = state.spool.clone();
    let from = tokio::task::spawn_blocking(move || spool.find(id, &QueueState::ALL))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or_else(|| not_found(id))?;
    if !action.allowed_in(from) {
        return Err(ApiError::Conflict(format!(
            "cannot {} a message in {from}",
            action.as_str()
        )));
    }
    let spool = &state.spool;
    let (done, def, extra): (Result<QueueState, SpoolError>, _, Option<&str>) = match action {
        AdminAction::Delete { bounce: false } => (
            spool.delete(id).await,
            &catalog::QUEUE_ADMIN_DELETED,
            Some("no"),
        ),
        AdminAction::Hold => (spool.hold(id).await, &catalog::QUEUE_ADMIN_HELD, None),
        AdminAction::Release => (
            spool.release(id).await,
            &catalog::QUEUE_ADMIN_RELEASED,
            None,
        ),
        AdminAction::Resubmit => (
            spool.release(id).await,
            &catalog::QUEUE_ADMIN_RESUBMITTED,
            None,
        ),
        AdminAction::Delete { bounce: true } | AdminAction::Retry | AdminAction::Bounce => {
            return Err(ApiError::Unavailable(format!(
                "{} needs the queue, and delivery is off (queue.deliver = false)",
                action.as_str()
            )));
        }
    };
    match done {
        Ok(from) => {
            let mut f = fields!(
                "queue_id" => id,
                "action" => action.as_str(),
                "from_state" => from,
            );
            if let Some(b) = extra {
                f.push(("bounce", b.to_owned()));
            }
            state.events.emit(def, f);
            let result = match action {
                AdminAction::Delete { .. } => format!("deleted from {from}"),
                AdminAction::Hold => "held".to_owned(),
                _ => format!("released from {from} (delivery is off: tried when it is on)"),
            };
            Ok(AdminDone { from, result })
        }
        Err(SpoolError::NotFound) => Err(not_found(id)),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

/// An action on one message.
#[utoipa::path(
    post,
    path = "/queue/{id}/{action}",
    tag = "queue",
    params(
        ("id" = String, Path, description = "Queue id"),
        ("action" = String, Path, description = "delete, hold, release, retry, bounce or resubmit"),
    ),
    request_body(content = Option<ActionBody>, description = "`{\"bounce\": true}` for a delete with a bounce"),
    responses(
        (status = 200, description = "Done", body = ActionResult),
        (status = 400, description = "Not a queue id, or a bad body", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 404, description = "No such message or action", body = ErrorBody),
        (status = 409, description = "Not allowed in the message's state", body = ErrorBody),
        (status = 503, description = "The action needs the queue, which does not run", body = ErrorBody),
    )
)]
async fn act_one(
    State(state): State<Arc<AdminState>>,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<ActionResult>, ApiError> {
    let id = parse_id(&id)?;
    let b: ActionBody = parse_body(&body)?;
    let action = parse_action(&action, b.bounce)?;
    let done = perform(&state, id, action).await?;
    Ok(Json(ActionResult {
        id: id.to_string(),
        action: action.as_str().to_owned(),
        result: done.result,
        from_state: done.from.as_str().to_owned(),
    }))
}

/// The body of `POST /queue/actions/{action}`.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    /// Which messages (the list's keys, plus `ids`); must not be empty.
    #[serde(default)]
    pub filter: FilterSpec,
    /// `delete` only: bounce first.
    #[serde(default)]
    pub bounce: bool,
}

/// One message a bulk action could not act on.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BulkFailure {
    /// Queue id.
    pub id: String,
    /// Why.
    pub error: String,
}

/// A bulk action's answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BulkResult {
    /// Messages the filter matched.
    pub matched: usize,
    /// Messages acted on.
    pub touched: usize,
    /// Messages not acted on, with why (at most 1000 listed).
    pub failed: Vec<BulkFailure>,
    /// All messages not acted on.
    pub failed_count: usize,
}

/// An action on every message a filter matches, one after the other, oldest first.
#[utoipa::path(
    post,
    path = "/queue/actions/{action}",
    tag = "queue",
    params(("action" = String, Path, description = "delete, hold, release, retry, bounce or resubmit")),
    request_body = BulkBody,
    responses(
        (status = 200, description = "What was done", body = BulkResult),
        (status = 400, description = "A bad or empty filter", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 404, description = "No such action", body = ErrorBody),
    )
)]
async fn act_bulk(
    State(state): State<Arc<AdminState>>,
    Path(action): Path<String>,
    body: Bytes,
) -> Result<Json<BulkResult>, ApiError> {
    let b: BulkBody = parse_body(&body)?;
    let action = parse_action(&action, b.bounce)?;
    let shown = serde_json::to_string(&b.filter).unwrap_or_default();
    let filter = Filter::from_spec(b.filter).map_err(ApiError::BadRequest)?;
    if filter.is_empty() {
        return Err(ApiError::BadRequest(
            "the filter is empty and would match every message; give at least one key (e.g. {\"state\": \"deferred\"})".into(),
        ));
    }
    let spool = state.spool.clone();
    let now = unix_ms();
    let entries = blocking(move || filter::scan(&spool, &filter, now)).await?;
    let mut out = BulkResult {
        matched: entries.len(),
        touched: 0,
        failed: Vec::new(),
        failed_count: 0,
    };
    for e in &entries {
        match perform(&state, e.listed.id, action).await {
            Ok(_) => out.touched += 1,
            Err(err) => {
                out.failed_count += 1;
                if out.failed.len() < crate::MAX_PAGE {
                    out.failed.push(BulkFailure {
                        id: e.listed.id.to_string(),
                        error: err.to_string(),
                    });
                }
            }
        }
    }
    state.events.emit(
        &catalog::QUEUE_ADMIN_BULK,
        fields!(
            "action" => action.as_str(),
            "filter" => shown,
            "matched" => out.matched,
            "touched" => out.touched,
            "failed" => out.failed_count,
        ),
    );
    Ok(Json(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &[(&str, &str)]) -> Result<(Filter, usize, usize), String> {
        let pairs: Vec<(String, String)> = s
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        parse_list_query(&pairs)
    }

    #[test]
    fn list_query_pages_and_refuses_bad_keys() {
        let (f, limit, offset) = q(&[]).unwrap();
        assert!(f.is_empty());
        assert_eq!((limit, offset), (DEFAULT_LIMIT, 0));
        let (f, limit, offset) =
            q(&[("state", "hold"), ("limit", "1000"), ("offset", "5")]).unwrap();
        assert_eq!(f.state, Some(QueueState::Hold));
        assert_eq!((limit, offset), (1000, 5));
        for bad in [
            vec![("limit", "1001")],
            vec![("limit", "-1")],
            vec![("min_age_secs", "ten")],
            vec![("state", "held")],
            vec![("sender", "a"), ("sender", "b")],
            vec![("colour", "red")],
            vec![("ids", "x")],
        ] {
            assert!(q(&bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_action("expunge", false).is_err());
        assert!(
            parse_action("hold", true).is_err(),
            "bounce belongs to delete"
        );
        assert_eq!(
            parse_action("delete", true).unwrap(),
            AdminAction::Delete { bounce: true }
        );
    }
}
