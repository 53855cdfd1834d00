//! The message task: one delivery attempt of one message, from its state directory back
//! to a state directory (or out of the spool).
//!
//! Steps: move to `active/`; read and validate the file and its delivery record
//! (quarantine either if bad); decide every pending recipient's route with the routing
//! table of this moment; fail what cannot go (hop limit, expiry, reject routes); hand one
//! job per next hop to the scheduler; wait for the results; queue bounces and notices;
//! then remove the message (nothing left to do), or write its record and move it to
//! `deferred/` (or `hold/` for hold routes).
//!
//! The decisions are sans-I/O and unit-tested beside their code: what the attempt does
//! with each recipient (hop limit, expiry, reject, hold, one group per next hop) is
//! `plan.rs`; the results applied to the record, who is reported and where the message
//! goes next (remove, hold, defer until when, delay notice due) is `apply.rs`. Both take
//! the time as a parameter; this task passes `tern_watchdog::clock::unix_micros()`. What
//! stays here is the I/O: the spool, the jobs, DSNs, events and metrics.
//!
//! Invariants: the record is written before the message leaves `active/` for a waiting
//! state; a DSN is committed to the spool before the record marks its recipients as
//! notified. A spool error (a full or failing disk) never drops the message and never
//! strands it: event 4010, then the message is parked in `deferred/` if it can be moved
//! there (else it stays where it is) and retried after the minimum backoff, from where it
//! is, with the record as this attempt left it held in memory by the scheduler when it
//! could not be written. So recipients delivered in an attempt whose record write failed
//! are not sent again by the retry; only a crash before a record is written repeats them
//! (the documented at-least-once window).
//!
//! Internal failures (issue 4): a panic anywhere in the task is caught at its boundary
//! ([`spawn`]'s join), and a delivery worker that died holding one of its jobs (a panic
//! there, or the watchdog aborting it) closes the job's channel. Both count as a crash of
//! the message in its delivery record, like a death of the process that the evidence
//! attributes to it (`probe`): below
//! `queue.poison_threshold` the message is deferred with an internal-error status, at the
//! threshold it goes to `poison/` (event 4012) and is never retried automatically. Every
//! slot the task or worker held is returned by `Drop` (worker slot guard, file handles,
//! job channels), so nothing else waits for it.
//!
//! Crash attribution: the task runs inside `last_gasp::processing` (a fatal signal on its
//! thread names the message) and, for a suspect of an earlier crash, between its probe
//! mark and the mark's removal (`probe`).
//!
//! Trust: the content is only scanned for `Received:` lines (bounded by the header
//! section); recipients' domains come from envelopes the spool validated.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tern_events::{catalog, fields};
use tern_route::NextHop;
use tern_spool::{CorruptReason, DeliveryRecord, QueueId, QueueState, RecipientStatus, SpoolError};
use tern_watchdog::clock::unix_micros;
use tokio::sync::{oneshot, watch};
use tokio::task::AbortHandle;

use crate::Context;
use crate::apply::{self, Applied, Step};
use crate::channel::{Cmd, Next, QueueHandle};
use crate::dsn;
use crate::job::{Job, JobResult, LoadedMessage, RcptResult, local_reply};
use crate::last_gasp;
use crate::plan::{self, HopGroup, Plan};
use crate::probe::Probe;

