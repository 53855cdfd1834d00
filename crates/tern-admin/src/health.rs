//! `/healthz` and `/readyz`, for supervisors and load balancers: no token needed.
//!
//! - `/healthz`: 200 whenever the admin listener answers: the process is alive and its
//!   runtime schedules tasks.
//! - `/readyz`: 200 only when every SMTP listener is bound, the spool is writable (a
//!   probe file is created, fsynced and removed in the spool directory) and the spool is
//!   not in back pressure; otherwise 503. The body names each check and its result.
//!   On a cluster node the body also has `cluster` (`up`, `degraded`, `connecting`):
//!   degraded mode does not make the node unready, because mail keeps flowing on local
//!   limits and taking every node out of a balancer when Redis fails would stop all
//!   mail (docs/CLUSTER.md).
//!
//! The spool probe touches the disk, and `/readyz` needs no token, so its result is
//! reused for [`PROBE_FRESH`]: however often the endpoint is asked, the disk sees at most
//! one probe per second, and only one probe runs at a time (a request that comes while
//! one runs answers with the previous result).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use crate::state::AdminState;

/// `/readyz`'s body.
#[derive(Debug, Serialize)]
pub struct Readiness {
    /// All checks passed.
    pub ready: bool,
    /// Every SMTP listener is bound.
    pub listeners_up: bool,
    /// A probe file could be written and fsynced in the spool directory.
    pub spool_writable: bool,
    /// `None` when mail is accepted; otherwise why new mail gets 452 4.3.1.
    pub back_pressure: Option<String>,
    /// The shared control plane's state on a cluster node (`up`, `degraded`,
    /// `connecting`); absent on a node alone. Informational: it does not change `ready`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<&'static str>,
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// How long a spool probe's result is reused.
pub const PROBE_FRESH: Duration = Duration::from_secs(1);

/// The last spool probe's result and when it was taken.
#[derive(Debug, Default)]
pub struct ProbeCache {
    /// `(taken, writable)`; `None` before the first probe.
    last: Mutex<Option<(Instant, bool)>>,
    /// A probe is running.
    running: AtomicBool,
    /// Probes taken, for the tests.
    probes: AtomicU64,
}

impl ProbeCache {
    /// The last result when it is fresh enough, or when another probe is running.
    fn reuse(&self, now: Instant) -> Option<bool> {
        let last = *self.last.lock().unwrap_or_else(|p| p.into_inner());
        match last {
            Some((at, ok)) if now.duration_since(at) < PROBE_FRESH => Some(ok),
            Some((_, ok)) if self.running.load(Ordering::Acquire) => Some(ok),
            _ => None,
        }
    }

    /// Whether the spool directory is writable: a cached answer, or a new probe.
    async fn spool_writable(&self, dir: &std::path::Path) -> bool {
        if let Some(ok) = self.reuse(Instant::now()) {
            return ok;
        }
        // One probe at a time; a request that loses the race waits for nothing and takes
        // the previous answer (or, before any, probes as well: that happens once).
        let busy = self.running.swap(true, Ordering::AcqRel);
        if busy && let Some(ok) = self.reuse(Instant::now()) {
            return ok;
        }
        let dir = dir.to_path_buf();
        self.probes.fetch_add(1, Ordering::Relaxed);
        let ok = tokio::task::spawn_blocking(move || probe(&dir))
            .await
            .unwrap_or(false);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), ok));
        if !busy {
            self.running.store(false, Ordering::Release);
        }
        ok
    }

    /// Probes taken since the start.
    pub fn probes(&self) -> u64 {
        self.probes.load(Ordering::Relaxed)
    }
}

pub async fn readyz(State(state): State<Arc<AdminState>>) -> (StatusCode, Json<Readiness>) {
    let spool_writable =
        !state.spool.is_read_only() && state.readiness.spool_writable(state.spool.dir()).await;
    let back_pressure = state.back_pressure.refusing().map(|r| r.to_string());
    let listeners_up = state.listeners_up();
    let ready = listeners_up && spool_writable && back_pressure.is_none();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            ready,
            listeners_up,
            spool_writable,
            back_pressure,
            cluster: state.cluster.as_ref().map(|c| c.state().as_str()),
        }),
    )
}

/// Creates, fsyncs and removes a probe file in `dir`.
fn probe(dir: &std::path::Path) -> bool {
    let path = dir.join(format!(".readyz-probe-{}", std::process::id()));
    let ok = std::fs::File::create(&path)
        .and_then(|f| f.sync_all())
        .is_ok();
    let _ = std::fs::remove_file(&path);
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_of_requests_probes_the_disk_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = ProbeCache::default();
        for _ in 0..200 {
            assert!(cache.spool_writable(dir.path()).await);
        }
        assert_eq!(cache.probes(), 1);
        // Stale: the next request probes again.
        *cache.last.lock().expect("lock") = Some((Instant::now() - PROBE_FRESH * 2, true));
        assert!(cache.spool_writable(dir.path()).await);
        assert_eq!(cache.probes(), 2);
        // A spool that cannot be written is seen as such (once fresh results expire).
        let gone = dir.path().join("missing");
        *cache.last.lock().expect("lock") = None;
        assert!(!cache.spool_writable(&gone).await);
    }
}
