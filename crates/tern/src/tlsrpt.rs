//! `tern serve`'s SMTP TLS reports (`[tls_reports]`, RFC 8460, docs/TLS.md): the store
//! and its writer thread before the queue (its delivery workers get the recorder), the
//! report task once the queue runs (when `enabled`), both stopped after the queue.
//!
//! Recording is on with `enabled` or `record`; sending only with `enabled`. A report
//! directory that cannot be used never stops the start: TLS reporting is off (event
//! 4171) and the workers get [`NoTlsReports`].
//!
//! `https:` report addresses are POSTed with `tern-https` (strict certificate checks
//! against the web's roots plus `https_ca_file`, no redirects, bounded time and answer),
//! resolving through Tern's own resolver (`[dns]`).

use std::sync::Arc;
use std::time::Duration;

use tern_events::{EventLog, catalog, fields};
use tern_reports::ReportStore;
use tern_reports::aggregate::Caps;
use tern_reports::recorder::Writer;
use tern_reports::reporter::{ReportAsker, ReporterHandle};
use tern_reports::tlsrpt::json::Submitter;
use tern_reports::tlsrpt::reporter::{
    PostFuture, ReportPoster, ReporterConfig, RunSummary, TlsReporter, TxtLookup,
};
use tern_reports::tlsrpt::{NoTlsReports, Tls, TlsReportRecorder};
use tern_spool::MessageIntake;

use crate::config::Config;
use crate::dmarc::{Opened, open_store};

/// Largest answer read from a report receiver.
const MAX_ANSWER: usize = 64 * 1024;

/// The running parts of the TLS reports.
pub struct TlsReports {
    /// What the delivery workers record into.
    pub recorder: Arc<dyn TlsReportRecorder>,
    store: Option<Arc<dyn ReportStore<Tls>>>,
    writer: Option<Writer<Tls>>,
    reporter: Option<ReporterHandle<RunSummary>>,
}

fn now_secs() -> u64 {
    tern_watchdog::clock::unix_ms() / 1000
}

/// Opens the store and starts its writer (when `[tls_reports]` records).
pub fn open(config: &Config, events: &EventLog) -> TlsReports {
    let off = TlsReports {
        recorder: Arc::new(NoTlsReports),
        store: None,
        writer: None,
        reporter: None,
    };
    let c = &config.tls_reports;
    if !c.records() {
        return off;
    }
    let dir = config.server.data_dir.join("tls-reports");
    let caps = Caps {
        max_domains: c.max_domains,
        max_rows: c.max_rows,
    };
    let Some(Opened {
        store,
        recorder,
        writer,
        report,
    }) = open_store::<Tls>(
        &dir,
        caps,
        c.interval_secs(),
        (c.max_pending, c.flush_every()),
        events,
        (
            &catalog::TLSRPT_STORE_UNUSABLE,
            &catalog::TLSRPT_STORE_QUARANTINED,
        ),
    )
    else {
        return off;
    };
    events.emit(
        &catalog::TLSRPT_STARTED,
        fields!(
            "dir" => dir.display(),
            "journals" => report.journals,
            "sessions" => report.messages,
            "sending" => c.enabled,
            "next" => tern_reports::reporter::next_run(now_secs(), c.interval_secs()),
        ),
    );
    TlsReports {
        recorder,
        store: Some(store),
        writer: Some(writer),
        reporter: None,
    }
}

/// `ReportPoster` over `tern-https` and Tern's resolver.
struct HttpsPoster {
    client: tern_https::Client,
    resolver: tern_route::dns::Resolver,
    limits: tern_https::Limits,
}