/// Starts the task for message `id`, now in `state`. The scheduler is told when it ends,
/// also when it panics (then the message stays in `active/` until the next start).
///
/// The task is polled inside `last_gasp::processing`, so a fatal signal on its thread
/// names the message. With `probe` (a suspect, member of that probe group, see `probe`),
/// nothing is done to the message before the group's probe mark is on disk, and its
/// `done` is written after its processing ended, however it ended, except when it was cut
/// at a stop (it stays a suspect).
pub(crate) fn spawn(
    ctx: Arc<Context>,
    handle: QueueHandle,
    id: QueueId,
    state: QueueState,
    unsaved: Option<Box<DeliveryRecord>>,
    stop: watch::Receiver<bool>,
    probe: Option<Arc<Probe>>,
) -> AbortHandle {
    let work = {
        let (ctx, handle, probe) = (ctx.clone(), handle.clone(), probe.clone());
        async move {
            if let Some(p) = &probe
                && !p.mark(&ctx).await
            {
                return Next::Unprobed;
            }
            run(ctx, handle, id, state, unsaved, stop).await
        }
    };
    let started = Instant::now();
    let inner = tokio::spawn(last_gasp::processing(id, work));
    let abort = inner.abort_handle();
    tokio::spawn(async move {
        let next = match inner.await {
            Ok(next) => next,
            // Cancelled: the queue is stopping (grace period over); the message stays in
            // `active/`, and the shutdown moves it back to `incoming/` (a suspect stays).
            Err(e) if e.is_cancelled() && probe.is_some() => Next::Unprobed,
            Err(e) if e.is_cancelled() => Next::Done,
            Err(e) => {
                let text = panic_text(e.into_panic());
                internal_failure(&ctx, id, "message task", &text).await
            }
        };
        if let Some(p) = &probe
            && !matches!(next, Next::Unprobed)
        {
            p.unmark(&ctx, id, &next, started).await;
        }
        handle.send(Cmd::MessageDone { id, next });
    });
    abort
}

/// The message of a caught panic, for the record and the event.
fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    let text = match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => (*s).to_owned(),
            Err(_) => "(no message)".to_owned(),
        },
    };
    tern_spool::record::bounded_reply(&text)
}

/// A spool error: the message is not dropped (see the module header). It is in `state`
/// now; from `active/` it is moved to `deferred/` if that still works, so that it is not
/// taken for a crash if the process dies meanwhile. `record` is what the attempt learned
/// (kept in memory for the retry when it could not be written).
async fn spool_error(
    ctx: &Context,
    id: QueueId,
    op: &str,
    e: &SpoolError,
    state: QueueState,
    record: Option<&DeliveryRecord>,
) -> Next {
    let wait = ctx.runtime.load().queue.backoff(1, &mut rand::rng());
    ctx.events.emit(
        &catalog::QUEUE_ERROR,
        fields!("queue_id" => id, "op" => op, "error" => e, "retry_in_secs" => wait.as_secs()),
    );
    let state = if state == QueueState::Active
        && ctx
            .spool
            .move_to(id, QueueState::Active, QueueState::Deferred)
            .await
            .is_ok()
    {
        QueueState::Deferred
    } else {
        state
    };
    Next::Retry {
        due: Instant::now() + wait,
        state,
        record: record.cloned().map(Box::new),
        hops: Vec::new(),
    }
}

/// The message's delivery record is not a regular file: the spool sets it aside and
/// holds the message (event 3010). If even that fails, the message is retried later like
/// after any spool error.
async fn hold_without_record(ctx: &Context, id: QueueId) -> Next {
    match ctx.spool.hold_without_record(id, QueueState::Active).await {
        Ok(_) => Next::Done,
        Err(e) => {
            spool_error(
                ctx,
                id,
                "hold without its record",
                &e,
                QueueState::Active,
                None,
            )
            .await
        }
    }
}

/// The message task panicked (the message is in `active/`, its in-memory state gone):
/// count the failure in the record on disk and defer or poison the message. Results of
/// this attempt that were not yet written are lost, so a recipient the peer took may be
/// delivered again (the at-least-once window of one attempt).
async fn internal_failure(ctx: &Context, id: QueueId, stage: &str, error: &str) -> Next {
    let spool = ctx.spool.clone();
    let loaded = last_gasp::spawn_blocking(move || {
        let rec = spool.read_record(id)?;
        let n = match &rec {
            Some(r) => r.recipients.len(),
            None => spool
                .read(QueueState::Active, id)?
                .envelope
                .recipients
                .len(),
        };
        Ok::<_, SpoolError>(rec.unwrap_or_else(|| DeliveryRecord::new(id, n)))
    })
    .await;
    let loaded = loaded.unwrap_or_else(|e| Err(SpoolError::BlockingTask(e.to_string())));
    let mut record = match loaded {
        Ok(r) => r,
        // `read` quarantined a corrupt file already (event 3003); a corrupt record
        // quarantines the message.
        Err(SpoolError::NotFound) => return Next::Done,
        Err(SpoolError::Corrupt(CorruptReason::RecordNotAFile)) => {
            return hold_without_record(ctx, id).await;
        }
        Err(SpoolError::Corrupt(reason)) => {
            let _ = ctx
                .spool
                .quarantine_message(QueueState::Active, id, &reason);
            return Next::Done;
        }
        Err(e) => {
            let op = "read record after a panic";
            return spool_error(ctx, id, op, &e, QueueState::Active, None).await;
        }
    };
    let poisoned = count_internal_failure(ctx, id, &mut record, stage, error);
    if poisoned {
        return poison(ctx, id, &record).await;
    }
    let wait = ctx
        .runtime
        .load()
        .queue
        .backoff(record.crashes.max(1), &mut rand::rng());
    record.next_attempt_micros = Some(unix_micros().saturating_add(apply::micros(wait)));
    if let Err(e) = ctx.spool.write_record(&record).await {
        return spool_error(
            ctx,
            id,
            "write record",
            &e,
            QueueState::Active,
            Some(&record),
        )
        .await;
    }
    if let Err(e) = ctx
        .spool
        .move_to(id, QueueState::Active, QueueState::Deferred)
        .await
    {
        return spool_error(
            ctx,
            id,
            "move to deferred",
            &e,
            QueueState::Active,
            Some(&record),
        )
        .await;
    }
    Next::Retry {
        due: Instant::now() + wait,
        state: QueueState::Deferred,
        record: None,
        hops: Vec::new(),
    }
}

