//! The scheduler: the one task that owns the queue's state (see the crate header).
//!
//! It keeps:
//! - `backlog`: messages to load (new ones from the intake, released ones, and what was in
//!   `incoming/` at start); with the due retries, they take turns for the
//!   `max_active_messages` message slots, so memory stays bounded whatever the queue
//!   size and neither new mail nor a backlog coming due starves the other;
//! - `suspects`: what was in `active/` at start (in process when the previous run died),
//!   probed a group at a time beside the normal flow once the run has lasted
//!   `probe_delay_secs` (`probe`); a suspect is in none of the other collections;
//! - `retries`: messages waiting for a retry, by due time (`retries.rs`);
//! - `destinations`: per next hop, the jobs waiting, the workers running and whether the
//!   destination is down. A job for a destination that is down is answered at once with a
//!   deferral (no connection is tried), so a dead destination costs nothing and slows no
//!   other.
//!
//! - `cache`: idle connections (`conncache.rs`, like Postfix's `scache`), by endpoint. A
//!   worker that finished a job gets the next job for its next hop at once, or hands its
//!   connection to the cache and ends, freeing its slot; a worker looking for a
//!   connection to an address takes one from here first. Idle connections hold no slot.
//!
//! Invariants: a message id is in at most one of `backlog`, `retries` and `running` (and a
//! waiting suspect in none of them); the per-destination and total worker counts only
//! change here, when `pump` starts a worker, on `WorkerDone` (sent by the worker's slot
//! guard on drop, so also after a panic), and on a `NextJob` with nothing more for the
//! worker's next hop (the worker handed its slot guard in with it; the scheduler disarms
//! it and counts the worker done itself, so each worker is counted done exactly once).
//!
//! Watchdog: the heartbeat `queue.scheduler` counts commands sent and not yet received
//! as work waiting (the senders add, so a scheduler that stops receiving is seen as
//! having work), is busy from a command or wake-up until the next wait, and counts one
//! item per turn of the loop.
//!
//! Administrators (the admin API) ask through the same channel, each request with a
//! `oneshot` for the answer: a snapshot of every destination ([`QueueHandle::destinations`]),
//! and retry now, suspend and resume one ([`QueueHandle::destination`]). A suspension is
//! kept in memory only (like Exchange's Suspend-Queue): a restart clears it.
//!
//! In a cluster (docs/cluster/state.md), the scheduler tells its own down marks and
//! administrators' actions to the [`DestinationSync`] hook the binary wired in, and
//! applies other nodes' changes that arrive as `Cmd::Shared`. A mark from another node
//! for a next hop this node does not know yet is kept by name (`remote`) and applied
//! when a job for it arrives; a down mark keeps its expiry, a suspension holds until a
//! resume from any node.
//!
//! Trust: commands come only from Tern's own tasks; a destination name from the API is
//! only compared with the names of known next hops.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_events::{catalog, fields};
use tern_route::NextHop;
use tern_spool::{QueueId, QueueState, SpoolError};
use tern_watchdog::Heartbeat;
use tern_watchdog::clock::{unix_micros, unix_ms};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::Context;
use crate::attempt;
use crate::channel::{AdminReply, Cmd, Handoff, HopError, Next, Requeue};
use crate::conncache::{ConnCache, Parked};
use crate::connection::{Conn, EndpointKey, close_in_background};
use crate::dispatch::{Dispatch, Refused};
use crate::job::{Job, JobResult};
use crate::message;
use crate::probe::{self, ActiveMessage, ProbeLog, Suspects};
use crate::requests::{
    AdminAction, AdminRefusal, DeferredShape, DestinationAction, DestinationError, DestinationInfo,
    DestinationState,
};
use crate::retries::Retries;
use crate::shared::{DestinationSync, SharedMark, SharedState};

pub use crate::channel::{QueueHandle, QueueReceiver, channel};

/// The running queue.
pub struct Queue {
    handle: QueueHandle,
    /// The scheduler; it ends with the suspects still waiting.
    task: JoinHandle<HashSet<QueueId>>,
    /// This run's probe journal (`None` when it could not be made).
    probes: Option<Arc<ProbeLog>>,
}

impl Queue {
    /// Scans the spool (active, then incoming), judges how the previous run ended
    /// (`probe::recover`: crashes counted, suspects lined up, this run's probe journal
    /// and last gasp prepared) and starts scheduling. After a lazy open
    /// (`Spool::open_lazy`), `incoming/` is not scanned here: the rest of the spool's
    /// recovery runs first in the background (`load_backlog`, event 4065) and hands it
    /// over; until then only new mail is processed (no probe, no administrator's action
    /// on a message the queue does not hold). Then `deferred/` is loaded in the
    /// background: new mail flows meanwhile; every deferred message joins the retry
    /// timers first from its name and its file's time, unread (event 4067 at the end),
    /// then each learns its next hops and its record's due time as its file is read
    /// (event 4055 at the end). Blocking
    /// work (the scans, the evidence) runs on blocking threads.
    pub async fn start(ctx: Arc<Context>, receiver: QueueReceiver) -> Result<Queue, SpoolError> {
        let spool = ctx.spool.clone();
        // After a lazy open, `incoming/` (and the rest) is recovered in the background
        // first (`load_backlog`); `active/` was settled before the listeners started.
        let recovering = spool.recovery_pending();
        let scan = tokio::task::spawn_blocking(move || initial_scan(&spool, !recovering))
            .await
            .map_err(|e| SpoolError::BlockingTask(e.to_string()))??;
        let handle = QueueHandle::of(&receiver);
        // What was in process when the previous run died: suspects, and the crashes the
        // evidence attributes, counted before anything else happens (`probe`).
        let recovered = probe::recover(&ctx, scan.active).await;
        let (stop_tx, stop_rx) = watch::channel(false);
        let cache = ConnCache::new(
            ctx.delivery.connection_cache_size,
            Duration::from_secs(ctx.delivery.connection_cache_idle_secs),
        );
        let mut sched = Scheduler {
            ctx,
            handle: handle.clone(),
            backlog: VecDeque::new(),
            retry_turn: false,
            backlog_loaded: false,
            backlog_scheduled: false,
            spool_ready: !recovering,
            queued_ids: HashSet::new(),
            retries: Retries::default(),
            running: HashMap::new(),
            dispatch: Dispatch::new(),
            cache,
            next_worker: 0,
            beat: receiver.beat.clone(),
            stopping: None,
            stop_tx,
            stop_rx,
            suspects: recovered.suspects,
            sync: None,
            remote: HashMap::new(),
        };
        for id in scan.incoming {
            sched.push_backlog(id, QueueState::Incoming);
        }
        let loader_ctx = Arc::clone(&sched.ctx);
        let task = tokio::spawn(sched.run(receiver.rx));
        load_backlog(loader_ctx, handle.clone(), recovering);
        Ok(Queue {
            handle,
            task,
            probes: recovered.log,
        })
    }

