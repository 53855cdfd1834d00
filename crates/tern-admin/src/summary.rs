//! `GET /queue/summary`: the queue's shape, destination by age, like Postfix's `qshape`
//! (docs/ADMIN.md, "Queue summary").
//!
//! Read from the spool: every message in the chosen states, and for each the
//! destinations its pending and deferred recipients go to, routed with the routing table
//! of this moment (or their domains with `by=domain`, or when delivery is off). Except
//! deferred mail grouped by destination while the queue runs and has read its backlog:
//! that comes from the scheduler's retry timers (`QueueHandle::deferred_shape`: next
//! hops and age from the queue id, no file read), so a summary of a million deferred
//! messages does not read a million files. A message counts once per destination, in the bucket of its age (now minus
//! arrival). Rows are sorted by total, largest first; the first [`TOP_ROWS`] are shown
//! and the rest are summed into one `(other)` row, so the answer is bounded whatever the
//! queue holds. The scan runs on a blocking thread.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use tern_spool::{QueueState, RecipientStatus, Spool};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{ErrorBody, unix_ms};
use crate::error::ApiError;
use crate::state::{AdminState, NextHopOf};

/// Rows shown before the rest is summed into `(other)`.
pub const TOP_ROWS: usize = 50;
/// The name of the row that sums the destinations past [`TOP_ROWS`].
pub const OTHER: &str = "(other)";
/// The age buckets' names (upper bounds in minutes: 5, 10, 20, 40, 80, 160, more).
pub const BUCKETS: [&str; 7] = [
    "0-5m", "5-10m", "10-20m", "20-40m", "40-80m", "80-160m", "160m+",
];
/// Upper bound of each bucket but the last, seconds.
const BOUNDS_SECS: [u64; 6] = [300, 600, 1200, 2400, 4800, 9600];
/// Longest query value accepted, octets.
const MAX_QUERY: usize = 200;

/// The summary endpoint.
pub fn routes() -> OpenApiRouter<Arc<AdminState>> {
    OpenApiRouter::new().routes(routes!(summary))
}

/// `GET /queue/summary`'s query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SummaryQuery {
    /// Comma-separated states (incoming, active, deferred, hold, poison); default
    /// `incoming,active,deferred` (everything waiting for delivery).
    pub state: Option<String>,
    /// `destination` (next hop, the default) or `domain` (recipient domain, as qshape).
    pub by: Option<String>,
}

/// `GET /queue/summary`'s body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SummaryBody {
    /// The age buckets, youngest first.
    pub buckets: Vec<String>,
    /// One row per destination, largest total first; the last may be `(other)`.
    pub rows: Vec<SummaryRow>,
    /// Messages counted (each once, whatever its number of destinations).
    pub total: usize,
    /// Those messages per age bucket.
    pub counts: Vec<usize>,
    /// `destination` or `domain`.
    pub grouped_by: String,
    /// The states counted.
    pub states: Vec<String>,
}

/// One destination's messages per age bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SummaryRow {
    /// The destination (or domain), or `(other)`.
    pub destination: String,
    /// Messages for it, all ages.
    pub total: usize,
    /// Messages for it per bucket.
    pub counts: Vec<usize>,
}

/// The bucket of a message `age_secs` old.
pub fn bucket(age_secs: u64) -> usize {
    BOUNDS_SECS
        .iter()
        .position(|b| age_secs < *b)
        .unwrap_or(BOUNDS_SECS.len())
}

/// Sums messages (age in seconds, their distinct destinations) into the table.
pub fn shape<I>(messages: I, top: usize) -> (Vec<SummaryRow>, usize, Vec<usize>)
where
    I: IntoIterator<Item = (u64, BTreeSet<String>)>,
{
    shape_counted(
        messages
            .into_iter()
            .map(|(age, dests)| (bucket(age), dests, 1)),
        top,
    )
}

