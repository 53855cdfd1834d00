//! `GET /queue/summary`: the queue's shape, destination by age, like Postfix's `qshape`
//! (docs/ADMIN.md, "Queue summary").
//!
//! Read from the spool: every message in the chosen states, and for each the
//! destinations its pending and deferred recipients go to, routed with the routing table
//! of this moment (or their domains with `by=domain`, or when delivery is off). Except
//! deferred mail grouped by destination while the queue runs and has scheduled its backlog:
//! that comes from the scheduler's retry timers (`QueueHandle::deferred_shape`: next
//! hops and age from the queue id, no file read), so a summary of a million deferred
//! messages does not read a million files. A message counts once per destination, in the bucket of its age (now minus
//! arrival). Rows are sorted by total, largest first; the first [`TOP_ROWS`] are shown
//! and the rest are summed into one `(other)` row, so the answer is bounded whatever the
//! queue holds. The scan runs on a blocking thread.
//!
//! Mail moves while the states are read one after the other, so the scan works on a
//! queue that changes under it (issue 16: 319,229 counted for 300,000 messages):
//! - a message is counted once, whatever number of states it was found in (a move is a
//!   link then an unlink, so it sits in two directories for a moment, and a message that
//!   moves from a state already read to one not read yet is met twice): the ids met are
//!   remembered across the states and a message met again is skipped (its recipients'
//!   destinations do not depend on its state);
//! - the answer says whether it is exact: `exact` is true only when the spool's change
//!   count ([`Spool::changes`]) did not move during the scan and no message was met
//!   twice, so what was read is one consistent queue. Otherwise the counts are an
//!   estimate (a message that moved from a state not read yet to one already read, or
//!   arrived or left meanwhile, may be missing), and the CLI says so. When deferred
//!   mail comes from the timers, the change count is taken before they are read, so a
//!   message moving between the timers' view and the states read from the spool makes
//!   the answer an estimate too.
//! - after a restart, the timers hold the whole backlog seconds after the start, before
//!   the backlog's files are read (docs/SPOOL.md); until they are, the messages not
//!   read yet are counted in one row of their own, [`NOT_READ_YET`], and the answer is
//!   an estimate (`exact` false).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use tern_queue::DeferredShape;
use tern_spool::{QueueId, QueueState, RecipientStatus, Spool};
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

/// The destination shown for deferred messages whose files are not read yet after a
/// restart (module header).
pub const NOT_READ_YET: &str = "(not read yet)";

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
    /// True when nothing was committed, moved, removed or quarantined while the spool
    /// was read (and no message was met in two states): the counts are those of one
    /// moment. False: mail moved while counting; each message is still counted at most
    /// once, but one that arrived, left or changed state meanwhile may be missing, so
    /// the counts are approximate.
    pub exact: bool,
    /// Messages met in two states during the scan (moving), each counted once.
    pub seen_twice: usize,
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

/// What one walk over the spool found.
struct Scan {
    /// Per message, its age and its waiting recipients' destinations.
    messages: Vec<(u64, BTreeSet<String>)>,
    exact: bool,
    seen_twice: usize,
}

/// Reads the spool: per message (once), its age and its waiting recipients'
/// destinations; and whether the queue stood still meanwhile.
fn scan(
    spool: &Spool,
    states: &[QueueState],
    route: Option<&NextHopOf>,
    now_ms: u64,
) -> Result<Scan, ApiError> {
    let before = spool.changes();
    // One state's list in memory at a time; the ids met so far (16 octets each).
    let mut seen: HashSet<QueueId> = HashSet::new();
    let mut seen_twice = 0usize;
    let mut out = Vec::new();
    for state in states {
        let listed = spool
            .list(Some(*state))
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        for m in listed {
            if !seen.insert(m.id) {
                // Moving: counted where it was met first (its recipients' destinations
                // do not depend on the state).
                seen_twice += 1;
                continue;
            }
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
    // After the records too: a message that left while its record was read is a change.
    let exact = seen_twice == 0 && !spool.is_read_only() && spool.changes() == before;
    Ok(Scan {
        messages: out,
        exact,
        seen_twice,
    })
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
    // Taken before the timers are read: a message that moves between the timers' view and
    // the states read from the spool changes it, and the answer is then an estimate.
    let changes_before = state.spool.changes();
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
    let found =
        tokio::task::spawn_blocking(move || scan(&spool, &scan_states, route.as_ref(), now))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
    let groups = found
        .messages
        .into_iter()
        .map(|(age, dests)| (bucket(age), dests, 1))
        .chain(
            from_timers
                .iter()
                .flat_map(|shape| shape.groups.iter().cloned().chain(unread_group(shape)))
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
        exact: found.exact
            && state.spool.changes() == changes_before
            && from_timers.as_ref().is_none_or(DeferredShape::complete),
        seen_twice: found.seen_twice,
    }))
}

