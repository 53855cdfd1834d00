//! The queue's channel: the commands its tasks (message tasks, delivery workers, admin
//! tasks, the intake, the admin API) send the scheduler ([`Cmd`]), the handle they send
//! them with ([`QueueHandle`]), and what travels back: a worker's slot ([`Slot`]) and the
//! scheduler's answer to it ([`Handoff`]), a message task's outcome ([`Next`]), an admin
//! task's ([`Requeue`]).
//!
//! Invariants: the channel is unbounded and never blocks a sender, so no task waits on
//! the scheduler while the scheduler waits on it. Every command sent counts as work
//! waiting on the scheduler's heartbeat until it is received. A [`Slot`] tells the
//! scheduler its worker ended exactly once: from its `Drop` (also after a panic), unless
//! the scheduler released it itself.
//!
//! Trust: commands come only from Tern's own tasks.

use std::time::Instant;

use tern_route::NextHop;
use tern_spool::{DeliveryRecord, QueueId, QueueState};
use tern_watchdog::Heartbeat;
use tokio::sync::{mpsc, oneshot};

use crate::connection::{Conn, EndpointKey};
use crate::job::Job;
use crate::requests::{
    AdminAction, AdminDone, AdminRefusal, DeferredShape, DestinationAction, DestinationError,
    DestinationInfo,
};

/// What the other tasks tell the scheduler.
pub(crate) enum Cmd {
    /// A message was committed to `incoming/`.
    Submit(QueueId),
    /// A message task has a job for a next hop.
    Enqueue(Job),
    /// A worker finished a job and can take another for the same next hop, on `conn`
    /// (its connection, when it may be reused). It hands in its slot: given back with
    /// the next job, or released at once. Answered at once.
    NextJob {
        slot: Slot,
        conn: Option<Conn>,
        reply: oneshot::Sender<Handoff>,
    },
    /// A worker asks for an idle connection to `key` from the cache.
    TakeConn {
        key: EndpointKey,
        reply: oneshot::Sender<Option<Conn>>,
    },
    /// A worker ended (sent by its slot guard). `down` is set when every host of the
    /// destination failed to connect or greet.
    WorkerDone { hop: NextHop, down: Option<String> },
    /// A message task ended.
    MessageDone { id: QueueId, next: Next },
    /// An administrator released a message into `deferred/`: try it now.
    Released(QueueId),
    /// Messages adopted from another node's spool (`tern spool adopt`), in the state
    /// they are in here (`incoming` or `deferred`) and when they are due.
    Adopted(Vec<(QueueId, QueueState, Instant)>),
    /// An administrator's action on one message (see `admin`).
    Admin {
        id: QueueId,
        action: AdminAction,
        reply: AdminReply,
    },
    /// An admin task ended.
    AdminDone { id: QueueId, requeue: Requeue },
    /// The background recovery of the spool ended (`load_backlog`,
    /// `Spool::finish_recovery`): the messages of `incoming/` it recovered, or why it
    /// failed.
    Recovered {
        result: Result<tern_spool::FinishedRecovery, String>,
        started: Instant,
    },
    /// Deferred messages found by the background load of `deferred/` (`load_backlog`)
    /// before they are read: id and the due time their file's modification time holds.
    Due(Vec<(QueueId, Instant)>),
    /// Every deferred message on disk at the start is scheduled (`Due`): how many.
    AllDue { count: usize, started: Instant },
    /// Deferred messages read by the background load of `deferred/` (`load_backlog`):
    /// id, due time from the record, and the next hops their waiting recipients go to.
    Loaded(Vec<(QueueId, Instant, Vec<HopError>)>),
    /// Deferred messages whose files failed validation when the background load read
    /// them: the message task loads each at once and quarantines it.
    Damaged(Vec<QueueId>),
    /// The background load ended: every deferred message on disk at the start was
    /// handed over (or `error` says why not).
    BacklogDone {
        load: tern_spool::DeferredLoad,
        started: Instant,
        error: Option<String>,
    },
    /// An administrator asks for the shape of the deferred mail (`QueueHandle::deferred_shape`).
    DeferredShape {
        now_micros: i64,
        bounds_secs: Vec<u64>,
        reply: oneshot::Sender<Option<DeferredShape>>,
    },
    /// Stop: no new work; reply when every task ended or was cut at the grace period.
    Shutdown(oneshot::Sender<()>),
    /// An administrator asks for every destination's state.
    Destinations(oneshot::Sender<Vec<DestinationInfo>>),
    /// An administrator asks for one destination's state, known or remembered.
    DestinationInfo {
        name: String,
        reply: oneshot::Sender<Option<DestinationInfo>>,
    },
    /// An administrator acts on the destination named `name`.
    Destination {
        name: String,
        action: DestinationAction,
        reply: oneshot::Sender<Result<String, DestinationError>>,
    },
    /// The hook this node's own destination changes are told to (`shared.rs`).
    ShareDestinations(std::sync::Arc<dyn crate::shared::DestinationSync>),
    /// A destination change another node made (`shared.rs`): applied, never published.
    Shared(crate::shared::SharedMark),
}

