//! Heartbeats: what a worker updates as it works, lock-free, and the clock they read.
//!
//! A [`Heartbeat`] is an `Arc` over a few atomics. The worker (and, for work waiting,
//! whoever hands it work) writes them; the watchdog only reads them. No method takes a
//! lock, allocates, or does I/O; each is a clock read and a few atomic operations, so a
//! beat can sit on the hottest path.
//!
//! Invariants (what the stall decision in `lib.rs` relies on):
//! - `work_since` is written before the flag or counter that makes the worker count as
//!   having work (`busy`, `waiting`) becomes visible (release/acquire), so a reader that
//!   sees the work also sees when it began: a worker idle for an hour that picks up a job
//!   is never judged on the hour.
//! - `busy` and `budget` have one writer, the worker itself; `waiting` may have many
//!   (producers add, the worker subtracts, saturating at zero).
//! - A reading is not one atomic snapshot; values may come from two nearby moments. The
//!   decision tolerates that: a stall needs the condition to hold for at least
//!   `stall_after`, far longer than the gap between two loads.
//!
//! Dropping the last clone of a heartbeat unregisters the worker: the registry holds only
//! a `Weak` reference and notices at its next check, so a drop never takes a lock.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::Kind;

/// A monotonic clock in milliseconds. The watchdog and its heartbeats share one, so the
/// tests can drive time by hand ([`ManualClock`]) instead of sleeping.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since an origin fixed when the clock was made; never goes back.
    fn now_ms(&self) -> u64;
}

/// The real clock: milliseconds since it was created ([`Instant`], so never stepped).
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// A clock whose origin is now.
    pub fn new() -> MonotonicClock {
        MonotonicClock {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> MonotonicClock {
        MonotonicClock::new()
    }
}

impl Clock for MonotonicClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// A clock moved by hand, for tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
}

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: u64) -> ManualClock {
        ManualClock {
            now: AtomicU64::new(start_ms),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.now.fetch_add(ms, Ordering::AcqRel);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::Acquire)
    }
}

/// What restarting a worker means: called by the supervisor, outside any lock, at most
/// once per stall episode.
pub type RestartHook = Box<dyn Fn() + Send + Sync>;

/// The shared part of a heartbeat. Fields are written by the worker and read by the
/// registry; see the module header for the ordering rules.
pub(crate) struct Slot {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    clock: Arc<dyn Clock>,
    /// Work items finished.
    processed: AtomicU64,
    /// Clock time of the last item finished or liveness beat.
    last_progress: AtomicU64,
    /// Clock time the worker last went from no work to some work.
    work_since: AtomicU64,
    /// Work items handed to the worker and not yet taken up.
    waiting: AtomicU64,
    /// The worker is inside a piece of work.
    busy: AtomicBool,
    /// The worker must beat even without work (a listener's accept loop).
    keep_alive: AtomicBool,
    /// How long the worker may legitimately wait without progress right now (the
    /// timeout of the network step in progress), in ms.
    budget_ms: AtomicU64,
    /// Set once, by [`Heartbeat::on_restart`].
    pub(crate) restart: OnceLock<RestartHook>,
}

/// One reading of a slot's atomics.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reading {
    pub processed: u64,
    pub last_progress: u64,
    pub work_since: u64,
    pub waiting: u64,
    pub busy: bool,
    pub keep_alive: bool,
    pub budget_ms: u64,
}

impl Reading {
    /// Whether the worker is expected to make progress.
    pub fn has_work(&self) -> bool {
        self.busy || self.waiting > 0 || self.keep_alive
    }

    /// Milliseconds without progress while having work, at `now`.
    pub fn stuck_for(&self, now: u64) -> u64 {
        now.saturating_sub(self.last_progress.max(self.work_since))
    }
}

impl Slot {
    pub(crate) fn read(&self) -> Reading {
        // Flags first (acquire), then the times they publish.
        let busy = self.busy.load(Ordering::Acquire);
        let waiting = self.waiting.load(Ordering::Acquire);
        let keep_alive = self.keep_alive.load(Ordering::Acquire);
        Reading {
            processed: self.processed.load(Ordering::Relaxed),
            last_progress: self.last_progress.load(Ordering::Acquire),
            work_since: self.work_since.load(Ordering::Acquire),
            waiting,
            busy,
            keep_alive,
            budget_ms: self.budget_ms.load(Ordering::Acquire),
        }
    }
}

/// A worker's heartbeat. Cheap to clone (one `Arc`); all clones are one worker, which is
/// unregistered when the last clone is dropped.
#[derive(Clone)]
pub struct Heartbeat {
    pub(crate) slot: Arc<Slot>,
}

