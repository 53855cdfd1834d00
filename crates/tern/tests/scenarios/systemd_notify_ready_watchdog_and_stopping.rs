//! Issue 6 §6, systemd's `Type=notify` and `WatchdogSec=` (dist/tern.service): the test
//! plays the service manager. It binds the datagram socket systemd would pass in
//! `$NOTIFY_SOCKET`, sets `$WATCHDOG_USEC`, and checks that Tern sends `READY=1` only
//! once its SMTP port accepts, `WATCHDOG=1` every half `WATCHDOG_USEC`, `RELOADING=1`
//! then `READY=1` around a SIGHUP and `STOPPING=1` at SIGTERM; and that when an
//! essential worker freezes (the scheduler, through the test build's
//! `TERN_FAULT_FREEZE_SCHEDULER_ON`) the pings stop, so systemd would restart Tern.

use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::{Setup, Tern, send_one, simple_message};

/// 1 s: pings every 500 ms.
const WATCHDOG_USEC: &str = "1000000";
const MARKER: &str = "Subject: freezes the scheduler";

/// One notification as the test's "service manager" got it.
#[derive(Debug)]
struct Note {
    text: String,
    at: Instant,
    /// For `READY=1`: whether the SMTP port accepted a connection right after it came.
    smtp_accepted: Option<bool>,
}

/// The manager's socket, read by a thread that connects to `smtp` the moment a
/// `READY=1` arrives (so a READY sent before the listener was bound would be caught).
struct Manager {
    rx: mpsc::Receiver<Note>,
    _dir: tempfile::TempDir,
    path: String,
}

impl Manager {
    fn start(smtp: impl Fn() -> Option<std::net::SocketAddr> + Send + 'static) -> Manager {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            let end = Instant::now() + Duration::from_secs(240);
            while Instant::now() < end {
                let Ok(n) = socket.recv(&mut buf) else {
                    continue;
                };
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let smtp_accepted = text.lines().any(|l| l == "READY=1").then(|| {
                    smtp().is_some_and(|a| {
                        TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok()
                    })
                });
                let note = Note {
                    text,
                    at: Instant::now(),
                    smtp_accepted,
                };
                if tx.send(note).is_err() {
                    return;
                }
            }
        });
        let path = path.display().to_string();
        Manager {
            rx,
            _dir: dir,
            path,
        }
    }

    /// The next notification containing the line `line`, skipping others; panics after
    /// `limit`.
    fn wait_for(&self, line: &str, limit: Duration, seen: &mut Vec<Note>) -> Note {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(n) if n.text.lines().any(|l| l == line) => return n,
                Ok(n) => seen.push(n),
                Err(_) => panic!("no {line:?} within {limit:?}; got {seen:?}"),
            }
        }
    }

    /// Everything that arrives within `span`.
    fn collect(&self, span: Duration) -> Vec<Note> {
        let deadline = Instant::now() + span;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return got;
            }
            if let Ok(n) = self.rx.recv_timeout(left) {
                got.push(n);
            }
        }
    }
}

fn is_ping(n: &Note) -> bool {
    n.text == "WATCHDOG=1"
}

/// The SMTP address of a server about to start, shared with the manager's thread.
type Slot = std::sync::Arc<std::sync::Mutex<Option<std::net::SocketAddr>>>;

fn setup_with(manager: &Manager, setup: Setup) -> Setup {
    setup
        .env("NOTIFY_SOCKET", &manager.path)
        .env("WATCHDOG_USEC", WATCHDOG_USEC)
}