    /// A handle for submitting messages.
    pub fn handle(&self) -> QueueHandle {
        self.handle.clone()
    }

    /// Stops scheduling, lets deliveries in progress finish within the grace period
    /// (`Context::shutdown_grace`), then cuts the rest. Messages cut are moved from
    /// `active/` back to `incoming/`; they are delivered at the next start (a delivery
    /// cut after the peer took it is the duplicate window). Suspects not yet cleared by
    /// their probe stay in `active/` for the next start's line. Then the probe journal
    /// records the clean stop, so the next start counts no crash. If the scheduler itself
    /// died, nothing is moved and no clean stop is recorded: the next start judges it
    /// like any death.
    pub async fn shutdown(self, ctx: &Context) {
        let (tx, rx) = oneshot::channel();
        self.handle.send(Cmd::Shutdown(tx));
        let _ = rx.await;
        let Ok(suspects) = self.task.await else {
            return;
        };
        let spool = ctx.spool.clone();
        let left = tokio::task::spawn_blocking(move || spool.list(Some(QueueState::Active)))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        for m in left
            .into_iter()
            .filter(|m| m.state == QueueState::Active && !suspects.contains(&m.id))
        {
            let _ = ctx
                .spool
                .move_to(m.id, QueueState::Active, QueueState::Incoming)
                .await;
        }
        if let Some(log) = &self.probes {
            log.stopped(ctx).await;
        }
    }
}

struct Scan {
    /// Messages in `active/`: in process when the previous run ended (or suspects it
    /// left), with their crash counts.
    active: Vec<ActiveMessage>,
    /// Messages in `incoming/`.
    incoming: Vec<QueueId>,
}

/// Messages handed over per command by the background load of `deferred/`.
const LOAD_CHUNK: usize = 1024;

/// On a blocking thread: first, after a lazy open (`recover`), the rest of the spool's
/// recovery (`Spool::finish_recovery`: `incoming/`, `active/`, `hold/`, `poison/`
/// validated, the segments there at the start recovered), answered with
/// `Cmd::Recovered` (which hands over the messages of `incoming/`); it stops when the
/// scheduler has stopped, and the load below runs only after a recovery that ended.
/// Then `deferred/` (`Spool::load_deferred`): first every message scheduled from its
/// name and its file's modification time (`Cmd::Due`, then `Cmd::AllDue`), then every
/// file read and validated (quarantine, records), each chunk sent to the scheduler with
/// the record's due times and the next hops routed with the routes of that moment
/// (`Cmd::Loaded`); stops when the scheduler has stopped. Ends with `Cmd::BacklogDone`.
fn load_backlog(ctx: Arc<Context>, handle: QueueHandle, recover: bool) {
    // Not awaited: it ends on its own, or at its next step once the scheduler stopped.
    drop(tokio::task::spawn_blocking(move || {
        let spool = ctx.spool.clone();
        if recover {
            #[cfg(feature = "fault-injection")]
            fault_injection::hold_recovery();
            let started = Instant::now();
            let go_on = || !handle.is_closed();
            let result = spool.finish_recovery(&go_on);
            let finished = matches!(&result, Ok(r) if !r.stopped);
            handle.send(Cmd::Recovered {
                result: result.map_err(|e| e.to_string()),
                started,
            });
            if !finished {
                return;
            }
        }
        let started = Instant::now();
        #[cfg(feature = "fault-injection")]
        fault_injection::hold_backlog_load();
        let mut take = |step: tern_spool::BacklogStep| {
            if handle.is_closed() {
                return false;
            }
            let batch = match step {
                tern_spool::BacklogStep::Due(due) => {
                    let now_micros = unix_micros();
                    let now = Instant::now();
                    let due = due
                        .into_iter()
                        .map(|(id, at)| {
                            let wait = u64::try_from(at.saturating_sub(now_micros)).unwrap_or(0);
                            (id, now + Duration::from_micros(wait))
                        })
                        .collect();
                    handle.send(Cmd::Due(due));
                    return true;
                }
                tern_spool::BacklogStep::AllDue(count) => {
                    handle.send(Cmd::AllDue { count, started });
                    #[cfg(feature = "fault-injection")]
                    fault_injection::hold_backlog_read();
                    return true;
                }
                tern_spool::BacklogStep::Damaged(ids) => {
                    handle.send(Cmd::Damaged(ids));
                    return true;
                }
                tern_spool::BacklogStep::Read(batch) => batch,
            };
            if batch.is_empty() {
                return true;
            }
            let routes = Arc::clone(&ctx.runtime.load().routes);
            let now_micros = unix_micros();
            let now = Instant::now();
            let found = batch
                .into_iter()
                .map(|d| {
                    let due_micros = d
                        .record
                        .as_ref()
                        .and_then(|r| r.next_attempt_micros)
                        .unwrap_or(now_micros);
                    let wait = u64::try_from(due_micros.saturating_sub(now_micros)).unwrap_or(0);
                    let hops = waiting_hops(&routes, Some(&d.envelope), d.record.as_ref());
                    (d.id, now + Duration::from_micros(wait), hops)
                })
                .collect();
            handle.send(Cmd::Loaded(found));
            true
        };
        let (load, error) = match spool.load_deferred(LOAD_CHUNK, &mut take) {
            Ok(load) => (load, None),
            Err(e) => (tern_spool::DeferredLoad::default(), Some(e.to_string())),
        };
        handle.send(Cmd::BacklogDone {
            load,
            started,
            error,
        });
    }));
}

/// The next hops of the pending and deferred recipients of `envelope`, routed with
/// `routes`, with each one's last deferral text from `record` (for the scheduler's
/// view of destinations; routing again at delivery decides).
fn waiting_hops(
    routes: &tern_route::RoutingTable,
    envelope: Option<&tern_spool::Envelope>,
    record: Option<&tern_spool::DeliveryRecord>,
) -> Vec<HopError> {
    use tern_spool::RecipientStatus;
    let Some(envelope) = envelope else {
        return Vec::new();
    };
    let mut hops: Vec<HopError> = Vec::new();
    for (i, r) in envelope.recipients.iter().enumerate() {
        let status = record
            .and_then(|rec| rec.recipients.get(i))
            .map(|s| &s.status);
        let error = match status {
            None | Some(RecipientStatus::Pending) => String::new(),
            Some(RecipientStatus::Deferred { reply }) => reply.clone(),
            Some(_) => continue,
        };
        let domain = crate::plan::domain_of(&r.address);
        let hop = routes.route(&domain).next_hop;
        match hops.iter_mut().find(|(h, _)| *h == hop) {
            Some((_, e)) if e.is_empty() => *e = error,
            Some(_) => {}
            None => hops.push((hop, error)),
        }
    }
    hops
}

