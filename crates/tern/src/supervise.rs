//! The watchdog's supervisor in `tern serve`: every tick it runs the stall decision,
//! emits events 5001 to 5003 from the transitions (once per stall episode), restarts the
//! stalled workers that have a restart hook, and writes the status snapshot that
//! `tern status` reads.
//!
//! It runs on a thread of its own, not on the tokio runtime it watches: the failure it
//! exists for is workers that stop because the runtime's threads are blocked (a lock
//! never released), and a supervisor task would be stuck with them. Nothing here blocks
//! except the status file write (a small file, no fsync); event emission never blocks.
//!
//! Invariants: the supervisor holds no lock while it emits or restarts (the watchdog's
//! registry lock is taken and released inside each call); a restart hook is called once
//! per `Stalled` transition, after its event is emitted, so in the event log 5001 always
//! precedes what the restart lets happen. Dropping the [`Supervisor`] stops the thread,
//! waits for it and removes `status.json`, so a clean stop leaves no snapshot that could
//! pass for a live one.
//!
//! Under systemd with `WatchdogSec=` (docs/OPERATIONS.md), the same thread sends
//! `WATCHDOG=1` every half `$WATCHDOG_USEC`, but only while no essential worker (a
//! listener, the queue manager, a spool writer, the DNS resolver) is stalled: a stalled
//! delivery worker is restarted here and is no reason to restart Tern, but a stalled
//! essential one means mail stops, so the pings stop (event 7081) and systemd restarts
//! the service when `WatchdogSec` runs out. The pings resume (event 7082) if the worker
//! recovers first. With `[watchdog] enabled = false` the thread only pings: that proves
//! the process and this thread live, nothing more.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tern_watchdog::clock::unix_ms;

use tern_events::{EventLog, catalog, fields};
use tern_watchdog::{Change, Kind, Snapshot, Watchdog, WorkerState};

use crate::notify::Notifier;

/// systemd's watchdog: where to ping and how often.
pub struct SystemdWatchdog {
    /// The service manager's socket.
    pub notifier: Notifier,
    /// Half of `$WATCHDOG_USEC`.
    pub every: Duration,
    /// Set once `READY=1` was sent: pings start then (the start itself is bounded by
    /// systemd's `TimeoutStartSec`).
    pub armed: Arc<AtomicBool>,
}

/// The running supervisor thread.
pub struct Supervisor {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    status_path: PathBuf,
}