/// The row of the deferred messages scheduled but not read yet after a restart (their
/// next hops are not known yet), when there are any.
fn unread_group(shape: &DeferredShape) -> Option<(Vec<String>, Vec<u64>)> {
    (!shape.complete()).then(|| (vec![NOT_READ_YET.to_owned()], shape.unread.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_spool::{ClientInfo, Envelope, MailParams, Recipient};

    /// Commits one message for `to` to a real spool; returns its id.
    async fn commit(spool: &Spool, to: &str) -> QueueId {
        let mut w = spool.begin();
        let body = b"Subject: x\r\n\r\nx\r\n";
        w.write(body).await.expect("write");
        let id = w.id();
        let env = Envelope {
            quarantine: None,
            id,
            sender: "s@client.test".into(),
            recipients: vec![Recipient::new(to)],
            params: MailParams::default(),
            client: ClientInfo::default(),
            arrival_micros: 0,
            size: w.written(),
        };
        w.commit(env).await.expect("commit");
        id
    }

    const WAITING: [QueueState; 3] = [
        QueueState::Incoming,
        QueueState::Active,
        QueueState::Deferred,
    ];

    /// The moment of issue 16: a message caught between the link into its new state and
    /// the unlink from its old one is met in both directories. It counts once, and the
    /// answer says the counts are not exact.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_message_met_in_two_states_counts_once_and_the_answer_is_approximate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (spool, _) = Spool::open(dir.path(), tern_events::EventLog::discard()).expect("open");
        spool.set_commit_mode(tern_spool::CommitMode::File);
        let a = commit(&spool, "a@one.test").await;
        commit(&spool, "b@two.test").await;
        spool
            .move_to(a, QueueState::Incoming, QueueState::Deferred)
            .await
            .expect("move");
        let quiet = scan(&spool, &WAITING, None, 1000).expect("scan");
        assert_eq!(quiet.messages.len(), 2);
        assert!(quiet.exact, "nothing moved");
        assert_eq!(quiet.seen_twice, 0);
        // Half a move: linked into active/, not yet unlinked from deferred/.
        std::fs::hard_link(
            spool.path_of(QueueState::Deferred, a),
            spool.path_of(QueueState::Active, a),
        )
        .expect("link");
        let moving = scan(&spool, &WAITING, None, 1000).expect("scan");
        assert_eq!(moving.messages.len(), 2, "counted once");
        assert_eq!(moving.seen_twice, 1);
        assert!(!moving.exact);
        let (rows, total, _) = shape(moving.messages, TOP_ROWS);
        assert_eq!(total, 2);
        assert!(rows.iter().all(|r| r.total == 1), "{rows:?}");
    }

    /// Messages moving between states all through the scans: never counted more than
    /// they are, and a scan during which mail moved never claims to be exact.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scans_while_mail_moves_never_count_a_message_twice() {
        const N: usize = 40;
        let dir = tempfile::tempdir().expect("tempdir");
        let (spool, _) = Spool::open(dir.path(), tern_events::EventLog::discard()).expect("open");
        spool.set_commit_mode(tern_spool::CommitMode::File);
        let mut ids = Vec::new();
        for i in 0..N {
            ids.push(commit(&spool, &format!("r{i}@d{}.test", i % 3)).await);
        }
        let mover = {
            let spool = spool.clone();
            tokio::spawn(async move {
                // Round trips through the three states, as the scheduler does them.
                for round in 0..6 {
                    let (from, to) = match round % 3 {
                        0 => (QueueState::Incoming, QueueState::Active),
                        1 => (QueueState::Active, QueueState::Deferred),
                        _ => (QueueState::Deferred, QueueState::Incoming),
                    };
                    for id in &ids {
                        spool.move_to(*id, from, to).await.expect("move");
                    }
                }
            })
        };
        while !mover.is_finished() {
            let spool2 = spool.clone();
            let found = tokio::task::spawn_blocking(move || scan(&spool2, &WAITING, None, 0))
                .await
                .expect("join")
                .expect("scan");
            assert!(found.messages.len() <= N, "{} > {N}", found.messages.len());
            if found.messages.len() != N {
                assert!(!found.exact, "a short count claimed to be exact");
            }
        }
        mover.await.expect("mover");
        let settled = scan(&spool, &WAITING, None, 0).expect("scan");
        assert_eq!(settled.messages.len(), N);
        assert!(settled.exact);
    }

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
