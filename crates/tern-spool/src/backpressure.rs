//! Back pressure: refuse new mail (452 4.3.1) while the spool disk is nearly full or the
//! queue is too long, so that mail already accepted is never put at risk.
//!
//! A background task re-evaluates the disk every `check_interval_ms` (and once,
//! synchronously, in [`BackPressure::start`]) and publishes the result in atomics; the
//! queue length is checked inline on every call because `Spool::queued` is itself an
//! atomic. [`BackPressure::refusing`] therefore takes no lock and does no I/O.
//!
//! Invariants:
//! - Events 3004 (on) and 3005 (off) are emitted once per change of the state seen by
//!   the periodic evaluation, with the reason and the figures, never once per message.
//! - The task holds only a weak reference: it ends at its next tick after the last
//!   [`BackPressure`] handle is dropped.
//! - A failed statvfs keeps the previous disk verdict and emits event 3006.
//!
//! Trust: the configuration comes from the operator; out-of-range percentages are
//! clamped to 0..=100 (NaN counts as 0), and an interval of 0 is treated as 1 ms.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tern_events::{EventLog, catalog, fields};

use crate::store::{DiskSpace, Spool};

/// Thresholds for back pressure. All fields have defaults. Unknown keys are reported by
/// the binary's config loader (`serde_ignored`), which sees the whole file at once.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct BackPressureConfig {
    /// Refuse while free space is below this percentage of the filesystem (default 5).
    pub min_free_percent: f64,
    /// Refuse while free space is below this many bytes (default 512 MiB).
    pub min_free_bytes: u64,
    /// Refuse while this many messages are queued (default 200,000).
    pub max_queued_messages: usize,
    /// How often the disk is checked, in milliseconds (default 1000).
    pub check_interval_ms: u64,
}

impl Default for BackPressureConfig {
    fn default() -> Self {
        BackPressureConfig {
            min_free_percent: 5.0,
            min_free_bytes: 512 * 1024 * 1024,
            max_queued_messages: 200_000,
            check_interval_ms: 1000,
        }
    }
}

impl BackPressureConfig {
    /// The free-space threshold in bytes for a filesystem of `total` bytes: the larger of
    /// `min_free_bytes` and `min_free_percent` of `total`.
    pub fn threshold_bytes(&self, total: u64) -> u64 {
        let pct = if self.min_free_percent.is_nan() {
            0.0
        } else {
            self.min_free_percent.clamp(0.0, 100.0)
        };
        // `as` saturates for floats; the product is at most `total`.
        let by_percent = (total as f64 * pct / 100.0) as u64;
        by_percent.max(self.min_free_bytes)
    }
}

/// Why new mail is being refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackPressureReason {
    /// Free space on the spool's filesystem is below the threshold.
    DiskSpace {
        /// Bytes available.
        available: u64,
        /// Bytes that must stay available.
        threshold: u64,
    },
    /// The queue holds `limit` messages or more.
    QueueFull {
        /// Messages queued.
        queued: usize,
        /// `max_queued_messages`.
        limit: usize,
    },
}

impl std::fmt::Display for BackPressureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackPressureReason::DiskSpace {
                available,
                threshold,
            } => write!(
                f,
                "spool disk has {available} bytes free, below the threshold of {threshold}"
            ),
            BackPressureReason::QueueFull { queued, limit } => {
                write!(f, "{queued} messages queued, limit {limit}")
            }
        }
    }
}

struct Shared {
    /// `None` for [`BackPressure::disabled`].
    spool: Option<Spool>,
    config: BackPressureConfig,
    events: EventLog,
    /// Disk verdict of the last evaluation and its figures.
    disk_low: AtomicBool,
    available: AtomicU64,
    threshold: AtomicU64,
    /// Whether the last evaluation (disk or queue) was refusing; only the evaluator
    /// writes it, to log changes once.
    announced: AtomicBool,
    /// Evaluations done so far (lets tests wait for the periodic task).
    evaluations: AtomicU64,
}

/// Handle to the back-pressure state; cheap to clone.
#[derive(Clone)]
pub struct BackPressure {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BackPressure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackPressure")
            .field("refusing", &self.refusing())
            .finish()
    }
}

