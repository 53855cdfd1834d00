//! The report task: closes periods, builds each domain's report, checks external
//! destinations, and queues one message per `mailto:` address through Tern's intake.
//!
//! When: at the start (periods that ended while Tern was down), a second after each
//! period's end (UTC midnight with the default `interval`), again [`RETRY`] later while
//! a report could not be queued, and when an administrator asks ([`ReporterHandle::send_now`],
//! which first closes the open period at that second).
//!
//! External destinations (RFC 7489 §7.1): an address whose domain is neither the policy
//! domain nor below it gets a report only when
//! `<policy-domain>._report._dmarc.<address-domain>` has a TXT record beginning
//! `v=DMARC1`. Without the Public Suffix List here, "within the policy domain" means the
//! domain itself or a subdomain: an address at a parent domain is checked too (one more
//! lookup, never a report sent without consent). The lookup uses Tern's resolver
//! settings (`[dns]`) and lasts at most `dns_timeout_secs`; a failure skips that
//! address for this period (event 4125) rather than holding the report.
//!
//! Once only: a domain's report is marked sent in the store (durably) after all its
//! messages are committed to the spool. A crash between the commit and the mark queues
//! that report again at the next start: the window is one fsync long, and the copy
//! carries the same Report-ID (receivers de-duplicate by it). A report that could not
//! be queued stays in the store and is tried again.
//!
//! In a cluster (`exchange` set), each closed period is reported once for the whole
//! cluster: see [`crate::exchange`] and [`Reporter::run`]. Without an exchange, each
//! node reports its own data (exactly as a node alone).
//!
//! The envelope sender is `[dmarc_reports] email`, not the null sender: RFC 7489 §7.2.1.1
//! asks that reports pass DMARC themselves (SPF on the envelope domain, DKIM: the
//! message is signed when a `[dkim]` rule matches, its origin being Tern's own like a
//! bounce), and a report that cannot be delivered bounces to that address, where the
//! operator sees broken `rua` addresses.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RData;
use serde::Serialize;
use tern_events::{EventLog, catalog, fields};
use tern_metrics::dmarc_reports::ReportOutcome;
use tern_spool::{
    BodyType, ClientInfo, Envelope, MailParams, MessageIntake, QueueId, Recipient, SpoolError,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::aggregate::{DomainData, Period, period_begin};
use crate::exchange::{
    COLLECT_WAIT, FALLBACK_AFTER, MAX_SHARES, MERGE_CAPS, ReportExchange, WAIT_RETRY, domains_of,
    encode, merge,
};
use crate::kind::Kind;
use crate::message::{ReportMail, RuaError, build, gzip, parse_rua};
use crate::store::{ReportStore, StoreError};
use crate::xml::{Submitter, report_id_salted, report_xml};

/// Time before a run that left reports unqueued is tried again.
pub const RETRY: Duration = Duration::from_secs(600);

/// The listener name of report messages in their envelope (Tern's own mail for the
/// DKIM signing rules, like `dsn`).
pub const LISTENER: &str = "dmarc-reports";

/// What the report task needs besides its store.
#[derive(Debug, Clone)]
pub struct ReporterConfig {
    /// `report_metadata`.
    pub submitter: Submitter,
    /// The reporting domain of subjects and file names (the `email`'s domain).
    pub report_domain: String,
    /// This server's host name (Message-ID, HELO of the envelope).
    pub hostname: String,
    /// `mailto:` addresses used per domain.
    pub max_rua: usize,
    /// Time for one external destination check.
    pub dns_timeout: Duration,
    /// Period length, seconds.
    pub interval: u64,
}

/// Why a run happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// At the start.
    Start,
    /// A period ended, or a retry.
    Schedule,
    /// An administrator asked.
    Admin,
}

impl Trigger {
    /// The events' name of the trigger.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Schedule => "schedule",
            Trigger::Admin => "admin",
        }
    }
}

