//! Schedule exploration (shuttle) of the queue manager's dispatch core.
//!
//! The scheduler's protocol, with the real [`Dispatch`] in the middle: one core thread
//! owns it and reads commands from one channel (as the scheduler task does); message
//! threads hand it jobs and wait for their answer; the core starts a worker thread per
//! job `pump` hands out; a worker answers its job, then asks for another job to its next
//! hop and waits, or stops waiting at any moment (its idle time ran out), or dies without answering (a
//! panic), or reports its next hop down; its slot guard tells the core it ended, on every
//! path. Shuttle runs this under thousands of schedules (random and PCT) and fails on a
//! deadlock (every thread blocked) or a broken invariant:
//!
//! - never more workers than the limits, in total and per next hop;
//! - every message gets exactly one answer: a result, a deferral (next hop down, queue
//!   stopping) or a closed channel, and the closed channels are exactly the jobs whose
//!   worker died (nothing else drops a job);
//! - after the stop, every worker ended and the core's counts are back at zero;
//! - an administrator thread suspends next hop 0 and resumes it at any moment: while it
//!   is suspended no worker starts for it, and its jobs are answered (deferred), never
//!   lost or left waiting.

use shuttle::rand::{RngCore, thread_rng};
use shuttle::sync::Arc;
use shuttle::sync::atomic::{AtomicUsize, Ordering};
use shuttle::sync::mpsc::{Receiver, Sender, channel};
use shuttle::thread;
use std::time::{Duration, Instant};

use super::dispatch::{Dispatch, Refused, Waiter};

const MAX_TOTAL: usize = 2;
const MAX_DEST: usize = 1;
const HOPS: u8 = 2;
const MESSAGES: usize = 3;

#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Delivered,
    Deferred,
}

struct Job {
    hop: u8,
    reply: Sender<Answer>,
}

enum Cmd {
    Enqueue(Job),
    NextJob(u8, Sender<Option<Job>>),
    WorkerDone { hop: u8, down: bool },
    Suspend(u8),
    Resume(u8),
    Stop,
}

/// A parked worker: the sending end of its reply channel.
struct Parked(Sender<Option<Job>>);

impl Waiter<Job> for Parked {
    fn offer(self, job: Job) -> Result<(), Job> {
        self.0
            .send(Some(job))
            .map_err(|e| e.0.unwrap_or_else(|| unreachable!("sent Some")))
    }
    fn dismiss(self) {
        let _ = self.0.send(None);
    }
    fn is_closed(&self) -> bool {
        // shuttle's channels cannot tell; `offer` finds out (the job goes back).
        false
    }
}

/// Tells the core the worker ended, however it ends (the real `Slot` guard).
struct Slot {
    core: Sender<Cmd>,
    hop: u8,
    down: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let _ = self.core.send(Cmd::WorkerDone {
            hop: self.hop,
            down: self.down,
        });
    }
}

fn choice(n: u64) -> u64 {
    thread_rng().next_u64() % n
}

fn worker(core: Sender<Cmd>, hop: u8, first: Job, deaths: Arc<AtomicUsize>) {
    let mut slot = Slot {
        core: core.clone(),
        hop,
        down: false,
    };
    let mut job = first;
    loop {
        match choice(8) {
            // Dies holding the job: it is dropped unanswered (a panic).
            0 => {
                deaths.fetch_add(1, Ordering::SeqCst);
                drop(job);
                return;
            }
            // No host greeted: the job is deferred and the next hop marked down.
            1 => {
                let _ = job.reply.send(Answer::Deferred);
                slot.down = true;
                return;
            }
            _ => {
                let _ = job.reply.send(Answer::Delivered);
            }
        }
        if choice(4) == 0 {
            return; // gave up before asking (spent connection)
        }
        let (tx, rx) = channel();
        if core.send(Cmd::NextJob(hop, tx)).is_err() {
            return;
        }
        // Its idle time runs out (it stops waiting; a job offered now comes back).
        if choice(3) == 0 {
            drop(rx);
            return;
        }
        match rx.recv() {
            Ok(Some(next)) => job = next,
            Ok(None) | Err(_) => return,
        }
    }
}

