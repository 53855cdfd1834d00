//! The stall decision, driven by a hand-moved clock: no test sleeps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;

const STALL: Duration = Duration::from_secs(60);

fn setup() -> (Watchdog, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_000));
    (Watchdog::with_clock(STALL, clock.clone()), clock)
}

fn changes(t: &[Transition]) -> Vec<(String, Change)> {
    t.iter().map(|t| (t.worker.clone(), t.change)).collect()
}

#[test]
fn a_busy_worker_without_progress_stalls_once() {
    let (wd, clock) = setup();
    let beat = wd.register("queue.scheduler", Kind::QueueManager);
    beat.busy(true);
    clock.advance(STALL);
    assert!(
        wd.check(wd.now_ms()).is_empty(),
        "exactly the limit is not a stall"
    );
    clock.advance(Duration::from_millis(1));
    let t = wd.check(wd.now_ms());
    assert_eq!(changes(&t), [("queue.scheduler".into(), Change::Stalled)]);
    assert_eq!(t[0].waited_ms, 60_001);
    assert!(!t[0].restartable);
    // Still stuck: no second event for the same episode.
    for _ in 0..10 {
        clock.advance(Duration::from_secs(30));
        assert!(wd.check(wd.now_ms()).is_empty());
    }
    let snap = wd.snapshot(wd.now_ms(), 0);
    assert_eq!(snap.workers[0].state, WorkerState::Stalled);
    assert_eq!(snap.stalls.len(), 1);
    assert_eq!(snap.stalls[0].outcome, StallOutcome::Ongoing);
    assert_eq!(snap.totals[0].stalls, 1);
}

#[test]
fn an_idle_worker_never_stalls_and_new_work_starts_its_clock() {
    let (wd, clock) = setup();
    let beat = wd.register("dns", Kind::Dns);
    clock.advance(Duration::from_secs(3600));
    assert!(wd.check(wd.now_ms()).is_empty(), "idle for an hour is fine");
    // Work arrives after the long idle time: judged from when it arrived.
    let item = beat.item();
    clock.advance(Duration::from_secs(59));
    assert!(wd.check(wd.now_ms()).is_empty());
    assert_eq!(
        wd.snapshot(wd.now_ms(), 0).workers[0].state,
        WorkerState::Busy
    );
    item.done();
    assert_eq!(beat.processed(), 1);
    let snap = wd.snapshot(wd.now_ms(), 0);
    assert_eq!(snap.workers[0].state, WorkerState::Idle);
    assert_eq!(snap.workers[0].waiting, 0);
    // The same for busy().
    clock.advance(Duration::from_secs(600));
    beat.busy(true);
    clock.advance(Duration::from_secs(59));
    assert!(wd.check(wd.now_ms()).is_empty());
}

#[test]
fn the_budget_of_bounded_io_extends_the_limit() {
    let (wd, clock) = setup();
    let beat = wd.register("delivery#1@mx:example.com", Kind::Delivery);
    beat.busy(true);
    beat.set_budget(Duration::from_secs(300));
    clock.advance(Duration::from_secs(299));
    assert!(
        wd.check(wd.now_ms()).is_empty(),
        "within the SMTP stage timeout"
    );
    clock.advance(Duration::from_secs(2));
    let t = wd.check(wd.now_ms());
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].change, Change::Stalled);
    // A budget below stall_after does not shorten the limit.
    let other = wd.register("delivery#2@mx:example.com", Kind::Delivery);
    other.busy(true);
    other.set_budget(Duration::from_secs(5));
    clock.advance(Duration::from_secs(30));
    assert!(wd.check(wd.now_ms()).is_empty());
}