/// What one run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    /// Closed periods looked at.
    pub periods: usize,
    /// Domains reported (all their messages queued, or nothing to send).
    pub domains: usize,
    /// Messages queued.
    pub queued: usize,
    /// Addresses skipped (unusable, over their limit, unauthorised, lookup failed).
    pub skipped: usize,
    /// Domains whose report could not be queued (tried again later).
    pub failed: usize,
    /// Periods waiting on the other nodes of the cluster (run again in
    /// [`WAIT_RETRY`]).
    pub waiting: usize,
}

/// Builds and queues reports.
pub struct Reporter {
    /// Settings.
    pub cfg: ReporterConfig,
    /// The report data.
    pub store: Arc<dyn ReportStore>,
    /// Where report messages go (the queue's intake).
    pub intake: Arc<dyn MessageIntake>,
    /// Tern's resolver for the external checks; `None` refuses every external address.
    pub resolver: Option<TokioResolver>,
    /// The event log.
    pub events: EventLog,
    /// The cluster's shared report data; `None` for a node alone.
    pub exchange: Option<Arc<dyn ReportExchange>>,
    /// Per period begin (cluster only): when this node first took part, and whether it
    /// published its share since its start.
    pub shared: Mutex<BTreeMap<u64, SharedPeriod>>,
}

/// This node's part in a period reported for the cluster.
#[derive(Debug, Clone, Copy, Default)]
pub struct SharedPeriod {
    /// First run (Unix seconds) that saw the period closed.
    pub first: u64,
    /// Whether this node's share was stored in the exchange.
    pub published: bool,
}

/// What the cluster path did with a period.
enum Shared {
    /// Waiting on the other nodes: nothing more this run.
    Wait,
    /// These domains are taken care of; this node reports the others itself now.
    Done(BTreeSet<String>),
}

/// Whether reports to `rua_domain` about `policy_domain` need the external destination
/// check.
pub fn needs_authorization(policy_domain: &str, rua_domain: &str) -> bool {
    let (p, r) = (
        policy_domain.trim_end_matches('.').to_ascii_lowercase(),
        rua_domain.trim_end_matches('.').to_ascii_lowercase(),
    );
    !(r == p || r.ends_with(&format!(".{p}")))
}

/// Whether TXT records found at `<policy>._report._dmarc.<rua domain>` authorise
/// reports: one of them begins `v=DMARC1` (then the end, `;` or white space).
pub fn authorizes(txts: &[String]) -> bool {
    txts.iter().any(|t| {
        t.trim_start().strip_prefix("v=DMARC1").is_some_and(|rest| {
            rest.is_empty() || rest.starts_with(';') || rest.starts_with([' ', '\t'])
        })
    })
}

/// What the external check found.
enum Authorization {
    Yes,
    No,
    Failed(String),
}

async fn check_external(
    resolver: Option<&TokioResolver>,
    policy_domain: &str,
    rua_domain: &str,
    limit: Duration,
) -> Authorization {
    let Some(resolver) = resolver else {
        return Authorization::Failed("no resolver".into());
    };
    let name = format!("{policy_domain}._report._dmarc.{rua_domain}.");
    if name.len() > 254 {
        return Authorization::No;
    }
    match tokio::time::timeout(limit, resolver.txt_lookup(name)).await {
        Err(_) => Authorization::Failed("timed out".into()),
        Ok(Ok(lookup)) => {
            let txts: Vec<String> = lookup
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
                .collect();
            if authorizes(&txts) {
                Authorization::Yes
            } else {
                Authorization::No
            }
        }
        Ok(Err(NetError::Dns(DnsError::NoRecordsFound(no))))
            if matches!(
                no.response_code,
                ResponseCode::NXDomain | ResponseCode::NoError
            ) =>
        {
            Authorization::No
        }
        Ok(Err(e)) => Authorization::Failed(e.to_string()),
    }
}

