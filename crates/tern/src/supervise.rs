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

use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use tern_events::{EventLog, catalog, fields};
use tern_watchdog::{Change, Watchdog};

/// The running supervisor thread.
pub struct Supervisor {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    status_path: PathBuf,
}

impl Supervisor {
    /// Starts supervising `watchdog`, writing snapshots to `status_path`.
    pub fn start(
        watchdog: Watchdog,
        events: EventLog,
        status_path: PathBuf,
    ) -> std::io::Result<Supervisor> {
        let (stop, stopped) = mpsc::channel::<()>();
        let path = status_path.clone();
        let thread = std::thread::Builder::new()
            .name("tern-watchdog".into())
            .spawn(move || {
                let mut tick = Tick {
                    watchdog,
                    events,
                    status_path: path,
                    write_failed: false,
                };
                let every = tick.watchdog.tick_interval();
                loop {
                    tick.run();
                    match stopped.recv_timeout(every) {
                        Err(RecvTimeoutError::Timeout) => {}
                        // Stop requested (or the handle is gone).
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })?;
        Ok(Supervisor {
            stop: Some(stop),
            thread: Some(thread),
            status_path,
        })
    }
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

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Tick {
    fn run(&mut self) {
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
    }
}