/// What the scheduler does with a message after its task.
#[derive(Debug, Clone)]
pub(crate) enum Next {
    /// Nothing: removed, held, poisoned, quarantined, or gone.
    Done,
    /// Run the message again at `due`, from `state` (`deferred/`, or where a spool error
    /// left it). `record`, when set, is newer than the one on disk (writing it failed)
    /// and must be used instead.
    Retry {
        due: Instant,
        state: QueueState,
        record: Option<Box<DeliveryRecord>>,
        /// The next hops whose recipients were deferred, with the first deferral text of
        /// each (empty when the attempt did not get that far).
        hops: Vec<(NextHop, String)>,
    },
    /// A probe that did not run to its end (cut at a stop, or its probe mark could not
    /// be written): the message is still a suspect, in `active/` (see `probe`).
    Unprobed,
}

/// What the scheduler does with the message after an admin task.
#[derive(Debug)]
pub(crate) enum Requeue {
    /// Nothing: removed, held, poisoned, or it was never the queue's.
    Nothing,
    /// Load it now from `state`.
    Now(QueueState),
    /// Wait for a retry at `due` again (the action failed or did not apply).
    At {
        due: Instant,
        state: QueueState,
        record: Option<Box<DeliveryRecord>>,
        /// The next hops it waited for, with their deferral texts.
        hops: Vec<(tern_route::NextHop, String)>,
    },
}

/// A next hop and the last deferral text of a message's recipients for it.
pub(crate) type HopError = (NextHop, String);

/// A cheap handle for telling the scheduler about new messages.
#[derive(Clone)]
pub struct QueueHandle {
    tx: mpsc::UnboundedSender<Cmd>,
    /// The scheduler's heartbeat: each command sent counts as work waiting for it.
    beat: Heartbeat,
}

impl QueueHandle {
    /// A handle on the channel `receiver` receives from.
    pub(crate) fn of(receiver: &QueueReceiver) -> QueueHandle {
        QueueHandle {
            tx: receiver.tx.clone(),
            beat: receiver.beat.clone(),
        }
    }

    /// Tells the queue that message `id` was committed to `incoming/`. Never blocks; if
    /// the queue has stopped, the message is picked up at the next start.
    pub fn submit(&self, id: QueueId) {
        self.send(Cmd::Submit(id));
    }

    /// Tells the queue that an administrator moved message `id` into `deferred/`
    /// (`Spool::release`): it is tried at once, unless the queue already knows it.
    pub fn released(&self, id: QueueId) {
        let _ = self.tx.send(Cmd::Released(id));
    }

    /// Tells the queue about messages adopted from another node's spool
    /// (`Spool::adopt`): each in `incoming/` is taken like new mail, each in
    /// `deferred/` waits for its due time (at once when it is past). Messages the queue
    /// already knows are left as they are; held and poisoned ones are not scheduled.
    pub fn adopted(&self, messages: Vec<(QueueId, QueueState, Instant)>) {
        self.send(Cmd::Adopted(messages));
    }

    /// Every destination the queue knows (jobs queued, workers, messages waiting for
    /// it, down or suspended), most queued first. `Err` when the queue has stopped.
    pub async fn destinations(&self) -> Result<Vec<DestinationInfo>, DestinationError> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Destinations(tx));
        rx.await.map_err(|_| DestinationError::Stopped)
    }

    /// The destination named `name`: as [`destinations`](QueueHandle::destinations)
    /// lists it, or, when it has nothing waiting and no mark, with the TLS policy its
    /// hosts were last tried under (still remembered after its mail is gone). `Ok(None)`
    /// when the queue knows nothing of it.
    pub async fn destination_info(
        &self,
        name: &str,
    ) -> Result<Option<DestinationInfo>, DestinationError> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::DestinationInfo {
            name: name.to_owned(),
            reply: tx,
        });
        rx.await.map_err(|_| DestinationError::Stopped)
    }

    /// Retries, suspends or resumes the destination named `name`; `Ok` with what was
    /// done, for people.
    pub async fn destination(
        &self,
        name: &str,
        action: DestinationAction,
    ) -> Result<String, DestinationError> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Destination {
            name: name.to_owned(),
            action,
            reply: tx,
        });
        rx.await.map_err(|_| DestinationError::Stopped)?
    }

    /// The deferred mail waiting in the scheduler's retry timers, for `GET
    /// /queue/summary` without reading a million files: grouped by the names of the next
    /// hops each message waits for, counted per age bucket (now minus the arrival time in
    /// the queue id; `bounds_secs` are the buckets' upper bounds, the last bucket holds
    /// everything older). `None` until the backlog is scheduled after a start (the
    /// timers do not hold all of `deferred/` yet), or when the queue has stopped: then
    /// read the spool. While the backlog's files are still read, the messages not read
    /// yet are counted apart (`DeferredShape::unread`: their next hops are not known
    /// yet). Messages changing state at that moment may be missed (a due message being
    /// loaded is in `active/`).
    pub async fn deferred_shape(
        &self,
        now_micros: i64,
        bounds_secs: Vec<u64>,
    ) -> Option<DeferredShape> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::DeferredShape {
            now_micros,
            bounds_secs,
            reply: tx,
        });
        rx.await.ok().flatten()
    }

    /// Whether the scheduler has stopped receiving.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    pub(crate) fn send(&self, cmd: Cmd) {
        self.beat.add_waiting(1);
        if self.tx.send(cmd).is_err() {
            self.beat.done_waiting(1);
        }
    }
}