impl BackPressure {
    /// Evaluates once now, then spawns a tokio task that re-evaluates every
    /// `check_interval_ms`. Outside a tokio runtime only the first evaluation happens.
    pub fn start(spool: Spool, config: BackPressureConfig, events: EventLog) -> BackPressure {
        let shared = Arc::new(Shared {
            spool: Some(spool.clone()),
            config,
            events,
            disk_low: AtomicBool::new(false),
            available: AtomicU64::new(0),
            threshold: AtomicU64::new(0),
            announced: AtomicBool::new(false),
            evaluations: AtomicU64::new(0),
        });
        let disk = spool.disk_space();
        evaluate(&shared, disk);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let interval = Duration::from_millis(shared.config.check_interval_ms.max(1));
            rt.spawn(run(Arc::downgrade(&shared), interval));
        }
        BackPressure { shared }
    }

    /// Back pressure that never refuses, for a receiver whose intake is not the spool
    /// (`tern sendmail -bs` writes into the pickup directory; the server applies back
    /// pressure when it picks the files up). No task, no I/O.
    pub fn disabled() -> BackPressure {
        BackPressure {
            shared: Arc::new(Shared {
                spool: None,
                config: BackPressureConfig::default(),
                events: EventLog::discard(),
                disk_low: AtomicBool::new(false),
                available: AtomicU64::new(0),
                threshold: AtomicU64::new(0),
                announced: AtomicBool::new(false),
                evaluations: AtomicU64::new(0),
            }),
        }
    }

    /// `Some(reason)` while new mail must be refused with `452 4.3.1`. No lock, no I/O.
    pub fn refusing(&self) -> Option<BackPressureReason> {
        queue_full(&self.shared).or_else(|| disk_low(&self.shared))
    }
}

fn queue_full(s: &Shared) -> Option<BackPressureReason> {
    let queued = s.spool.as_ref()?.queued();
    let limit = s.config.max_queued_messages;
    (queued >= limit).then_some(BackPressureReason::QueueFull { queued, limit })
}

fn disk_low(s: &Shared) -> Option<BackPressureReason> {
    s.disk_low
        .load(Ordering::Acquire)
        .then(|| BackPressureReason::DiskSpace {
            available: s.available.load(Ordering::Relaxed),
            threshold: s.threshold.load(Ordering::Relaxed),
        })
}

async fn run(shared: Weak<Shared>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick completes at once; `start` already evaluated.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(s) = shared.upgrade() else { return };
        let Some(spool) = s.spool.clone() else { return };
        let disk = tokio::task::spawn_blocking(move || spool.disk_space())
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        evaluate(&s, disk);
    }
}

fn evaluate(s: &Shared, disk: std::io::Result<DiskSpace>) {
    match disk {
        Ok(d) => {
            let threshold = s.config.threshold_bytes(d.total);
            s.available.store(d.available, Ordering::Relaxed);
            s.threshold.store(threshold, Ordering::Relaxed);
            s.disk_low.store(d.available < threshold, Ordering::Release);
        }
        Err(e) => s.events.emit(
            &catalog::SPOOL_IO_ERROR,
            fields!(
                "file" => s.spool.as_ref().map(|sp| sp.dir().display().to_string()).unwrap_or_default(),
                "op" => "statvfs",
                "error" => e,
            ),
        ),
    }
    let reason = queue_full(s).or_else(|| disk_low(s));
    let was = s.announced.swap(reason.is_some(), Ordering::AcqRel);
    match (was, reason) {
        (false, Some(r)) => s.events.emit(&catalog::BACK_PRESSURE_ON, reason_fields(&r)),
        (true, None) => s.events.emit(
            &catalog::BACK_PRESSURE_OFF,
            fields!(
                "queued" => s.spool.as_ref().map_or(0, Spool::queued),
                "available" => s.available.load(Ordering::Relaxed),
                "threshold" => s.threshold.load(Ordering::Relaxed),
            ),
        ),
        _ => {}
    }
    s.evaluations.fetch_add(1, Ordering::Relaxed);
}

fn reason_fields(r: &BackPressureReason) -> tern_events::Fields {
    match r {
        BackPressureReason::DiskSpace {
            available,
            threshold,
        } => fields!("reason" => "disk_space", "available" => available, "threshold" => threshold),
        BackPressureReason::QueueFull { queued, limit } => {
            fields!("reason" => "queue_full", "queued" => queued, "limit" => limit)
        }
    }
}

#[cfg(test)]
mod tests;