fn core(rx: Receiver<Cmd>, me: Sender<Cmd>, deaths: Arc<AtomicUsize>) -> (usize, usize) {
    let now = Instant::now();
    let mut d: Dispatch<u8, Job, Parked> = Dispatch::new();
    let mut stopping = false;
    let (mut started, mut ended) = (0usize, 0usize);
    let mut workers = Vec::new();
    loop {
        let Ok(cmd) = rx.recv() else { break };
        match cmd {
            Cmd::Enqueue(job) => {
                if stopping {
                    let _ = job.reply.send(Answer::Deferred);
                } else if let Err((job, Refused::Down(_) | Refused::Suspended)) =
                    d.enqueue(job.hop, job, now)
                {
                    let _ = job.reply.send(Answer::Deferred);
                }
            }
            Cmd::NextJob(hop, tx) => {
                let w = Parked(tx);
                if stopping {
                    w.dismiss();
                } else if let Some(job) = d.next_job(&hop) {
                    if let Err(job) = w.offer(job) {
                        d.put_back(hop, job);
                    }
                } else {
                    d.park(hop, w);
                }
            }
            Cmd::WorkerDone { hop, down } => {
                ended += 1;
                d.worker_done(&hop);
                if down {
                    let marked = d.mark_down(&hop, now + Duration::from_secs(3600), "down".into());
                    for job in marked.jobs {
                        let _ = job.reply.send(Answer::Deferred);
                    }
                }
            }
            Cmd::Suspend(hop) => {
                let (_, jobs) = d.suspend(&hop);
                for job in jobs {
                    let _ = job.reply.send(Answer::Deferred);
                }
            }
            Cmd::Resume(hop) => {
                d.resume(&hop);
            }
            Cmd::Stop => {
                stopping = true;
                for job in d.drain() {
                    let _ = job.reply.send(Answer::Deferred);
                }
            }
        }
        if !stopping {
            for (hop, job) in d.pump(now, MAX_TOTAL, MAX_DEST) {
                assert!(
                    !d.is_suspended(&hop),
                    "a worker started for suspended {hop}"
                );
                started += 1;
                let (core, deaths) = (me.clone(), Arc::clone(&deaths));
                workers.push(thread::spawn(move || worker(core, hop, job, deaths)));
            }
        }
        assert!(d.workers() <= MAX_TOTAL, "{} workers", d.workers());
        for hop in 0..HOPS {
            assert!(
                d.workers_of(&hop) <= MAX_DEST,
                "hop {hop}: {}",
                d.workers_of(&hop)
            );
        }
        assert_eq!(
            d.workers(),
            started - ended,
            "the count is the workers alive"
        );
        if stopping && d.workers() == 0 {
            break;
        }
    }
    for w in workers {
        w.join().expect("worker");
    }
    assert_eq!(d.waiting_jobs(), 0, "nothing left queued");
    (started, ended)
}

fn scenario() {
    let deaths = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = channel();
    let core_thread = {
        let (me, deaths) = (tx.clone(), Arc::clone(&deaths));
        thread::spawn(move || core(rx, me, deaths))
    };
    let messages: Vec<_> = (0..MESSAGES)
        .map(|i| {
            let core = tx.clone();
            thread::spawn(move || {
                let (reply, answer) = channel();
                let hop = (i % usize::from(HOPS)) as u8;
                core.send(Cmd::Enqueue(Job { hop, reply }))
                    .expect("core alive");
                answer.recv().ok()
            })
        })
        .collect();
    let admin = {
        let core = tx.clone();
        thread::spawn(move || {
            let _ = core.send(Cmd::Suspend(0));
            let _ = core.send(Cmd::Resume(0));
        })
    };
    admin.join().expect("admin thread");
    let answers: Vec<Option<Answer>> = messages
        .into_iter()
        .map(|m| m.join().expect("message thread"))
        .collect();
    tx.send(Cmd::Stop).expect("core alive");
    let (started, ended) = core_thread.join().expect("core thread");
    assert_eq!(started, ended, "every worker ended");
    let closed = answers.iter().filter(|a| a.is_none()).count();
    assert_eq!(
        closed,
        deaths.load(Ordering::SeqCst),
        "a job is only ever dropped by a worker that died: {answers:?}"
    );
}

#[test]
fn dispatch_protocol_random_schedules() {
    shuttle::check_random(scenario, 3000);
}

#[test]
fn dispatch_protocol_pct_schedules() {
    shuttle::check_pct(scenario, 3000, 3);
}