/// Counts one internal failure (panic or lost worker) against the message, like a crash,
/// and emits event 4013. Returns whether the poison threshold is reached.
fn count_internal_failure(
    ctx: &Context,
    id: QueueId,
    record: &mut DeliveryRecord,
    stage: &str,
    error: &str,
) -> bool {
    let threshold = ctx.runtime.load().queue.poison_threshold;
    let poisoned = apply::count_crash(record, stage, error, threshold);
    ctx.events.emit(
        &catalog::QUEUE_INTERNAL_FAILURE,
        fields!(
            "queue_id" => id,
            "stage" => stage,
            "error" => error,
            "crashes" => record.crashes,
            "threshold" => threshold,
        ),
    );
    poisoned
}

/// Writes the record and moves the message from `active/` to `poison/` (event 4012).
async fn poison(ctx: &Context, id: QueueId, record: &DeliveryRecord) -> Next {
    if let Err(next) = park(ctx, id, record, QueueState::Poison).await {
        return next;
    }
    tern_metrics::get().poisoned.inc();
    ctx.events.emit(
        &catalog::QUEUE_POISONED,
        fields!("queue_id" => id, "crashes" => record.crashes),
    );
    Next::Done
}

/// Writes `record`, then moves the message from `active/` to `to` (`hold/`, `poison/`):
/// the record first, so the account of who has the message goes with it. A spool error
/// is handled (`spool_error`) and its `Next` returned.
async fn park(
    ctx: &Context,
    id: QueueId,
    record: &DeliveryRecord,
    to: QueueState,
) -> Result<(), Next> {
    let (op, result) = match ctx.spool.write_record(record).await {
        Err(e) => ("write record".to_string(), Err(e)),
        Ok(()) => (
            format!("move to {to}"),
            ctx.spool.move_to(id, QueueState::Active, to).await,
        ),
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) => Err(spool_error(ctx, id, &op, &e, QueueState::Active, Some(record)).await),
    }
}

