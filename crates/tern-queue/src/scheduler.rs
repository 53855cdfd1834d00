//! The scheduler: the one task that owns the queue's state (see the crate header).
//!
//! It keeps:
//! - `backlog`: messages to load (new ones from the intake, deferred ones whose retry time
//!   came, and what was in `incoming/` and `active/` at start), loaded at most
//!   `max_active_messages` at a time so memory stays bounded whatever the queue size;
//! - `retries`: messages waiting for a retry, by due time (`retries.rs`);
//! - `destinations`: per next hop, the jobs waiting, the workers running and whether the
//!   destination is down. A job for a destination that is down is answered at once with a
//!   deferral (no connection is tried), so a dead destination costs nothing and slows no
//!   other.
//!
//! - `idle`: workers that finished a job and keep their connection open for a moment
//!   (`attempt::IDLE_TIME`, like Postfix's connection cache) in case another job for the
//!   same next hop comes; they get such jobs before any new worker is started.
//!
//! Invariants: a message id is in at most one of `backlog`, `retries` and `running`; the
//! per-destination and total worker counts only change here, on `WorkerStarted` (here)
//! and `WorkerDone` (sent by the worker's slot guard on drop, so also after a panic).
//!
//! Trust: commands come only from Tern's own tasks.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_events::{catalog, fields};
use tern_route::NextHop;
use tern_spool::{QueueId, QueueState, SpoolError};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::Context;
use crate::attempt::{self, Job, JobResult};
use crate::message::{self, Next};
use crate::retries::Retries;

/// What the other tasks tell the scheduler.
pub(crate) enum Cmd {
    /// A message was committed to `incoming/`.
    Submit(QueueId),
    /// A message task has a job for a next hop.
    Enqueue(Job),
    /// A worker finished a job and can take another for the same next hop.
    NextJob {
        hop: NextHop,
        reply: oneshot::Sender<Option<Job>>,
    },
    /// A worker ended (sent by its slot guard). `down` is set when every host of the
    /// destination failed to connect or greet.
    WorkerDone { hop: NextHop, down: Option<String> },
    /// A message task ended.
    MessageDone { id: QueueId, next: Next },
    /// Stop: no new work; reply when every task ended or was cut at the grace period.
    Shutdown(oneshot::Sender<()>),
}

/// A cheap handle for telling the scheduler about new messages.
#[derive(Clone)]
pub struct QueueHandle {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl QueueHandle {
    /// Tells the queue that message `id` was committed to `incoming/`. Never blocks; if
    /// the queue has stopped, the message is picked up at the next start.
    pub fn submit(&self, id: QueueId) {
        let _ = self.tx.send(Cmd::Submit(id));
    }