/// `active/` (with crash counts) and, with `with_incoming`, `incoming/` (otherwise the
/// background recovery hands it over); `deferred/` is `load_backlog`'s.
fn initial_scan(spool: &tern_spool::Spool, with_incoming: bool) -> Result<Scan, SpoolError> {
    let mut active = Vec::new();
    // An entry that fails its check is listed as corrupt while the background recovery
    // runs (it quarantines it): not in process, not a suspect.
    for m in spool
        .list(Some(QueueState::Active))?
        .into_iter()
        .filter(|m| m.state == QueueState::Active)
    {
        // A record that cannot be read is dealt with when the message is loaded.
        let crashes = spool
            .read_record(m.id)
            .ok()
            .flatten()
            .map_or(0, |r| r.crashes);
        active.push(ActiveMessage {
            id: m.id,
            recipients: m.envelope.as_ref().map_or(0, |e| e.recipients.len()),
            crashes,
        });
    }
    let incoming = if with_incoming {
        spool
            .list(Some(QueueState::Incoming))?
            .into_iter()
            .map(|m| m.id)
            .collect()
    } else {
        Vec::new()
    };
    Ok(Scan { active, incoming })
}

struct Scheduler {
    ctx: Arc<Context>,
    handle: QueueHandle,
    backlog: VecDeque<(QueueId, QueueState)>,
    /// The next free message slot goes to a due retry first (else to `backlog` first).
    retry_turn: bool,
    /// Every deferred message on disk at the start is in `retries` (or went on), and
    /// its file was read (its next hops are known).
    backlog_loaded: bool,
    /// Every deferred message on disk at the start is in `retries` (or went on), read
    /// or not (`Cmd::AllDue`).
    backlog_scheduled: bool,
    /// The spool's recovery has ended (`Cmd::Recovered`; from the start after an eager
    /// open): until then nothing touches a message that was on disk at the start, since
    /// the recovery may be validating, moving or quarantining it. The suspects wait for
    /// their probes, administrators' actions on messages the queue does not hold are
    /// refused. Stays `false` when the recovery failed or stopped (the next start does it).
    spool_ready: bool,
    /// Ids in `backlog` (so a duplicate submit is ignored). The ids in `retries` are
    /// not repeated here (a million deferred messages would cost another 34 MB):
    /// `is_queued` asks both.
    queued_ids: HashSet<QueueId>,
    retries: Retries,
    running: HashMap<QueueId, tokio::task::AbortHandle>,
    /// Jobs per next hop, worker counts, down marks, suspensions.
    dispatch: Dispatch<NextHop, Job>,
    /// Idle connections by endpoint, bounded in number and idle time.
    cache: ConnCache<EndpointKey, Conn>,
    /// Number of the next delivery worker (for its heartbeat's name).
    next_worker: u64,
    beat: Heartbeat,
    stopping: Option<(Instant, oneshot::Sender<()>)>,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
    /// Messages that were in process when an earlier run died, probed one at a time
    /// (`probe`); never in `backlog` or `retries` while they are suspects.
    suspects: Suspects,
    /// Where this node's own destination changes go, in a cluster.
    sync: Option<Arc<dyn DestinationSync>>,
    /// Marks other nodes set, by next hop name (bounded by `MAX_REMOTE_MARKS`).
    remote: HashMap<String, RemoteMark>,
}

/// A mark another node set, as this node holds it.
struct RemoteMark {
    mark: SharedMark,
    /// For a down mark: when it lapses, on this node's clock.
    until: Option<Instant>,
    /// Whether the dispatch holds it already (else applied when a job arrives).
    applied: bool,
}

/// The most marks from other nodes kept (the rest are ignored until some lapse).
const MAX_REMOTE_MARKS: usize = 100_000;
/// From this many marks held, those that lapsed are dropped at each new one.
const PRUNE_REMOTE_FROM: usize = 1024;
/// The longest name suspended by name (longer ones are no next hop's).
const MAX_SHARED_NAME: usize = 1024;