/// [`shape`] over groups: (age bucket, their distinct destinations, how many messages).
pub fn shape_counted<I>(groups: I, top: usize) -> (Vec<SummaryRow>, usize, Vec<usize>)
where
    I: IntoIterator<Item = (usize, BTreeSet<String>, usize)>,
{
    let mut per: HashMap<String, [usize; 7]> = HashMap::new();
    let mut counts = vec![0usize; BUCKETS.len()];
    let mut total = 0usize;
    for (b, dests, n) in groups {
        if n == 0 {
            continue;
        }
        total += n;
        if let Some(c) = counts.get_mut(b) {
            *c += n;
        }
        for d in dests {
            if let Some(c) = per.entry(d).or_default().get_mut(b) {
                *c += n;
            }
        }
    }
    let mut rows: Vec<SummaryRow> = per
        .into_iter()
        .map(|(destination, c)| SummaryRow {
            destination,
            total: c.iter().sum(),
            counts: c.to_vec(),
        })
        .collect();
    rows.sort_by(|a, b| {
        b.total
            .cmp(&a.total)
            .then_with(|| a.destination.cmp(&b.destination))
    });
    if rows.len() > top {
        let rest = rows.split_off(top);
        let mut other = SummaryRow {
            destination: OTHER.to_owned(),
            total: 0,
            counts: vec![0; BUCKETS.len()],
        };
        for r in rest {
            other.total += r.total;
            for (o, c) in other.counts.iter_mut().zip(r.counts) {
                *o += c;
            }
        }
        rows.push(other);
    }
    (rows, total, counts)
}

fn parse_states(q: Option<&str>) -> Result<Vec<QueueState>, ApiError> {
    let Some(q) = q.filter(|s| !s.is_empty()) else {
        return Ok(vec![
            QueueState::Incoming,
            QueueState::Active,
            QueueState::Deferred,
        ]);
    };
    if q.len() > MAX_QUERY {
        return Err(ApiError::BadRequest("state is too long".into()));
    }
    let mut out = Vec::new();
    for name in q.split(',') {
        let s = match name.trim() {
            "incoming" => QueueState::Incoming,
            "active" => QueueState::Active,
            "deferred" => QueueState::Deferred,
            "hold" => QueueState::Hold,
            "poison" => QueueState::Poison,
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown state {:?}: incoming, active, deferred, hold or poison",
                    other.chars().take(40).collect::<String>()
                )));
            }
        };
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

/// The recipient domain of `address` (lower case, `""` without one), as routing sees it.
fn domain_of(address: &str) -> String {
    tern_proto::address::domain_of(address).to_ascii_lowercase()
}

/// Reads the spool: per message, its age and its waiting recipients' destinations.
fn scan(
    spool: &Spool,
    states: &[QueueState],
    route: Option<&NextHopOf>,
    now_ms: u64,
) -> Result<Vec<(u64, BTreeSet<String>)>, ApiError> {
    let mut out = Vec::new();
    for state in states {
        let listed = spool
            .list(Some(*state))
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        for m in listed {
            let Some(env) = m.envelope else { continue };
            // A record that cannot be read: count every recipient (the queue decides).
            let record = spool.read_record(m.id).ok().flatten();
            let mut dests = BTreeSet::new();
            for (i, r) in env.recipients.iter().enumerate() {
                let waiting = record
                    .as_ref()
                    .and_then(|rec| rec.recipients.get(i))
                    .is_none_or(|s| {
                        matches!(
                            s.status,
                            RecipientStatus::Pending | RecipientStatus::Deferred { .. }
                        )
                    });
                if !waiting {
                    continue;
                }
                let domain = domain_of(&r.address);
                dests.insert(match route {
                    Some(f) => f(&domain),
                    None => domain,
                });
            }
            if dests.is_empty() {
                continue;
            }
            let arrival_ms = u64::try_from(env.arrival_micros / 1000).unwrap_or(0);
            out.push((now_ms.saturating_sub(arrival_ms) / 1000, dests));
        }
    }
    Ok(out)
}