async fn run(
    ctx: Arc<Context>,
    handle: QueueHandle,
    id: QueueId,
    state: QueueState,
    unsaved: Option<Box<DeliveryRecord>>,
    stop: watch::Receiver<bool>,
) -> Next {
    let spool = &ctx.spool;
    if state != QueueState::Active {
        match spool.move_to(id, state, QueueState::Active).await {
            Ok(()) => {}
            // Already there: an earlier move was cut short by an error after its link.
            Err(SpoolError::NotFound) if spool.path_of(QueueState::Active, id).exists() => {}
            Err(SpoolError::NotFound) => return Next::Done,
            Err(e) => {
                return spool_error(&ctx, id, "move to active", &e, state, unsaved.as_deref())
                    .await;
            }
        }
    }
    let sp = spool.clone();
    let loaded = last_gasp::spawn_blocking(move || {
        // Streamed: the content is checked, never held (`content.rs`).
        let m = crate::content::scan(&sp, QueueState::Active, id)?;
        let rec = sp.read_record(id);
        Ok::<_, SpoolError>((m, rec))
    })
    .await;
    let (stored, record) = match loaded {
        Ok(Ok(x)) => x,
        // `read` quarantined a corrupt file already (event 3003).
        Ok(Err(SpoolError::Corrupt(_) | SpoolError::NotFound)) => return Next::Done,
        Ok(Err(e)) => {
            return spool_error(&ctx, id, "read", &e, QueueState::Active, unsaved.as_deref()).await;
        }
        Err(e) => {
            let e = SpoolError::BlockingTask(e.to_string());
            return spool_error(&ctx, id, "read", &e, QueueState::Active, unsaved.as_deref()).await;
        }
    };
    let n = stored.envelope.recipients.len();
    let mut record = match (record, unsaved) {
        // What the last attempt learned but could not write is newer than the disk.
        (Ok(_), Some(r)) if r.id == id && r.recipients.len() == n => *r,
        (Ok(Some(r)), _) if r.recipients.len() == n => r,
        (Ok(None), _) => DeliveryRecord::new(id, n),
        (Ok(Some(_)), _) => {
            let reason =
                CorruptReason::BadRecord("record and envelope disagree on recipients".into());
            let _ = spool.quarantine_message(QueueState::Active, id, &reason);
            return Next::Done;
        }
        // Not a record at all (a directory, a FIFO...): nobody can tell who has the
        // message already, so it is held for an operator (event 3010), never retried
        // for ever nor sent again on its own.
        (Err(SpoolError::Corrupt(CorruptReason::RecordNotAFile)), _) => {
            return hold_without_record(&ctx, id).await;
        }
        (Err(SpoolError::Corrupt(reason)), _) => {
            let _ = spool.quarantine_message(QueueState::Active, id, &reason);
            return Next::Done;
        }
        (Err(e), unsaved) => {
            let unsaved = unsaved.as_deref();
            return spool_error(&ctx, id, "read record", &e, QueueState::Active, unsaved).await;
        }
    };
    // Poisoned already (a move to `poison/` that failed, retried): never process it.
    if record.crashes >= ctx.runtime.load().queue.poison_threshold {
        return poison(&ctx, id, &record).await;
    }
    let msg = Arc::new(LoadedMessage {
        envelope: stored.envelope,
        state: QueueState::Active,
        facts: stored.facts,
    });
    #[cfg(feature = "fault-injection")]
    {
        crate::fault_injection::maybe_abort(&msg.facts.head);
        crate::fault_injection::maybe_kill(&msg.facts.head);
        crate::fault_injection::maybe_panic("load", &msg.facts.head);
    }
    let runtime = ctx.runtime.load_full();
    let now = unix_micros();
    let Plan {
        pending,
        failed,
        held,
        jobs,
        expired,
        quarantine_hold,
    } = plan::plan(
        &msg.envelope,
        &msg.facts.head,
        &record,
        &runtime.queue,
        &runtime.routes,
        now,
    );
    if let Some(age) = expired {
        ctx.events.emit(
            &catalog::QUEUE_MESSAGE_EXPIRED,
            fields!("queue_id" => id, "age_secs" => age.as_secs()),
        );
    }
    let mut results: Vec<(usize, RcptResult)> = failed;

    // Routed, no job handed out yet: a panic here leaves no job behind.
    #[cfg(feature = "fault-injection")]
    crate::fault_injection::maybe_panic("route", &msg.facts.head);
    if !jobs.is_empty() {
        let hops: Vec<&str> = jobs.keys().map(String::as_str).collect();
        ctx.events.emit(
            &catalog::QUEUE_MESSAGE_ACTIVE,
            fields!(
                "queue_id" => id,
                "sender" => msg.envelope.sender,
                "attempt" => record.attempts.saturating_add(1),
                "recipients" => pending.len(),
                "next_hops" => hops.join(","),
            ),
        );
    }
    let mut waits = Vec::new();
    for (
        key,
        HopGroup {
            hop,
            transport,
            domain,
            rcpts,
        },
    ) in jobs
    {
        let (tx, rx) = oneshot::channel();
        let hop_of_job = hop.clone();
        let job = Job {
            hop,
            transport,
            domain,
            local: Arc::clone(&runtime.local),
            msg: Arc::clone(&msg),
            rcpts: rcpts.clone(),
            reply: tx,
        };
        handle.send(Cmd::Enqueue(job));
        waits.push((hop_of_job, key, rcpts, rx));
    }
    let mut lost_worker = false;
    let mut waiting_on = Vec::new();
    for (hop, key, rcpts, rx) in waits {
        match rx.await {
            Ok(JobResult { outcomes }) => {
                attempt_events(&ctx, id, &key, &msg, &outcomes);
                let deferral = outcomes.iter().find_map(|(_, r)| match r {
                    RcptResult::Deferred { reply } => Some(reply.to_string()),
                    _ => None,
                });
                if let Some(reply) = deferral {
                    waiting_on.push((hop, reply));
                }
                results.extend(outcomes);
            }
            // The worker died holding the job (a panic, or the watchdog stopped it; at
            // shutdown jobs are answered, not dropped): defer, never drop, and count it.
            Err(_) => {
                lost_worker = true;
                let reply = local_reply(451, "4.3.0 internal error during delivery; will retry");
                waiting_on.push((hop, reply.to_string()));
                let outcomes: Vec<(usize, RcptResult)> = rcpts
                    .into_iter()
                    .map(|i| {
                        (
                            i,
                            RcptResult::Deferred {
                                reply: reply.clone(),
                            },
                        )
                    })
                    .collect();
                attempt_events(&ctx, id, &key, &msg, &outcomes);
                results.extend(outcomes);
            }
        }
    }
    drop(stop);
    let attempt = Attempt {
        results,
        held,
        quarantine_hold,
        started: now,
        lost_worker,
        waiting_on,
    };
    finish(&ctx, id, &msg, &mut record, attempt).await
}

