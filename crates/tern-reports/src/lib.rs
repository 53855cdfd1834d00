//! Aggregate reports Tern sends about the mail it receives: DMARC aggregate reports
//! (RFC 7489 §7.2) today.
//!
//! The seam: the inbound verifier (in `tern-smtpd`) hands one [`DmarcObservation`] per
//! message whose DMARC record asked for aggregate reports (`rua=`) to a
//! [`DmarcRecorder`]. Recording never blocks the session and never fails it: a recorder
//! that cannot keep an observation drops it and counts the drop. Everything after that
//! (keeping the per-source results, the daily report, sending it) is this crate's.
//!
//! The pieces, in the order an observation travels (docs/REPORTS.md):
//! - [`recorder`]: the [`DmarcRecorder`] sessions call; a bounded channel to one writer
//!   thread, drops counted when full;
//! - [`aggregate`] (sans-I/O): observations cleaned and bounded, folded into the rows of
//!   a report per policy domain and period, within `max_domains` and `max_rows`;
//! - [`store`]: the [`ReportStore`] trait (issue 20 puts it in Redis) and its
//!   in-process implementations, [`store::MemoryStore`] and the journal in the data
//!   directory ([`journal::FileStore`]);
//! - [`xml`] and [`message`] (sans-I/O): the RFC 7489 Appendix C document, gzipped, in a
//!   MIME message per `mailto:` address;
//! - [`reporter`]: the task that closes periods, checks external destinations
//!   (RFC 7489 §7.1) and queues the reports through Tern's intake.
//!
//! The seam types derive serde's traits (added for the journal; the field set is the one
//! the verifier builds).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub mod aggregate;
pub mod config;
pub mod exchange;
pub mod journal;
pub mod kind;
pub mod message;
pub mod recorder;
pub mod reporter;
pub mod store;
pub mod tlsrpt;
pub mod xml;

pub use config::DmarcReportsConfig;
pub use recorder::ChannelRecorder;
pub use store::ReportStore;

/// A DMARC result as reports name them (RFC 7489 Appendix C `DMARCResultType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlignedResult {
    /// An aligned identifier passed.
    Pass,
    /// None passed aligned.
    Fail,
}

/// The policy applied (RFC 7489 Appendix C `DispositionType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Disposition {
    /// Delivered as it was.
    None,
    /// Quarantined (marked, held or routed aside, per configuration).
    Quarantine,
    /// Refused at the end of DATA.
    Reject,
}

/// A policy value `p=` / `sp=` (RFC 7489 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// `none`
    None,
    /// `quarantine`
    Quarantine,
    /// `reject`
    Reject,
}

/// An alignment mode `adkim=` / `aspf=` (RFC 7489 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Alignment {
    /// `r`
    Relaxed,
    /// `s`
    Strict,
}

/// The DMARC record as it was published when the message was checked
/// (`policy_published` of the report).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyPublished {
    /// The domain whose record applied: the From domain, or its organisational domain.
    pub domain: String,
    /// `adkim`
    pub adkim: Alignment,
    /// `aspf`
    pub aspf: Alignment,
    /// `p`
    pub p: Policy,
    /// `sp` (the `p` value when absent)
    pub sp: Policy,
    /// `pct` (100 when absent)
    pub pct: u8,
    /// `fo` as published (`"0"` when absent)
    pub fo: String,
}

/// One DKIM signature's result (`DKIMAuthResultType`): `pass`, `fail`, `neutral`,
/// `temperror`, `permerror`, `policy` or `none`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DkimResult {
    /// `d=`
    pub domain: String,
    /// `s=`
    pub selector: String,
    /// The result, lowercase as RFC 8601 writes it.
    pub result: String,
}

/// The SPF result (`SPFAuthResultType`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SpfResult {
    /// The domain checked: MAIL FROM's, or HELO's when MAIL FROM was empty.
    pub domain: String,
    /// `true` when the HELO identity was checked (`scope` `helo`), `false` for `mfrom`.
    pub helo: bool,
    /// `none`, `neutral`, `pass`, `fail`, `softfail`, `temperror` or `permerror`.
    pub result: String,
}

/// What one message's DMARC check found, for the aggregate report of its policy domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmarcObservation {
    /// When the message was checked (Unix seconds).
    pub at: u64,
    /// The connecting client's address (`source_ip`).
    pub source_ip: IpAddr,
    /// The RFC 5322.From domain (`header_from`), lowercase.
    pub header_from: String,
    /// The RFC 5321.MailFrom domain (`envelope_from`), lowercase; empty for a null sender.
    pub envelope_from: String,
    /// The record that applied.
    pub policy: PolicyPublished,
    /// The record's `rua=` URIs as published (validated and verified when reporting).
    pub rua: Vec<String>,
    /// What Tern did with the message.
    pub disposition: Disposition,
    /// DKIM, aligned.
    pub dkim_aligned: AlignedResult,
    /// SPF, aligned.
    pub spf_aligned: AlignedResult,
    /// Why the policy applied differs from the published one, when it does
    /// (`PolicyOverrideType`: `forwarded`, `sampled_out`, `trusted_forwarder`,
    /// `local_policy`, ...); empty otherwise.
    pub overrides: Vec<String>,
    /// Each DKIM signature checked.
    pub dkim: Vec<DkimResult>,
    /// The SPF check.
    pub spf: SpfResult,
}

/// Where observations go. Implementations must return at once (queue the observation,
/// or drop it and count the drop); the caller is an SMTP session.
pub trait DmarcRecorder: Send + Sync + 'static {
    /// Keeps `obs` for the next report of `obs.policy.domain`.
    fn record(&self, obs: DmarcObservation);
}

/// A recorder that keeps nothing: reports are off.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoReports;

impl DmarcRecorder for NoReports {
    fn record(&self, _obs: DmarcObservation) {}
}
