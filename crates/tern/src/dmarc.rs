//! `tern serve`'s DMARC aggregate reports (`[dmarc_reports]`, docs/REPORTS.md): the
//! store and its writer thread before the listeners (the sessions get the recorder),
//! the report task once the queue runs, both stopped after the listeners.
//!
//! A report directory that cannot be used never stops the start: reports are off
//! (event 4131) and the sessions get [`NoReports`].
//!
//! Test builds (`fault-injection`) read observations from the JSON-lines file named by
//! `TERN_TEST_DMARC_OBSERVATIONS` at the start, as if sessions had recorded them: the
//! scenario tests' way in until the inbound verifier builds them.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use tern_cluster::reports::ReportKeys;
use tern_events::{EventDef, EventLog, catalog, fields};
use tern_reports::aggregate::{Caps, Dmarc};
use tern_reports::exchange::{self, Collected, ExFuture, ReportExchange};
use tern_reports::journal::{FileStore, OpenReport};
use tern_reports::kind::Kind;
use tern_reports::recorder::{ChannelRecorder, Writer};
use tern_reports::reporter::{ReportAsker, Reporter, ReporterConfig, ReporterHandle};
use tern_reports::xml::Submitter;
use tern_reports::{DmarcRecorder, NoReports, ReportStore};
use tern_spool::MessageIntake;

use crate::config::Config;

/// The running parts of the reports.
pub struct DmarcReports {
    /// What the sessions record into.
    pub recorder: Arc<dyn DmarcRecorder>,
    store: Option<Arc<dyn ReportStore>>,
    writer: Option<Writer>,
    reporter: Option<ReporterHandle>,
}

fn now_secs() -> u64 {
    tern_watchdog::clock::unix_ms() / 1000
}

/// Opens the store and starts its writer (when `[dmarc_reports] enabled`).
pub fn open(config: &Config, events: &EventLog) -> DmarcReports {
    let off = DmarcReports {
        recorder: Arc::new(NoReports),
        store: None,
        writer: None,
        reporter: None,
    };
    let c = &config.dmarc_reports;
    if !c.enabled {
        return off;
    }
    let dir = config.server.data_dir.join("dmarc-reports");
    let caps = Caps {
        max_domains: c.max_domains,
        max_rows: c.max_rows,
    };
    let Some(Opened {
        store,
        recorder,
        writer,
        report,
    }) = open_store::<Dmarc>(
        &dir,
        caps,
        c.interval_secs(),
        (c.max_pending, c.flush_every()),
        events,
        (
            &catalog::DMARC_STORE_UNUSABLE,
            &catalog::DMARC_STORE_QUARANTINED,
        ),
    )
    else {
        return off;
    };
    events.emit(
        &catalog::DMARC_REPORTS_STARTED,
        fields!(
            "dir" => dir.display(),
            "journals" => report.journals,
            "messages" => report.messages,
            "next" => tern_reports::reporter::next_run(now_secs(), c.interval_secs()),
        ),
    );
    #[cfg(feature = "fault-injection")]
    test_observations(recorder.as_ref());
    DmarcReports {
        recorder,
        store: Some(store),
        writer: Some(writer),
        reporter: None,
    }
}

/// A report store opened with its writer thread started.
pub(crate) struct Opened<K: Kind> {
    /// The store.
    pub store: Arc<dyn ReportStore<K>>,
    /// What the producers record into.
    pub recorder: Arc<ChannelRecorder<K>>,
    /// The writer thread.
    pub writer: Writer<K>,
    /// What the start read back.
    pub report: OpenReport,
}

/// Opens the journal of one kind of report in `dir` and starts its writer
/// (`(max_pending, flush_every)`); `None` (after the `unusable` event) when the directory
/// cannot be used. Each file quarantined gets the `quarantined` event.
pub(crate) fn open_store<K: Kind>(
    dir: &Path,
    caps: Caps,
    interval: u64,
    (max_pending, flush_every): (usize, Duration),
    events: &EventLog,
    (unusable, quarantined): (&'static EventDef, &'static EventDef),
) -> Option<Opened<K>> {
    let (store, report) = match FileStore::<K>::open(dir, caps, interval, now_secs()) {
        Ok(opened) => opened,
        Err(e) => {
            events.emit(unusable, fields!("dir" => dir.display(), "error" => e));
            return None;
        }
    };
    for (path, why) in &report.quarantined {
        events.emit(
            quarantined,
            fields!("file" => path.display(), "reason" => why),
        );
    }
    let store: Arc<dyn ReportStore<K>> = Arc::new(store);
    match tern_reports::recorder::start(
        Arc::clone(&store),
        max_pending,
        flush_every,
        events.clone(),
    ) {
        Ok((recorder, writer)) => Some(Opened {
            store,
            recorder,
            writer,
            report,
        }),
        Err(e) => {
            events.emit(unusable, fields!("dir" => dir.display(), "error" => e));
            None
        }
    }
}