/// Event 7064 for one job's outcome: one event per distinct (result, remote, reply), with
/// the recipients that share it.
fn attempt_events(
    ctx: &Context,
    id: QueueId,
    hop: &str,
    msg: &LoadedMessage,
    outcomes: &[(usize, RcptResult)],
) {
    let mut groups: BTreeMap<(&str, &str, String), Vec<&str>> = BTreeMap::new();
    for (i, r) in outcomes {
        let reply = r.reply();
        let (result, remote) = (r.name(), reply.remote.as_deref().unwrap_or(""));
        let address = msg
            .envelope
            .recipients
            .get(*i)
            .map_or("", |r| r.address.as_str());
        groups
            .entry((result, remote, reply.to_string()))
            .or_default()
            .push(address);
    }
    for ((result, remote, reply), to) in groups {
        ctx.events.emit(
            &catalog::DELIVERY_ATTEMPT,
            fields!(
                "queue_id" => id,
                "result" => result,
                "next_hop" => hop,
                "host" => remote,
                "reply" => reply,
                "to" => to.join(","),
            ),
        );
    }
}

/// What one attempt came to, for [`finish`].
struct Attempt {
    /// One result per recipient tried.
    results: Vec<(usize, RcptResult)>,
    /// Recipients parked by `hold` routes.
    held: Vec<usize>,
    /// Every recipient was parked by the envelope's quarantine hold.
    quarantine_hold: bool,
    /// When the attempt started (microseconds since the epoch).
    started: i64,
    /// A delivery worker died holding one of the jobs.
    lost_worker: bool,
    /// The next hops with deferred recipients, and why (for the scheduler's view).
    waiting_on: Vec<(NextHop, String)>,
}

