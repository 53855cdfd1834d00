//! The scheduler's dispatch core, sans I/O: one queue of delivery jobs per next hop,
//! the worker counts (total and per next hop), the "down until" marks and the
//! administrators' suspensions.
//!
//! It is generic over the next hop `K` and the job `J` so that the same code runs in the
//! scheduler and in the schedule-exploration test (`dispatch_schedules.rs`, shuttle
//! threads and channels), which drives it, together with the connection cache
//! (`conncache.rs`), from many threads in every interleaving shuttle finds.
//!
//! Idle connections are not here: a worker that has nothing more for its next hop hands
//! its connection to the connection cache and ends, so its slot is free at once. A slot
//! is only ever held by a worker with a job; [`Dispatch::pump`] never looks at idle
//! connections, so they cannot keep a destination waiting.
//!
//! Invariants (each method keeps them; the exploration test checks them):
//! - `workers` is the number of workers started and not yet done; per next hop likewise.
//!   Counts only grow in [`Dispatch::pump`] (when it hands out a job to a new worker)
//!   and only shrink in [`Dispatch::worker_done`], so `workers <= max_total` and each
//!   next hop's count `<= max_dest` hold whenever the limits do not shrink (a reload that
//!   lowers them lets the excess finish; no new worker starts until below).
//! - A job is in exactly one place: a next hop's queue, handed to a waiting worker, or
//!   returned to the caller (to start a worker, or to be answered because its next hop
//!   is down or the queue is stopping). None is dropped here.
//! - Work-conserving: after [`Dispatch::pump`], either every slot is taken or no job
//!   that could start (its hop up, not suspended, below `max_dest`) is left queued.
//!
//! - A suspended next hop (an administrator's `suspend`) gets no new worker and gives
//!   no job to a worker that finished one; a job for it is refused like one for a down hop, so the
//!   message waits in `deferred/` and nothing is lost. The mark stays until `resume`
//!   (it is not persisted: a restart clears it).
//!
//! No locks, no awaits, no clock of its own: the caller passes `now`.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::Instant;

/// One next hop's state.
struct Destination<J> {
    jobs: VecDeque<J>,
    workers: usize,
    down_until: Option<Instant>,
    down_reason: String,
    suspended: bool,
}

impl<J> Default for Destination<J> {
    fn default() -> Self {
        Destination {
            jobs: VecDeque::new(),
            workers: 0,
            down_until: None,
            down_reason: String::new(),
            suspended: false,
        }
    }
}

/// Why a job could not be queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Its next hop is marked down until its retry time; the text says why.
    Down(String),
    /// An administrator suspended its next hop.
    Suspended,
}

/// One next hop as [`Dispatch::snapshot`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HopView<K> {
    /// The next hop.
    pub hop: K,
    /// Jobs waiting for a worker.
    pub jobs: usize,
    /// Workers running (connections in use).
    pub workers: usize,
    /// Down until then (later than `now`), and why.
    pub down: Option<(Instant, String)>,
    /// Suspended by an administrator.
    pub suspended: bool,
}

/// What [`Dispatch::mark_down`] did.
pub(crate) struct MarkedDown<J> {
    /// The next hop was not down before (log it once).
    pub newly: bool,
    /// The jobs that were waiting for it: answer them with a deferral.
    pub jobs: Vec<J>,
}

/// The dispatch state. See the module header.
pub(crate) struct Dispatch<K, J> {
    destinations: HashMap<K, Destination<J>>,
    workers: usize,
}

