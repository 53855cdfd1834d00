//! `tern status`: the watchdog's view of the running server, from `status.json` in the
//! data directory (written by the server's supervisor every tick; see `supervise`).
//!
//! Whether a server runs is decided by the spool lock (as `tern reload` does), not by the
//! snapshot. The snapshot is **stale** when it is older than [`STALE_TICKS`] ticks (at
//! least [`MIN_STALE_MS`]) or was written by another process than the one holding the
//! lock; a stale snapshot is still shown, with a warning, because it is the last thing the
//! watchdog saw.
//!
//! `--json` prints one object: `running`, `pid` (the lock holder), `stale`, `age_ms`, and
//! `snapshot` (the file's content, or `null`). Exit status 0 only when the server runs
//! and the snapshot is fresh.
//!
//! Trust: the snapshot is read from disk, bounded and validated by `tern_watchdog`.

use std::io::Write;
use tern_watchdog::clock::unix_ms;

use anyhow::Context;
use tern_watchdog::{Snapshot, StallOutcome, StatusError, WorkerStatus};

use crate::config::Config;

/// A snapshot older than this many supervisor ticks is stale.
pub const STALE_TICKS: u64 = 5;
/// ... and never stale before this age.
pub const MIN_STALE_MS: u64 = 2000;

/// What `tern status` found.
struct Found {
    /// The process holding the spool lock.
    pid: Option<u32>,
    snapshot: Option<Snapshot>,
    /// Why there is no snapshot, when the file exists but cannot be used.
    unreadable: Option<String>,
    age_ms: Option<u64>,
    stale: bool,
}

fn find(config: &Config) -> anyhow::Result<Found> {
    let dir = config.spool_dir();
    let pid = tern_spool::Spool::lock_holder(&dir)
        .with_context(|| format!("reading the spool lock in {}", dir.display()))?;
    let (snapshot, unreadable) = match Snapshot::read_from(&config.status_path()) {
        Ok(s) => (Some(s), None),
        Err(StatusError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            (None, None)
        }
        Err(e) => (None, Some(e.to_string())),
    };
    let age_ms = snapshot
        .as_ref()
        .map(|s| unix_ms().saturating_sub(s.written_unix_ms));
    let stale = match (&snapshot, age_ms) {
        (Some(s), Some(age)) => {
            age > s.tick_ms.saturating_mul(STALE_TICKS).max(MIN_STALE_MS) || pid != Some(s.pid)
        }
        _ => true,
    };
    Ok(Found {
        pid,
        snapshot,
        unreadable,
        age_ms,
        stale,
    })
}

/// Prints the status; `Ok(true)` when the server runs and the snapshot is fresh.
pub fn show(config: &Config, json: bool) -> anyhow::Result<bool> {
    let found = find(config)?;
    let healthy = found.pid.is_some() && !found.stale;
    let mut out = crate::term::stdout();
    if json {
        let obj = serde_json::json!({
            "running": found.pid.is_some(),
            "pid": found.pid,
            "stale": found.stale,
            "age_ms": found.age_ms,
            "snapshot": found.snapshot,
        });
        writeln!(out, "{obj}")?;
        return Ok(healthy);
    }
    let spool = config.spool_dir();
    let Some(pid) = found.pid else {
        writeln!(
            out,
            "tern is not running (no server holds {})",
            spool.display()
        )?;
        if let Some(s) = &found.snapshot {
            writeln!(
                out,
                "last status snapshot: {} by pid {} (a server that did not stop cleanly)",
                time_of(s.written_unix_ms),
                s.pid
            )?;
        }
        return Ok(false);
    };
    let Some(snap) = &found.snapshot else {
        match &found.unreadable {
            Some(why) => writeln!(out, "tern is running (pid {pid}); status unreadable: {why}")?,
            None => writeln!(
                out,
                "tern is running (pid {pid}) but has written no status snapshot yet (or [watchdog] enabled = false)"
            )?,
        }
        return Ok(false);
    };
    let age = found.age_ms.unwrap_or(0);
    if found.stale {
        writeln!(
            out,
            "WARNING: the status snapshot is stale: written {} ago by pid {} (server pid {pid}); the watchdog itself may be stuck",
            duration(age),
            snap.pid
        )?;
    }
    writeln!(
        out,
        "tern pid {pid}, watching since {}, stall after {}; snapshot {} old",
        time_of(snap.started_unix_ms),
        duration(snap.stall_after_ms),
        duration(age)
    )?;
    for (k, v) in &snap.notes {
        writeln!(out, "{k}: {v}")?;
    }
    writeln!(out)?;
    write_snapshot_body(&mut out, snap)?;
    Ok(healthy)
}

/// The workers table and the recent stalls of `snap` (also for `tern status` over the
/// API).
pub fn write_snapshot_body(out: &mut impl Write, snap: &Snapshot) -> std::io::Result<()> {
    table(out, &snap.workers)?;
    if !snap.stalls.is_empty() {
        writeln!(out)?;
        writeln!(out, "Recent stalls:")?;
        for r in &snap.stalls {
            let ending = match (r.outcome, r.ended_at_unix_ms) {
                (StallOutcome::Ongoing, _) => "still stalled".to_string(),
                (StallOutcome::Recovered, Some(t)) => format!("recovered {}", time_of(t)),
                (StallOutcome::Ended, Some(t)) => format!("ended {}", time_of(t)),
                (o, None) => format!("{o:?}").to_lowercase(),
            };
            let waiting = if r.waiting > 0 {
                format!(", {} waiting", r.waiting)
            } else {
                String::new()
            };
            writeln!(
                out,
                "  {}  {} ({}): no progress for {}{waiting}; {}{}",
                time_of(r.stalled_at_unix_ms),
                r.worker,
                r.kind,
                duration(r.waited_ms),
                if r.restarted { "restarted; " } else { "" },
                ending
            )?;
        }
    }
    Ok(())
}

fn table(out: &mut impl Write, workers: &[WorkerStatus]) -> std::io::Result<()> {
    let width = workers
        .iter()
        .map(|w| w.name.chars().count())
        .max()
        .unwrap_or(0)
        .max("WORKER".len());
    writeln!(
        out,
        "{:<width$}  {:<13}  {:<7}  {:>9}  {:>13}  {:>7}  {:>8}",
        "WORKER", "KIND", "STATE", "PROCESSED", "LAST PROGRESS", "WAITING", "RESTARTS"
    )?;
    for w in workers {
        writeln!(
            out,
            "{:<width$}  {:<13}  {:<7}  {:>9}  {:>13}  {:>7}  {:>8}",
            w.name,
            w.kind.as_str(),
            w.state.as_str(),
            w.processed,
            format!("{} ago", duration(w.last_progress_ms)),
            w.waiting,
            w.restarts
        )?;
    }
    Ok(())
}

/// `850 ms`, `2.4 s`, `3 min 20 s`, `5 h 2 min`.
fn duration(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..60_000 => format!("{}.{} s", ms / 1000, ms % 1000 / 100),
        60_000..3_600_000 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

fn time_of(unix_ms: u64) -> String {
    crate::queue::rfc3339(i64::try_from(unix_ms.saturating_mul(1000)).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::duration;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(2_450), "2.4 s");
        assert_eq!(duration(200_000), "3 min 20 s");
        assert_eq!(duration(18_120_000), "5 h 2 min");
    }
}