fn now_secs() -> u64 {
    tern_watchdog::clock::unix_ms() / 1000
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The start of a run of any kind: flushes the store and closes the open period when
/// due (at `now` when `early`), with the kind's events; returns the closed periods
/// waiting for their reports.
pub(crate) async fn close_due<K: Kind>(
    store: &Arc<dyn ReportStore<K>>,
    now: u64,
    early: bool,
    events: &EventLog,
) -> Vec<Period<K>> {
    let s = Arc::clone(store);
    match blocking(move || {
        s.flush()?;
        s.close(now, early)
    })
    .await
    {
        Ok(0) => {}
        Ok(n) => events.emit(K::events().given_up, fields!("periods" => n)),
        Err(e) => events.emit(K::events().store_failed, fields!("error" => e)),
    }
    store.due()
}

/// Marks `domain`'s report of the period beginning at `begin` sent (durably); `false`
/// (and the kind's event) when the store could not write it. An empty `domain` marks
/// a period that holds no domain (only sessions dropped by `max_domains`).
pub(crate) async fn mark_sent<K: Kind>(
    store: &Arc<dyn ReportStore<K>>,
    begin: u64,
    domain: &str,
    events: &EventLog,
) -> bool {
    let s = Arc::clone(store);
    let d = domain.to_owned();
    match blocking(move || s.mark_sent(begin, &d)).await {
        Ok(()) => true,
        Err(e) => {
            events.emit(K::events().store_failed, fields!("error" => e));
            false
        }
    }
}

impl Reporter {
    /// One run at `now`: closes the open period when due (at once when `trigger` is
    /// [`Trigger::Admin`]) and reports every closed period.
    pub async fn run(&self, trigger: Trigger, now: u64) -> RunSummary {
        let mut summary = RunSummary::default();
        let early = trigger == Trigger::Admin;
        let due = close_due(&self.store, now, early, &self.events).await;
        summary.periods = due.len();
        if self.exchange.is_some()
            && let Ok(mut shared) = self.shared.lock()
        {
            shared.retain(|b, _| due.iter().any(|p| p.begin == *b));
        }
        for period in &due {
            let mut handled = BTreeSet::new();
            let mut salt = String::new();
            if let Some(x) = &self.exchange
                && !period.domains.is_empty()
            {
                match self
                    .cluster_period(x.as_ref(), period, now, &mut summary)
                    .await
                {
                    Shared::Wait => {
                        summary.waiting += 1;
                        continue;
                    }
                    Shared::Done(done) => handled = done,
                }
                salt = format!("node:{}", x.node());
            }
            for (domain, data) in &period.domains {
                if handled.contains(domain) {
                    continue;
                }
                match self
                    .report_domain(period, domain, data, now, &salt, &mut summary)
                    .await
                {
                    Ok(()) => {
                        if mark_sent(&self.store, period.begin, domain, &self.events).await {
                            summary.domains += 1;
                        } else {
                            summary.failed += 1;
                        }
                    }
                    Err(e) => {
                        summary.failed += 1;
                        tern_metrics::get().dmarc_report(ReportOutcome::Failed);
                        self.events.emit(
                            &catalog::DMARC_REPORT_FAILED,
                            fields!("domain" => domain, "error" => e, "retry_secs" => RETRY.as_secs()),
                        );
                    }
                }
            }
            if period.domains.is_empty() {
                // Only messages dropped by max_domains: nothing to send.
                mark_sent(&self.store, period.begin, "", &self.events).await;
            }
        }
        self.events.emit(
            &catalog::DMARC_REPORTS_RUN,
            fields!(
                "trigger" => trigger.as_str(),
                "periods" => summary.periods,
                "domains" => summary.domains,
                "queued" => summary.queued,
                "skipped" => summary.skipped,
                "failed" => summary.failed,
                "waiting" => summary.waiting,
            ),
        );
        summary
    }

    /// When this node first took part in the period, and whether it published since.
    fn shared_state(&self, begin: u64, now: u64) -> SharedPeriod {
        match self.shared.lock() {
            Ok(mut m) => *m.entry(begin).or_insert(SharedPeriod {
                first: now,
                published: false,
            }),
            Err(_) => SharedPeriod {
                first: now,
                published: false,
            },
        }
    }

    fn set_published(&self, begin: u64) {
        if let Ok(mut m) = self.shared.lock()
            && let Some(s) = m.get_mut(&begin)
        {
            s.published = true;
        }
    }

    /// The cluster's part of a closed period (see [`crate::exchange`]): publish this
    /// node's share; the lease holder merges every share and queues one report per
    /// domain; the others mark sent what the merged reports included. Redis failing
    /// before this node's share was ever stored: this node reports alone after
    /// [`COLLECT_WAIT`] (nobody can merge data never stored). Otherwise it waits up to [`FALLBACK_AFTER`] before
    /// reporting alone what no merged report included.
    async fn cluster_period(
        &self,
        x: &dyn ReportExchange,
        period: &Period,
        now: u64,
        summary: &mut RunSummary,
    ) -> Shared {
        let begin = period.begin;
        let state = self.shared_state(begin, now);
        let elapsed = now.saturating_sub(state.first);
        let on_error = |published: bool| {
            let after = if published {
                FALLBACK_AFTER
            } else {
                COLLECT_WAIT
            };
            if elapsed >= after.as_secs() {
                Shared::Done(BTreeSet::new())
            } else {
                Shared::Wait
            }
        };
        if x.publish(begin, encode(period)).await.is_err() {
            return on_error(state.published);
        }
        self.set_published(begin);
        let lead = match x.claim(begin).await {
            Ok(lead) => lead,
            Err(_) => return on_error(true),
        };
        if lead {
            return self.merge_and_send(x, period, now, elapsed, summary).await;
        }
        let sent = match x.sent(begin).await {
            Ok(sent) => sent,
            Err(_) => return on_error(true),
        };
        let mut done = BTreeSet::new();
        for domain in period.domains.keys() {
            if sent.contains(domain) && mark_sent(&self.store, begin, domain, &self.events).await {
                summary.domains += 1;
                done.insert(domain.clone());
            }
        }
        if done.len() == period.domains.len() || elapsed >= FALLBACK_AFTER.as_secs() {
            self.record_fallback(x, period, &done).await;
            Shared::Done(done)
        } else {
            Shared::Wait
        }
    }

    /// Before reporting alone, tells the exchange that this node's data of these
    /// domains is reported (best effort), so that no later merge counts it again.
    async fn record_fallback(
        &self,
        x: &dyn ReportExchange,
        period: &Period,
        done: &BTreeSet<String>,
    ) {
        let own: Vec<(String, String)> = period
            .domains
            .keys()
            .filter(|d| !done.contains(*d))
            .map(|d| (x.node().to_owned(), d.clone()))
            .collect();
        if !own.is_empty() {
            let _ = x.mark_sent(period.begin, own).await;
        }
    }

    /// The lease holder's part: waits (across runs) up to [`COLLECT_WAIT`] for every
    /// live node's share, merges them and queues one report per domain.
    async fn merge_and_send(
        &self,
        x: &dyn ReportExchange,
        period: &Period,
        now: u64,
        elapsed: u64,
        summary: &mut RunSummary,
    ) -> Shared {
        let begin = period.begin;
        let Ok(c) = x.collect(begin).await else {
            return if elapsed >= FALLBACK_AFTER.as_secs() {
                Shared::Done(BTreeSet::new())
            } else {
                Shared::Wait
            };
        };
        let missing = c.live.iter().any(|n| !c.shares.contains_key(n));
        if missing && elapsed < COLLECT_WAIT.as_secs() {
            return Shared::Wait;
        }
        let mut merged = Period::new(begin, period.end);
        let mut contributors: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let none = BTreeSet::new();
        for (node, json) in c.shares.iter().take(MAX_SHARES) {
            let skip = c.sent.get(node).unwrap_or(&none);
            let Ok(domains) = domains_of(json) else {
                continue;
            };
            if merge(&mut merged, json, skip, MERGE_CAPS).is_err() {
                continue;
            }
            for d in domains.difference(skip) {
                contributors
                    .entry(d.clone())
                    .or_default()
                    .push(node.clone());
            }
        }
        let me = x.node().to_owned();
        let mut done: BTreeSet<String> = c.sent.get(&me).cloned().unwrap_or_default();
        let mut failed = false;
        for (domain, data) in &merged.domains {
            let Some(nodes) = contributors.get(domain) else {
                continue;
            };
            let salt = format!("merged:{}", nodes.join(","));
            match self
                .report_domain(&merged, domain, data, now, &salt, summary)
                .await
            {
                Ok(()) => {
                    let pairs = nodes.iter().map(|n| (n.clone(), domain.clone())).collect();
                    // A failure here leaves the others to report alone after
                    // FALLBACK_AFTER (the duplicate window of docs/cluster/state.md).
                    let _ = x.mark_sent(begin, pairs).await;
                    if nodes.contains(&me) {
                        done.insert(domain.clone());
                    } else {
                        summary.domains += 1;
                    }
                }
                Err(e) => {
                    failed = true;
                    summary.failed += 1;
                    tern_metrics::get().dmarc_report(ReportOutcome::Failed);
                    self.events.emit(
                        &catalog::DMARC_REPORT_FAILED,
                        fields!("domain" => domain, "error" => e, "retry_secs" => RETRY.as_secs()),
                    );
                }
            }
        }
        let mut marked = BTreeSet::new();
        for domain in period.domains.keys() {
            if done.contains(domain) && mark_sent(&self.store, begin, domain, &self.events).await {
                summary.domains += 1;
                marked.insert(domain.clone());
            }
        }
        if failed {
            // Tried again at the next run (this node still holds the lease).
            return Shared::Wait;
        }
        self.record_fallback(x, period, &marked).await;
        Shared::Done(marked)
    }

    fn skipped(&self, summary: &mut RunSummary, domain: &str, uri: &str, reason: &str) {
        summary.skipped += 1;
        tern_metrics::get().dmarc_report(ReportOutcome::Skipped);
        self.events.emit(
            &catalog::DMARC_REPORT_SKIPPED,
            fields!("domain" => domain, "rua" => uri, "reason" => reason),
        );
    }

    /// Queues `domain`'s report to each usable address. `Err` when queueing failed
    /// (nothing is marked sent; the whole report is tried again).
    async fn report_domain(
        &self,
        period: &Period,
        domain: &str,
        data: &DomainData,
        now: u64,
        salt: &str,
        summary: &mut RunSummary,
    ) -> Result<(), String> {
        let mut targets = Vec::new();
        for uri in &data.rua {
            match parse_rua(uri) {
                Ok(rua) if targets.len() < self.cfg.max_rua => targets.push((uri, rua)),
                Ok(_) => self.skipped(summary, domain, uri, "more than max_rua"),
                Err(RuaError::NotMailto) => self.skipped(summary, domain, uri, "not mailto"),
                Err(_) => self.skipped(summary, domain, uri, "not a usable address"),
            }
        }
        if targets.is_empty() {
            return Ok(());
        }
        let end = period.end.saturating_sub(1).max(period.begin);
        let id = report_id_salted(domain, period.begin, end, &self.cfg.report_domain, salt);
        let xml = report_xml(&self.cfg.submitter, &id, period, domain, data);
        let gz = gzip(&xml).map_err(|e| format!("gzip: {e}"))?;
        let mail = ReportMail {
            submitter: &self.cfg.report_domain,
            from: &self.cfg.submitter.email,
            domain,
            report_id: &id,
            begin: period.begin,
            end,
            gzipped: &gz,
            now,
            hostname: &self.cfg.hostname,
        };
        let messages: u64 = data.rows.values().sum();
        for (uri, rua) in targets {
            if rua.limit.is_some_and(|l| (gz.len() as u64) > l) {
                self.skipped(summary, domain, uri, "size limit");
                continue;
            }
            if needs_authorization(domain, rua.domain()) {
                match check_external(
                    self.resolver.as_ref(),
                    domain,
                    rua.domain(),
                    self.cfg.dns_timeout,
                )
                .await
                {
                    Authorization::Yes => {}
                    Authorization::No => {
                        summary.skipped += 1;
                        tern_metrics::get().dmarc_report(ReportOutcome::Unauthorized);
                        self.events.emit(
                            &catalog::DMARC_REPORT_UNAUTHORIZED,
                            fields!("domain" => domain, "rua" => rua.address),
                        );
                        continue;
                    }
                    Authorization::Failed(e) => {
                        summary.skipped += 1;
                        tern_metrics::get().dmarc_report(ReportOutcome::LookupFailed);
                        self.events.emit(
                            &catalog::DMARC_REPORT_LOOKUP_FAILED,
                            fields!("domain" => domain, "rua" => rua.address, "error" => e),
                        );
                        continue;
                    }
                }
            }
            let bytes = build(&mail, &rua.address).map_err(|e| format!("building: {e}"))?;
            let queue_id = self
                .queue(bytes, &rua.address)
                .await
                .map_err(|e| format!("queueing: {e}"))?;
            summary.queued += 1;
            tern_metrics::get().dmarc_report(ReportOutcome::Queued);
            self.events.emit(
                &catalog::DMARC_REPORT_QUEUED,
                fields!(
                    "queue_id" => queue_id,
                    "domain" => domain,
                    "rua" => rua.address,
                    "begin" => period.begin,
                    "end" => end,
                    "rows" => data.rows.len(),
                    "messages" => messages,
                    "size" => gz.len(),
                    "report_id" => id,
                ),
            );
        }
        Ok(())
    }

    async fn queue(&self, bytes: Vec<u8>, to: &str) -> Result<QueueId, SpoolError> {
        queue_message(
            self.intake.as_ref(),
            &self.cfg.submitter.email,
            to,
            &self.cfg.hostname,
            LISTENER,
            bytes,
        )
        .await
    }
}

/// Commits a report message from `sender` to `to` through `intake`, as Tern's own mail
/// (envelope listener `listener`, for the DKIM signing rules).
pub(crate) async fn queue_message(
    intake: &dyn MessageIntake,
    sender: &str,
    to: &str,
    hostname: &str,
    listener: &str,
    bytes: Vec<u8>,
) -> Result<QueueId, SpoolError> {
    let mut draft = intake.begin();
    let id = draft.id();
    draft.write(&bytes).await?;
    let eight_bit = bytes.iter().any(|b| *b >= 0x80);
    let envelope = Envelope {
        id,
        sender: sender.to_owned(),
        recipients: vec![Recipient::new(to.to_owned())],
        params: MailParams {
            declared_size: None,
            body: if eight_bit {
                BodyType::EightBitMime
            } else {
                BodyType::SevenBit
            },
            smtputf8: false,
            dsn_ret: None,
            dsn_envid: None,
        },
        client: ClientInfo {
            address: "127.0.0.1:0".into(),
            verified_name: None,
            helo: hostname.to_owned(),
            esmtp: true,
            tls: None,
            listener: listener.into(),
            ..Default::default()
        },
        arrival_micros: tern_watchdog::clock::unix_micros(),
        size: bytes.len() as u64,
        quarantine: None,
    };
    draft.commit(envelope).await?;
    Ok(id)
}

/// A report task's runs: what [`spawn`] schedules.
pub trait Run: Send + Sync + 'static {
    /// What a run returns (the admin API's answer).
    type Summary: Copy + Send + 'static;
    /// One run at `now`.
    fn run(&self, trigger: Trigger, now: u64) -> impl Future<Output = Self::Summary> + Send;
    /// The period length, seconds.
    fn interval(&self) -> u64;
    /// Whether the run left reports to try again (the next run is then at most
    /// [`RETRY`] away).
    fn failed(summary: &Self::Summary) -> bool;
    /// Whether the run waits on other nodes (the next run is then at most
    /// [`WAIT_RETRY`] away).
    fn waiting(_summary: &Self::Summary) -> bool {
        false
    }
}

