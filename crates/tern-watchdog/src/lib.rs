//! Tern's watchdog: every long-lived worker reports a heartbeat and its progress; a
//! supervisor notices a worker that has work but makes no progress, reports it once per
//! episode, and restarts it where a restart is safe.
//!
//! Sans-daemon: this crate has no thread, task or timer. The pieces:
//! - [`Watchdog`] is the registry (cheap to clone, one `Arc`). [`Watchdog::register`]
//!   gives a worker its [`Heartbeat`]; libraries take a `Heartbeat` (or an
//!   `Option<&Watchdog>`) passed in explicitly, never from a global.
//! - [`Watchdog::check`] is the pure decision: given the time, which workers became
//!   stalled, which recovered, which stalled ones are gone. Time comes from an injected
//!   [`Clock`], so tests drive it without sleeping.
//! - [`Watchdog::restart`] calls a stalled worker's restart hook; [`Watchdog::snapshot`]
//!   gives the [`Snapshot`] that `tern status` shows.
//!
//! The rule: a worker is **stalled** when it has work (busy, items waiting, or it must
//! keep beating) and `now - max(last progress, when the work began) > max(stall_after,
//! budget)`, where the budget is the timeout of the bounded I/O the worker says it waits
//! for. Each stall episode produces one `Stalled` transition, then one `Recovered` (it
//! progressed, or its work went away) or `Ended` (its heartbeat was dropped).
//!
//! Invariants:
//! - One std `Mutex` guards the registry map, the totals and the recent stall list. It is
//!   held for map operations and atomic loads only: never across an `.await` (this crate
//!   has none), never while a restart hook runs or is dropped (hooks and the slots that
//!   own them are collected under the lock and called or dropped after it), never while
//!   an event is emitted (the caller emits from the returned transitions).
//! - Heartbeats never take that lock: they are atomics, and the registry holds only a
//!   `Weak` to each, so beating and dropping are lock-free. Registering takes it once.
//! - A restart hook is called at most once per stall episode.
//!
//! Trust: everything here comes from Tern's own workers; nothing is read from outside
//! except the status file, bounded in [`status`].

#![forbid(unsafe_code)]

pub mod clock;
mod heartbeat;
pub mod status;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use heartbeat::{Clock, Heartbeat, ManualClock, MonotonicClock, RestartHook, WorkItem};
pub use status::{
    KindTotals, Snapshot, StallOutcome, StallRecord, StatusError, WorkerState, WorkerStatus,
};

use heartbeat::Slot;

/// How many past stall episodes a snapshot keeps.
pub const RECENT_STALLS: usize = 32;

/// What kind of worker a heartbeat belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Kind {
    /// A listener's accept loop, or the pickup directory's scan loop: both take mail in.
    Listener,
    /// The queue manager (scheduler).
    QueueManager,
    /// A delivery worker (one outbound connection).
    Delivery,
    /// A spool writer (group-commit directory syncer).
    SpoolWriter,
    /// The outbound DNS resolver.
    Dns,
}

impl Kind {
    /// The name used in events, JSON and the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Listener => "listener",
            Kind::QueueManager => "queue_manager",
            Kind::Delivery => "delivery",
            Kind::SpoolWriter => "spool_writer",
            Kind::Dns => "dns",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A worker's registration number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId(pub u64);

/// What changed for one worker at a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It has work and made no progress for longer than its limit (once per episode).
    Stalled,
    /// A stalled worker made progress again, or its work went away.
    Recovered,
    /// A stalled worker's heartbeat was dropped (it was restarted, or it ended).
    Ended,
}

/// One change found by [`Watchdog::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The worker.
    pub id: WorkerId,
    /// Its name.
    pub worker: String,
    /// Its kind.
    pub kind: Kind,
    /// What changed.
    pub change: Change,
    /// `Stalled`: ms without progress; `Recovered`/`Ended`: ms the stall lasted.
    pub waited_ms: u64,
    /// Items waiting (0 for `Ended`).
    pub waiting: u64,
    /// Items finished so far.
    pub processed: u64,
    /// The worker has a restart hook.
    pub restartable: bool,
}

struct Entry {
    name: String,
    kind: Kind,
    slot: Weak<Slot>,
    /// `Some((since_ms, episode seq))` while stalled.
    stalled: Option<(u64, u64)>,
    restarts: u64,
}

#[derive(Default)]
struct State {
    next_id: u64,
    next_seq: u64,
    workers: BTreeMap<u64, Entry>,
    totals: BTreeMap<Kind, (u64, u64)>,
    stalls: VecDeque<StallRecord>,
}

impl State {
    fn record_mut(&mut self, seq: u64) -> Option<&mut StallRecord> {
        self.stalls.iter_mut().find(|r| r.seq == seq)
    }
}

