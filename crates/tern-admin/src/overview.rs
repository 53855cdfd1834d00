//! `GET /api/v1/overview`: messages per queue state, the counters' totals since the
//! start, and one hour of throughput history for the viewer's charts.
//!
//! The history is written by one sampler task ([`sample`], started and stopped with the
//! admin listener): every [`INTERVAL_SECS`] it records how many messages were received
//! and recipients delivered since the previous sample (deltas of the process-wide
//! counters) and how many messages are queued (`Spool::queued`, an atomic read). The
//! first sample is taken when the listener starts (deltas 0). At most [`MAX_SAMPLES`]
//! are kept (one hour), the oldest dropped first, in a [`History`] behind a mutex that
//! is held only to push or copy: never across an `.await`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use tern_metrics::Reject;
use tern_spool::QueueState;
use tokio::sync::watch;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{ErrorBody, unix_ms};
use crate::error::ApiError;
use crate::state::AdminState;

/// Seconds between two samples.
pub const INTERVAL_SECS: u64 = 10;
/// Samples kept: one hour.
pub const MAX_SAMPLES: usize = 360;

/// The overview's routes.
pub fn routes() -> OpenApiRouter<Arc<AdminState>> {
    OpenApiRouter::new().routes(routes!(overview))
}

/// One sample of the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Sample {
    /// When it was taken.
    pub at_unix_ms: u64,
    /// Messages committed to the spool since the previous sample.
    pub received: u64,
    /// Recipients delivered since the previous sample.
    pub delivered: u64,
    /// Messages queued (incoming, active, deferred, hold) at the sample.
    pub queued: u64,
}

/// The last hour of samples. Shared by the sampler (writes) and the handler (copies).
#[derive(Debug, Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    /// Appends `s`, dropping the oldest past [`MAX_SAMPLES`].
    pub fn push(&self, s: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        while samples.len() >= MAX_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(s);
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.iter().copied().collect()
    }
}

/// The sampler task: one sample now, then one every [`INTERVAL_SECS`] until `stop`.
pub(crate) async fn sample(state: Arc<AdminState>, mut stop: watch::Receiver<bool>) {
    let m = tern_metrics::get();
    let mut last = (m.received.get(), m.delivered.get());
    let mut ticks = tokio::time::interval(Duration::from_secs(INTERVAL_SECS));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = (m.received.get(), m.delivered.get());
        state.history.push(Sample {
            at_unix_ms: unix_ms(),
            received: now.0.saturating_sub(last.0),
            delivered: now.1.saturating_sub(last.1),
            queued: u64::try_from(state.spool.queued()).unwrap_or(u64::MAX),
        });
        last = now;
    }
}

/// Messages per queue state now.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct StateCounts {
    /// Committed, not yet picked up by the scheduler.
    pub incoming: u64,
    /// Being delivered.
    pub active: u64,
    /// Waiting for a retry.
    pub deferred: u64,
    /// Held by an administrator or a `hold` route.
    pub hold: u64,
    /// Crashed the server too often; never retried automatically.
    pub poison: u64,
    /// Quarantined spool files (failed validation).
    pub corrupt: u64,
}

/// The counters since the server started.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Totals {
    /// Messages committed to the spool (SMTP, pickup, bounces).
    pub received: u64,
    /// Recipients delivered.
    pub delivered: u64,
    /// Recipient deferrals (one per recipient per attempt).
    pub deferred: u64,
    /// Recipients failed permanently.
    pub bounced: u64,
    /// Messages moved to poison.
    pub poisoned: u64,
    /// Spool files quarantined.
    pub quarantined: u64,
    /// SMTP refusals, all reasons together (see `tern_smtp_rejected_total` by reason).
    pub rejected: u64,
}

/// The throughput history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryBody {
    /// Seconds between samples (10).
    pub interval_secs: u64,
    /// At most one hour of samples, oldest first.
    pub samples: Vec<Sample>,
}

/// `GET /api/v1/overview`'s body.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OverviewBody {
    /// Messages per queue state, counted from the spool directories now.
    pub states: StateCounts,
    /// Counters since the server started.
    pub totals: Totals,
    /// Received, delivered and queued over the last hour.
    pub history: HistoryBody,
}

/// Counts per state, totals and the last hour's throughput.
#[utoipa::path(
    get,
    path = "/overview",
    tag = "overview",
    responses(
        (status = 200, description = "Counts, totals and history", body = OverviewBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 500, description = "A spool directory could not be read", body = ErrorBody),
    )
)]
async fn overview(State(state): State<Arc<AdminState>>) -> Result<Json<OverviewBody>, ApiError> {
    let spool = state.spool.clone();
    let counted = tokio::task::spawn_blocking(move || crate::metrics::queue_states(&spool))
        .await
        .map_err(|e| ApiError::Internal(format!("counting the queue: {e}")))?;
    let mut states = StateCounts::default();
    for (s, n) in counted {
        let n =
            u64::try_from(n.map_err(|e| ApiError::Internal(e.to_string()))?).unwrap_or(u64::MAX);
        let slot = match s {
            QueueState::Incoming => &mut states.incoming,
            QueueState::Active => &mut states.active,
            QueueState::Deferred => &mut states.deferred,
            QueueState::Hold => &mut states.hold,
            QueueState::Poison => &mut states.poison,
            QueueState::Corrupt => &mut states.corrupt,
        };
        *slot = n;
    }
    let m = tern_metrics::get();
    let totals = Totals {
        received: m.received.get(),
        delivered: m.delivered.get(),
        deferred: m.deferred.get(),
        bounced: m.bounced.get(),
        poisoned: m.poisoned.get(),
        quarantined: m.quarantined.get(),
        rejected: Reject::ALL
            .into_iter()
            .map(|r| m.rejected(r))
            .fold(0u64, u64::saturating_add),
    };
    Ok(Json(OverviewBody {
        states,
        totals,
        history: HistoryBody {
            interval_secs: INTERVAL_SECS,
            samples: state.history.samples(),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at: u64) -> Sample {
        Sample {
            at_unix_ms: at,
            received: at,
            delivered: 0,
            queued: 1,
        }
    }

    #[test]
    fn history_keeps_the_last_hour_oldest_first() {
        let h = History::default();
        for at in 0..(MAX_SAMPLES as u64 + 25) {
            h.push(s(at));
        }
        let got = h.samples();
        assert_eq!(got.len(), MAX_SAMPLES);
        assert_eq!(got.first().map(|x| x.at_unix_ms), Some(25));
        assert_eq!(
            got.last().map(|x| x.at_unix_ms),
            Some(MAX_SAMPLES as u64 + 24)
        );
    }
}