/// Applies the results to the record, sends DSNs, and puts the message where it goes.
async fn finish(
    ctx: &Context,
    id: QueueId,
    msg: &LoadedMessage,
    record: &mut DeliveryRecord,
    attempt: Attempt,
) -> Next {
    let Attempt {
        results,
        held,
        quarantine_hold,
        started,
        lost_worker,
        waiting_on,
    } = attempt;
    #[cfg(feature = "fault-injection")]
    crate::fault_injection::maybe_panic("finish", &msg.facts.head);
    let spool = &ctx.spool;
    let runtime = ctx.runtime.load_full();
    let cfg = &runtime.queue;
    count_results(msg, &results);
    let Applied {
        newly_failed,
        newly_delivered,
        first_deferral,
    } = apply::apply(record, results, started, unix_micros());
    if !newly_failed.is_empty() {
        let list: Vec<&str> = newly_failed
            .iter()
            .filter_map(|i| msg.envelope.recipients.get(*i).map(|r| r.address.as_str()))
            .collect();
        ctx.events.emit(
            &catalog::DELIVERY_FAILED,
            fields!("queue_id" => id, "recipients" => list.join(","), "reply" => first_reply(record, &newly_failed)),
        );
    }
    // Bounces and success notices: committed before the record says they were sent.
    if let Err(e) = dsn::send_reports(ctx, msg, record, &newly_failed, &newly_delivered).await {
        return spool_error(ctx, id, "queue a DSN", &e, QueueState::Active, Some(record)).await;
    }
    let step = apply::step(record, &held);
    if step == Step::Remove {
        return match spool.remove(QueueState::Active, id).await {
            Ok(()) | Err(SpoolError::NotFound) => Next::Done,
            Err(e) => spool_error(ctx, id, "remove", &e, QueueState::Active, Some(record)).await,
        };
    }
    if lost_worker
        && count_internal_failure(
            ctx,
            id,
            record,
            "delivery worker",
            "worker ended without a result",
        )
    {
        return poison(ctx, id, record).await;
    }
    let open = match step {
        Step::Defer { open } => open,
        Step::Remove | Step::Hold => {
            // The quarantine hold is applied once: a release delivers the message.
            record.quarantine_held |= quarantine_hold;
            return hold(ctx, id, record).await;
        }
    };
    let wait = apply::defer(
        record,
        cfg,
        first_deferral.as_deref(),
        unix_micros(),
        &mut rand::rng(),
    );
    let due = Instant::now() + wait;
    let reason = first_deferral.unwrap_or_default();
    if let Err(e) = dsn::maybe_delay_notice(ctx, msg, record, &open).await {
        return spool_error(
            ctx,
            id,
            "queue a delay notice",
            &e,
            QueueState::Active,
            Some(record),
        )
        .await;
    }
    if let Err(e) = spool.write_record(record).await {
        return spool_error(
            ctx,
            id,
            "write record",
            &e,
            QueueState::Active,
            Some(record),
        )
        .await;
    }
    if let Err(e) = spool
        .move_to(id, QueueState::Active, QueueState::Deferred)
        .await
    {
        return spool_error(
            ctx,
            id,
            "move to deferred",
            &e,
            QueueState::Active,
            Some(record),
        )
        .await;
    }
    ctx.events.emit(
        &catalog::DELIVERY_DEFERRED,
        fields!(
            "queue_id" => id,
            "recipients" => open.len(),
            "reason" => reason,
            "retry_in_secs" => wait.as_secs(),
        ),
    );
    Next::Retry {
        due,
        state: QueueState::Deferred,
        record: None,
        hops: waiting_on,
    }
}

/// Every recipient left waits for an operator (`hold` routes): the record is written
/// and the message moved to `hold/` (event 4011).
async fn hold(ctx: &Context, id: QueueId, record: &DeliveryRecord) -> Next {
    if let Err(next) = park(ctx, id, record, QueueState::Hold).await {
        return next;
    }
    ctx.events
        .emit(&catalog::QUEUE_HELD, fields!("queue_id" => id));
    Next::Done
}

/// Counts the attempt's results into the metrics: delivered (with the time the message
/// spent in the queue), deferred, bounced.
fn count_results(msg: &LoadedMessage, results: &[(usize, RcptResult)]) {
    let metrics = tern_metrics::get();
    let in_queue = plan::age_of(&msg.envelope, unix_micros());
    for (_, res) in results {
        match res {
            RcptResult::Delivered { .. } => {
                metrics.delivered.inc();
                metrics.queue_time.observe_duration(in_queue);
            }
            RcptResult::Deferred { .. } => {
                metrics.deferred.inc();
            }
            RcptResult::Failed { .. } => {
                metrics.bounced.inc();
            }
        }
    }
}

fn first_reply(record: &DeliveryRecord, idx: &[usize]) -> String {
    idx.first()
        .and_then(|i| record.recipients.get(*i))
        .map(|r| match &r.status {
            RecipientStatus::Failed { reply }
            | RecipientStatus::Deferred { reply }
            | RecipientStatus::Delivered { reply } => reply.clone(),
            RecipientStatus::Pending => String::new(),
        })
        .unwrap_or_default()
}