impl Run for Reporter {
    type Summary = RunSummary;

    fn run(&self, trigger: Trigger, now: u64) -> impl Future<Output = RunSummary> + Send {
        Reporter::run(self, trigger, now)
    }

    fn interval(&self) -> u64 {
        self.cfg.interval
    }

    fn failed(summary: &RunSummary) -> bool {
        summary.failed > 0
    }

    fn waiting(summary: &RunSummary) -> bool {
        summary.waiting > 0
    }
}

/// The running report task.
pub struct ReporterHandle<S = RunSummary> {
    asks: mpsc::Sender<oneshot::Sender<S>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl<S: Send + 'static> ReporterHandle<S> {
    /// Closes the open period now and reports every closed one; `None` when the task
    /// has stopped.
    pub async fn send_now(&self) -> Option<S> {
        let (tx, rx) = oneshot::channel();
        self.asks.send(tx).await.ok()?;
        rx.await.ok()
    }

    /// A second handle for asking (the admin API's).
    pub fn asker(&self) -> ReportAsker<S> {
        ReportAsker {
            asks: self.asks.clone(),
        }
    }

    /// Stops the task (a run in progress is abandoned at its next await; what it
    /// queued stays queued and what it did not mark sent is reported again).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

/// Asks the report task for a run now.
pub struct ReportAsker<S = RunSummary> {
    asks: mpsc::Sender<oneshot::Sender<S>>,
}

impl<S> Clone for ReportAsker<S> {
    fn clone(&self) -> Self {
        ReportAsker {
            asks: self.asks.clone(),
        }
    }
}

impl<S: Send + 'static> ReportAsker<S> {
    /// See [`ReporterHandle::send_now`].
    pub async fn send_now(&self) -> Option<S> {
        let (tx, rx) = oneshot::channel();
        self.asks.send(tx).await.ok()?;
        rx.await.ok()
    }
}

