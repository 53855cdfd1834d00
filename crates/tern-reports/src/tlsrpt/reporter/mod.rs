//! The TLS report task: closes periods, builds each policy domain's report (RFC 8460
//! §4.4), looks up the domain's `_smtp._tls` record and delivers the report to each
//! `rua`: `mailto:` as a message queued through Tern's intake (RFC 8460 §5.3),
//! `https:` as a POST of the gzipped JSON (§5.2) through a [`ReportPoster`].
//!
//! When: as the DMARC reports ([`crate::reporter::spawn`]): at the start, a second
//! after each period's end (UTC midnight with the default `interval`), [`RETRY`] later
//! while a report is still due, and when an administrator asks (`tern tls-reports
//! send`, which first closes the open period at that second).
//!
//! Once only: a domain's report is marked sent in the store (durably) once at least one
//! of its addresses took it (a message committed to the spool, or a 2xx answer).
//! When none did (the lookup failed, the spool refused, every POST failed), nothing is
//! marked and the whole report is tried again at the next run, with the same
//! report-id, until the period is given up ([`crate::store::MAX_CLOSED`] periods
//! waiting: 7 days with daily periods). A domain without a usable `_smtp._tls` record
//! asked for no report: its data for the period is dropped (event 4165).
//!
//! The envelope sender is `[tls_reports] from`; the message is Tern's own mail
//! ([`LISTENER`]), so a `[dkim]` rule covering the `From` domain signs it, as RFC 8460
//! §5.3 requires.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RData;
use serde::Serialize;
use tern_events::{EventLog, catalog, fields};
use tern_spool::MessageIntake;

use super::aggregate::Tls;
use super::json::{Submitter, build as build_report};
use super::message::{ReportMail, build as build_mail};
use super::record::{self, Rua};
use crate::aggregate::{DomainData, Period};
use crate::message::gzip;
use crate::reporter::{Run, Trigger, close_due, mark_sent, queue_message};
use crate::store::ReportStore;

pub use crate::reporter::RETRY;

/// The listener name of report messages in their envelope (Tern's own mail for the
/// DKIM signing rules, like `dsn`).
pub const LISTENER: &str = "tls-reports";

/// The media type of a gzipped report (RFC 8460 §6.4).
pub const CONTENT_TYPE: &str = "application/tlsrpt+gzip";

/// The future [`ReportPoster::post`] returns: the HTTP status, or why there is none.
pub type PostFuture<'a> = Pin<Box<dyn Future<Output = Result<u16, String>> + Send + 'a>>;

/// POSTs a report to an `https:` address. Implementations bound the time and the
/// answer's size; any status is returned (the caller takes 2xx as delivered).
pub trait ReportPoster: Send + Sync {
    /// POST `body` as `content_type` to `url`.
    fn post<'a>(
        &'a self,
        url: &'a str,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> PostFuture<'a>;
}

/// The future [`TxtLookup::txt`] returns: the TXT strings (each record's pieces
/// joined), empty for no such name or no TXT record.
pub type TxtFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<String>, String>> + Send + 'a>>;

/// Looks up TXT records (Tern's resolver; tests use a map).
pub trait TxtLookup: Send + Sync {
    /// The TXT records of `name` (absolute, with the final dot).
    fn txt<'a>(&'a self, name: &'a str) -> TxtFuture<'a>;
}