impl ReportPoster for HttpsPoster {
    fn post<'a>(
        &'a self,
        url: &'a str,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> PostFuture<'a> {
        Box::pin(async move {
            match self
                .client
                .post(&self.resolver, url, content_type, body, self.limits)
                .await
            {
                Ok(r) => Ok(r.status),
                Err(tern_https::HttpsError::Status(code)) => Ok(code),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

fn poster(config: &Config, events: &EventLog) -> Option<Arc<dyn ReportPoster>> {
    let c = &config.tls_reports;
    let extra_roots_pem = match &c.https_ca_file {
        Some(p) => match std::fs::read(p) {
            Ok(pem) => Some(pem),
            Err(e) => {
                events.emit(
                    &catalog::TLSRPT_REPORT_SKIPPED,
                    fields!("domain" => "-", "rua" => "https:", "reason" => format!("https off: tls_reports.https_ca_file {}: {e}", p.display())),
                );
                return None;
            }
        },
        None => None,
    };
    let client = tern_https::Client::new(&tern_https::ClientConfig {
        extra_roots_pem,
        user_agent: format!("Tern/{}", env!("CARGO_PKG_VERSION")),
        allow_private_addresses: c.https_allow_private_addresses,
    });
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            events.emit(
                &catalog::TLSRPT_REPORT_SKIPPED,
                fields!("domain" => "-", "rua" => "https:", "reason" => format!("https off: {e}")),
            );
            return None;
        }
    };
    let resolver = tern_route::dns::Resolver::new(&config.dns.resolver_config()).ok()?;
    Some(Arc::new(HttpsPoster {
        client,
        resolver,
        limits: tern_https::Limits {
            timeout: Duration::from_secs(c.https_timeout_secs),
            max_body: MAX_ANSWER,
        },
    }))
}

/// Tern's resolver settings (`[dns]`) for the `_smtp._tls` lookups.
fn txt_lookup(config: &Config, limit: Duration) -> Option<Arc<dyn TxtLookup>> {
    let mut builder = tern_route::dns::resolver_builder(&config.dns.nameservers).ok()?;
    builder.options_mut().timeout = limit;
    builder.options_mut().attempts = 2;
    let r = builder.build().ok()?;
    Some(Arc::new(r))
}

impl TlsReports {
    /// Starts the report task over `intake` (the queue's), when sending is on.
    pub fn start_reporter(
        &mut self,
        config: &Config,
        intake: Arc<dyn MessageIntake>,
        events: &EventLog,
    ) {
        let c = &config.tls_reports;
        let Some(store) = &self.store else {
            return;
        };
        if !c.enabled {
            return;
        }
        let hostname = config.server.hostname.clone();
        let from = c.from_for(&hostname);
        let domain = from
            .rsplit_once('@')
            .map_or(hostname.clone(), |(_, d)| d.to_ascii_lowercase());
        let dns_timeout = Duration::from_secs(c.dns_timeout_secs);
        let Some(txt) = txt_lookup(config, dns_timeout) else {
            events.emit(
                &catalog::TLSRPT_STORE_UNUSABLE,
                fields!("dir" => "-", "error" => "no usable resolver for the _smtp._tls lookups ([dns])"),
            );
            return;
        };
        let reporter = TlsReporter {
            cfg: ReporterConfig {
                submitter: Submitter {
                    org_name: c.org_for(&hostname),
                    contact: c.contact_for(&hostname),
                    domain,
                },
                from,
                hostname,
                max_rua: c.max_rua,
                dns_timeout,
                https_timeout: Duration::from_secs(c.https_timeout_secs),
                interval: c.interval_secs(),
            },
            store: Arc::clone(store),
            intake,
            txt,
            poster: poster(config, events),
            events: events.clone(),
        };
        self.reporter = Some(tern_reports::reporter::spawn(reporter));
    }

    /// Asks for runs (the admin API's `POST /tls-reports/send`).
    pub fn asker(&self) -> Option<ReportAsker<RunSummary>> {
        self.reporter.as_ref().map(ReporterHandle::asker)
    }

    /// Stops the report task, then the writer (after the queue: nothing records any
    /// more), which flushes the journal.
    pub async fn stop(self) {
        if let Some(r) = self.reporter {
            r.stop().await;
        }
        if let Some(w) = self.writer {
            let _ = tokio::task::spawn_blocking(move || w.stop()).await;
        }
    }
}