/// Test builds: observations from `TERN_TEST_DMARC_OBSERVATIONS` (JSON lines).
#[cfg(feature = "fault-injection")]
fn test_observations(recorder: &dyn DmarcRecorder) {
    let Some(path) = std::env::var_os("TERN_TEST_DMARC_OBSERVATIONS") else {
        return;
    };
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Ok(obs) = serde_json::from_str(line) {
            recorder.record(obs);
        }
    }
}

/// Tern's resolver settings (`[dns]`) for the external destination checks.
fn resolver(config: &Config, limit: Duration) -> Option<TokioResolver> {
    let mut builder = tern_route::dns::resolver_builder(&config.dns.nameservers).ok()?;
    builder.options_mut().timeout = limit;
    builder.options_mut().attempts = 2;
    builder.build().ok()
}

impl DmarcReports {
    /// Starts the report task over `intake` (the queue's).
    pub fn start_reporter(
        &mut self,
        config: &Config,
        intake: Arc<dyn MessageIntake>,
        events: &EventLog,
        cluster: Option<&tern_cluster::Cluster>,
    ) {
        let Some(store) = &self.store else {
            return;
        };
        let c = &config.dmarc_reports;
        let hostname = config.server.hostname.clone();
        let email = c.email_for(&hostname);
        let report_domain = email
            .rsplit_once('@')
            .map_or(hostname.clone(), |(_, d)| d.to_ascii_lowercase());
        let dns_timeout = Duration::from_secs(c.dns_timeout_secs);
        let reporter = Reporter {
            cfg: ReporterConfig {
                submitter: Submitter {
                    org_name: c.org_for(&hostname),
                    email,
                    extra_contact_info: c.extra_contact_info.clone(),
                },
                report_domain,
                hostname,
                max_rua: c.max_rua,
                dns_timeout,
                interval: c.interval_secs(),
            },
            store: Arc::clone(store),
            intake,
            resolver: resolver(config, dns_timeout),
            events: events.clone(),
            exchange: cluster.map(|c| {
                Arc::new(RedisExchange {
                    node: c.node().to_owned(),
                    keys: ReportKeys {
                        cluster: c.clone(),
                        keep_ms: ms(exchange::KEEP),
                        lease_ms: ms(exchange::LEASE),
                    },
                }) as Arc<dyn ReportExchange>
            }),
            shared: Mutex::default(),
        };
        self.reporter = Some(tern_reports::reporter::spawn(reporter));
    }

    /// Asks for runs (the admin API's `POST /dmarc-reports/send`).
    pub fn asker(&self) -> Option<ReportAsker> {
        self.reporter.as_ref().map(ReporterHandle::asker)
    }

    /// Stops the report task, then the writer (after the listeners: nothing records
    /// any more), which flushes the journal.
    pub async fn stop(self) {
        if let Some(r) = self.reporter {
            r.stop().await;
        }
        if let Some(w) = self.writer {
            let _ = tokio::task::spawn_blocking(move || w.stop()).await;
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The cluster's report exchange in Redis (docs/cluster/state.md): one report per
/// domain and period for the whole cluster.
struct RedisExchange {
    node: String,
    keys: ReportKeys,
}

impl ReportExchange for RedisExchange {
    fn node(&self) -> &str {
        &self.node
    }

    fn publish(&self, begin: u64, share: String) -> ExFuture<'_, ()> {
        Box::pin(async move {
            self.keys
                .publish(begin, &share)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn claim(&self, begin: u64) -> ExFuture<'_, bool> {
        Box::pin(async move { self.keys.claim(begin).await.map_err(|e| e.to_string()) })
    }

    fn collect(&self, begin: u64) -> ExFuture<'_, Collected> {
        Box::pin(async move {
            let d = self.keys.collect(begin).await.map_err(|e| e.to_string())?;
            Ok(Collected {
                live: d.live,
                shares: d.shares,
                sent: d.sent,
            })
        })
    }

    fn mark_sent(&self, begin: u64, pairs: Vec<(String, String)>) -> ExFuture<'_, ()> {
        Box::pin(async move {
            self.keys
                .mark_sent(begin, &pairs)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn sent(&self, begin: u64) -> ExFuture<'_, BTreeSet<String>> {
        Box::pin(async move { self.keys.sent(begin).await.map_err(|e| e.to_string()) })
    }
}