#[test]
fn bounded_restores_the_budget_and_counts_progress() {
    let (wd, _clock) = setup();
    let beat = wd.register("delivery#1@x", Kind::Delivery);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let outer = beat.bounded(Duration::from_secs(10), async {
        let inner = beat.bounded(Duration::from_secs(20), async { 7 });
        assert_eq!(inner.await, 7);
        assert_eq!(wd.snapshot(wd.now_ms(), 0).workers[0].budget_ms, 10_000);
        8
    });
    let mut outer = std::pin::pin!(outer);
    assert_eq!(
        outer.as_mut().poll(&mut cx),
        std::task::Poll::Ready(8),
        "no await point is pending"
    );
    assert_eq!(wd.snapshot(wd.now_ms(), 0).workers[0].budget_ms, 0);
    assert_eq!(beat.processed(), 2);
}

#[test]
fn progress_recovers_a_stalled_worker_and_a_new_stall_is_a_new_episode() {
    let (wd, clock) = setup();
    let beat = wd.register("spool.sync.incoming", Kind::SpoolWriter);
    beat.add_waiting(3);
    clock.advance(Duration::from_secs(61));
    assert_eq!(wd.check(wd.now_ms())[0].change, Change::Stalled);
    clock.advance(Duration::from_secs(9));
    beat.done_waiting(3);
    beat.progress();
    let t = wd.check(wd.now_ms());
    assert_eq!(
        changes(&t),
        [("spool.sync.incoming".into(), Change::Recovered)]
    );
    assert_eq!(t[0].waited_ms, 9_000, "how long the stall lasted");
    assert!(wd.check(wd.now_ms()).is_empty());
    beat.add_waiting(1);
    clock.advance(Duration::from_secs(61));
    assert_eq!(wd.check(wd.now_ms())[0].change, Change::Stalled);
    let snap = wd.snapshot(wd.now_ms(), 0);
    assert_eq!(snap.stalls.len(), 2);
    assert_eq!(snap.stalls[0].outcome, StallOutcome::Recovered);
    assert_eq!(snap.stalls[1].outcome, StallOutcome::Ongoing);
    assert_eq!(snap.totals[0].stalls, 2);
}

#[test]
fn a_keep_alive_worker_must_beat_even_without_work() {
    let (wd, clock) = setup();
    let beat = wd.register("listener.smtp", Kind::Listener);
    beat.keep_alive(true);
    for _ in 0..100 {
        clock.advance(Duration::from_secs(50));
        beat.beat();
        assert!(wd.check(wd.now_ms()).is_empty());
    }
    assert_eq!(beat.processed(), 0, "beats are not items");
    clock.advance(Duration::from_secs(61));
    assert_eq!(wd.check(wd.now_ms())[0].change, Change::Stalled);
}

#[test]
fn restart_calls_the_hook_outside_the_lock_and_the_end_is_reported() {
    let (wd, clock) = setup();
    let calls = Arc::new(AtomicUsize::new(0));
    let beat = {
        let calls = Arc::clone(&calls);
        // The hook uses the registry itself: it would deadlock if called under the lock.
        let wd2 = wd.clone();
        wd.register_restartable("delivery#9@smtp:relay", Kind::Delivery, move || {
            let _ = wd2.snapshot(wd2.now_ms(), 0);
            calls.fetch_add(1, Ordering::SeqCst);
        })
    };
    beat.busy(true);
    clock.advance(Duration::from_secs(61));
    let t = wd.check(wd.now_ms());
    assert_eq!(t.len(), 1);
    assert!(t[0].restartable);
    assert_eq!(wd.restart(t[0].id), Some(1));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let snap = wd.snapshot(wd.now_ms(), 0);
    assert_eq!(snap.workers[0].restarts, 1);
    assert!(snap.stalls[0].restarted);
    assert_eq!(snap.totals[0].restarts, 1);
    // The restarted worker goes away: its episode ends, its entry is gone.
    drop(beat);
    clock.advance(Duration::from_secs(1));
    let t = wd.check(wd.now_ms());
    assert_eq!(
        changes(&t),
        [("delivery#9@smtp:relay".into(), Change::Ended)]
    );
    assert_eq!(t[0].waited_ms, 1_000);
    let snap = wd.snapshot(wd.now_ms(), 0);
    assert!(snap.workers.is_empty());
    assert_eq!(snap.stalls[0].outcome, StallOutcome::Ended);
    assert_eq!(wd.restart(t[0].id), None, "nothing left to restart");
}

