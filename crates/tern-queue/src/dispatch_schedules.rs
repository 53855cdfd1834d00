//! Schedule exploration (shuttle) of the queue manager's dispatch core and its
//! connection cache.
//!
//! The scheduler's protocol, with the real [`Dispatch`] and [`ConnCache`] in the middle:
//! one core thread owns both and reads commands from one channel (as the scheduler task
//! does); message threads hand it jobs and wait for their answer; the core starts a
//! worker thread per job `pump` hands out. A worker first asks the core for an idle
//! connection to its next hop's endpoint (next hops 0 and 1 share one endpoint, as
//! domains whose MX lead to one host do; next hop 2 has its own) and opens one if there
//! is none; it answers its job, then hands its connection and its slot guard to the core
//! with a request for the next job of its next hop: it gets that job (and its connection
//! and slot back), or the core releases the slot at once and the worker ends, closing
//! whatever connection the core gives back (its own when the cache did not keep it, or
//! the one the full cache let go). Anywhere it may die without answering (a panic), or
//! report its next hop down; its slot guard tells the core it ended on every path where
//! the core did not release it itself. The core's clock advances one millisecond per command, so idle connections
//! expire too. Shuttle runs this under thousands of schedules (random and PCT) and fails
//! on a deadlock (every thread blocked) or a broken invariant:
//!
//! - never more workers than the limits, in total and per next hop;
//! - work-conserving: after every pump, either every slot is taken or no job that could
//!   start is left queued, whatever the cache holds (idle connections hold no slot);
//! - the cache never holds more than its capacity;
//! - every message gets exactly one answer: a result, a deferral (next hop down, queue
//!   stopping) or a closed channel, and the closed channels are exactly the jobs whose
//!   worker died (nothing else drops a job);
//! - every connection opened is closed exactly once by the end (a worker's QUIT, the
//!   cache's expiry, eviction or drain, or a dying worker dropping it), none is left in
//!   the cache, and no connection is ever used by two workers (each is a value moved
//!   from owner to owner);
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

use super::conncache::{ConnCache, Parked};
use super::dispatch::{Dispatch, Refused};

const MAX_TOTAL: usize = 2;
const MAX_DEST: usize = 1;
const HOPS: u8 = 3;
const MESSAGES: usize = 4;
const CACHE: usize = 1;
const IDLE: Duration = Duration::from_millis(4);

#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Delivered,
    Deferred,
}

struct Job {
    hop: u8,
    reply: Sender<Answer>,
}

/// An open connection; counted closed when dropped (QUIT or a dying worker's drop).
struct Conn {
    open: Arc<AtomicUsize>,
}

