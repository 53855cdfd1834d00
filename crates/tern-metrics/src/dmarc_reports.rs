//! DMARC aggregate report counters (`tern-reports`, docs/REPORTS.md): observations by
//! what became of them, report addresses by outcome. Labels are closed enums.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// What became of one DMARC observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// Counted in a report.
    Recorded,
    /// Dropped: the writer's queue was full.
    DroppedFull,
    /// Dropped: `max_domains` reached.
    DroppedDomains,
    /// Dropped: `max_rows` reached.
    DroppedRows,
    /// Dropped: it named no policy domain.
    Invalid,
}

impl Observation {
    /// Every value, in label order.
    pub const ALL: [Observation; 5] = [
        Observation::Recorded,
        Observation::DroppedFull,
        Observation::DroppedDomains,
        Observation::DroppedRows,
        Observation::Invalid,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Observation::Recorded => "recorded",
            Observation::DroppedFull => "dropped_queue_full",
            Observation::DroppedDomains => "dropped_max_domains",
            Observation::DroppedRows => "dropped_max_rows",
            Observation::Invalid => "invalid",
        }
    }
}

/// What became of one report for one `rua` address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    /// Queued.
    Queued,
    /// Not sent: the URI was unusable, over its size limit or over `max_rua`.
    Skipped,
    /// Not sent: the external destination did not authorise it.
    Unauthorized,
    /// Not sent: the external destination check failed.
    LookupFailed,
    /// Not queued: building or queueing failed (tried again later).
    Failed,
}

impl ReportOutcome {
    /// Every value, in label order.
    pub const ALL: [ReportOutcome; 5] = [
        ReportOutcome::Queued,
        ReportOutcome::Skipped,
        ReportOutcome::Unauthorized,
        ReportOutcome::LookupFailed,
        ReportOutcome::Failed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportOutcome::Queued => "queued",
            ReportOutcome::Skipped => "skipped",
            ReportOutcome::Unauthorized => "unauthorized",
            ReportOutcome::LookupFailed => "lookup_failed",
            ReportOutcome::Failed => "failed",
        }
    }
}

pub(crate) struct DmarcReportCounters {
    observations: [Counter; Observation::ALL.len()],
    reports: [Counter; ReportOutcome::ALL.len()],
}

impl DmarcReportCounters {
    pub(crate) fn register(registry: &mut Registry) -> DmarcReportCounters {
        let obs = Family::<[(&'static str, String); 1], Counter>::default();
        registry.register(
            "dmarc_observations",
            "DMARC observations handed to the aggregate reports, by what became of them",
            obs.clone(),
        );
        let reports = Family::<[(&'static str, String); 1], Counter>::default();
        registry.register(
            "dmarc_reports",
            "DMARC aggregate reports per rua address, by outcome",
            reports.clone(),
        );
        DmarcReportCounters {
            observations: Observation::ALL
                .map(|o| obs.get_or_create_owned(&[("result", o.as_str().to_owned())])),
            reports: ReportOutcome::ALL
                .map(|r| reports.get_or_create_owned(&[("result", r.as_str().to_owned())])),
        }
    }
}

impl crate::Metrics {
    /// Counts `n` observations that ended as `what`.
    pub fn dmarc_observations(&self, what: Observation, n: u64) {
        if let Some(c) = self.dmarc.observations.get(what as usize) {
            c.inc_by(n);
        }
    }

    /// Observations so far that ended as `what`.
    pub fn dmarc_observation_count(&self, what: Observation) -> u64 {
        self.dmarc
            .observations
            .get(what as usize)
            .map_or(0, Counter::get)
    }

    /// Counts one report address outcome.
    pub fn dmarc_report(&self, what: ReportOutcome) {
        if let Some(c) = self.dmarc.reports.get(what as usize) {
            c.inc();
        }
    }

    /// Report address outcomes so far.
    pub fn dmarc_report_count(&self, what: ReportOutcome) -> u64 {
        self.dmarc
            .reports
            .get(what as usize)
            .map_or(0, Counter::get)
    }
}