impl Scheduler {
    /// The scheduler's loop; returns the suspects still waiting when it ends.
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) -> HashSet<QueueId> {
        loop {
            self.beat.busy(true);
            self.pump();
            if let Some((deadline, _)) = &self.stopping {
                if self.running.is_empty() && self.dispatch.workers() == 0 {
                    break;
                }
                if Instant::now() >= *deadline {
                    for (_, task) in self.running.drain() {
                        task.abort();
                    }
                    break;
                }
            }
            let wake = self.next_wake();
            self.beat.progress();
            self.beat.busy(false);
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => {
                        self.beat.busy(true);
                        self.beat.done_waiting(1);
                        #[cfg(feature = "fault-injection")]
                        if fault_injection::freezes_scheduler(&cmd) {
                            // Busy and never progressing, as if stuck on a lock.
                            std::future::pending::<()>().await;
                        }
                        self.handle_cmd(cmd);
                    }
                    None => break,
                },
                () = sleep_until(wake) => {}
            }
        }
        // Commands sent from now on fail and take themselves off the count.
        drop(rx);
        self.beat.busy(false);
        self.beat.set_waiting(0);
        if let Some((_, reply)) = self.stopping.take() {
            let _ = reply.send(());
        }
        self.suspects.all()
    }

    fn next_wake(&self) -> Option<Instant> {
        // A due retry waits for a free message slot (a finished task wakes the loop), and
        // none starts while stopping: waking for it then would spin.
        let slots_free = self.running.len() < self.ctx.runtime.load().queue.max_active_messages;
        let retry = self
            .retries
            .next_due()
            .filter(|_| slots_free && self.stopping.is_none());
        let stop = self.stopping.as_ref().map(|(t, _)| *t);
        let down = self.dispatch.next_up();
        let probe = self.suspects.next_due().filter(|_| self.spool_ready);
        let idle = self.cache.next_expiry();
        [retry, stop, down, probe, idle].into_iter().flatten().min()
    }

    fn handle_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Submit(id) => self.push_backlog(id, QueueState::Incoming),
            Cmd::Recovered { result, started } => self.recovered(result, started),
            Cmd::Due(found) => self.due(found),
            Cmd::AllDue { count, started } => {
                self.backlog_scheduled = true;
                self.ctx.events.emit(
                    &catalog::QUEUE_BACKLOG_SCHEDULED,
                    fields!(
                        "deferred" => count,
                        "secs" => format!("{:.3}", started.elapsed().as_secs_f64()),
                    ),
                );
            }
            Cmd::Loaded(found) => self.loaded(found),
            Cmd::Damaged(ids) => {
                // Due at once: the message task validates and quarantines it.
                let now = Instant::now();
                for id in ids {
                    let _ = self.retries.learn(id, now, now, Vec::new());
                }
            }
            Cmd::BacklogDone {
                load,
                started,
                error,
            } => match error {
                None => {
                    self.backlog_loaded = !load.stopped;
                    if self.backlog_loaded {
                        self.retries.end_reading();
                    }
                    self.ctx.events.emit(
                        &catalog::QUEUE_BACKLOG_LOADED,
                        fields!(
                            "deferred" => load.loaded,
                            "damaged" => load.damaged,
                            "quarantined" => load.quarantined,
                            "orphan_records_removed" => load.orphans_removed,
                            "stopped" => load.stopped,
                            "secs" => format!("{:.3}", started.elapsed().as_secs_f64()),
                        ),
                    );
                }
                Some(error) => self.ctx.events.emit(
                    &catalog::QUEUE_BACKLOG_FAILED,
                    fields!("error" => error, "deferred" => load.loaded),
                ),
            },
            Cmd::Enqueue(job) => self.enqueue(job),
            Cmd::Adopted(found) => self.adopted(found),
            Cmd::Released(id) => {
                if !self.running.contains_key(&id)
                    && !self.is_queued(id)
                    && !self.suspects.contains(id)
                {
                    self.ctx
                        .events
                        .emit(&catalog::QUEUE_RELEASED, fields!("queue_id" => id));
                    self.push_backlog(id, QueueState::Deferred);
                }
            }
            Cmd::NextJob { slot, conn, reply } => {
                let next = match self.stopping {
                    Some(_) => None,
                    None => self.dispatch.next_job(slot.hop()),
                };
                let answer = match next {
                    Some(job) => Handoff::Job(job, conn, slot),
                    // Nothing for this next hop: the connection waits in the cache, the
                    // worker ends, and its slot is free for any destination now (the
                    // pump that follows this command can use it). While stopping, the
                    // worker keeps the slot until its QUIT is done.
                    None => {
                        let close = conn.and_then(|c| self.park(c));
                        let slot = match self.stopping {
                            Some(_) => Some(slot),
                            None => {
                                self.dispatch.worker_done(&slot.release());
                                None
                            }
                        };
                        Handoff::Done { close, slot }
                    }
                };
                match reply.send(answer) {
                    Ok(()) => {}
                    // The worker is gone: its job goes back to the front of its queue
                    // (its slot's `Drop` counts it done).
                    Err(Handoff::Job(job, conn, slot)) => {
                        self.dispatch.put_back(slot.hop().clone(), job);
                        if let Some(c) = conn {
                            close_in_background(c);
                        }
                    }
                    Err(Handoff::Done { close, .. }) => {
                        if let Some(c) = close {
                            close_in_background(c);
                        }
                    }
                }
            }
            Cmd::TakeConn { key, reply } => {
                let now = Instant::now();
                self.expire_idle(now);
                let found = match self.stopping {
                    Some(_) => None,
                    None => self.cache.take(&key, now),
                };
                if let Err(Some(conn)) = reply.send(found) {
                    // The worker is gone: the connection goes back.
                    if let Some(close) = self.park(conn) {
                        close_in_background(close);
                    }
                }
            }
            Cmd::WorkerDone { hop, down } => {
                self.dispatch.worker_done(&hop);
                if let Some(reason) = down {
                    self.mark_down(&hop, reason);
                }
            }
            Cmd::MessageDone { id, next } => {
                self.running.remove(&id);
                self.suspects.ended(id, &next);
                match next {
                    Next::Retry {
                        due,
                        state,
                        record,
                        hops,
                    } => self.schedule_retry(due, id, state, record, hops),
                    Next::Done | Next::Unprobed => {}
                }
            }
            Cmd::Destinations(reply) => {
                let _ = reply.send(self.destinations());
            }
            Cmd::DestinationInfo { name, reply } => {
                let _ = reply.send(self.destination_info(&name));
            }
            Cmd::DeferredShape {
                now_micros,
                bounds_secs,
                reply,
            } => {
                let shape = self.backlog_scheduled.then(|| {
                    let bucket_of = |id: QueueId| {
                        let age = u64::try_from(now_micros.saturating_sub(id.arrival_micros()))
                            .unwrap_or(0)
                            / 1_000_000;
                        bounds_secs
                            .iter()
                            .position(|b| age < *b)
                            .unwrap_or(bounds_secs.len())
                    };
                    let (groups, unread) = self.retries.shape(&bucket_of, bounds_secs.len() + 1);
                    DeferredShape {
                        groups: groups
                            .into_iter()
                            .map(|(hops, counts)| {
                                (hops.iter().map(ToString::to_string).collect(), counts)
                            })
                            .collect(),
                        unread,
                    }
                });
                let _ = reply.send(shape);
            }
            Cmd::Destination {
                name,
                action,
                reply,
            } => {
                let _ = reply.send(self.destination_action(&name, action));
            }
            Cmd::Admin { id, action, reply } => self.admin(id, action, reply),
            Cmd::ShareDestinations(sync) => self.sync = Some(sync),
            Cmd::Shared(mark) => self.apply_shared(mark),
            Cmd::AdminDone { id, requeue } => {
                self.running.remove(&id);
                match requeue {
                    Requeue::Nothing => {}
                    Requeue::Now(state) => self.push_backlog(id, state),
                    Requeue::At {
                        due,
                        state,
                        record,
                        hops,
                    } => self.schedule_retry(due, id, state, record, hops),
                }
            }
            Cmd::Shutdown(reply) => {
                let _ = self.stop_tx.send(true);
                self.stopping = Some((Instant::now() + self.ctx.shutdown_grace, reply));
                // Jobs not started are answered now; their messages are deferred (kept
                // in the spool) and retried at the next start. Idle workers are let go.
                for job in self.dispatch.drain() {
                    let result = JobResult::deferred_all(&job, "4.3.2 Tern is shutting down");
                    job.answer(result);
                }
                for conn in self.cache.drain() {
                    close_in_background(conn);
                }
            }
        }
    }

    /// An administrator's action: refused while the message is processed or about to
    /// be; otherwise the message is taken from the retry timers and marked running while
    /// its admin task works, so no message task can start on it meanwhile.
    fn admin(&mut self, id: QueueId, action: AdminAction, reply: AdminReply) {
        if self.stopping.is_some() {
            let _ = reply.send(Err(AdminRefusal::Unavailable(
                "the queue is stopping".into(),
            )));
            return;
        }
        if self.running.contains_key(&id) {
            let _ = reply.send(Err(AdminRefusal::Conflict(format!(
                "cannot {} {id} now: it is being processed (active); try again when it waits in deferred",
                action.as_str()
            ))));
            return;
        }
        if !self.spool_ready && !self.is_queued(id) {
            let _ = reply.send(Err(AdminRefusal::Unavailable(format!(
                "cannot {} {id} now: the spool's recovery after the start has not ended (event 4065 when it does; 4066 if it failed, then after the next start)",
                action.as_str()
            ))));
            return;
        }
        if self.suspects.contains(id) {
            let _ = reply.send(Err(AdminRefusal::Conflict(format!(
                "cannot {} {id} now: it was in process when Tern died and waits in active for its probe (events 4015, 4016); try again when it waits in deferred",
                action.as_str()
            ))));
            return;
        }
        let tracked =
            self.retries
                .remove(id)
                .map(|(due, state, unsaved, hops)| crate::admin::Tracked {
                    due,
                    state,
                    unsaved,
                    hops,
                });
        if tracked.is_none() && self.queued_ids.contains(&id) {
            let _ = reply.send(Err(AdminRefusal::Conflict(format!(
                "cannot {} {id} now: it is waiting to be processed (incoming or due); try again when it waits in deferred",
                action.as_str()
            ))));
            return;
        }
        self.queued_ids.remove(&id);
        let task = crate::admin::spawn(
            Arc::clone(&self.ctx),
            self.handle.clone(),
            id,
            action,
            tracked,
            reply,
        );
        self.running.insert(id, task);
    }

    /// The background recovery of the spool ended (`load_backlog`): event 4065 with its
    /// counts and the messages of `incoming/` it recovered scheduled, or event 4066.
    fn recovered(
        &mut self,
        result: Result<tern_spool::FinishedRecovery, String>,
        started: Instant,
    ) {
        let secs = format!("{:.3}", started.elapsed().as_secs_f64());
        match result {
            Ok(r) => {
                let c = |s| r.report.as_ref().map_or(0, |rep| rep.count(s));
                self.ctx.events.emit(
                    &catalog::QUEUE_RECOVERY_FINISHED,
                    fields!(
                        "incoming" => c(QueueState::Incoming),
                        "active" => c(QueueState::Active),
                        "hold" => c(QueueState::Hold),
                        "poison" => c(QueueState::Poison),
                        "quarantined" => r.report.as_ref().map_or(0, |rep| rep.quarantined),
                        "partials_removed" => r.report.as_ref().map_or(0, |rep| rep.partials_removed),
                        "scheduled" => r.incoming.len(),
                        "stopped" => r.stopped,
                        "secs" => secs,
                    ),
                );
                if r.stopped || self.stopping.is_some() {
                    return;
                }
                self.spool_ready = true;
                for id in r.incoming {
                    self.push_backlog(id, QueueState::Incoming);
                }
            }
            Err(error) => self.ctx.events.emit(
                &catalog::QUEUE_RECOVERY_FAILED,
                fields!("error" => error, "secs" => secs),
            ),
        }
    }

    /// Waits `id` (in `state`, with the record and hops kept from its last attempt)
    /// until `due`; it counts as queued meanwhile.
    fn schedule_retry(
        &mut self,
        due: Instant,
        id: QueueId,
        state: QueueState,
        record: Option<Box<tern_spool::DeliveryRecord>>,
        hops: Vec<(NextHop, String)>,
    ) {
        self.retries.insert(due, id, state, record, hops);
    }

    /// Whether the queue holds `id`, waiting to be processed (`backlog`) or for its
    /// retry (`retries`).
    fn is_queued(&self, id: QueueId) -> bool {
        self.queued_ids.contains(&id) || self.retries.contains(id)
    }

    /// A chunk of the deferred backlog scheduled from its names: each message joins the
    /// retry timers unread, unless the queue already has it (deferred, due or running
    /// during this run, or a suspect).
    /// Messages adopted from another node's spool (`QueueHandle::adopted`).
    fn adopted(&mut self, found: Vec<(QueueId, QueueState, Instant)>) {
        if self.stopping.is_some() {
            return;
        }
        let now = Instant::now();
        for (id, state, due) in found {
            if self.running.contains_key(&id) || self.is_queued(id) || self.suspects.contains(id) {
                continue;
            }
            match state {
                QueueState::Incoming => self.push_backlog(id, QueueState::Incoming),
                QueueState::Deferred => {
                    self.retries
                        .insert(due.max(now), id, QueueState::Deferred, None, Vec::new());
                }
                _ => {}
            }
        }
    }

    fn due(&mut self, found: Vec<(QueueId, Instant)>) {
        if self.stopping.is_some() {
            return;
        }
        let now = Instant::now();
        for (id, due) in found {
            if self.running.contains_key(&id) || self.is_queued(id) || self.suspects.contains(id) {
                continue;
            }
            self.retries.insert_unread(due.max(now), id);
        }
    }

    /// A chunk of the deferred backlog read from disk: a message waiting unread learns
    /// its next hops and the record's due time (`Retries::learn`); one the queue does
    /// not have joins the retry timers, unless the queue already has it (deferred, due
    /// or running during this run, or a suspect); a message that left `deferred/` since
    /// it was read is found missing when it is loaded, and dropped then.
    fn loaded(&mut self, found: Vec<(QueueId, Instant, Vec<HopError>)>) {
        if self.stopping.is_some() {
            return;
        }
        let now = Instant::now();
        for (id, due, hops) in found {
            let Some(hops) = self.retries.learn(id, due.max(now), now, hops) else {
                continue;
            };
            if self.running.contains_key(&id) || self.is_queued(id) || self.suspects.contains(id) {
                continue;
            }
            self.retries
                .insert(due.max(now), id, QueueState::Deferred, None, hops);
        }
    }

    fn push_backlog(&mut self, id: QueueId, state: QueueState) {
        if self.running.contains_key(&id)
            || self.retries.contains(id)
            || !self.queued_ids.insert(id)
        {
            return;
        }
        self.backlog.push_back((id, state));
    }

    fn enqueue(&mut self, job: Job) {
        if self.stopping.is_some() {
            let result = JobResult::deferred_all(&job, "4.3.2 Tern is shutting down");
            job.answer(result);
            return;
        }
        let hop = job.hop.clone();
        if !self.remote.is_empty() {
            self.apply_pending_remote(&hop);
        }
        match self.dispatch.enqueue(hop, job, Instant::now()) {
            Ok(()) => {}
            Err((job, Refused::Down(why))) => {
                let reason = format!("4.4.1 destination {} is down: {why}", job.hop);
                let result = JobResult::deferred_all(&job, &reason);
                job.answer(result);
            }
            Err((job, Refused::Suspended)) => {
                let reason = suspended_text(&job.hop);
                let result = JobResult::deferred_all(&job, &reason);
                job.answer(result);
            }
        }
    }

    /// Every destination: the dispatch's next hops merged with those deferred
    /// messages wait for, most queued first (then by name).
    fn destinations(&self) -> Vec<DestinationInfo> {
        let now = Instant::now();
        let now_ms = unix_ms();
        let limit = self.ctx.runtime.load().queue.destination_concurrency;
        let mut by_name: HashMap<String, DestinationInfo> = HashMap::new();
        for v in self.dispatch.snapshot(now) {
            let (state, down_until_unix_ms, last_error) = match (&v.down, v.suspended) {
                (_, true) => (DestinationState::Suspended, None, None),
                (Some((until, why)), false) => {
                    let left = u64::try_from(until.saturating_duration_since(now).as_millis())
                        .unwrap_or(u64::MAX);
                    (
                        DestinationState::Down,
                        Some(now_ms.saturating_add(left)),
                        Some(why.clone()),
                    )
                }
                (None, false) => (DestinationState::Active, None, None),
            };
            by_name.insert(
                v.hop.to_string(),
                DestinationInfo {
                    name: v.hop.to_string(),
                    queued: v.jobs,
                    state,
                    down_until_unix_ms,
                    in_use: v.workers,
                    limit,
                    last_error: last_error.filter(|e| !e.is_empty()),
                    tls: None,
                    set_by: None,
                },
            );
        }
        for (hop, waiting, error) in self.retries.hops() {
            let name = hop.to_string();
            let entry = by_name.entry(name.clone()).or_insert(DestinationInfo {
                name,
                queued: 0,
                state: DestinationState::Active,
                down_until_unix_ms: None,
                in_use: 0,
                limit,
                last_error: None,
                tls: None,
                set_by: None,
            });
            entry.queued = entry.queued.saturating_add(waiting);
            if entry.last_error.is_none() && !error.is_empty() {
                entry.last_error = Some(error.to_owned());
            }
        }
        // Marks other nodes set for next hops this node has no mail for: shown too, so
        // `tern dest` on every node shows them.
        for (name, r) in &self.remote {
            if by_name.contains_key(name) || r.until.is_some_and(|t| t <= now) {
                continue;
            }
            let (state, down_until_unix_ms, last_error) = match &r.mark.state {
                SharedState::Down {
                    until_unix_ms,
                    reason,
                } => (
                    DestinationState::Down,
                    Some(*until_unix_ms),
                    Some(reason.clone()),
                ),
                SharedState::Suspended => (DestinationState::Suspended, None, None),
                SharedState::Active => continue,
            };
            by_name.insert(
                name.clone(),
                DestinationInfo {
                    name: name.clone(),
                    queued: 0,
                    state,
                    down_until_unix_ms,
                    in_use: 0,
                    limit,
                    last_error: last_error.filter(|e| !e.is_empty()),
                    tls: None,
                    set_by: Some(r.mark.node.clone()),
                },
            );
        }
        let mut list: Vec<DestinationInfo> = by_name.into_values().collect();
        let own = self.sync.as_ref().map(|s| s.node().to_owned());
        for d in &mut list {
            d.tls = self.ctx.tls_book.get(&d.name);
            if d.state != DestinationState::Active {
                d.set_by = match self.remote.get(&d.name) {
                    Some(r) => Some(r.mark.node.clone()),
                    None => own.clone(),
                };
            }
        }
        list.sort_by(|a, b| b.queued.cmp(&a.queued).then_with(|| a.name.cmp(&b.name)));
        list
    }

    /// One destination: as listed, or remembered only for its TLS decision (nothing
    /// waiting, no mark); `None` when neither.
    fn destination_info(&self, name: &str) -> Option<DestinationInfo> {
        if let Some(d) = self.destinations().into_iter().find(|d| d.name == name) {
            return Some(d);
        }
        let tls = self.ctx.tls_book.get(name)?;
        Some(DestinationInfo {
            name: name.to_owned(),
            queued: 0,
            state: DestinationState::Active,
            down_until_unix_ms: None,
            in_use: 0,
            limit: self.ctx.runtime.load().queue.destination_concurrency,
            last_error: None,
            tls: Some(tls),
            set_by: None,
        })
    }

    /// The next hop named `name`, if the dispatch or a waiting message knows it.
    fn find_hop(&self, name: &str) -> Option<NextHop> {
        self.dispatch
            .snapshot(Instant::now())
            .into_iter()
            .map(|v| v.hop)
            .chain(self.retries.hops().map(|(h, _, _)| h.clone()))
            .find(|h| h.to_string() == name)
    }

    fn destination_action(
        &mut self,
        name: &str,
        action: DestinationAction,
    ) -> Result<String, DestinationError> {
        if self.stopping.is_some() {
            return Err(DestinationError::Stopped);
        }
        let Some(hop) = self.find_hop(name) else {
            // After a restart, the messages not read yet may wait for it: the retry
            // reaches each of them as soon as its file is read.
            if action == DestinationAction::Retry && self.retries.ask_retry(name) {
                let unread = self.retries.unread();
                self.ctx.events.emit(
                    &catalog::DESTINATION_RETRY,
                    fields!("next_hop" => name, "messages" => 0, "unread" => unread, "was_down" => false),
                );
                return Ok(format!(
                    "{name}: no message known to wait for it yet; those of the {unread} \
                     deferred message(s) not read yet since the start that wait for it \
                     will be tried as soon as they are read"
                ));
            }
            // A mark another node set for a next hop this node has no mail for: a
            // resume or a retry here lifts it everywhere.
            if action != DestinationAction::Suspend && self.remote.remove(name).is_some() {
                self.publish(name.to_owned(), SharedState::Active);
                return Ok(format!(
                    "{name}: the mark set by another node is lifted on every node"
                ));
            }
            // In a cluster, a destination this node has no mail for may be suspended
            // by name: the other nodes may have mail for it, and so may this one later.
            if action == DestinationAction::Suspend
                && let Some(sync) = &self.sync
                && name.len() <= MAX_SHARED_NAME
                && self.remote.len() < MAX_REMOTE_MARKS
            {
                let mark = SharedMark {
                    name: name.to_owned(),
                    state: SharedState::Suspended,
                    at_unix_ms: unix_ms(),
                    node: sync.node().to_owned(),
                };
                sync.publish(mark.clone());
                self.remote.insert(
                    name.to_owned(),
                    RemoteMark {
                        mark,
                        until: None,
                        applied: false,
                    },
                );
                self.ctx
                    .events
                    .emit(&catalog::DESTINATION_SUSPENDED, fields!("next_hop" => name));
                return Ok(format!(
                    "{name} suspended on every node: no new connections until it is resumed"
                ));
            }
            return Err(DestinationError::Unknown(name.to_owned()));
        };
        let now = Instant::now();
        match action {
            DestinationAction::Suspend => {
                let (newly, jobs) = self.dispatch.suspend(&hop);
                let text = suspended_text(&hop);
                for job in jobs {
                    let result = JobResult::deferred_all(&job, &text);
                    job.answer(result);
                }
                let was_remote = self.remote.remove(name).is_some();
                if !newly && !was_remote {
                    return Ok(format!("{hop} was already suspended"));
                }
                self.publish(name.to_owned(), SharedState::Suspended);
                self.ctx
                    .events
                    .emit(&catalog::DESTINATION_SUSPENDED, fields!("next_hop" => hop));
                if !newly {
                    return Ok(format!("{hop} was already suspended"));
                }
                Ok(format!(
                    "{hop} suspended: no new connections until it is resumed (or Tern restarts)"
                ))
            }
            DestinationAction::Resume => {
                if !self.dispatch.resume(&hop) {
                    return Err(DestinationError::Conflict(format!(
                        "{hop} is not suspended"
                    )));
                }
                self.remote.remove(name);
                self.publish(name.to_owned(), SharedState::Active);
                let n = self.retries.make_due(&hop, now);
                let events = &self.ctx.events;
                events.emit(
                    &catalog::DESTINATION_RESUMED,
                    fields!("next_hop" => hop, "messages" => n),
                );
                Ok(format!("{hop} resumed: {n} waiting message(s) tried now"))
            }
            DestinationAction::Retry => {
                if self.dispatch.is_suspended(&hop) {
                    return Err(DestinationError::Conflict(format!(
                        "{hop} is suspended: resume it instead"
                    )));
                }
                let was_down = self.dispatch.clear_down(&hop);
                self.remote.remove(name);
                self.publish(name.to_owned(), SharedState::Active);
                let n = self.retries.make_due(&hop, now);
                let events = &self.ctx.events;
                events.emit(
                    &catalog::DESTINATION_RETRY,
                    fields!("next_hop" => hop, "messages" => n, "was_down" => was_down),
                );
                Ok(format!(
                    "{hop}: {}{n} waiting message(s) tried now",
                    if was_down { "down mark cleared, " } else { "" }
                ))
            }
        }
    }

    /// Tells this node's own change to the other nodes (in a cluster).
    fn publish(&self, name: String, state: SharedState) {
        if let Some(sync) = &self.sync {
            sync.publish(SharedMark {
                name,
                state,
                at_unix_ms: unix_ms(),
                node: sync.node().to_owned(),
            });
        }
    }

    /// Applies a change another node made: at once to a next hop this node knows, else
    /// kept by name until a job for it arrives. Never published again.
    fn apply_shared(&mut self, mark: SharedMark) {
        let now = Instant::now();
        let until = match &mark.state {
            SharedState::Down { until_unix_ms, .. } => {
                let left = until_unix_ms.saturating_sub(unix_ms());
                if left == 0 {
                    return;
                }
                Some(now + Duration::from_millis(left))
            }
            _ => None,
        };
        let name = mark.name.clone();
        if mark.state == SharedState::Active {
            let held = self.remote.remove(&name);
            let Some(hop) = self.find_hop(&name) else {
                return;
            };
            let was_suspended = self.dispatch.resume(&hop);
            let was_down = self.dispatch.clear_down(&hop);
            if was_suspended || was_down || held.is_some() {
                let n = self.retries.make_due(&hop, now);
                self.ctx.events.emit(
                    &catalog::CLUSTER_DESTINATION_APPLIED,
                    fields!("next_hop" => name, "state" => "active", "node" => mark.node, "messages" => n),
                );
            }
            return;
        }
        if self
            .remote
            .get(&name)
            .is_some_and(|r| r.mark == mark && r.applied)
        {
            // Read again after a reconnection: already in force.
            return;
        }
        if self.remote.len() >= PRUNE_REMOTE_FROM {
            // Down marks that lapsed without mail for them since.
            self.remote.retain(|_, r| r.until.is_none_or(|t| t > now));
        }
        if self.remote.len() >= MAX_REMOTE_MARKS && !self.remote.contains_key(&name) {
            return;
        }
        self.remote.insert(
            name.clone(),
            RemoteMark {
                mark,
                until,
                applied: false,
            },
        );
        if let Some(hop) = self.find_hop(&name) {
            self.apply_pending_remote(&hop);
        }
    }

    /// Applies the mark another node set for `hop`, if one is held and not applied yet.
    fn apply_pending_remote(&mut self, hop: &NextHop) {
        let name = hop.to_string();
        let now = Instant::now();
        let Some(r) = self.remote.get_mut(&name) else {
            return;
        };
        if let Some(until) = r.until
            && until <= now
        {
            self.remote.remove(&name);
            return;
        }
        if r.applied {
            return;
        }
        r.applied = true;
        let node = r.mark.node.clone();
        let (jobs, text) = match &r.mark.state {
            SharedState::Down { reason, .. } => {
                let until = r.until.unwrap_or(now);
                let text = format!("4.4.1 destination {hop} is down (seen by {node}): {reason}");
                let marked =
                    self.dispatch
                        .mark_down(hop, until, format!("{reason} (seen by {node})"));
                (marked.jobs, text)
            }
            SharedState::Suspended => (self.dispatch.suspend(hop).1, suspended_text(hop)),
            SharedState::Active => return,
        };
        let own = self.sync.as_ref().is_some_and(|s| s.node() == node);
        if !own {
            self.ctx.events.emit(
                &catalog::CLUSTER_DESTINATION_APPLIED,
                fields!("next_hop" => name, "state" => r.mark.state.as_str(), "node" => node, "messages" => jobs.len()),
            );
        }
        for job in jobs {
            let result = JobResult::deferred_all(&job, &text);
            job.answer(result);
        }
    }

    fn mark_down(&mut self, hop: &NextHop, reason: String) {
        let cfg = self.ctx.runtime.load();
        let until = Instant::now() + Duration::from_secs(cfg.queue.min_backoff_secs);
        let marked = self.dispatch.mark_down(hop, until, reason.clone());
        if marked.newly {
            let name = hop.to_string();
            self.remote.remove(&name);
            let until_unix_ms =
                unix_ms().saturating_add(cfg.queue.min_backoff_secs.saturating_mul(1000));
            self.publish(
                name,
                SharedState::Down {
                    until_unix_ms,
                    reason: reason.clone(),
                },
            );
            self.ctx.events.emit(
                &catalog::DESTINATION_DOWN,
                fields!(
                    "next_hop" => hop,
                    "error" => reason,
                    "retry_secs" => cfg.queue.min_backoff_secs,
                ),
            );
        }
        let text = format!("4.4.1 destination {hop} is down: {reason}");
        for job in marked.jobs {
            let result = JobResult::deferred_all(&job, &text);
            job.answer(result);
        }
    }

    /// Keeps `conn` in the connection cache (parked now); returns the connection to
    /// close: the one idle longest when the cache was full, or `conn` itself when the
    /// cache is off or the queue is stopping.
    fn park(&mut self, conn: Conn) -> Option<Conn> {
        if self.stopping.is_some() {
            return Some(conn);
        }
        match self.cache.park(conn.key.clone(), conn, Instant::now()) {
            Parked::Kept { evicted: None } => None,
            Parked::Kept {
                evicted: Some(oldest),
            } => {
                self.ctx.events.emit(
                    &catalog::DELIVERY_CONNECTION_CACHE_FULL,
                    fields!(
                        "endpoint" => oldest.key,
                        "host" => oldest.remote(),
                        "size" => self.ctx.delivery.connection_cache_size,
                    ),
                );
                Some(oldest)
            }
            Parked::Refused(conn) => Some(conn),
        }
    }

    /// Closes the cached connections idle for their idle time at `now`.
    fn expire_idle(&mut self, now: Instant) {
        for (key, conn) in self.cache.expire(now) {
            self.ctx.events.emit(
                &catalog::DELIVERY_CONNECTION_IDLE_CLOSED,
                fields!(
                    "endpoint" => key,
                    "host" => conn.remote(),
                    "transactions" => conn.session.transactions(),
                ),
            );
            close_in_background(conn);
        }
    }

    /// Starts what can start: messages from the backlog and due retries, in turns,
    /// workers for destinations with jobs; closes idle connections whose time is over.
    fn pump(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        let now = Instant::now();
        self.expire_idle(now);
        let cfg = self.ctx.runtime.load_full();
        // New mail and due retries take turns for the free message slots, so a backlog
        // of deferred mail coming due at once (a destination back after a day) neither
        // starves new mail nor is starved by it; due retries wait in `retries` (still
        // counted for their destinations) until a slot is free.
        while self.running.len() < cfg.queue.max_active_messages {
            let next = if self.retry_turn {
                self.retries
                    .pop_due(now)
                    .or_else(|| self.backlog.pop_front())
            } else {
                self.backlog
                    .pop_front()
                    .or_else(|| self.retries.pop_due(now))
            };
            let Some((id, state)) = next else {
                break;
            };
            self.retry_turn = !self.retry_turn;
            self.queued_ids.remove(&id);
            let task = message::spawn(
                Arc::clone(&self.ctx),
                self.handle.clone(),
                id,
                state,
                self.retries.take_unsaved(id),
                self.stop_rx.clone(),
                None,
            );
            self.running.insert(id, task);
        }
        // One probe group at a time, beside the normal flow (at most
        // `probe_group_size` messages over `max_active_messages`, so a full queue never
        // starves the line).
        if let Some((ids, probe)) = self
            .spool_ready
            .then(|| self.suspects.start_next(now))
            .flatten()
        {
            for id in ids {
                let task = message::spawn(
                    Arc::clone(&self.ctx),
                    self.handle.clone(),
                    id,
                    QueueState::Active,
                    None,
                    self.stop_rx.clone(),
                    Some(Arc::clone(&probe)),
                );
                self.running.insert(id, task);
            }
        }
        let start = self.dispatch.pump(
            now,
            cfg.queue.max_concurrency,
            cfg.queue.destination_concurrency,
        );
        tern_metrics::get()
            .destinations_down
            .set(i64::try_from(self.dispatch.down_count()).unwrap_or(i64::MAX));
        for (hop, job) in start {
            self.next_worker += 1;
            attempt::spawn_worker(
                Arc::clone(&self.ctx),
                self.handle.clone(),
                hop,
                job,
                self.stop_rx.clone(),
                self.next_worker,
            );
        }
    }
}