impl std::fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heartbeat")
            .field("name", &self.slot.name)
            .field("kind", &self.slot.kind)
            .field("reading", &self.slot.read())
            .finish()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Heartbeat {
    pub(crate) fn new(name: String, kind: Kind, clock: Arc<dyn Clock>) -> Heartbeat {
        let now = clock.now_ms();
        Heartbeat {
            slot: Arc::new(Slot {
                name,
                kind,
                clock,
                processed: AtomicU64::new(0),
                last_progress: AtomicU64::new(now),
                work_since: AtomicU64::new(now),
                waiting: AtomicU64::new(0),
                busy: AtomicBool::new(false),
                keep_alive: AtomicBool::new(false),
                budget_ms: AtomicU64::new(0),
                restart: OnceLock::new(),
            }),
        }
    }

    /// A heartbeat no watchdog watches (the watchdog is off, or a library is used on its
    /// own). Beats cost the same; nobody reads them.
    pub fn detached(name: impl Into<String>, kind: Kind) -> Heartbeat {
        Heartbeat::new(name.into(), kind, Arc::new(MonotonicClock::new()))
    }

    /// The worker's name.
    pub fn name(&self) -> &str {
        &self.slot.name
    }

    /// The worker's kind.
    pub fn kind(&self) -> Kind {
        self.slot.kind
    }

    /// Work items finished so far.
    pub fn processed(&self) -> u64 {
        self.slot.processed.load(Ordering::Relaxed)
    }

    fn now(&self) -> u64 {
        self.slot.clock.now_ms()
    }

    /// One work item finished: counts it and restarts the stall clock.
    pub fn progress(&self) {
        self.slot.processed.fetch_add(1, Ordering::Relaxed);
        self.slot.last_progress.store(self.now(), Ordering::Release);
    }

    /// A liveness beat: restarts the stall clock without counting an item.
    pub fn beat(&self) {
        self.slot.last_progress.store(self.now(), Ordering::Release);
    }

    /// The worker is inside a piece of work (`true`) or waiting for the next (`false`).
    /// Only the worker itself calls this.
    pub fn busy(&self, busy: bool) {
        if busy && !self.slot.busy.load(Ordering::Acquire) {
            self.slot.work_since.store(self.now(), Ordering::Release);
        }
        self.slot.busy.store(busy, Ordering::Release);
    }

    /// Sets the number of items waiting for the worker.
    pub fn set_waiting(&self, n: u64) {
        if n > 0 && self.slot.waiting.load(Ordering::Acquire) == 0 {
            self.slot.work_since.store(self.now(), Ordering::Release);
        }
        self.slot.waiting.store(n, Ordering::Release);
    }

    /// `n` more items wait for the worker (called by whoever hands it work).
    pub fn add_waiting(&self, n: u64) {
        if n > 0 && self.slot.waiting.load(Ordering::Acquire) == 0 {
            self.slot.work_since.store(self.now(), Ordering::Release);
        }
        self.slot.waiting.fetch_add(n, Ordering::AcqRel);
    }

    /// The worker took up `n` waiting items (never below zero).
    pub fn done_waiting(&self, n: u64) {
        let _ = self
            .slot
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                Some(w.saturating_sub(n))
            });
    }

    /// The worker must beat even when it has no work (`tern` sets this for accept
    /// loops, which always have a socket to watch): a silence longer than `stall_after`
    /// is then a stall.
    pub fn keep_alive(&self, on: bool) {
        if on {
            self.slot.work_since.store(self.now(), Ordering::Release);
        }
        self.slot.keep_alive.store(on, Ordering::Release);
    }

    /// How long the worker may wait without progress from now on (the timeout of the
    /// bounded I/O it is about to wait for); `Duration::ZERO` for none. The stall limit
    /// is the larger of this and the watchdog's `stall_after`.
    pub fn set_budget(&self, budget: Duration) {
        self.slot.budget_ms.store(millis(budget), Ordering::Release);
    }

    /// Runs `step` (bounded network I/O) with `budget` in force, then counts one item of
    /// progress. The previous budget is restored however the step ends, so these nest.
    pub async fn bounded<F: Future>(&self, budget: Duration, step: F) -> F::Output {
        let previous = self.slot.budget_ms.swap(millis(budget), Ordering::AcqRel);
        let _restore = RestoreBudget {
            slot: &self.slot,
            previous,
        };
        let out = step.await;
        self.progress();
        out
    }

    /// One more item waits; the returned guard takes it off again when dropped, and
    /// counts progress if [`WorkItem::done`] was called (a cancelled item is no progress).
    pub fn item(&self) -> WorkItem<'_> {
        self.add_waiting(1);
        WorkItem { beat: self }
    }

    /// Makes the worker restartable: `hook` is what the supervisor calls when it stalls
    /// (once per stall episode, outside any lock). Returns `false`, and drops `hook`, when
    /// a hook was already set.
    pub fn on_restart(&self, hook: impl Fn() + Send + Sync + 'static) -> bool {
        self.slot.restart.set(Box::new(hook)).is_ok()
    }
}

struct RestoreBudget<'a> {
    slot: &'a Slot,
    previous: u64,
}

impl Drop for RestoreBudget<'_> {
    fn drop(&mut self) {
        self.slot.budget_ms.store(self.previous, Ordering::Release);
    }
}

/// One item of work in flight (see [`Heartbeat::item`]).
#[must_use = "dropping the item at once ends it"]
pub struct WorkItem<'a> {
    beat: &'a Heartbeat,
}

impl WorkItem<'_> {
    /// The item finished: counts progress (and, on drop, takes it off the waiting count).
    pub fn done(self) {
        self.beat.progress();
    }
}

impl Drop for WorkItem<'_> {
    fn drop(&mut self) {
        self.beat.done_waiting(1);
    }
}