/// The queue's shape: destination by age bucket (qshape).
#[utoipa::path(
    get,
    path = "/queue/summary",
    tag = "queue",
    params(SummaryQuery),
    responses(
        (status = 200, description = "Messages per destination and age bucket", body = SummaryBody),
        (status = 400, description = "Unknown state or grouping", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
    )
)]
async fn summary(
    State(state): State<Arc<AdminState>>,
    Query(q): Query<SummaryQuery>,
) -> Result<Json<SummaryBody>, ApiError> {
    let states = parse_states(q.state.as_deref())?;
    let by_domain = match q.by.as_deref() {
        None | Some("" | "destination") => false,
        Some("domain") => true,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "by must be destination or domain".into(),
            ));
        }
    };
    let route = if by_domain {
        None
    } else {
        state.next_hop.clone()
    };
    let grouped_by = if route.is_some() {
        "destination"
    } else {
        "domain"
    };
    // Deferred mail by destination comes from the scheduler's timers when they hold the
    // whole backlog (a million files are not read per request); the rest from the spool.
    let now = unix_ms();
    let from_timers = match (
        &state.queue,
        route.is_some() && states.contains(&QueueState::Deferred),
    ) {
        (Some(queue), true) => {
            let now_micros = i64::try_from(now.saturating_mul(1000)).unwrap_or(i64::MAX);
            queue.deferred_shape(now_micros, BOUNDS_SECS.to_vec()).await
        }
        _ => None,
    };
    let spool = state.spool.clone();
    let scan_states: Vec<QueueState> = states
        .iter()
        .copied()
        .filter(|s| from_timers.is_none() || *s != QueueState::Deferred)
        .collect();
    let messages =
        tokio::task::spawn_blocking(move || scan(&spool, &scan_states, route.as_ref(), now))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
    let groups = messages
        .into_iter()
        .map(|(age, dests)| (bucket(age), dests, 1))
        .chain(
            from_timers
                .into_iter()
                .flatten()
                .flat_map(|(hops, counts)| {
                    let dests: BTreeSet<String> = hops.into_iter().collect();
                    counts.into_iter().enumerate().map(move |(b, n)| {
                        (b, dests.clone(), usize::try_from(n).unwrap_or(usize::MAX))
                    })
                }),
        );
    let (rows, total, counts) = shape_counted(groups, TOP_ROWS);
    Ok(Json(SummaryBody {
        buckets: BUCKETS.iter().map(|b| (*b).to_owned()).collect(),
        rows,
        total,
        counts,
        grouped_by: grouped_by.to_owned(),
        states: states.iter().map(|s| s.as_str().to_owned()).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn buckets_have_qshape_bounds() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(299), 0);
        assert_eq!(bucket(300), 1);
        assert_eq!(bucket(599), 1);
        assert_eq!(bucket(600), 2);
        assert_eq!(bucket(1199), 2);
        assert_eq!(bucket(1200), 3);
        assert_eq!(bucket(2400), 4);
        assert_eq!(bucket(4800), 5);
        assert_eq!(bucket(9599), 5);
        assert_eq!(bucket(9600), 6);
        assert_eq!(bucket(u64::MAX), 6);
        assert_eq!(BUCKETS.len(), BOUNDS_SECS.len() + 1);
    }

    #[test]
    fn a_message_counts_once_per_destination_and_once_in_the_totals() {
        let (rows, total, counts) = shape(
            vec![
                (10, set(&["mx:a.test", "mx:b.test"])),
                (400, set(&["mx:a.test"])),
                (100_000, set(&["mx:a.test"])),
            ],
            TOP_ROWS,
        );
        assert_eq!(total, 3);
        assert_eq!(counts, vec![1, 1, 0, 0, 0, 0, 1]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].destination, "mx:a.test");
        assert_eq!(rows[0].total, 3);
        assert_eq!(rows[0].counts, vec![1, 1, 0, 0, 0, 0, 1]);
        assert_eq!(rows[1].destination, "mx:b.test");
        assert_eq!(rows[1].counts, vec![1, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn rows_past_the_top_are_summed_into_other() {
        let messages: Vec<(u64, BTreeSet<String>)> = (0..10u64)
            .flat_map(|i| {
                // Destination d<i> gets i+1 messages.
                (0..=i).map(move |_| (i * 700, set(&[&format!("d{i}")])))
            })
            .collect();
        let (rows, total, _) = shape(messages, 3);
        assert_eq!(total, 55);
        let names: Vec<&str> = rows.iter().map(|r| r.destination.as_str()).collect();
        assert_eq!(names, vec!["d9", "d8", "d7", OTHER]);
        assert_eq!(rows[3].total, 55 - 10 - 9 - 8);
        assert_eq!(rows[3].counts.iter().sum::<usize>(), rows[3].total);
        let (few, _, _) = shape(vec![(0, set(&["x"]))], 3);
        assert!(
            few.iter().all(|r| r.destination != OTHER),
            "no empty (other)"
        );
    }

    #[test]
    fn states_are_parsed_and_checked() {
        assert_eq!(parse_states(None).unwrap().len(), 3);
        assert_eq!(
            parse_states(Some("hold, deferred,hold")).unwrap(),
            vec![QueueState::Hold, QueueState::Deferred]
        );
        assert!(parse_states(Some("corrupt")).is_err());
        assert!(parse_states(Some("bogus")).is_err());
        assert!(parse_states(Some(&"a,".repeat(200))).is_err());
        assert_eq!(domain_of("User@Example.COM"), "example.com");
        assert_eq!(domain_of("postmaster"), "", "as the queue routes it");
    }
}