impl TxtLookup for TokioResolver {
    fn txt<'a>(&'a self, name: &'a str) -> TxtFuture<'a> {
        Box::pin(async move {
            match self.txt_lookup(name).await {
                Ok(lookup) => Ok(lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::TXT(t) => Some(
                            t.txt_data
                                .iter()
                                .map(|s| String::from_utf8_lossy(s).into_owned())
                                .collect::<String>(),
                        ),
                        _ => None,
                    })
                    .take(64)
                    .collect()),
                Err(NetError::Dns(DnsError::NoRecordsFound(no)))
                    if matches!(
                        no.response_code,
                        ResponseCode::NXDomain | ResponseCode::NoError
                    ) =>
                {
                    Ok(Vec::new())
                }
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

/// What the report task needs besides its store.
#[derive(Debug, Clone)]
pub struct ReporterConfig {
    /// `organization-name`, `contact-info` and the submitter's domain.
    pub submitter: Submitter,
    /// The messages' `From:` and envelope sender.
    pub from: String,
    /// This server's host name (Message-ID, HELO of the envelope).
    pub hostname: String,
    /// Addresses used per domain.
    pub max_rua: usize,
    /// Time for one `_smtp._tls` lookup.
    pub dns_timeout: Duration,
    /// Time for one POST.
    pub https_timeout: Duration,
    /// Period length, seconds.
    pub interval: u64,
}

/// What one run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    /// Closed periods looked at.
    pub periods: usize,
    /// Domains done (reported, or without a record).
    pub domains: usize,
    /// Messages queued.
    pub queued: usize,
    /// Reports POSTed (2xx).
    pub posted: usize,
    /// Addresses skipped (unusable, over `max_rua`, https off).
    pub skipped: usize,
    /// Domains whose report no address took (tried again later).
    pub failed: usize,
}

/// Builds and sends TLS reports.
pub struct TlsReporter {
    /// Settings.
    pub cfg: ReporterConfig,
    /// The report data.
    pub store: Arc<dyn ReportStore<Tls>>,
    /// Where report messages go (the queue's intake).
    pub intake: Arc<dyn MessageIntake>,
    /// The `_smtp._tls` lookups.
    pub txt: Arc<dyn TxtLookup>,
    /// The HTTPS client; `None` skips `https:` addresses.
    pub poster: Option<Arc<dyn ReportPoster>>,
    /// The event log.
    pub events: EventLog,
}

/// What became of one domain's report.
enum Outcome {
    /// At least one address took it.
    Sent,
    /// No usable record: nothing asked for.
    NoRecord,
}

impl TlsReporter {
    /// One run at `now`: closes the open period when due (at once when `trigger` is
    /// [`Trigger::Admin`]) and reports every closed period.
    pub async fn run(&self, trigger: Trigger, now: u64) -> RunSummary {
        let mut summary = RunSummary::default();
        let early = trigger == Trigger::Admin;
        let due = close_due(&self.store, now, early, &self.events).await;
        summary.periods = due.len();
        for period in &due {
            for (domain, data) in &period.domains {
                match self
                    .report_domain(period, domain, data, now, &mut summary)
                    .await
                {
                    Ok(_) => {
                        if mark_sent(&self.store, period.begin, domain, &self.events).await {
                            summary.domains += 1;
                        } else {
                            summary.failed += 1;
                        }
                    }
                    Err(e) => {
                        summary.failed += 1;
                        self.events.emit(
                            &catalog::TLSRPT_REPORT_FAILED,
                            fields!("domain" => domain, "error" => e, "retry_secs" => RETRY.as_secs()),
                        );
                    }
                }
            }
            if period.domains.is_empty() {
                // Only sessions dropped by max_domains: nothing to send.
                mark_sent(&self.store, period.begin, "", &self.events).await;
            }
        }
        self.events.emit(
            &catalog::TLSRPT_RUN,
            fields!(
                "trigger" => trigger.as_str(),
                "periods" => summary.periods,
                "domains" => summary.domains,
                "queued" => summary.queued,
                "posted" => summary.posted,
                "skipped" => summary.skipped,
                "failed" => summary.failed,
            ),
        );
        summary
    }

    fn skipped(&self, summary: &mut RunSummary, domain: &str, uri: &str, reason: &str) {
        summary.skipped += 1;
        self.events.emit(
            &catalog::TLSRPT_REPORT_SKIPPED,
            fields!("domain" => domain, "rua" => uri, "reason" => reason),
        );
    }

    /// The usable addresses of `domain`'s record, or why there are none.
    async fn destinations(
        &self,
        domain: &str,
        summary: &mut RunSummary,
    ) -> Result<Option<Vec<Rua>>, String> {
        let name = format!("_smtp._tls.{domain}.");
        if name.len() > 254 {
            return Ok(None);
        }
        let txts = match tokio::time::timeout(self.cfg.dns_timeout, self.txt.txt(&name)).await {
            Err(_) => return Err("_smtp._tls lookup timed out".into()),
            Ok(Err(e)) => return Err(format!("_smtp._tls lookup failed: {e}")),
            Ok(Ok(t)) => t,
        };
        let (usable, unusable) = match record::parse(&txts) {
            Ok(found) => found,
            Err(why) => {
                self.events.emit(
                    &catalog::TLSRPT_REPORT_NO_RECORD,
                    fields!("domain" => domain, "reason" => why.as_str()),
                );
                return Ok(None);
            }
        };
        for (uri, why) in unusable {
            self.skipped(summary, domain, &uri, why);
        }
        let mut out = Vec::new();
        for rua in usable {
            let uri = match &rua {
                Rua::Mail(a) => format!("mailto:{a}"),
                Rua::Https(u) => u.clone(),
            };
            if out.len() >= self.cfg.max_rua {
                self.skipped(summary, domain, &uri, "more than max_rua");
            } else if matches!(rua, Rua::Https(_)) && self.poster.is_none() {
                self.skipped(summary, domain, &uri, "https off");
            } else {
                out.push(rua);
            }
        }
        Ok(Some(out))
    }

    /// Sends `domain`'s report to each of its addresses. `Err` when none took it.
    async fn report_domain(
        &self,
        period: &Period<Tls>,
        domain: &str,
        data: &DomainData<Tls>,
        now: u64,
        summary: &mut RunSummary,
    ) -> Result<Outcome, String> {
        let Some(targets) = self.destinations(domain, summary).await? else {
            return Ok(Outcome::NoRecord);
        };
        if targets.is_empty() {
            return Ok(Outcome::NoRecord);
        }
        let report = build_report(&self.cfg.submitter, period, domain, data);
        let (successes, failures) = report.totals();
        let json = report.to_json();
        let gz = gzip(&String::from_utf8_lossy(&json)).map_err(|e| format!("gzip: {e}"))?;
        let end = period.end.saturating_sub(1).max(period.begin);
        let mail = ReportMail {
            submitter: &self.cfg.submitter.domain,
            from: &self.cfg.from,
            domain,
            report_id: &report.report_id,
            begin: period.begin,
            end,
            gzipped: &gz,
            now,
            hostname: &self.cfg.hostname,
        };
        let mut sent = 0;
        let mut errors: BTreeMap<String, String> = BTreeMap::new();
        for target in targets {
            match target {
                Rua::Mail(address) => {
                    let bytes = build_mail(&mail, &address);
                    match queue_message(
                        self.intake.as_ref(),
                        &self.cfg.from,
                        &address,
                        &self.cfg.hostname,
                        LISTENER,
                        bytes,
                    )
                    .await
                    {
                        Ok(queue_id) => {
                            sent += 1;
                            summary.queued += 1;
                            self.events.emit(
                                &catalog::TLSRPT_REPORT_QUEUED,
                                fields!(
                                    "queue_id" => queue_id,
                                    "domain" => domain,
                                    "rua" => format!("mailto:{address}"),
                                    "begin" => period.begin,
                                    "end" => end,
                                    "policies" => report.policies.len(),
                                    "successes" => successes,
                                    "failures" => failures,
                                    "size" => gz.len(),
                                    "report_id" => report.report_id,
                                ),
                            );
                        }
                        Err(e) => {
                            errors.insert(format!("mailto:{address}"), format!("queueing: {e}"));
                        }
                    }
                }
                Rua::Https(url) => {
                    let Some(poster) = &self.poster else {
                        continue;
                    };
                    let posted = tokio::time::timeout(
                        self.cfg.https_timeout,
                        poster.post(&url, CONTENT_TYPE, gz.clone()),
                    )
                    .await;
                    match posted {
                        Ok(Ok(status)) if (200..300).contains(&status) => {
                            sent += 1;
                            summary.posted += 1;
                            self.events.emit(
                                &catalog::TLSRPT_REPORT_POSTED,
                                fields!(
                                    "domain" => domain,
                                    "rua" => url,
                                    "status" => status,
                                    "begin" => period.begin,
                                    "end" => end,
                                    "report_id" => report.report_id,
                                ),
                            );
                        }
                        Ok(Ok(status)) => {
                            errors.insert(url, format!("HTTP status {status}"));
                        }
                        Ok(Err(e)) => {
                            errors.insert(url, e);
                        }
                        Err(_) => {
                            errors.insert(url, "timed out".into());
                        }
                    }
                }
            }
        }
        if sent > 0 {
            // Delivered somewhere: the others are not tried again (events say why).
            for (rua, e) in errors {
                self.events.emit(
                    &catalog::TLSRPT_REPORT_FAILED,
                    fields!("domain" => domain, "rua" => rua, "error" => e, "retry_secs" => 0),
                );
            }
            return Ok(Outcome::Sent);
        }
        Err(errors
            .into_iter()
            .map(|(r, e)| format!("{r}: {e}"))
            .collect::<Vec<_>>()
            .join("; "))
    }
}

impl Run for TlsReporter {
    type Summary = RunSummary;

    fn run(&self, trigger: Trigger, now: u64) -> impl Future<Output = RunSummary> + Send {
        TlsReporter::run(self, trigger, now)
    }

    fn interval(&self) -> u64 {
        self.cfg.interval
    }

    fn failed(summary: &RunSummary) -> bool {
        summary.failed > 0
    }
}

#[cfg(test)]
pub(crate) mod tests;
