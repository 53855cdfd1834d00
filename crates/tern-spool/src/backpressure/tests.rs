//! Back-pressure tests: queue limit, disk threshold, events once per change, config.

use std::path::Path;
use std::time::Duration;

use tern_events::EventLog;

use super::*;
use crate::testutil::envelope;

fn open_spool(dir: &Path) -> Spool {
    match Spool::open(dir, EventLog::discard()) {
        Ok((s, _)) => s,
        Err(e) => panic!("open: {e}"),
    }
}

async fn commit_one(spool: &Spool) {
    let mut w = spool.begin();
    w.write(b"x").await.unwrap_or_else(|e| panic!("{e}"));
    let env = envelope(w.id(), 1, 1);
    w.commit(env).await.unwrap_or_else(|e| panic!("{e}"));
}

fn no_disk_limit() -> BackPressureConfig {
    BackPressureConfig {
        min_free_percent: 0.0,
        min_free_bytes: 0,
        ..BackPressureConfig::default()
    }
}

fn lines_with_id(log: &EventLog, path: &Path, id: u64) -> Vec<serde_json::Value> {
    assert!(log.flush(Duration::from_secs(10)));
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["id"] == id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_limit_refuses_at_the_limit() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let spool = open_spool(dir.path());
    let config = BackPressureConfig {
        max_queued_messages: 3,
        ..no_disk_limit()
    };
    let bp = BackPressure::start(spool.clone(), config, EventLog::discard());
    assert_eq!(bp.refusing(), None);
    commit_one(&spool).await;
    commit_one(&spool).await;
    assert_eq!(spool.queued(), 2);
    assert_eq!(bp.refusing(), None);
    commit_one(&spool).await;
    // Checked inline: no need to wait for the periodic task.
    assert_eq!(
        bp.refusing(),
        Some(BackPressureReason::QueueFull {
            queued: 3,
            limit: 3
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_threshold_refuses_from_start_and_logs_once() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let events = dir.path().join("events.jsonl");
    let log = EventLog::open(Some(&events), false).unwrap_or_else(|e| panic!("{e}"));
    let spool = open_spool(&dir.path().join("spool"));
    let config = BackPressureConfig {
        min_free_bytes: u64::MAX,
        check_interval_ms: 5,
        ..BackPressureConfig::default()
    };
    let bp = BackPressure::start(spool, config, log.clone());
    match bp.refusing() {
        Some(BackPressureReason::DiskSpace {
            available,
            threshold,
        }) => {
            assert_eq!(threshold, u64::MAX);
            assert!(available < threshold);
        }
        other => panic!("expected DiskSpace, got {other:?}"),
    }
    // Let the periodic task re-evaluate several times; the state does not change, so
    // there must still be exactly one ON event.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while bp.shared.evaluations.load(Ordering::Relaxed) < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "evaluator task not running"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let on = lines_with_id(&log, &events, 3004);
    assert_eq!(on.len(), 1, "{on:?}");
    assert_eq!(on[0]["reason"], "disk_space");
    assert!(lines_with_id(&log, &events, 3005).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changes_are_logged_once_each() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let events = dir.path().join("events.jsonl");
    let log = EventLog::open(Some(&events), false).unwrap_or_else(|e| panic!("{e}"));
    let spool = open_spool(&dir.path().join("spool"));
    let config = BackPressureConfig {
        min_free_percent: 10.0,
        min_free_bytes: 0,
        check_interval_ms: 3_600_000,
        ..BackPressureConfig::default()
    };
    let bp = BackPressure::start(spool, config, log.clone());
    let s = &bp.shared;
    let full = DiskSpace {
        available: 5,
        total: 100,
    };
    let fine = DiskSpace {
        available: 50,
        total: 100,
    };
    evaluate(s, Ok(fine));
    assert_eq!(bp.refusing(), None);
    evaluate(s, Ok(full));
    evaluate(s, Ok(full));
    assert_eq!(
        bp.refusing(),
        Some(BackPressureReason::DiskSpace {
            available: 5,
            threshold: 10
        })
    );
    // A failed statvfs keeps the verdict.
    evaluate(s, Err(std::io::Error::other("boom")));
    assert!(bp.refusing().is_some());
    evaluate(s, Ok(fine));
    evaluate(s, Ok(fine));
    assert_eq!(bp.refusing(), None);
    let on = lines_with_id(&log, &events, 3004);
    let off = lines_with_id(&log, &events, 3005);
    assert_eq!((on.len(), off.len()), (1, 1), "on {on:?} off {off:?}");
    assert_eq!(on[0]["available"], "5");
    assert_eq!(on[0]["threshold"], "10");
    assert_eq!(lines_with_id(&log, &events, 3006).len(), 1);
}

#[test]
fn threshold_is_the_larger_of_bytes_and_percent() {
    let c = BackPressureConfig::default();
    assert_eq!(c.threshold_bytes(1_000), 512 * 1024 * 1024);
    assert_eq!(
        c.threshold_bytes(100 * 1024 * 1024 * 1024),
        5 * 1024 * 1024 * 1024
    );
    let odd = BackPressureConfig {
        min_free_percent: f64::NAN,
        min_free_bytes: 7,
        ..c.clone()
    };
    assert_eq!(odd.threshold_bytes(u64::MAX), 7);
    let over = BackPressureConfig {
        min_free_percent: 250.0,
        min_free_bytes: 0,
        ..c
    };
    assert_eq!(over.threshold_bytes(1000), 1000);
}

#[test]
fn config_defaults() {
    let c: BackPressureConfig = serde_json::from_str("{}").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c, BackPressureConfig::default());
    assert_eq!(c.max_queued_messages, 200_000);
    let c: BackPressureConfig =
        serde_json::from_str(r#"{"max_queued_messages": 5}"#).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.max_queued_messages, 5);
    assert_eq!(c.check_interval_ms, 1000);
}

#[test]
fn reasons_display_their_figures() {
    let r = BackPressureReason::QueueFull {
        queued: 3,
        limit: 3,
    };
    assert_eq!(r.to_string(), "3 messages queued, limit 3");
    let r = BackPressureReason::DiskSpace {
        available: 1,
        threshold: 2,
    };
    assert!(r.to_string().contains("1 bytes free"));
}

#[test]
fn disabled_back_pressure_never_refuses() {
    assert!(BackPressure::disabled().refusing().is_none());
}