impl QueueHandle {
    /// Runs an administrator's action on message `id` (see the module header). Waits for
    /// the answer; a queue that stopped answers [`AdminRefusal::Unavailable`].
    pub async fn admin(&self, id: QueueId, action: AdminAction) -> Result<AdminDone, AdminRefusal> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Admin { id, action, reply });
        rx.await
            .unwrap_or_else(|_| Err(AdminRefusal::Unavailable("the queue is not running".into())))
    }
}

/// Where an admin task's answer goes.
pub(crate) type AdminReply = oneshot::Sender<Result<AdminDone, AdminRefusal>>;

/// Creates the channel first, so the intake can hold a handle before the queue starts.
/// `beat` is the scheduler's heartbeat (`Heartbeat::detached` when not watched).
pub fn channel(beat: Heartbeat) -> (QueueHandle, QueueReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        QueueHandle {
            tx: tx.clone(),
            beat: beat.clone(),
        },
        QueueReceiver { rx, tx, beat },
    )
}

/// The receiving end, given to [`Queue::start`](crate::Queue::start).
pub struct QueueReceiver {
    pub(crate) rx: mpsc::UnboundedReceiver<Cmd>,
    pub(crate) tx: mpsc::UnboundedSender<Cmd>,
    pub(crate) beat: Heartbeat,
}

/// The scheduler's answer to a worker that finished a job (and handed in its slot).
pub(crate) enum Handoff {
    /// Another job for the same next hop, with the worker's connection and slot back.
    Job(Job, Option<Conn>, Slot),
    /// Nothing more: the worker ends, after closing `close` (its own connection when the
    /// cache did not keep it, or the one idle longest, which the full cache let go to
    /// make room for it). Its slot was released by the scheduler at once, unless the
    /// queue is stopping: then `slot` comes back, to be released after the QUIT, so
    /// the shutdown waits for it.
    Done {
        close: Option<Conn>,
        slot: Option<Slot>,
    },
}

/// Asks the scheduler's connection cache for an idle connection to `key`.
pub(crate) async fn take_cached(handle: &QueueHandle, key: &EndpointKey) -> Option<Conn> {
    let (tx, rx) = oneshot::channel();
    handle.send(Cmd::TakeConn {
        key: key.clone(),
        reply: tx,
    });
    rx.await.ok().flatten()
}

/// Returns the worker's slots when it ends, however it ends: its `Drop` tells the
/// scheduler, unless the scheduler took it back itself ([`Slot::release`]).
pub(crate) struct Slot {
    handle: QueueHandle,
    hop: NextHop,
    down: Option<String>,
    /// False once the scheduler released it directly: `Drop` then sends nothing.
    armed: bool,
}

impl Slot {
    /// The slot of a worker the scheduler just counted for `hop`.
    pub(crate) fn new(handle: QueueHandle, hop: NextHop) -> Slot {
        Slot {
            handle,
            hop,
            down: None,
            armed: true,
        }
    }

    /// Records that no host of the destination could be greeted (`reason`), for the
    /// `WorkerDone` its `Drop` sends.
    pub(crate) fn set_down(&mut self, reason: Option<String>) {
        self.down = reason;
    }

    /// The next hop whose slot this is.
    pub(crate) fn hop(&self) -> &NextHop {
        &self.hop
    }

    /// For the scheduler, which holds the slot while answering `NextJob`: disarms the
    /// guard and returns the next hop (the scheduler counts the worker done itself).
    pub(crate) fn release(mut self) -> NextHop {
        self.armed = false;
        self.hop.clone()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.armed {
            self.handle.send(Cmd::WorkerDone {
                hop: self.hop.clone(),
                down: self.down.take(),
            });
        }
    }
}