/// The SMTP address in `slot`, once the test knows it.
fn smtp_of(slot: &Slot) -> Option<std::net::SocketAddr> {
    *slot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn ready_after_listeners_pings_reload_and_stopping() {
    // The manager's thread connects to the SMTP port when READY=1 comes; the harness
    // picks the port, so the check is made on a restart, on the same port.
    let slot: Slot = Default::default();
    let for_thread = std::sync::Arc::clone(&slot);
    let manager = Manager::start(move || smtp_of(&for_thread));
    let mut tern: Tern = setup_with(&manager, Setup::new()).start();

    let mut seen = Vec::new();
    let ready = manager.wait_for("READY=1", Duration::from_secs(20), &mut seen);
    assert!(
        seen.iter().all(|n| !is_ping(n)),
        "a ping came before READY=1: {seen:?}"
    );
    assert!(
        ready.text.contains("STATUS=accepting mail on"),
        "{:?}",
        ready.text
    );
    assert_eq!(
        tern.wait_for_events(1001, 1, Duration::from_secs(5)).len(),
        1
    );

    // Pings every ~500 ms: within 3 s at least 4, none more often than every 200 ms.
    let notes = manager.collect(Duration::from_secs(3));
    let pings: Vec<&Note> = notes.iter().filter(|n| is_ping(n)).collect();
    assert!(pings.len() >= 4, "too few pings in 3 s: {notes:?}");
    assert!(pings.len() <= 10, "too many pings in 3 s: {notes:?}");
    for w in pings.windows(2) {
        let gap = w[1].at.duration_since(w[0].at);
        assert!(gap >= Duration::from_millis(200), "pings {gap:?} apart");
    }

    // A reload is announced and its end is READY=1 again.
    tern.signal(libc::SIGHUP);
    let mut seen = Vec::new();
    let reloading = manager.wait_for("RELOADING=1", Duration::from_secs(10), &mut seen);
    assert!(reloading.text.contains("MONOTONIC_USEC="), "{reloading:?}");
    let again = manager.wait_for("READY=1", Duration::from_secs(10), &mut seen);
    assert!(again.at >= reloading.at);

    // SIGTERM: STOPPING=1 comes, and the process exits cleanly.
    tern.signal(libc::SIGTERM);
    let mut seen = Vec::new();
    manager.wait_for("STOPPING=1", Duration::from_secs(10), &mut seen);
    let status = tern.wait_exit(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");

    // Started again on the same port, now known to the manager: the port accepted the
    // moment READY=1 came.
    *slot.lock().unwrap() = Some(tern.addr());
    tern.restart();
    let mut seen = Vec::new();
    let ready = manager.wait_for("READY=1", Duration::from_secs(20), &mut seen);
    assert_eq!(
        ready.smtp_accepted,
        Some(true),
        "READY=1 came before the SMTP port accepted"
    );
    tern.stop(Duration::from_secs(20));
}

#[test]
fn a_frozen_scheduler_stops_the_watchdog_pings() {
    let manager = Manager::start(|| None);
    let mut tern = setup_with(
        &manager,
        Setup::new()
            .queue("[queue]\ndeliver = true\nmin_backoff_secs = 1\nmax_backoff_secs = 2\n")
            .section("[watchdog]\nstall_after_secs = 2\n")
            // Never reached: the scheduler freezes when the job for it arrives.
            .section(
                "[[route]]\ndomains = [\"relay.test\"]\ntransport = \"smtp\"\nhosts = [\"127.0.0.1:9\"]\n",
            ),
    )
    .env("TERN_FAULT_FREEZE_SCHEDULER_ON", MARKER)
    .start();
    let mut seen = Vec::new();
    manager.wait_for("READY=1", Duration::from_secs(20), &mut seen);
    let before = manager.collect(Duration::from_secs(2));
    assert!(
        before.iter().filter(|n| is_ping(n)).count() >= 2,
        "healthy Tern pings: {before:?}"
    );

    send_one(
        tern.addr(),
        "s@client.test",
        &["r@relay.test"],
        &simple_message("freezes the scheduler", "its job freezes the queue manager"),
    );
    // The watchdog notices the scheduler (not restartable) and the pings are withheld.
    let stalled = tern.wait_for_events(5001, 1, Duration::from_secs(30));
    assert_eq!(stalled[0]["worker"], "queue.scheduler", "{stalled:?}");
    assert_eq!(stalled[0]["action"], "report");
    let withheld = tern.wait_for_events(7081, 1, Duration::from_secs(10));
    assert_eq!(withheld[0]["worker"], "queue.scheduler", "{withheld:?}");
    // A ping already in flight may still come; after that, silence for 6 intervals.
    let _ = manager.collect(Duration::from_millis(300));
    let after = manager.collect(Duration::from_secs(3));
    assert!(
        after.iter().all(|n| !is_ping(n)),
        "pings went on with the scheduler frozen: {after:?}"
    );
    assert!(
        tern.is_running(),
        "Tern itself keeps running; systemd restarts it"
    );
    assert!(tern.events_with_id(7082).is_empty(), "nothing recovered");
    // The frozen scheduler would hold the stop: end it the way systemd would.
    tern.kill9();
}