impl Supervisor {
    /// Starts supervising `watchdog` (writing snapshots to `status_path`) and pinging
    /// `systemd`. `Ok(None)` when there is neither.
    pub fn start(
        watchdog: Option<Watchdog>,
        events: EventLog,
        status_path: PathBuf,
        systemd: Option<SystemdWatchdog>,
    ) -> std::io::Result<Option<Supervisor>> {
        if watchdog.is_none() && systemd.is_none() {
            return Ok(None);
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let path = status_path.clone();
        let thread = std::thread::Builder::new()
            .name("tern-watchdog".into())
            .spawn(move || {
                let mut tick = watchdog.map(|watchdog| Tick {
                    watchdog,
                    events: events.clone(),
                    status_path: path,
                    write_failed: false,
                });
                let mut pinger = systemd.map(|s| Pinger {
                    systemd: s,
                    events,
                    withheld: false,
                    send_failed: false,
                });
                let tick_every = tick.as_ref().map(|t| t.watchdog.tick_interval());
                let ping_every = pinger.as_ref().map(|p| p.systemd.every);
                let start = Instant::now();
                let mut next_tick = tick_every.map(|_| start);
                let mut next_ping = ping_every.map(|_| start);
                let mut stalled: Option<String> = None;
                loop {
                    let now = Instant::now();
                    if let (Some(t), Some(at), Some(every)) = (tick.as_mut(), next_tick, tick_every)
                        && now >= at
                    {
                        stalled = t.run();
                        next_tick = Some(now + every);
                    }
                    if let (Some(p), Some(at), Some(every)) =
                        (pinger.as_mut(), next_ping, ping_every)
                        && now >= at
                    {
                        p.ping(stalled.as_deref());
                        next_ping = Some(now + every);
                    }
                    // At least one of the two is set (checked above).
                    let due = match (next_tick, next_ping) {
                        (Some(a), Some(b)) => a.min(b),
                        (Some(a), None) | (None, Some(a)) => a,
                        (None, None) => now + Duration::from_secs(1),
                    };
                    let wait = due.saturating_duration_since(Instant::now());
                    match stopped.recv_timeout(wait) {
                        Err(RecvTimeoutError::Timeout) => {}
                        // Stop requested (or the handle is gone).
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })?;
        Ok(Some(Supervisor {
            stop: Some(stop),
            thread: Some(thread),
            status_path,
        }))
    }
}

/// Sends systemd's `WATCHDOG=1` while the essential workers are healthy.
struct Pinger {
    systemd: SystemdWatchdog,
    events: EventLog,
    /// Pings are withheld (event 7081 emitted, 7082 not yet).
    withheld: bool,
    /// Event 7083 was emitted and no send has succeeded since.
    send_failed: bool,
}

impl Pinger {
    /// Pings unless `stalled` names a stalled essential worker; emits the transitions.
    fn ping(&mut self, stalled: Option<&str>) {
        match (stalled, self.withheld) {
            (Some(worker), false) => {
                self.withheld = true;
                self.events.emit(
                    &catalog::SYSTEMD_WATCHDOG_WITHHELD,
                    fields!(
                        "worker" => worker,
                        "watchdog_usec" => self.systemd.every.as_micros() * 2,
                    ),
                );
            }
            (None, true) => {
                self.withheld = false;
                self.events
                    .emit(&catalog::SYSTEMD_WATCHDOG_RESUMED, fields!());
            }
            _ => {}
        }
        if self.withheld || !self.systemd.armed.load(Ordering::Acquire) {
            return;
        }
        match self.systemd.notifier.watchdog() {
            Ok(()) => self.send_failed = false,
            Err(e) if !self.send_failed => {
                self.send_failed = true;
                self.events.emit(
                    &catalog::SYSTEMD_NOTIFY_FAILED,
                    fields!("message" => "WATCHDOG=1", "error" => e),
                );
            }
            Err(_) => {}
        }
    }
}

/// The first stalled essential worker of `snap`: any kind but a delivery worker (which
/// the supervisor restarts, and whose stall stops only its destination).
pub fn stalled_essential(snap: &Snapshot) -> Option<String> {
    snap.workers
        .iter()
        .find(|w| w.state == WorkerState::Stalled && w.kind != Kind::Delivery)
        .map(|w| w.name.clone())
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.status_path);
    }
}

/// What one tick needs.
struct Tick {
    watchdog: Watchdog,
    events: EventLog,
    status_path: PathBuf,
    /// Event 5004 was emitted and no write has succeeded since.
    write_failed: bool,
}

impl Tick {
    /// One check; returns the first stalled essential worker, if any.
    fn run(&mut self) -> Option<String> {
        let wd = &self.watchdog;
        for t in wd.check(wd.now_ms()) {
            match t.change {
                Change::Stalled => {
                    let action = if t.restartable { "restart" } else { "report" };
                    self.events.emit(
                        &catalog::WATCHDOG_STALLED,
                        fields!(
                            "worker" => t.worker,
                            "kind" => t.kind,
                            "no_progress_ms" => t.waited_ms,
                            "waiting" => t.waiting,
                            "processed" => t.processed,
                            "action" => action,
                        ),
                    );
                    if t.restartable
                        && let Some(restarts) = wd.restart(t.id)
                    {
                        self.events.emit(
                            &catalog::WATCHDOG_RESTARTED,
                            fields!(
                                "worker" => t.worker,
                                "kind" => t.kind,
                                "restarts" => restarts,
                            ),
                        );
                    }
                }
                Change::Recovered | Change::Ended => {
                    let how = if t.change == Change::Ended {
                        "ended"
                    } else {
                        "progress"
                    };
                    self.events.emit(
                        &catalog::WATCHDOG_RECOVERED,
                        fields!(
                            "worker" => t.worker,
                            "kind" => t.kind,
                            "how" => how,
                            "stalled_ms" => t.waited_ms,
                        ),
                    );
                }
            }
        }
        let snapshot = wd.snapshot(wd.now_ms(), unix_ms());
        let stalled = stalled_essential(&snapshot);
        match snapshot.write_to(&self.status_path) {
            Ok(()) => self.write_failed = false,
            Err(e) if !self.write_failed => {
                self.write_failed = true;
                self.events.emit(
                    &catalog::WATCHDOG_STATUS_FAILED,
                    fields!("file" => self.status_path.display(), "error" => e),
                );
            }
            Err(_) => {}
        }
        stalled
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use tern_events::EventLog;
    use tern_watchdog::{Kind, ManualClock, Watchdog};

    use super::{Pinger, SystemdWatchdog, stalled_essential};
    use crate::notify::Notifier;

    #[test]
    fn only_a_stalled_essential_worker_counts() {
        let clock = Arc::new(ManualClock::new(1_000));
        let wd = Watchdog::with_clock(Duration::from_secs(2), clock.clone());
        let delivery = wd.register("delivery#1@smtp:x", Kind::Delivery);
        delivery.busy(true);
        let scheduler = wd.register("queue.scheduler", Kind::QueueManager);
        let snap = |wd: &Watchdog| {
            wd.check(wd.now_ms());
            wd.snapshot(wd.now_ms(), 0)
        };
        clock.advance(Duration::from_secs(3));
        assert_eq!(stalled_essential(&snap(&wd)), None, "a delivery stall");
        scheduler.busy(true);
        clock.advance(Duration::from_secs(3));
        assert_eq!(
            stalled_essential(&snap(&wd)).as_deref(),
            Some("queue.scheduler")
        );
        scheduler.progress();
        scheduler.busy(false);
        assert_eq!(stalled_essential(&snap(&wd)), None, "recovered");
    }

    #[test]
    fn pings_only_when_armed_and_healthy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let manager = UnixDatagram::bind(&path).unwrap();
        manager.set_nonblocking(true).unwrap();
        let armed = Arc::new(AtomicBool::new(false));
        let mut p = Pinger {
            systemd: SystemdWatchdog {
                notifier: Notifier::connect(&path.into_os_string()).unwrap(),
                every: Duration::from_millis(500),
                armed: Arc::clone(&armed),
            },
            events: EventLog::open(None, false).unwrap(),
            withheld: false,
            send_failed: false,
        };
        let got = || {
            let mut buf = [0u8; 64];
            let mut n = 0;
            while manager.recv(&mut buf).is_ok() {
                n += 1;
            }
            n
        };
        p.ping(None);
        assert_eq!(got(), 0, "no ping before READY=1");
        armed.store(true, std::sync::atomic::Ordering::Release);
        p.ping(None);
        p.ping(None);
        assert_eq!(got(), 2);
        p.ping(Some("queue.scheduler"));
        p.ping(Some("queue.scheduler"));
        assert_eq!(got(), 0, "withheld while stalled");
        assert!(p.withheld);
        p.ping(None);
        assert_eq!(got(), 1, "resumed");
        assert!(!p.withheld);
    }
}