    pub(crate) fn send(&self, cmd: Cmd) {
        let _ = self.tx.send(cmd);
    }
}

/// The running queue.
pub struct Queue {
    handle: QueueHandle,
    task: JoinHandle<()>,
}

/// Creates the channel first, so the intake can hold a handle before the queue starts.
pub fn channel() -> (QueueHandle, QueueReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    (QueueHandle { tx: tx.clone() }, QueueReceiver { rx, tx })
}

/// The receiving end, given to [`Queue::start`].
pub struct QueueReceiver {
    rx: mpsc::UnboundedReceiver<Cmd>,
    tx: mpsc::UnboundedSender<Cmd>,
}

impl Queue {
    /// Scans the spool (incoming and active first, then deferred with their retry times)
    /// and starts scheduling. Blocking work (the scan) runs on a blocking thread.
    pub async fn start(ctx: Arc<Context>, receiver: QueueReceiver) -> Result<Queue, SpoolError> {
        let spool = ctx.spool.clone();
        let scan = tokio::task::spawn_blocking(move || initial_scan(&spool))
            .await
            .map_err(|e| SpoolError::BlockingTask(e.to_string()))??;
        let handle = QueueHandle {
            tx: receiver.tx.clone(),
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut sched = Scheduler {
            ctx,
            handle: handle.clone(),
            backlog: VecDeque::new(),
            queued_ids: HashSet::new(),
            retries: Retries::default(),
            running: HashMap::new(),
            destinations: HashMap::new(),
            idle: HashMap::new(),
            workers: 0,
            stopping: None,
            stop_tx,
            stop_rx,
        };
        let now = Instant::now();
        let mut counted = false;
        for (id, state, recipients) in scan.ready {
            if state == QueueState::Active {
                counted = true;
                if crash_accounting(&sched.ctx, id, recipients).await == Crash::Poisoned {
                    continue;
                }
            }
            sched.push_backlog(id, state);
        }
        if counted {
            // The same message may crash the process again in a moment: get the crash
            // events onto disk first.
            let events = sched.ctx.events.clone();
            let _ = tokio::task::spawn_blocking(move || events.flush(Duration::from_secs(2))).await;
        }
        for (id, due) in scan.deferred {
            sched
                .retries
                .insert(due.max(now), id, QueueState::Deferred, None);
            sched.queued_ids.insert(id);
        }
        let task = tokio::spawn(sched.run(receiver.rx));
        Ok(Queue { handle, task })
    }

    /// A handle for submitting messages.
    pub fn handle(&self) -> QueueHandle {
        self.handle.clone()
    }

    /// Stops scheduling, lets deliveries in progress finish within the grace period
    /// (`Context::shutdown_grace`), then cuts the rest. Messages cut are moved from
    /// `active/` back to `incoming/`, so the next start does not count them as crashes;
    /// they are delivered then (a delivery cut after the peer took it is the duplicate
    /// window).
    pub async fn shutdown(self, ctx: &Context) {
        let (tx, rx) = oneshot::channel();
        self.handle.send(Cmd::Shutdown(tx));
        let _ = rx.await;
        let _ = self.task.await;
        let spool = ctx.spool.clone();
        let left = tokio::task::spawn_blocking(move || spool.list(Some(QueueState::Active)))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        for m in left {
            let _ = ctx
                .spool
                .move_to(m.id, QueueState::Active, QueueState::Incoming)
                .await;
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Crash {
    Counted,
    Poisoned,
}

/// A message found in `active/` at start was being processed when the process died
/// (a clean stop moves such messages back to `incoming/`): count the crash in its
/// record, durably, and at the threshold move it to `poison/` (never retried
/// automatically). A record that cannot be read quarantines the message.
async fn crash_accounting(ctx: &Context, id: QueueId, recipients: usize) -> Crash {
    let spool = &ctx.spool;
    let mut record = match spool.read_record(id) {
        Ok(Some(r)) => r,
        Ok(None) => tern_spool::DeliveryRecord::new(id, recipients),
        Err(SpoolError::Corrupt(reason)) => {
            let _ = spool.quarantine_message(QueueState::Active, id, &reason);
            return Crash::Poisoned;
        }
        Err(e) => {
            ctx.events.emit(
                &catalog::QUEUE_ERROR,
                fields!("queue_id" => id, "op" => "read record", "error" => e),
            );
            return Crash::Counted;
        }
    };
    record.crashes = record.crashes.saturating_add(1);
    let threshold = ctx.runtime.load().queue.poison_threshold;
    if let Err(e) = spool.write_record(&record).await {
        ctx.events.emit(
            &catalog::QUEUE_ERROR,
            fields!("queue_id" => id, "op" => "write record", "error" => e),
        );
    }
    ctx.events.emit(
        &catalog::QUEUE_CRASH_COUNTED,
        fields!("queue_id" => id, "crashes" => record.crashes, "threshold" => threshold),
    );
    if record.crashes < threshold {
        return Crash::Counted;
    }
    match spool
        .move_to(id, QueueState::Active, QueueState::Poison)
        .await
    {
        Ok(()) => {
            ctx.events.emit(
                &catalog::QUEUE_POISONED,
                fields!("queue_id" => id, "crashes" => record.crashes),
            );
            Crash::Poisoned
        }
        Err(e) => {
            ctx.events.emit(
                &catalog::QUEUE_ERROR,
                fields!("queue_id" => id, "op" => "move to poison", "error" => e),
            );
            Crash::Poisoned
        }
    }
}

struct Scan {
    /// Messages to process: id, state, number of recipients.
    ready: Vec<(QueueId, QueueState, usize)>,
    deferred: Vec<(QueueId, Instant)>,
}

fn initial_scan(spool: &tern_spool::Spool) -> Result<Scan, SpoolError> {
    let mut ready = Vec::new();
    for state in [QueueState::Active, QueueState::Incoming] {
        for m in spool.list(Some(state))? {
            let n = m.envelope.as_ref().map_or(0, |e| e.recipients.len());
            ready.push((m.id, state, n));
        }
    }
    let now_micros = message::now_micros();
    let now = Instant::now();
    let mut deferred = Vec::new();
    for m in spool.list(Some(QueueState::Deferred))? {
        // A record that cannot be read is dealt with when the message is loaded.
        let due_micros = spool
            .read_record(m.id)
            .ok()
            .flatten()
            .and_then(|r| r.next_attempt_micros)
            .unwrap_or(now_micros);
        let wait = u64::try_from(due_micros.saturating_sub(now_micros)).unwrap_or(0);
        deferred.push((m.id, now + Duration::from_micros(wait)));
    }
    Ok(Scan { ready, deferred })
}

#[derive(Default)]
struct Destination {
    jobs: VecDeque<Job>,
    workers: usize,
    down_until: Option<Instant>,
    down_reason: String,
}

struct Scheduler {
    ctx: Arc<Context>,
    handle: QueueHandle,
    backlog: VecDeque<(QueueId, QueueState)>,
    /// Ids in `backlog` or `retries` (so a duplicate submit is ignored).
    queued_ids: HashSet<QueueId>,
    retries: Retries,
    running: HashMap<QueueId, tokio::task::AbortHandle>,
    destinations: HashMap<NextHop, Destination>,
    /// Workers that finished a job and wait (with their connection open) for another
    /// job to the same next hop; each gives up after `attempt::IDLE_TIME`.
    idle: HashMap<NextHop, VecDeque<oneshot::Sender<Option<Job>>>>,
    workers: usize,
    stopping: Option<(Instant, oneshot::Sender<()>)>,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
}

impl Scheduler {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        loop {
            self.pump();
            if let Some((deadline, _)) = &self.stopping {
                if self.running.is_empty() && self.workers == 0 {
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
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.handle_cmd(cmd),
                    None => break,
                },
                () = sleep_until(wake) => {}
            }
        }
        if let Some((_, reply)) = self.stopping.take() {
            let _ = reply.send(());
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let retry = self.retries.next_due();
        let stop = self.stopping.as_ref().map(|(t, _)| *t);
        let down = self
            .destinations
            .values()
            .filter(|d| !d.jobs.is_empty())
            .filter_map(|d| d.down_until)
            .min();
        [retry, stop, down].into_iter().flatten().min()
    }

    fn handle_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Submit(id) => self.push_backlog(id, QueueState::Incoming),
            Cmd::Enqueue(job) => self.enqueue(job),
            Cmd::NextJob { hop, reply } => {
                let job = if self.stopping.is_some() {
                    None
                } else {
                    self.destinations
                        .get_mut(&hop)
                        .filter(|d| d.down_until.is_none())
                        .and_then(|d| d.jobs.pop_front())
                };
                if job.is_none() && self.stopping.is_none() {
                    // Nothing now: the worker keeps its connection and waits a moment.
                    self.idle.entry(hop).or_default().push_back(reply);
                    return;
                }
                if let Err(Some(job)) = reply.send(job) {
                    // The worker is gone: put the job back at the front.
                    self.destinations
                        .entry(job.hop.clone())
                        .or_default()
                        .jobs
                        .push_front(job);
                }
            }
            Cmd::WorkerDone { hop, down } => {
                self.workers = self.workers.saturating_sub(1);
                if let Some(d) = self.destinations.get_mut(&hop) {
                    d.workers = d.workers.saturating_sub(1);
                }
                if let Some(reason) = down {
                    self.mark_down(&hop, reason);
                }
            }
            Cmd::MessageDone { id, next } => {
                self.running.remove(&id);
                match next {
                    Next::Retry { due, state, record } => {
                        self.retries.insert(due, id, state, record);
                        self.queued_ids.insert(id);
                    }
                    Next::Done => {}
                }
            }
            Cmd::Shutdown(reply) => {
                let _ = self.stop_tx.send(true);
                for (_, waiting) in self.idle.drain() {
                    for w in waiting {
                        let _ = w.send(None);
                    }
                }
                self.stopping = Some((Instant::now() + self.ctx.shutdown_grace, reply));
                // Jobs not started are answered now; their messages are deferred (kept
                // in the spool) and retried at the next start.
                for d in self.destinations.values_mut() {
                    for job in d.jobs.drain(..) {
                        let result = JobResult::deferred_all(&job, "4.3.2 Tern is shutting down");
                        job.answer(result);
                    }
                }
            }
        }
    }

    fn push_backlog(&mut self, id: QueueId, state: QueueState) {
        if self.running.contains_key(&id) || !self.queued_ids.insert(id) {
            return;
        }
        self.backlog.push_back((id, state));
    }

    fn enqueue(&mut self, job: Job) {
        let now = Instant::now();
        let d = self.destinations.entry(job.hop.clone()).or_default();
        if let Some(until) = d.down_until
            && until > now
        {
            let reason = format!("4.4.1 destination {} is down: {}", job.hop, d.down_reason);
            let result = JobResult::deferred_all(&job, &reason);
            job.answer(result);
            return;
        }
        if self.stopping.is_some() {
            let result = JobResult::deferred_all(&job, "4.3.2 Tern is shutting down");
            job.answer(result);
            return;
        }
        d.down_until = None;
        d.jobs.push_back(job);
    }

    fn mark_down(&mut self, hop: &NextHop, reason: String) {
        let cfg = self.ctx.runtime.load();
        let until = Instant::now() + Duration::from_secs(cfg.queue.min_backoff_secs);
        let d = self.destinations.entry(hop.clone()).or_default();
        let was_down = d.down_until.is_some();
        d.down_until = Some(until);
        d.down_reason.clone_from(&reason);
        if !was_down {
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
        for job in d.jobs.drain(..) {
            let result = JobResult::deferred_all(&job, &text);
            job.answer(result);
        }
    }

    /// Starts what can start: due retries into the backlog, messages from the backlog,
    /// workers for destinations with jobs.
    fn pump(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        let now = Instant::now();
        while let Some((id, state)) = self.retries.pop_due(now) {
            self.backlog.push_back((id, state));
        }
        let cfg = self.ctx.runtime.load_full();
        while self.running.len() < cfg.queue.max_active_messages {
            let Some((id, state)) = self.backlog.pop_front() else {
                break;
            };
            self.queued_ids.remove(&id);
            let task = message::spawn(
                Arc::clone(&self.ctx),
                self.handle.clone(),
                id,
                state,
                self.retries.take_unsaved(id),
                self.stop_rx.clone(),
            );
            self.running.insert(id, task);
        }
        // Destinations whose down time passed are up again.
        for d in self.destinations.values_mut() {
            if d.down_until.is_some_and(|t| t <= now) {
                d.down_until = None;
            }
        }
        // Idle workers of a next hop get its jobs first: their connection is open.
        for (hop, waiting) in &mut self.idle {
            waiting.retain(|w| !w.is_closed());
            let Some(d) = self.destinations.get_mut(hop) else {
                continue;
            };
            while d.down_until.is_none()
                && !d.jobs.is_empty()
                && let Some(w) = waiting.pop_front()
            {
                let Some(job) = d.jobs.pop_front() else { break };
                if let Err(Some(job)) = w.send(Some(job)) {
                    // That worker had just given up: keep the job for the next one.
                    d.jobs.push_front(job);
                }
            }
        }
        self.idle.retain(|_, w| !w.is_empty());
        let max_total = cfg.queue.max_concurrency;
        let max_dest = cfg.queue.destination_concurrency;
        let mut start = Vec::new();
        for (hop, d) in &mut self.destinations {
            while self.workers < max_total
                && d.workers < max_dest
                && d.down_until.is_none()
                && let Some(job) = d.jobs.pop_front()
            {
                d.workers += 1;
                self.workers += 1;
                start.push((hop.clone(), job));
            }
        }
        for (hop, job) in start {
            attempt::spawn_worker(
                Arc::clone(&self.ctx),
                self.handle.clone(),
                hop,
                job,
                self.stop_rx.clone(),
            );
        }
        self.destinations
            .retain(|_, d| !d.jobs.is_empty() || d.workers > 0 || d.down_until.is_some());
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