impl Conn {
    fn open(open: &Arc<AtomicUsize>) -> Conn {
        open.fetch_add(1, Ordering::SeqCst);
        Conn {
            open: Arc::clone(open),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Next hops 0 and 1 lead to endpoint 0 (one MX host); next hop 2 to endpoint 1.
fn endpoint(hop: u8) -> u8 {
    u8::from(hop >= 2)
}

enum Handoff {
    Job(Job, Option<Conn>, Slot),
    Done(Option<Conn>, Option<Slot>),
}

enum Cmd {
    Enqueue(Job),
    NextJob(Slot, Option<Conn>, Sender<Handoff>),
    TakeConn(u8, Sender<Option<Conn>>),
    WorkerDone { hop: u8, down: bool },
    Suspend(u8),
    Resume(u8),
    Stop,
}

/// Tells the core the worker ended, however it ends, unless the core released it
/// itself (the real `Slot` guard).
struct Slot {
    core: Sender<Cmd>,
    hop: u8,
    down: bool,
    armed: bool,
}

impl Slot {
    fn release(mut self) -> u8 {
        self.armed = false;
        self.hop
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.core.send(Cmd::WorkerDone {
                hop: self.hop,
                down: self.down,
            });
        }
    }
}

fn choice(n: u64) -> u64 {
    thread_rng().next_u64() % n
}

fn worker(
    core: Sender<Cmd>,
    hop: u8,
    first: Job,
    deaths: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
) {
    let mut slot = Slot {
        core: core.clone(),
        hop,
        down: false,
        armed: true,
    };
    let mut job = first;
    let mut conn: Option<Conn> = None;
    loop {
        if conn.is_none() {
            let (tx, rx) = channel();
            if core.send(Cmd::TakeConn(endpoint(hop), tx)).is_err() {
                return;
            }
            conn = rx.recv().ok().flatten();
        }
        match choice(8) {
            // Dies holding the job (and its connection): both dropped (a panic).
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
                let c = conn.take().unwrap_or_else(|| Conn::open(&open));
                let _ = job.reply.send(Answer::Delivered);
                // Sometimes the connection is spent or went bad: closed, not handed in.
                if choice(4) != 0 {
                    conn = Some(c);
                }
            }
        }
        let (tx, rx) = channel();
        if core.send(Cmd::NextJob(slot, conn.take(), tx)).is_err() {
            return;
        }
        match rx.recv() {
            Ok(Handoff::Job(next, back, kept)) => {
                job = next;
                conn = back;
                slot = kept;
            }
            // Closes whatever it was given back, then lets go of its slot if the core
            // gave it back (stopping), and ends.
            Ok(Handoff::Done(close, kept)) => {
                drop(close);
                drop(kept);
                return;
            }
            Err(_) => return,
        }
    }
}

struct Core {
    d: Dispatch<u8, Job>,
    cache: ConnCache<u8, Conn>,
    stopping: bool,
}

impl Core {
    /// The real scheduler's `park`: keep the connection, or give back what to close.
    fn park(&mut self, endpoint: u8, conn: Conn, now: Instant) -> Option<Conn> {
        if self.stopping {
            return Some(conn);
        }
        match self.cache.park(endpoint, conn, now) {
            Parked::Kept { evicted } => evicted,
            Parked::Refused(conn) => Some(conn),
        }
    }
}

fn core(
    rx: Receiver<Cmd>,
    me: Sender<Cmd>,
    deaths: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
) -> (usize, usize) {
    let start = Instant::now();
    let mut tick = 0u64;
    let mut c = Core {
        d: Dispatch::new(),
        cache: ConnCache::new(CACHE, IDLE),
        stopping: false,
    };
    let (mut started, mut ended) = (0usize, 0usize);
    let mut workers = Vec::new();
    loop {
        let Ok(cmd) = rx.recv() else { break };
        tick += 1;
        let now = start + Duration::from_millis(tick);
        // Expired connections are closed (dropped) here, as the scheduler's pump does.
        drop(c.cache.expire(now));
        match cmd {
            Cmd::Enqueue(job) => {
                if c.stopping {
                    let _ = job.reply.send(Answer::Deferred);
                } else if let Err((job, Refused::Down(_) | Refused::Suspended)) =
                    c.d.enqueue(job.hop, job, now)
                {
                    let _ = job.reply.send(Answer::Deferred);
                }
            }
            Cmd::NextJob(slot, conn, tx) => {
                let hop = slot.hop;
                let next = if c.stopping { None } else { c.d.next_job(&hop) };
                let answer = match next {
                    Some(job) => Handoff::Job(job, conn, slot),
                    None => {
                        let close = conn.and_then(|k| c.park(endpoint(hop), k, now));
                        let slot = if c.stopping {
                            Some(slot)
                        } else {
                            // Released at once: the pump below may start a worker in it.
                            ended += 1;
                            c.d.worker_done(&slot.release());
                            None
                        };
                        Handoff::Done(close, slot)
                    }
                };
                if let Err(e) = tx.send(answer)
                    && let Handoff::Job(job, _, slot) = e.0
                {
                    c.d.put_back(hop, job);
                    drop(slot);
                }
            }
            Cmd::TakeConn(endpoint, tx) => {
                let found = if c.stopping {
                    None
                } else {
                    c.cache.take(&endpoint, now)
                };
                if let Err(e) = tx.send(found)
                    && let Some(conn) = e.0
                {
                    drop(c.park(endpoint, conn, now));
                }
            }
            Cmd::WorkerDone { hop, down } => {
                ended += 1;
                c.d.worker_done(&hop);
                if down {
                    let marked =
                        c.d.mark_down(&hop, now + Duration::from_secs(3600), "down".into());
                    for job in marked.jobs {
                        let _ = job.reply.send(Answer::Deferred);
                    }
                }
            }
            Cmd::Suspend(hop) => {
                let (_, jobs) = c.d.suspend(&hop);
                for job in jobs {
                    let _ = job.reply.send(Answer::Deferred);
                }
            }
            Cmd::Resume(hop) => {
                c.d.resume(&hop);
            }
            Cmd::Stop => {
                c.stopping = true;
                for job in c.d.drain() {
                    let _ = job.reply.send(Answer::Deferred);
                }
                drop(c.cache.drain());
            }
        }
        if !c.stopping {
            for (hop, job) in c.d.pump(now, MAX_TOTAL, MAX_DEST) {
                assert!(
                    !c.d.is_suspended(&hop),
                    "a worker started for suspended {hop}"
                );
                started += 1;
                let (core, deaths, open) = (me.clone(), Arc::clone(&deaths), Arc::clone(&open));
                workers.push(thread::spawn(move || worker(core, hop, job, deaths, open)));
            }
            assert!(
                c.d.workers() == MAX_TOTAL || c.d.startable_jobs(MAX_DEST) == 0,
                "a free slot and a job that could start, with {} idle connection(s)",
                c.cache.len()
            );
        }
        assert!(c.cache.len() <= CACHE, "{} cached", c.cache.len());
        assert!(c.d.workers() <= MAX_TOTAL, "{} workers", c.d.workers());
        for hop in 0..HOPS {
            assert!(
                c.d.workers_of(&hop) <= MAX_DEST,
                "hop {hop}: {}",
                c.d.workers_of(&hop)
            );
        }
        assert_eq!(
            c.d.workers(),
            started - ended,
            "the count is the workers alive"
        );
        if c.stopping && c.d.workers() == 0 {
            break;
        }
    }
    for w in workers {
        w.join().expect("worker");
    }
    assert_eq!(c.d.waiting_jobs(), 0, "nothing left queued");
    assert_eq!(c.cache.len(), 0, "nothing left cached");
    (started, ended)
}

fn scenario() {
    let deaths = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = channel();
    let core_thread = {
        let (me, deaths, open) = (tx.clone(), Arc::clone(&deaths), Arc::clone(&open));
        thread::spawn(move || core(rx, me, deaths, open))
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
    assert_eq!(open.load(Ordering::SeqCst), 0, "every connection closed");
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