struct Registry {
    clock: Arc<dyn Clock>,
    stall_after_ms: u64,
    /// Unix time (ms) at the clock's reading 0.
    origin_unix_ms: u64,
    started_ms: u64,
    state: Mutex<State>,
    /// Lines other parts add to the status (`cluster` → its health); locked alone,
    /// never while `state` is held.
    notes: Mutex<std::collections::BTreeMap<String, String>>,
}

/// The registry of heartbeats. Cheap to clone; all clones are one registry.
#[derive(Clone)]
pub struct Watchdog {
    inner: Arc<Registry>,
}

impl std::fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchdog")
            .field("stall_after_ms", &self.inner.stall_after_ms)
            .finish_non_exhaustive()
    }
}

impl Watchdog {
    /// A watchdog on the real clock calling a worker stalled after `stall_after` without
    /// progress.
    pub fn new(stall_after: Duration) -> Watchdog {
        Watchdog::with_clock(stall_after, Arc::new(MonotonicClock::new()))
    }

    /// A watchdog reading time from `clock` (tests pass a [`ManualClock`]).
    pub fn with_clock(stall_after: Duration, clock: Arc<dyn Clock>) -> Watchdog {
        let started_ms = clock.now_ms();
        let origin_unix_ms = clock::unix_ms().saturating_sub(started_ms);
        Watchdog {
            inner: Arc::new(Registry {
                clock,
                stall_after_ms: u64::try_from(stall_after.as_millis()).unwrap_or(u64::MAX),
                origin_unix_ms,
                started_ms,
                state: Mutex::new(State::default()),
                notes: Mutex::new(std::collections::BTreeMap::new()),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every operation under the lock leaves the maps consistent, so a panic in one
        // (which cannot come from a hook: none runs under it) poisons nothing that matters.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The clock's reading now, for [`Watchdog::check`] and [`Watchdog::snapshot`].
    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// The stall limit.
    pub fn stall_after(&self) -> Duration {
        Duration::from_millis(self.inner.stall_after_ms)
    }

    /// How often a supervisor should check: a quarter of the stall limit, between
    /// 100 ms and 1 s. Also how often keep-alive workers should beat.
    pub fn tick_interval(&self) -> Duration {
        (self.stall_after() / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// Registers a worker; it is watched until the last clone of the returned heartbeat
    /// is dropped.
    pub fn register(&self, name: impl Into<String>, kind: Kind) -> Heartbeat {
        let name = name.into();
        let beat = Heartbeat::new(name.clone(), kind, Arc::clone(&self.inner.clock));
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.workers.insert(
            id,
            Entry {
                name,
                kind,
                slot: Arc::downgrade(&beat.slot),
                stalled: None,
                restarts: 0,
            },
        );
        beat
    }

    /// Registers a worker that is safe to restart: `hook` is called (outside any lock,
    /// once per stall episode) when it stalls.
    pub fn register_restartable(
        &self,
        name: impl Into<String>,
        kind: Kind,
        hook: impl Fn() + Send + Sync + 'static,
    ) -> Heartbeat {
        let beat = self.register(name, kind);
        beat.on_restart(hook);
        beat
    }

    /// Decides, at clock time `now_ms`, which workers became stalled, recovered or
    /// ended, and updates the episode records. Calls no hook and emits nothing.
    pub fn check(&self, now_ms: u64) -> Vec<Transition> {
        let stall_after = self.inner.stall_after_ms;
        let origin = self.inner.origin_unix_ms;
        let mut out = Vec::new();
        // Slots upgraded under the lock are dropped after it (a slot owns a hook).
        let mut held: Vec<Arc<Slot>> = Vec::new();
        let mut state = self.lock();
        let state = &mut *state;
        let mut gone = Vec::new();
        for (id, e) in &mut state.workers {
            let Some(slot) = e.slot.upgrade() else {
                gone.push(*id);
                if let Some((since, seq)) = e.stalled.take() {
                    out.push(Transition {
                        id: WorkerId(*id),
                        worker: e.name.clone(),
                        kind: e.kind,
                        change: Change::Ended,
                        waited_ms: now_ms.saturating_sub(since),
                        waiting: 0,
                        processed: 0,
                        restartable: false,
                    });
                    if let Some(r) = state.stalls.iter_mut().find(|r| r.seq == seq) {
                        r.outcome = StallOutcome::Ended;
                        r.ended_at_unix_ms = Some(origin.saturating_add(now_ms));
                    }
                }
                continue;
            };
            let r = slot.read();
            let stuck_for = r.stuck_for(now_ms);
            let stalled = r.has_work() && stuck_for > stall_after.max(r.budget_ms);
            let restartable = slot.restart.get().is_some();
            match (e.stalled, stalled) {
                (None, true) => {
                    let seq = state.next_seq;
                    state.next_seq += 1;
                    e.stalled = Some((now_ms, seq));
                    state.totals.entry(e.kind).or_default().0 += 1;
                    if state.stalls.len() >= RECENT_STALLS {
                        state.stalls.pop_front();
                    }
                    state.stalls.push_back(StallRecord {
                        seq,
                        worker_id: *id,
                        worker: e.name.clone(),
                        kind: e.kind,
                        stalled_at_unix_ms: origin.saturating_add(now_ms),
                        waited_ms: stuck_for,
                        waiting: r.waiting,
                        restarted: false,
                        outcome: StallOutcome::Ongoing,
                        ended_at_unix_ms: None,
                    });
                    out.push(Transition {
                        id: WorkerId(*id),
                        worker: e.name.clone(),
                        kind: e.kind,
                        change: Change::Stalled,
                        waited_ms: stuck_for,
                        waiting: r.waiting,
                        processed: r.processed,
                        restartable,
                    });
                }
                (Some((since, seq)), false) => {
                    e.stalled = None;
                    if let Some(rec) = state.stalls.iter_mut().find(|x| x.seq == seq) {
                        rec.outcome = StallOutcome::Recovered;
                        rec.ended_at_unix_ms = Some(origin.saturating_add(now_ms));
                    }
                    out.push(Transition {
                        id: WorkerId(*id),
                        worker: e.name.clone(),
                        kind: e.kind,
                        change: Change::Recovered,
                        waited_ms: now_ms.saturating_sub(since),
                        waiting: r.waiting,
                        processed: r.processed,
                        restartable,
                    });
                }
                _ => {}
            }
            held.push(slot);
        }
        for id in gone {
            state.workers.remove(&id);
        }
        drop(held);
        out
    }

    /// Restarts a worker through its hook, if it has one and still exists: counts the
    /// restart, then calls the hook outside the lock. Returns the worker's restart count,
    /// or `None` when there was nothing to call. Call it once per `Stalled` transition.
    pub fn restart(&self, id: WorkerId) -> Option<u64> {
        let (slot, count) = {
            let mut state = self.lock();
            let state = &mut *state;
            let e = state.workers.get_mut(&id.0)?;
            let slot = e.slot.upgrade()?;
            // No hook: nothing to call.
            slot.restart.get()?;
            e.restarts += 1;
            let count = e.restarts;
            let kind = e.kind;
            let seq = e.stalled.map(|(_, seq)| seq);
            state.totals.entry(kind).or_default().1 += 1;
            if let Some(rec) = seq.and_then(|s| state.record_mut(s)) {
                rec.restarted = true;
            }
            (slot, count)
        };
        if let Some(hook) = slot.restart.get() {
            hook();
        }
        Some(count)
    }

    /// Sets a line of the status snapshot's `notes` (e.g. `cluster` → `degraded since
    /// ...`), shown by `tern status`; an empty value removes it. At most 16 notes of 200
    /// characters each are kept.
    pub fn set_note(&self, key: &str, value: &str) {
        let mut notes = self
            .inner
            .notes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if value.is_empty() {
            notes.remove(key);
        } else if notes.len() < 16 || notes.contains_key(key) {
            notes.insert(
                key.chars().take(40).collect(),
                value.chars().take(200).collect(),
            );
        }
    }

    /// The status of every worker at clock time `now_ms`; `unix_ms` is the wall-clock
    /// time stamped on it.
    pub fn snapshot(&self, now_ms: u64, unix_ms: u64) -> Snapshot {
        let stall_after = self.inner.stall_after_ms;
        let mut held: Vec<Arc<Slot>> = Vec::new();
        let (workers, totals, stalls) = {
            let state = self.lock();
            let mut workers = Vec::with_capacity(state.workers.len());
            for (id, e) in &state.workers {
                let Some(slot) = e.slot.upgrade() else {
                    continue;
                };
                let r = slot.read();
                let state = if e.stalled.is_some() {
                    WorkerState::Stalled
                } else if r.busy || r.waiting > 0 {
                    WorkerState::Busy
                } else {
                    WorkerState::Idle
                };
                workers.push(WorkerStatus {
                    id: *id,
                    name: e.name.clone(),
                    kind: e.kind,
                    state,
                    processed: r.processed,
                    last_progress_ms: now_ms.saturating_sub(r.last_progress),
                    waiting: r.waiting,
                    budget_ms: r.budget_ms,
                    restarts: e.restarts,
                });
                held.push(slot);
            }
            let totals = state
                .totals
                .iter()
                .map(|(kind, (stalls, restarts))| KindTotals {
                    kind: *kind,
                    stalls: *stalls,
                    restarts: *restarts,
                })
                .collect();
            let stalls = state.stalls.iter().cloned().collect();
            (workers, totals, stalls)
        };
        drop(held);
        let notes = self
            .inner
            .notes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        Snapshot {
            format: status::STATUS_FORMAT,
            pid: std::process::id(),
            started_unix_ms: self
                .inner
                .origin_unix_ms
                .saturating_add(self.inner.started_ms),
            written_unix_ms: unix_ms,
            tick_ms: u64::try_from(self.tick_interval().as_millis()).unwrap_or(u64::MAX),
            stall_after_ms: stall_after,
            workers,
            totals,
            stalls,
            notes,
        }
    }
}