impl<K, J> Dispatch<K, J>
where
    K: Hash + Eq + Clone,
{
    /// Empty: no jobs, no workers.
    pub(crate) fn new() -> Self {
        Dispatch {
            destinations: HashMap::new(),
            workers: 0,
        }
    }

    /// Workers started and not yet done, all next hops together.
    pub(crate) fn workers(&self) -> usize {
        self.workers
    }

    /// Workers of one next hop.
    #[cfg(test)]
    pub(crate) fn workers_of(&self, hop: &K) -> usize {
        self.destinations.get(hop).map_or(0, |d| d.workers)
    }

    /// Jobs waiting, all next hops together.
    #[cfg(test)]
    pub(crate) fn waiting_jobs(&self) -> usize {
        self.destinations.values().map(|d| d.jobs.len()).sum()
    }

    /// Jobs that could start a worker now (hop up, not suspended, below `max_dest`):
    /// after [`Dispatch::pump`], none while a slot is free (work-conserving).
    #[cfg(test)]
    pub(crate) fn startable_jobs(&self, max_dest: usize) -> usize {
        self.destinations
            .values()
            .filter(|d| d.down_until.is_none() && !d.suspended && d.workers < max_dest)
            .map(|d| d.jobs.len())
            .sum()
    }

    /// Queues a job for `hop`, unless the hop is down until later than `now`.
    pub(crate) fn enqueue(&mut self, hop: K, job: J, now: Instant) -> Result<(), (J, Refused)> {
        let d = self.destinations.entry(hop).or_default();
        if d.suspended {
            return Err((job, Refused::Suspended));
        }
        if let Some(until) = d.down_until
            && until > now
        {
            return Err((job, Refused::Down(d.down_reason.clone())));
        }
        d.down_until = None;
        d.jobs.push_back(job);
        Ok(())
    }

    /// A worker of `hop` finished a job: the next job for it, if one waits and the hop is
    /// neither down nor suspended. With `None` the worker ends (its connection goes to
    /// the connection cache) and its slot is free for any next hop.
    pub(crate) fn next_job(&mut self, hop: &K) -> Option<J> {
        self.destinations
            .get_mut(hop)
            .filter(|d| d.down_until.is_none() && !d.suspended)
            .and_then(|d| d.jobs.pop_front())
    }

    /// Puts a job back at the front of its queue (its worker vanished before taking it).
    pub(crate) fn put_back(&mut self, hop: K, job: J) {
        self.destinations
            .entry(hop)
            .or_default()
            .jobs
            .push_front(job);
    }

    /// A worker of `hop` ended (its slot guard said so, also after a panic).
    pub(crate) fn worker_done(&mut self, hop: &K) {
        self.workers = self.workers.saturating_sub(1);
        if let Some(d) = self.destinations.get_mut(hop) {
            d.workers = d.workers.saturating_sub(1);
        }
    }

    /// Marks `hop` down until `until`; returns its waiting jobs to be deferred.
    pub(crate) fn mark_down(&mut self, hop: &K, until: Instant, reason: String) -> MarkedDown<J> {
        let d = self.destinations.entry(hop.clone()).or_default();
        let newly = d.down_until.is_none();
        d.down_until = Some(until);
        d.down_reason = reason;
        MarkedDown {
            newly,
            jobs: d.jobs.drain(..).collect(),
        }
    }

    /// The reason `hop` is down, if it is.
    #[cfg(test)]
    pub(crate) fn down_reason(&self, hop: &K) -> Option<&str> {
        self.destinations
            .get(hop)
            .filter(|d| d.down_until.is_some())
            .map(|d| d.down_reason.as_str())
    }

    /// Suspends `hop` (an administrator's request): no new worker starts for it and
    /// workers that finish a job get no other. Returns whether it was not suspended
    /// before and the jobs that were waiting, to be answered with a deferral.
    pub(crate) fn suspend(&mut self, hop: &K) -> (bool, Vec<J>) {
        let d = self.destinations.entry(hop.clone()).or_default();
        let newly = !d.suspended;
        d.suspended = true;
        let jobs = d.jobs.drain(..).collect();
        (newly, jobs)
    }

    /// Lifts a suspension; whether `hop` was suspended.
    pub(crate) fn resume(&mut self, hop: &K) -> bool {
        self.destinations
            .get_mut(hop)
            .is_some_and(|d| std::mem::replace(&mut d.suspended, false))
    }

    /// Clears `hop`'s down mark (an administrator's "retry now"); whether it was down.
    pub(crate) fn clear_down(&mut self, hop: &K) -> bool {
        self.destinations.get_mut(hop).is_some_and(|d| {
            let was = d.down_until.is_some();
            d.down_until = None;
            d.down_reason.clear();
            was
        })
    }

    /// Whether `hop` is suspended.
    pub(crate) fn is_suspended(&self, hop: &K) -> bool {
        self.destinations.get(hop).is_some_and(|d| d.suspended)
    }

    /// Every next hop with jobs, workers, a down mark or a suspension, as of `now` (a
    /// down mark whose time passed is not reported).
    pub(crate) fn snapshot(&self, now: Instant) -> Vec<HopView<K>> {
        self.destinations
            .iter()
            .map(|(hop, d)| HopView {
                hop: hop.clone(),
                jobs: d.jobs.len(),
                workers: d.workers,
                down: d
                    .down_until
                    .filter(|t| *t > now)
                    .map(|t| (t, d.down_reason.clone())),
                suspended: d.suspended,
            })
            .collect()
    }

    /// Next hops marked down now (as of the last [`Dispatch::pump`], which brings back
    /// those whose time passed). O(next hops), like `pump`.
    pub(crate) fn down_count(&self) -> usize {
        self.destinations
            .values()
            .filter(|d| d.down_until.is_some())
            .count()
    }

    /// The earliest time a down next hop with jobs comes back.
    pub(crate) fn next_up(&self) -> Option<Instant> {
        self.destinations
            .values()
            .filter(|d| !d.jobs.is_empty())
            .filter_map(|d| d.down_until)
            .min()
    }

    /// Stopping: returns every queued job (to be answered with a deferral).
    pub(crate) fn drain(&mut self) -> Vec<J> {
        self.destinations
            .values_mut()
            .flat_map(|d| d.jobs.drain(..))
            .collect()
    }

    /// Moves what can move at `now`: next hops whose down time passed come back, then
    /// new workers are counted in for jobs queued, within `max_total` and `max_dest`.
    /// Returns the jobs that need a new worker, with their next hop.
    pub(crate) fn pump(&mut self, now: Instant, max_total: usize, max_dest: usize) -> Vec<(K, J)> {
        for d in self.destinations.values_mut() {
            if d.down_until.is_some_and(|t| t <= now) {
                d.down_until = None;
            }
        }
        let mut start = Vec::new();
        for (hop, d) in &mut self.destinations {
            while self.workers < max_total
                && d.workers < max_dest
                && d.down_until.is_none()
                && !d.suspended
                && let Some(job) = d.jobs.pop_front()
            {
                d.workers += 1;
                self.workers += 1;
                start.push((hop.clone(), job));
            }
        }
        self.destinations.retain(|_, d| {
            !d.jobs.is_empty() || d.workers > 0 || d.down_until.is_some() || d.suspended
        });
        start
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    #[test]
    fn limits_hold_and_done_workers_free_their_slot() {
        let now = Instant::now();
        let mut d: Dispatch<&str, u32> = Dispatch::new();
        for j in 0..5 {
            d.enqueue("a", j, now).unwrap();
            d.enqueue("b", 10 + j, now).unwrap();
        }
        let started = d.pump(now, 3, 2);
        assert_eq!(started.len(), 3);
        assert!(d.workers_of(&"a") <= 2 && d.workers_of(&"b") <= 2);
        assert!(d.pump(now, 3, 2).is_empty(), "no slot free");
        let (hop, _) = started[0];
        d.worker_done(&hop);
        assert_eq!(d.pump(now, 3, 2).len(), 1, "the freed slot is used");
        assert_eq!(d.workers(), 3);
        assert_eq!(d.waiting_jobs(), 6);
    }

    #[test]
    fn a_down_hop_refuses_jobs_until_its_time_and_returns_queued_ones() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut d: Dispatch<&str, u32> = Dispatch::new();
        d.enqueue("a", 1, now).unwrap();
        assert_eq!(d.down_count(), 0);
        let m = d.mark_down(&"a", later, "refused".into());
        assert_eq!(d.down_count(), 1);
        assert!(m.newly);
        assert_eq!(m.jobs, vec![1]);
        assert_eq!(
            d.enqueue("a", 2, now),
            Err((2, Refused::Down("refused".into())))
        );
        assert!(!d.mark_down(&"a", later, "again".into()).newly);
        assert_eq!(d.down_reason(&"a"), Some("again"));
        d.enqueue("a", 3, later).unwrap();
        assert_eq!(d.pump(later, 1, 1), vec![("a", 3)]);
    }

    #[test]
    fn a_suspended_hop_starts_nothing_refuses_jobs_and_resumes() {
        let now = Instant::now();
        let mut d: Dispatch<&str, u32> = Dispatch::new();
        d.enqueue("a", 1, now).unwrap();
        d.enqueue("a", 2, now).unwrap();
        let (newly, jobs) = d.suspend(&"a");
        assert!(newly);
        assert_eq!(jobs, vec![1, 2], "waiting jobs come back to be deferred");
        assert!(!d.suspend(&"a").0, "suspending twice is not new");
        assert_eq!(d.enqueue("a", 3, now), Err((3, Refused::Suspended)));
        assert!(d.pump(now, 10, 10).is_empty());
        assert!(d.is_suspended(&"a"), "kept while nothing waits for it");
        let view = d.snapshot(now);
        assert_eq!(view.len(), 1);
        assert!(view[0].suspended && view[0].jobs == 0);
        assert_eq!(d.next_job(&"a"), None);
        assert!(d.resume(&"a"));
        assert!(!d.resume(&"a"), "resuming twice is a no-op");
        d.enqueue("a", 4, now).unwrap();
        assert_eq!(d.pump(now, 10, 10), vec![("a", 4)]);
        assert!(!d.resume(&"unknown"));
    }

    #[test]
    fn clearing_a_down_mark_lets_jobs_in_again() {
        let now = Instant::now();
        let later = now + Duration::from_secs(600);
        let mut d: Dispatch<&str, u32> = Dispatch::new();
        d.mark_down(&"a", later, "refused".into());
        assert!(d.enqueue("a", 1, now).is_err());
        let view = d.snapshot(now);
        assert_eq!(view[0].down, Some((later, "refused".to_string())));
        assert!(d.clear_down(&"a"));
        assert!(!d.clear_down(&"a"));
        assert!(!d.clear_down(&"b"));
        d.enqueue("a", 2, now).unwrap();
        assert_eq!(d.pump(now, 1, 1), vec![("a", 2)]);
        assert_eq!(d.snapshot(now)[0].down, None);
    }

    #[test]
    fn drain_returns_every_job() {
        let now = Instant::now();
        let mut d: Dispatch<&str, u32> = Dispatch::new();
        d.enqueue("b", 1, now).unwrap();
        d.enqueue("b", 2, now).unwrap();
        assert_eq!(d.drain(), vec![1, 2]);
    }

    #[test]
    fn a_finished_worker_gets_its_hops_next_job_and_no_other() {
        let now = Instant::now();
        let mut d: Dispatch<&str, u32> = Dispatch::new();
        d.enqueue("a", 1, now).unwrap();
        assert_eq!(d.pump(now, 1, 1), vec![("a", 1)]);
        d.enqueue("b", 2, now).unwrap();
        assert!(d.pump(now, 1, 1).is_empty(), "the only slot is a's");
        assert_eq!(d.next_job(&"a"), None, "nothing more for a");
        // The worker of a ends (its connection goes to the cache): b starts at once.
        d.worker_done(&"a");
        assert_eq!(d.pump(now, 1, 1), vec![("b", 2)]);
        d.enqueue("b", 3, now).unwrap();
        assert_eq!(d.next_job(&"b"), Some(3), "same hop: handed over directly");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Enqueue(u8),
        Done(u8),
        Next(u8),
        Down(u8),
        Suspend(u8),
        Resume(u8),
        Tick,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u8..4).prop_map(Op::Enqueue),
            4 => (0u8..4).prop_map(Op::Done),
            3 => (0u8..4).prop_map(Op::Next),
            1 => (0u8..4).prop_map(Op::Down),
            1 => (0u8..4).prop_map(Op::Suspend),
            1 => (0u8..4).prop_map(Op::Resume),
            1 => Just(Op::Tick),
        ]
    }

    proptest! {
        /// Random enqueues, finished jobs, hand-overs, down marks, suspensions and
        /// time: the limits hold, every job is in exactly one place, and after every
        /// pump either all slots are taken or nothing that could start is left queued
        /// (work-conserving: nothing but the limits keeps a destination waiting).
        #[test]
        fn pump_is_work_conserving_within_the_limits(
            ops in proptest::collection::vec(op(), 0..150),
            max_total in 1usize..5,
            max_dest in 1usize..4,
        ) {
            let base = Instant::now();
            let mut now = base;
            let mut d: Dispatch<u8, u32> = Dispatch::new();
            // Jobs held by running workers, per hop (a worker holds one job).
            let mut running: Vec<(u8, u32)> = Vec::new();
            let (mut made, mut answered) = (0u32, 0usize);
            for op in ops {
                match op {
                    Op::Enqueue(h) => {
                        made += 1;
                        if d.enqueue(h, made, now).is_err() {
                            answered += 1;
                        }
                    }
                    Op::Done(h) => {
                        if let Some(i) = running.iter().position(|(rh, _)| *rh == h) {
                            running.remove(i);
                            answered += 1;
                            d.worker_done(&h);
                        }
                    }
                    Op::Next(h) => {
                        if let Some(i) = running.iter().position(|(rh, _)| *rh == h) {
                            answered += 1;
                            match d.next_job(&h) {
                                Some(j) => running[i].1 = j,
                                None => {
                                    running.remove(i);
                                    d.worker_done(&h);
                                }
                            }
                        }
                    }
                    Op::Down(h) => {
                        answered += d.mark_down(&h, now + Duration::from_secs(5), "x".into()).jobs.len();
                    }
                    Op::Suspend(h) => answered += d.suspend(&h).1.len(),
                    Op::Resume(h) => {
                        d.resume(&h);
                    }
                    Op::Tick => now += Duration::from_secs(3),
                }
                for (h, j) in d.pump(now, max_total, max_dest) {
                    running.push((h, j));
                }
                prop_assert!(d.workers() <= max_total);
                prop_assert_eq!(d.workers(), running.len());
                for h in 0..4u8 {
                    prop_assert!(d.workers_of(&h) <= max_dest);
                }
                prop_assert!(
                    d.workers() == max_total || d.startable_jobs(max_dest) == 0,
                    "a free slot and a job that could use it"
                );
                // Every job made is answered, held by a worker, or queued.
                prop_assert_eq!(
                    made as usize,
                    answered + running.len() + d.waiting_jobs()
                );
            }
        }
    }
}