/// The next scheduled run after `now`: a second past the end of the current period.
pub fn next_run(now: u64, interval: u64) -> u64 {
    period_begin(now, interval)
        .saturating_add(interval.max(1))
        .saturating_add(1)
}

/// Starts the report task (its first run at once, for periods that ended while Tern
/// was down).
pub fn spawn<R: Run>(reporter: R) -> ReporterHandle<R::Summary> {
    let (asks, mut asked) = mpsc::channel::<oneshot::Sender<R::Summary>>(8);
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut summary = reporter.run(Trigger::Start, now_secs()).await;
        loop {
            let now = now_secs();
            let mut at = next_run(now, reporter.interval());
            if R::failed(&summary) {
                at = at.min(now.saturating_add(RETRY.as_secs()));
            }
            if R::waiting(&summary) {
                at = at.min(now.saturating_add(WAIT_RETRY.as_secs()));
            }
            let wait = Duration::from_secs(at.saturating_sub(now));
            tokio::select! {
                _ = stopped.changed() => return,
                () = tokio::time::sleep(wait) => {
                    summary = reporter.run(Trigger::Schedule, now_secs()).await;
                }
                ask = asked.recv() => match ask {
                    Some(reply) => {
                        summary = reporter.run(Trigger::Admin, now_secs()).await;
                        let _ = reply.send(summary);
                    }
                    None => return,
                },
            }
        }
    });
    ReporterHandle { asks, stop, task }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_inside_the_policy_domain_need_no_check() {
        assert!(!needs_authorization("example.com", "example.com"));
        assert!(!needs_authorization("example.com", "Reports.Example.COM"));
        assert!(needs_authorization("example.com", "badexample.com"));
        assert!(needs_authorization("example.com", "example.net"));
        // A parent domain is checked (no Public Suffix List here).
        assert!(needs_authorization("sub.example.com", "example.com"));
    }

    #[test]
    fn only_a_record_beginning_v_dmarc1_authorises() {
        assert!(authorizes(&["v=DMARC1".into()]));
        assert!(authorizes(&["v=DMARC1; rua=mailto:x@y.test".into()]));
        assert!(authorizes(&["other".into(), " v=DMARC1 ;".into()]));
        assert!(!authorizes(&[]));
        assert!(!authorizes(&["v=DMARC10".into()]));
        assert!(!authorizes(&["v=spf1 -all".into()]));
        assert!(!authorizes(&["x v=DMARC1".into()]));
    }

    use crate::aggregate::{Caps, tests::obs};
    use crate::exchange::{Collected, ExFuture};
    use crate::store::MemoryStore;
    use crate::tlsrpt::reporter::tests::FakeIntake;

    /// An exchange whose Redis never answers, or one where another node merged.
    struct FakeExchange {
        down: bool,
        sent: BTreeSet<String>,
    }

    impl ReportExchange for FakeExchange {
        fn node(&self) -> &str {
            "n2"
        }
        fn publish(&self, _: u64, _: String) -> ExFuture<'_, ()> {
            let down = self.down;
            Box::pin(async move { if down { Err("down".into()) } else { Ok(()) } })
        }
        fn claim(&self, _: u64) -> ExFuture<'_, bool> {
            Box::pin(async { Ok(false) })
        }
        fn collect(&self, _: u64) -> ExFuture<'_, Collected> {
            Box::pin(async { Err("not the holder".into()) })
        }
        fn mark_sent(&self, _: u64, _: Vec<(String, String)>) -> ExFuture<'_, ()> {
            Box::pin(async { Ok(()) })
        }
        fn sent(&self, _: u64) -> ExFuture<'_, BTreeSet<String>> {
            let sent = self.sent.clone();
            Box::pin(async move { Ok(sent) })
        }
    }

    fn reporter(x: FakeExchange) -> (Reporter, crate::tlsrpt::reporter::tests::Committed) {
        let store: Arc<dyn ReportStore> = Arc::new(MemoryStore::new(
            Caps {
                max_domains: 10,
                max_rows: 10,
            },
            86_400,
        ));
        store.add(vec![obs("example.org", "192.0.2.1", "pass")], 1_700_000_000);
        let committed = Arc::default();
        let r = Reporter {
            cfg: ReporterConfig {
                submitter: Submitter {
                    org_name: "Tern".into(),
                    email: "dmarc@tern.test".into(),
                    extra_contact_info: String::new(),
                },
                report_domain: "tern.test".into(),
                hostname: "mx.tern.test".into(),
                max_rua: 2,
                dns_timeout: Duration::from_secs(1),
                interval: 86_400,
            },
            store,
            intake: Arc::new(FakeIntake {
                committed: Arc::clone(&committed),
                refuse: false,
            }),
            resolver: None,
            events: EventLog::discard(),
            exchange: Some(Arc::new(x)),
            shared: Mutex::default(),
        };
        (r, committed)
    }

    #[tokio::test]
    async fn redis_never_answering_the_node_reports_its_own_data_after_the_wait() {
        let (r, committed) = reporter(FakeExchange {
            down: true,
            sent: BTreeSet::new(),
        });
        let now = 1_700_000_100;
        let s = r.run(Trigger::Admin, now).await;
        assert_eq!((s.waiting, s.queued), (1, 0), "{s:?}");
        let s = r.run(Trigger::Schedule, now + COLLECT_WAIT.as_secs()).await;
        assert_eq!((s.waiting, s.queued, s.domains), (0, 1, 1), "{s:?}");
        assert_eq!(committed.lock().map(|c| c.len()).unwrap_or(0), 1);
        assert!(r.store.due().is_empty());
    }

    #[tokio::test]
    async fn a_follower_marks_sent_what_the_merged_report_included_and_queues_nothing() {
        let (r, committed) = reporter(FakeExchange {
            down: false,
            sent: BTreeSet::new(),
        });
        let now = 1_700_000_100;
        let s = r.run(Trigger::Admin, now).await;
        assert_eq!((s.waiting, s.queued), (1, 0), "{s:?}");
        let (r2, _) = reporter(FakeExchange {
            down: false,
            sent: ["example.org".to_owned()].into(),
        });
        let s = r2.run(Trigger::Admin, now).await;
        assert_eq!((s.waiting, s.queued, s.domains), (0, 0, 1), "{s:?}");
        assert!(r2.store.due().is_empty());
        // Not included after FALLBACK_AFTER: the node reports alone.
        let s = r
            .run(Trigger::Schedule, now + FALLBACK_AFTER.as_secs())
            .await;
        assert_eq!((s.waiting, s.queued), (0, 1), "{s:?}");
        assert_eq!(committed.lock().map(|c| c.len()).unwrap_or(0), 1);
    }

    #[test]
    fn runs_are_scheduled_a_second_after_the_utc_day_ends() {
        assert_eq!(next_run(86_400 + 5, 86_400), 2 * 86_400 + 1);
        assert_eq!(next_run(86_399, 86_400), 86_401);
        assert_eq!(next_run(7200, 3600), 3 * 3600 + 1);
    }
}