#[test]
fn workers_without_a_hook_are_not_restarted() {
    let (wd, clock) = setup();
    let beat = wd.register("queue.scheduler", Kind::QueueManager);
    beat.busy(true);
    clock.advance(Duration::from_secs(61));
    let t = wd.check(wd.now_ms());
    assert_eq!(wd.restart(t[0].id), None);
    assert!(
        beat.on_restart(|| {}),
        "a hook can be set after registering"
    );
    assert_eq!(wd.restart(t[0].id), Some(1));
    assert!(!beat.on_restart(|| {}), "a hook is set once");
}

#[test]
fn dropped_heartbeats_unregister_without_events_unless_stalled() {
    let (wd, clock) = setup();
    let a = wd.register("delivery#1@x", Kind::Delivery);
    let b = a.clone();
    drop(a);
    assert_eq!(
        wd.snapshot(wd.now_ms(), 0).workers.len(),
        1,
        "a clone keeps it"
    );
    drop(b);
    clock.advance(Duration::from_secs(1));
    assert!(wd.check(wd.now_ms()).is_empty());
    assert!(wd.snapshot(wd.now_ms(), 0).workers.is_empty());
}

#[test]
fn waiting_never_goes_below_zero_and_detached_heartbeats_work() {
    let beat = Heartbeat::detached("alone", Kind::Dns);
    beat.done_waiting(5);
    beat.add_waiting(2);
    beat.done_waiting(5);
    {
        let _cancelled = beat.item();
    }
    beat.item().done();
    assert_eq!(beat.processed(), 1);
    assert!(format!("{beat:?}").contains("waiting: 0"), "{beat:?}");
}

#[test]
fn recent_stalls_are_bounded() {
    let (wd, clock) = setup();
    let beats: Vec<_> = (0..RECENT_STALLS + 5)
        .map(|i| {
            let b = wd.register(format!("w{i}"), Kind::Delivery);
            b.busy(true);
            b
        })
        .collect();
    clock.advance(Duration::from_secs(61));
    assert_eq!(wd.check(wd.now_ms()).len(), beats.len());
    let snap = wd.snapshot(wd.now_ms(), 0);
    assert_eq!(snap.stalls.len(), RECENT_STALLS);
    assert_eq!(snap.stalls[0].worker, "w5", "the oldest are dropped first");
}

#[test]
fn the_tick_follows_the_stall_limit_within_bounds() {
    let clock = Arc::new(ManualClock::new(0));
    let tick =
        |secs| Watchdog::with_clock(Duration::from_secs(secs), clock.clone()).tick_interval();
    assert_eq!(tick(60), Duration::from_secs(1));
    assert_eq!(tick(2), Duration::from_millis(500));
    assert_eq!(tick(0), Duration::from_millis(100));
}

#[test]
fn snapshots_round_trip_through_the_status_file() {
    let (wd, clock) = setup();
    let beat = wd.register("queue.scheduler", Kind::QueueManager);
    beat.busy(true);
    clock.advance(Duration::from_secs(61));
    wd.check(wd.now_ms());
    let snap = wd.snapshot(wd.now_ms(), 1_700_000_000_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("status.json");
    snap.write_to(&path).unwrap();
    assert!(!dir.path().join("status.json.tmp").exists());
    assert_eq!(Snapshot::read_from(&path).unwrap(), snap);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"state\": \"stalled\""), "{text}");
    assert!(text.contains("\"kind\": \"queue_manager\""), "{text}");

    std::fs::write(&path, b"{\"format\": 99}").unwrap();
    assert!(matches!(
        Snapshot::read_from(&path),
        Err(StatusError::Format { .. })
    ));
    std::fs::write(&path, vec![b' '; (status::MAX_STATUS_BYTES + 1) as usize]).unwrap();
    assert!(matches!(
        Snapshot::read_from(&path),
        Err(StatusError::TooLarge { .. })
    ));
    assert!(matches!(
        Snapshot::read_from(&dir.path().join("missing.json")),
        Err(StatusError::Io { .. })
    ));
}