/// The deferral given to a job for a suspended next hop.
fn suspended_text(hop: &NextHop) -> String {
    format!("4.4.1 delivery to {hop} is suspended by the administrator")
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Test builds only (`--features fault-injection`): freeze the scheduler itself, an
/// essential worker the supervisor cannot restart, to prove that Tern then stops
/// pinging systemd's watchdog (issue 6 §6).
#[cfg(feature = "fault-injection")]
mod fault_injection {
    use super::Cmd;

    /// Whether `cmd` hands the scheduler a job whose message content contains the bytes
    /// in the environment variable `TERN_FAULT_FREEZE_SCHEDULER_ON`.
    pub(super) fn freezes_scheduler(cmd: &Cmd) -> bool {
        let Some(pattern) = std::env::var_os("TERN_FAULT_FREEZE_SCHEDULER_ON") else {
            return false;
        };
        let pattern = pattern.as_encoded_bytes();
        let Cmd::Enqueue(job) = cmd else {
            return false;
        };
        !pattern.is_empty()
            && job
                .msg
                .facts
                .head
                .windows(pattern.len())
                .any(|w| w == pattern)
    }

    /// Holds the background recovery of the spool (`Spool::finish_recovery`) until the
    /// file named by the environment variable `TERN_FAULT_HOLD_RECOVERY_UNTIL` exists (at
    /// most two minutes), so a test can see the server work while the segments and the
    /// files a kill left behind are not recovered yet.
    pub(super) fn hold_recovery() {
        hold_until("TERN_FAULT_HOLD_RECOVERY_UNTIL");
    }

    fn hold_until(var: &str) {
        let Some(path) = std::env::var_os(var) else {
            return;
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !std::path::Path::new(&path).exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Holds the background load of `deferred/` until the file named by the environment
    /// variable `TERN_FAULT_HOLD_BACKLOG_UNTIL` exists (at most two minutes), so a test
    /// can see the server work while its backlog is not loaded yet.
    pub(super) fn hold_backlog_load() {
        hold_until("TERN_FAULT_HOLD_BACKLOG_UNTIL");
    }

    /// Holds the reading of `deferred/`'s files, once every message is scheduled from
    /// its name and file time, until the file named by the environment variable
    /// `TERN_FAULT_HOLD_BACKLOG_READ_UNTIL` exists (at most two minutes), so a test can
    /// see the queue between the two passes.
    pub(super) fn hold_backlog_read() {
        hold_until("TERN_FAULT_HOLD_BACKLOG_READ_UNTIL");
    }
}
