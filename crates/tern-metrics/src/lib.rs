//! Tern's counters: one process-global Prometheus registry ([`get`]) that every crate
//! counts into without plumbing, rendered by the admin listener's `/metrics`
//! (docs/ADMIN.md, "Counters").
//!
//! Cost: every handle is resolved when the registry is built (labelled counters of a
//! bounded enum are pre-created, one per value, and indexed by the enum), so counting on
//! a hot path is one atomic add: no lock, no allocation, no map lookup. The one labelled
//! family that grows at run time, SMTP sessions by listener, is resolved once per
//! listener when its accept loop starts ([`Metrics::smtp_sessions`]). Histograms are
//! atomic too ([`Histogram`]).
//!
//! What only exists at scrape time (messages per queue state, counted from the spool's
//! directories; the watchdog's workers) is passed to [`Metrics::render`] in a
//! [`Scrape`], rendered from a registry made for that one scrape, so a worker that is
//! gone is gone from the next scrape too.
//!
//! Bounds: every label value comes from a fixed enum, the configuration (listener
//! names, at most [`MAX_LISTENER_LABELS`]) or the watchdog (at most
//! [`MAX_WORKER_LABELS`] workers by name; the rest summed per kind as `worker="other"`).
//! Label values are cut to [`MAX_LABEL_LEN`] characters outside `[A-Za-z0-9_.:@#+-]`
//! replaced by `_`.

#![forbid(unsafe_code)]

pub mod dmarc_reports;
mod histogram;

use std::sync::atomic::AtomicU64;
use std::sync::{LazyLock, Mutex, PoisonError};

pub use histogram::Histogram;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// The content type of [`Metrics::render`]'s text (OpenMetrics 1.0, which Prometheus
/// reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Distinct listener names with their own label; later ones count as `other`.
pub const MAX_LISTENER_LABELS: usize = 32;
/// Workers shown by name; the rest are summed per kind under `worker="other"`.
pub const MAX_WORKER_LABELS: usize = 200;
/// Longest label value, characters.
pub const MAX_LABEL_LEN: usize = 64;
/// The label value that stands for everything past a cap.
pub const OTHER: &str = "other";

/// Which rate limit refused a connection or a command (`tern_smtp_rate_limited_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimited {
    /// Connections per window from one client network (421 4.7.0).
    ClientConnections,
    /// Messages per window from one client network (451 4.7.1).
    ClientMessages,
    /// Recipients per window from one client network (451 4.7.1).
    ClientRecipients,
    /// Recipients of one message (452 4.5.3).
    RecipientsPerMessage,
    /// Messages per window from one authenticated user (451 4.7.1).
    UserMessages,
    /// Recipients per window from one authenticated user (451 4.7.1).
    UserRecipients,
    /// Messages per window from one sender domain (451 4.7.1).
    SenderDomainMessages,
    /// Recipients per window of mail from one sender domain (451 4.7.1).
    SenderDomainRecipients,
}

impl RateLimited {
    /// Every limit, in label order.
    pub const ALL: [RateLimited; 8] = [
        RateLimited::ClientConnections,
        RateLimited::ClientMessages,
        RateLimited::ClientRecipients,
        RateLimited::RecipientsPerMessage,
        RateLimited::UserMessages,
        RateLimited::UserRecipients,
        RateLimited::SenderDomainMessages,
        RateLimited::SenderDomainRecipients,
    ];

    /// The `limit` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RateLimited::ClientConnections => "client_connections",
            RateLimited::ClientMessages => "client_messages",
            RateLimited::ClientRecipients => "client_recipients",
            RateLimited::RecipientsPerMessage => "recipients_per_message",
            RateLimited::UserMessages => "user_messages",
            RateLimited::UserRecipients => "user_recipients",
            RateLimited::SenderDomainMessages => "sender_domain_messages",
            RateLimited::SenderDomainRecipients => "sender_domain_recipients",
        }
    }
}

/// What screening before the first command and greylisting decided
/// (`tern_smtp_screen_total`, docs/SCREENING.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screened {
    /// A client passed the tests it was given (and is remembered for them).
    Passed,
    /// A client skipped every test: the pass cache remembered it.
    PassCached,
    /// A client talked before the final greeting line.
    Pregreet,
    /// A client's list score reached the threshold.
    Listed,
    /// A client's list score was below zero (an allow list).
    AllowListed,
    /// A list did not answer in time for one client (counted once per list).
    ListUnanswered,
    /// A recipient refused 451 4.7.1 by greylisting.
    Greylisted,
    /// A greylisted triplet retried in time and passed.
    GreylistPassed,
    /// A recipient accepted by greylisting without a delay: a triplet passed before or an
    /// automatically allowed network.
    GreylistKnown,
    /// A recipient refused because of a failed test under `enforce` (550).
    Enforced,
}

impl Screened {
    /// Every outcome, in label order.
    pub const ALL: [Screened; 10] = [
        Screened::Passed,
        Screened::PassCached,
        Screened::Pregreet,
        Screened::Listed,
        Screened::AllowListed,
        Screened::ListUnanswered,
        Screened::Greylisted,
        Screened::GreylistPassed,
        Screened::GreylistKnown,
        Screened::Enforced,
    ];

    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Screened::Passed => "passed",
            Screened::PassCached => "pass_cached",
            Screened::Pregreet => "pregreet",
            Screened::Listed => "listed",
            Screened::AllowListed => "allow_listed",
            Screened::ListUnanswered => "list_unanswered",
            Screened::Greylisted => "greylisted",
            Screened::GreylistPassed => "greylist_passed",
            Screened::GreylistKnown => "greylist_known",
            Screened::Enforced => "enforced",
        }
    }
}

/// Why the SMTP server refused mail (a MAIL, RCPT or DATA command, or a connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// A recipient outside the relay domains from a client outside the relay networks.
    RelayDenied,
    /// A local recipient that is no mailbox nor alias.
    UnknownUser,
    /// An alias that loops or expands too far.
    Alias,
    /// The message or its declared size is over the limit.
    Size,
    /// The spool is in back pressure (452 4.3.1).
    BackPressure,
    /// A connection, recipient or error limit.
    Limits,
    /// A sender or recipient address that does not parse or needs SMTPUTF8.
    Syntax,
    /// Content refused while reading it (line too long, bare CR or LF).
    Content,
    /// The spool could not take the message (451 4.3.0).
    SpoolError,
    /// Screening or greylisting (docs/SCREENING.md): a client dropped with 521, a
    /// recipient refused 550 under `enforce` or 451 by greylisting.
    Screen,
}

impl Reject {
    /// Every reason, in label order.
    pub const ALL: [Reject; 10] = [
        Reject::RelayDenied,
        Reject::UnknownUser,
        Reject::Alias,
        Reject::Size,
        Reject::BackPressure,
        Reject::Limits,
        Reject::Syntax,
        Reject::Content,
        Reject::SpoolError,
        Reject::Screen,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::RelayDenied => "relay_denied",
            Reject::UnknownUser => "unknown_user",
            Reject::Alias => "alias",
            Reject::Size => "size",
            Reject::BackPressure => "back_pressure",
            Reject::Limits => "limits",
            Reject::Syntax => "syntax",
            Reject::Content => "content",
            Reject::SpoolError => "spool_error",
            Reject::Screen => "screen",
        }
    }
}

/// How one delivery attempt (one job tried at one host, or handed to a local transport)
/// ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Every recipient accepted.
    Delivered,
    /// Some recipients accepted, others deferred or refused.
    Partial,
    /// No recipient accepted, at least one deferred.
    Deferred,
    /// Every recipient refused permanently.
    Failed,
    /// No session: refused, unreachable, timeout or a bad greeting.
    ConnectError,
    /// Greeted, then the transaction broke or MAIL got a 4xx: next host.
    SessionError,
    /// The next hop's hosts could not be found (DNS).
    LookupError,
}

impl Attempt {
    /// Every result, in label order.
    pub const ALL: [Attempt; 7] = [
        Attempt::Delivered,
        Attempt::Partial,
        Attempt::Deferred,
        Attempt::Failed,
        Attempt::ConnectError,
        Attempt::SessionError,
        Attempt::LookupError,
    ];

    /// The `result` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Attempt::Delivered => "delivered",
            Attempt::Partial => "partial",
            Attempt::Deferred => "deferred",
            Attempt::Failed => "failed",
            Attempt::ConnectError => "connect_error",
            Attempt::SessionError => "session_error",
            Attempt::LookupError => "lookup_error",
        }
    }

    /// The result of an attempt that gave every recipient a result: `delivered`,
    /// `deferred` and `failed` recipients counted.
    pub fn of_counts(delivered: usize, deferred: usize, failed: usize) -> Attempt {
        match (delivered, deferred, failed) {
            (d, 0, 0) if d > 0 => Attempt::Delivered,
            (d, _, _) if d > 0 => Attempt::Partial,
            (_, t, _) if t > 0 => Attempt::Deferred,
            _ => Attempt::Failed,
        }
    }
}

/// DKIM signatures (tern-dkim, counted by the queue): one per key per signed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DkimSignature {
    /// An RSA-SHA256 signature was made.
    RsaSigned,
    /// An Ed25519-SHA256 signature was made.
    Ed25519Signed,
    /// Signing with an RSA key failed.
    RsaFailed,
    /// Signing with an Ed25519 key failed.
    Ed25519Failed,
}

impl DkimSignature {
    /// Every one, in handle order.
    pub const ALL: [DkimSignature; 4] = [
        DkimSignature::RsaSigned,
        DkimSignature::Ed25519Signed,
        DkimSignature::RsaFailed,
        DkimSignature::Ed25519Failed,
    ];

    /// The `algorithm` and `result` labels.
    pub fn labels(self) -> (&'static str, &'static str) {
        match self {
            DkimSignature::RsaSigned => ("rsa-sha256", "signed"),
            DkimSignature::Ed25519Signed => ("ed25519-sha256", "signed"),
            DkimSignature::RsaFailed => ("rsa-sha256", "failed"),
            DkimSignature::Ed25519Failed => ("ed25519-sha256", "failed"),
        }
    }
}

// --- ARC sealing (issue 18 §1) ---

/// What ARC sealing came to for one delivery attempt of mail that should be sealed
/// (counted by the queue): sealed, or sent unsealed for one of a fixed set of reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArcSeal {
    /// An ARC set was added.
    Sealed,
    /// Larger than `arc.max_size`.
    TooLarge,
    /// The last set already said `cv=fail`.
    ChainFailed,
    /// The chain already had 50 sets.
    ChainTooLong,
    /// The ARC fields could not be grouped into numbered sets.
    ChainMalformed,
    /// The chain could not be validated in time (DNS).
    TempError,
    /// No usable key.
    NoKey,
    /// The sealer failed or the content could not be read.
    Error,
}

impl ArcSeal {
    /// Every one, in handle order.
    pub const ALL: [ArcSeal; 8] = [
        ArcSeal::Sealed,
        ArcSeal::TooLarge,
        ArcSeal::ChainFailed,
        ArcSeal::ChainTooLong,
        ArcSeal::ChainMalformed,
        ArcSeal::TempError,
        ArcSeal::NoKey,
        ArcSeal::Error,
    ];

    /// The `result` label.
    pub fn label(self) -> &'static str {
        match self {
            ArcSeal::Sealed => "sealed",
            ArcSeal::TooLarge => "too_large",
            ArcSeal::ChainFailed => "chain_failed",
            ArcSeal::ChainTooLong => "chain_too_long",
            ArcSeal::ChainMalformed => "chain_malformed",
            ArcSeal::TempError => "temperror",
            ArcSeal::NoKey => "no_key",
            ArcSeal::Error => "error",
        }
    }
}

// --- SMTP AUTH (issue 17 §1) ---

/// How an SMTP AUTH exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    /// 235: authenticated.
    Success,
    /// 535: wrong password, unknown user, or refused by the mechanism.
    Failure,
    /// 454: the client or user is locked out.
    Locked,
    /// 454: the credential backend could not answer.
    Unavailable,
    /// 501: the client cancelled or sent an undecodable response.
    Cancelled,
}

impl AuthResult {
    /// Every result, in label order.
    pub const ALL: [AuthResult; 5] = [
        AuthResult::Success,
        AuthResult::Failure,
        AuthResult::Locked,
        AuthResult::Unavailable,
        AuthResult::Cancelled,
    ];

    /// The `result` label.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthResult::Success => "success",
            AuthResult::Failure => "failure",
            AuthResult::Locked => "locked",
            AuthResult::Unavailable => "unavailable",
            AuthResult::Cancelled => "cancelled",
        }
    }
}

/// The `mechanism` label values of `tern_smtp_auth` (anything else counts as `other`).
pub const AUTH_MECHANISMS: [&str; 4] = ["plain", "login", "scram_sha_256", "other"];

/// Why mail was refused on a submission listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmissionRefusal {
    /// MAIL without AUTH on an `auth = "required"` listener (530 5.7.0).
    AuthRequired,
    /// A sender the authenticated user does not own (553 5.7.1).
    SenderMismatch,
}

impl SubmissionRefusal {
    /// Every reason, in label order.
    pub const ALL: [SubmissionRefusal; 2] = [
        SubmissionRefusal::AuthRequired,
        SubmissionRefusal::SenderMismatch,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            SubmissionRefusal::AuthRequired => "auth_required",
            SubmissionRefusal::SenderMismatch => "sender_mismatch",
        }
    }
}

// --- Inbound verification (issue 18 §1, §2) ---

/// The methods inbound verification counts (`method` label).
pub const VERIFY_METHODS: [&str; 4] = ["spf", "dkim", "dmarc", "arc"];
/// The results counted (`result` label, RFC 8601's names).
pub const VERIFY_RESULTS: [&str; 8] = [
    "none",
    "pass",
    "fail",
    "softfail",
    "neutral",
    "temperror",
    "permerror",
    "policy",
];
/// What verification did with a message (`action` label).
pub const VERIFY_ACTIONS: [&str; 4] = ["accept", "quarantine", "reject", "defer"];

struct VerifyCounters {
    results: [[Counter; VERIFY_RESULTS.len()]; VERIFY_METHODS.len()],
    actions: [Counter; VERIFY_ACTIONS.len()],
    /// Messages not held in memory for DKIM/ARC (over max_size or the budget).
    streamed: Counter,
}

impl VerifyCounters {
    fn register(registry: &mut Registry) -> VerifyCounters {
        let family = Family::<[(&'static str, String); 2], Counter>::default();
        registry.register(
            "verify_results",
            "Inbound verification results, by method (spf, dkim, dmarc, arc) and result",
            family.clone(),
        );
        let results = VERIFY_METHODS.map(|m| {
            VERIFY_RESULTS.map(|r| {
                family.get_or_create_owned(&[("method", m.to_owned()), ("result", r.to_owned())])
            })
        });
        let actions_family = Family::<Labels1, Counter>::default();
        registry.register(
            "verify_actions",
            "Messages by what inbound verification decided (accept, quarantine, reject, defer)",
            actions_family.clone(),
        );
        let actions =
            VERIFY_ACTIONS.map(|a| actions_family.get_or_create_owned(&[("action", a.to_owned())]));
        let streamed = Counter::default();
        registry.register(
            "verify_not_in_memory",
            "Messages not DKIM/ARC-verified because they were over verify.max_size or the memory budget",
            streamed.clone(),
        );
        VerifyCounters {
            results,
            actions,
            streamed,
        }
    }
}

impl Metrics {
    /// Counts one verification result; names outside the bounded sets are not counted.
    pub fn verify_result(&self, method: &str, result: &str) {
        let m = VERIFY_METHODS.iter().position(|x| *x == method);
        let r = VERIFY_RESULTS.iter().position(|x| *x == result);
        if let (Some(m), Some(r)) = (m, r)
            && let Some(c) = self.verify.results.get(m).and_then(|row| row.get(r))
        {
            c.inc();
        }
    }

    /// Verification results so far for `method` and `result`.
    pub fn verify_results(&self, method: &str, result: &str) -> u64 {
        let m = VERIFY_METHODS.iter().position(|x| *x == method);
        let r = VERIFY_RESULTS.iter().position(|x| *x == result);
        match (m, r) {
            (Some(m), Some(r)) => self
                .verify
                .results
                .get(m)
                .and_then(|row| row.get(r))
                .map_or(0, Counter::get),
            _ => 0,
        }
    }

    /// Counts one verification decision (`accept`, `quarantine`, `reject`, `defer`).
    pub fn verify_action(&self, action: &str) {
        if let Some(c) = VERIFY_ACTIONS
            .iter()
            .position(|x| *x == action)
            .and_then(|i| self.verify.actions.get(i))
        {
            c.inc();
        }
    }

    /// Counts one message not held in memory for verification.
    pub fn verify_not_in_memory(&self) {
        self.verify.streamed.inc();
    }
}

/// The AUTH counters, resolved at start.
struct AuthCounters {
    exchanges: [[Counter; AuthResult::ALL.len()]; AUTH_MECHANISMS.len()],
    refused: [Counter; SubmissionRefusal::ALL.len()],
}

impl AuthCounters {
    fn register(registry: &mut Registry) -> AuthCounters {
        let family = Family::<[(&'static str, String); 2], Counter>::default();
        registry.register(
            "smtp_auth",
            "SMTP AUTH exchanges, by mechanism and result",
            family.clone(),
        );
        let exchanges = AUTH_MECHANISMS.map(|m| {
            AuthResult::ALL.map(|r| {
                family.get_or_create_owned(&[
                    ("mechanism", m.to_owned()),
                    ("result", r.as_str().to_owned()),
                ])
            })
        });
        let refused_family = Family::<Labels1, Counter>::default();
        registry.register(
            "smtp_submission_refused",
            "Mail refused on submission: no AUTH where required, or a sender the user does not own",
            refused_family.clone(),
        );
        let refused = SubmissionRefusal::ALL
            .map(|r| refused_family.get_or_create_owned(&[("reason", r.as_str().to_owned())]));
        AuthCounters { exchanges, refused }
    }
}

impl Metrics {
    /// Counts one AUTH exchange; `mechanism` is one of [`AUTH_MECHANISMS`] (anything
    /// else counts as `other`).
    pub fn auth(&self, mechanism: &str, result: AuthResult) {
        let m = AUTH_MECHANISMS
            .iter()
            .position(|x| *x == mechanism)
            .unwrap_or(AUTH_MECHANISMS.len() - 1);
        if let Some(c) = self
            .auth
            .exchanges
            .get(m)
            .and_then(|row| row.get(result as usize))
        {
            c.inc();
        }
    }

    /// AUTH exchanges so far with `mechanism` and `result`.
    pub fn auth_count(&self, mechanism: &str, result: AuthResult) -> u64 {
        let m = AUTH_MECHANISMS
            .iter()
            .position(|x| *x == mechanism)
            .unwrap_or(AUTH_MECHANISMS.len() - 1);
        self.auth
            .exchanges
            .get(m)
            .and_then(|row| row.get(result as usize))
            .map_or(0, Counter::get)
    }

    /// Counts one refusal on a submission listener.
    pub fn submission_refused(&self, reason: SubmissionRefusal) {
        if let Some(c) = self.auth.refused.get(reason as usize) {
            c.inc();
        }
    }
}

// --- end SMTP AUTH ---

/// Accept latency buckets, seconds (DATA end to 250: content, fsyncs, group commit).
static ACCEPT_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// fsync buckets, seconds.
static FSYNC_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// DNS lookup buckets, seconds.
static DNS_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Time in queue buckets, seconds: one second to five days.
static QUEUE_BUCKETS: [f64; 17] = [
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14_400.0, 43_200.0,
    86_400.0, 259_200.0, 432_000.0,
];

type Labels1 = [(&'static str, String); 1];

/// Every process-wide metric. Get it with [`get`].
pub struct Metrics {
    registry: Registry,
    /// Messages committed to the spool (SMTP, pickup, and Tern's own bounces).
    pub received: Counter,
    /// Recipients delivered (accepted by the next hop or written to a mailbox).
    pub delivered: Counter,
    /// Recipient deferrals (one per recipient per attempt that ended in a 4xx or a
    /// local temporary failure).
    pub deferred: Counter,
    /// Recipients failed permanently (bounced, or dropped when no bounce is due).
    pub bounced: Counter,
    /// Messages moved to `poison/`.
    pub poisoned: Counter,
    /// Spool files moved to `corrupt/`.
    pub quarantined: Counter,
    rejected: [Counter; Reject::ALL.len()],
    rate_limited: [Counter; RateLimited::ALL.len()],
    screened: [Counter; Screened::ALL.len()],
    /// Keys the in-memory rate limiter tracks now (`tern-limits`).
    pub rate_limit_keys: Gauge,
    /// Rate limiter keys evicted because its table was full.
    pub rate_limit_evicted: Counter,
    /// Shared-limit decisions (rate limits, AUTH failures, destination leases) taken
    /// locally with the node's `cluster.local_share` because Redis did not answer.
    pub cluster_local_decisions: Counter,
    /// Calls to Redis by the shared rate limiter (a check, or units borrowed ahead).
    pub cluster_limit_calls: Counter,
    /// Shared rate-limit checks spent from units this node had borrowed: no round trip.
    pub cluster_limit_local_spends: Counter,
    /// Connection leases of a destination limit refused (the job waits; issue 20).
    pub destination_leases_refused: Counter,
    /// Messages held back by a destination limit's message rate (the job waits).
    pub destination_messages_delayed: Counter,
    attempts: [Counter; Attempt::ALL.len()],
    sessions: Family<Labels1, Gauge>,
    listeners: BoundedLabels,
    /// DATA end (or the last BDAT chunk) to the 250 reply, seconds.
    pub accept_latency: Histogram,
    /// Arrival to delivery of each delivered recipient, seconds.
    pub queue_time: Histogram,
    /// One fsync/fdatasync/syncfs of the spool's commit path, seconds.
    pub fsync_latency: Histogram,
    /// One DNS query sent (cache hits not counted), seconds.
    pub dns_lookup: Histogram,
    /// DNS answers served from Tern's cache.
    pub dns_cache_hits: Counter,
    /// DNS lookups not in the cache (asked, or waiting for the same query).
    pub dns_cache_misses: Counter,
    /// Next hops marked down now (the scheduler sets it).
    pub destinations_down: Gauge,
    /// DKIM signatures by algorithm and result.
    dkim: [Counter; DkimSignature::ALL.len()],
    /// ARC seals by result (issue 18).
    arc: [Counter; ArcSeal::ALL.len()],
    /// SMTP AUTH counters (issue 17).
    auth: AuthCounters,
    verify: VerifyCounters,
    /// DMARC aggregate report counters (issue 18 §4).
    dmarc: dmarc_reports::DmarcReportCounters,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tern");
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let received = counter(
            &mut registry,
            "messages_received",
            "Messages committed to the spool (SMTP, pickup, bounces)",
        );
        let delivered = counter(
            &mut registry,
            "recipients_delivered",
            "Recipients delivered to the next hop or a mailbox",
        );
        let deferred = counter(
            &mut registry,
            "recipients_deferred",
            "Recipient deferrals (one per recipient per failed attempt)",
        );
        let bounced = counter(
            &mut registry,
            "recipients_bounced",
            "Recipients failed permanently",
        );
        let poisoned = counter(
            &mut registry,
            "messages_poisoned",
            "Messages moved to poison/ after crashing the server",
        );
        let quarantined = counter(
            &mut registry,
            "messages_quarantined",
            "Spool files moved to corrupt/",
        );

        let rejected_family = Family::<Labels1, Counter>::default();
        registry.register(
            "smtp_rejected",
            "Mail refused by the SMTP server, by reason",
            rejected_family.clone(),
        );
        let rejected = Reject::ALL
            .map(|r| rejected_family.get_or_create_owned(&[("reason", r.as_str().to_owned())]));

        let rate_limited_family = Family::<Labels1, Counter>::default();
        registry.register(
            "smtp_rate_limited",
            "Connections and commands refused by a rate limit, by limit",
            rate_limited_family.clone(),
        );
        let rate_limited = RateLimited::ALL
            .map(|r| rate_limited_family.get_or_create_owned(&[("limit", r.as_str().to_owned())]));
        let screened_family = Family::<Labels1, Counter>::default();
        registry.register(
            "smtp_screen",
            "Screening before the first command and greylisting, by outcome",
            screened_family.clone(),
        );
        let screened = Screened::ALL
            .map(|r| screened_family.get_or_create_owned(&[("outcome", r.as_str().to_owned())]));
        let rate_limit_keys = Gauge::default();
        registry.register(
            "rate_limit_keys",
            "Keys the in-memory rate limiter tracks now",
            rate_limit_keys.clone(),
        );
        let rate_limit_evicted = counter(
            &mut registry,
            "rate_limit_keys_evicted",
            "Rate limiter keys evicted because its table was full",
        );
        let cluster_local_decisions = counter(
            &mut registry,
            "cluster_local_decisions",
            "Shared-limit decisions taken locally (local share) because Redis did not answer",
        );
        let cluster_limit_calls = counter(
            &mut registry,
            "cluster_limit_calls",
            "Calls to Redis by the shared rate limiter (checks and units borrowed ahead)",
        );
        let cluster_limit_local_spends = counter(
            &mut registry,
            "cluster_limit_local_spends",
            "Shared rate-limit checks spent from units borrowed ahead, without a round trip",
        );
        let destination_leases_refused = counter(
            &mut registry,
            "destination_leases_refused",
            "Connection leases refused by a destination limit (the job waits)",
        );
        let destination_messages_delayed = counter(
            &mut registry,
            "destination_messages_delayed",
            "Messages held back by a destination limit's message rate (the job waits)",
        );

        let attempt_family = Family::<Labels1, Counter>::default();
        registry.register(
            "delivery_attempts",
            "Delivery attempts (one job at one host or local transport), by result",
            attempt_family.clone(),
        );
        let attempts = Attempt::ALL
            .map(|a| attempt_family.get_or_create_owned(&[("result", a.as_str().to_owned())]));

        let sessions = Family::<Labels1, Gauge>::default();
        registry.register(
            "smtp_sessions_in_progress",
            "SMTP sessions open now, by listener",
            sessions.clone(),
        );

        let histogram = |registry: &mut Registry, name: &str, help: &str, b: &'static [f64]| {
            let h = Histogram::new(b);
            registry.register_with_unit(name, help, Unit::Seconds, h.clone());
            h
        };
        let accept_latency = histogram(
            &mut registry,
            "smtp_accept_latency",
            "End of DATA to the 250 reply",
            &ACCEPT_BUCKETS,
        );
        let queue_time = histogram(
            &mut registry,
            "queue_time_to_delivery",
            "Arrival to delivery, per delivered recipient",
            &QUEUE_BUCKETS,
        );
        let fsync_latency = histogram(
            &mut registry,
            "spool_fsync",
            "One fsync of the spool's commit path (file, directory, or syncfs)",
            &FSYNC_BUCKETS,
        );
        let dns_lookup = histogram(
            &mut registry,
            "dns_lookup",
            "One DNS query sent (cache hits excluded)",
            &DNS_BUCKETS,
        );
        let dns_cache_hits = counter(
            &mut registry,
            "dns_cache_hits",
            "DNS answers served from Tern's cache",
        );
        let dns_cache_misses = counter(
            &mut registry,
            "dns_cache_misses",
            "DNS lookups not found in the cache",
        );
        let destinations_down = Gauge::default();
        registry.register(
            "destinations_down",
            "Next hops marked down now",
            destinations_down.clone(),
        );
        let dkim_family = Family::<Labels2, Counter>::default();
        registry.register(
            "dkim_signatures",
            "DKIM signatures made or failed per delivery attempt, by algorithm and result",
            dkim_family.clone(),
        );
        let dkim = DkimSignature::ALL.map(|d| {
            let (algorithm, result) = d.labels();
            dkim_family.get_or_create_owned(&[
                ("algorithm", algorithm.to_owned()),
                ("result", result.to_owned()),
            ])
        });
        let arc_family = Family::<Labels1, Counter>::default();
        registry.register(
            "arc_seals",
            "ARC sealing of forwarded mail per delivery attempt: sealed, or the reason it went unsealed",
            arc_family.clone(),
        );
        let arc = ArcSeal::ALL
            .map(|a| arc_family.get_or_create_owned(&[("result", a.label().to_owned())]));
        let auth = AuthCounters::register(&mut registry);
        let verify = VerifyCounters::register(&mut registry);
        let dmarc = dmarc_reports::DmarcReportCounters::register(&mut registry);
        Metrics {
            auth,
            verify,
            dmarc,
            registry,
            dkim,
            arc,
            received,
            delivered,
            deferred,
            bounced,
            poisoned,
            quarantined,
            rejected,
            rate_limited,
            screened,
            rate_limit_keys,
            rate_limit_evicted,
            cluster_local_decisions,
            cluster_limit_calls,
            cluster_limit_local_spends,
            destination_leases_refused,
            destination_messages_delayed,
            attempts,
            sessions,
            listeners: BoundedLabels::new(MAX_LISTENER_LABELS),
            accept_latency,
            queue_time,
            fsync_latency,
            dns_lookup,
            dns_cache_hits,
            dns_cache_misses,
            destinations_down,
        }
    }

    /// Counts one refusal.
    pub fn reject(&self, reason: Reject) {
        if let Some(c) = self.rejected.get(reason as usize) {
            c.inc();
        }
    }

    /// Counts one refusal by a rate limit.
    pub fn rate_limited(&self, limit: RateLimited) {
        if let Some(c) = self.rate_limited.get(limit as usize) {
            c.inc();
        }
    }

    /// Counts one screening outcome.
    pub fn screened(&self, outcome: Screened) {
        if let Some(c) = self.screened.get(outcome as usize) {
            c.inc();
        }
    }

    /// Screening outcomes so far of this kind.
    pub fn screened_count(&self, outcome: Screened) -> u64 {
        self.screened.get(outcome as usize).map_or(0, Counter::get)
    }

    /// Refusals so far by `limit`.
    pub fn rate_limited_count(&self, limit: RateLimited) -> u64 {
        self.rate_limited
            .get(limit as usize)
            .map_or(0, Counter::get)
    }

    /// Refusals so far for `reason`.
    pub fn rejected(&self, reason: Reject) -> u64 {
        self.rejected.get(reason as usize).map_or(0, Counter::get)
    }

    /// Counts one DKIM signature (or failure).
    pub fn dkim_signature(&self, what: DkimSignature) {
        if let Some(c) = self.dkim.get(what as usize) {
            c.inc();
        }
    }

    /// DKIM signatures so far of this kind.
    pub fn dkim_signatures(&self, what: DkimSignature) -> u64 {
        self.dkim.get(what as usize).map_or(0, Counter::get)
    }

    /// Counts one ARC sealing outcome.
    pub fn arc_seal(&self, what: ArcSeal) {
        if let Some(c) = self.arc.get(what as usize) {
            c.inc();
        }
    }

    /// ARC sealing outcomes so far of this kind.
    pub fn arc_seals(&self, what: ArcSeal) -> u64 {
        self.arc.get(what as usize).map_or(0, Counter::get)
    }

    /// Counts one delivery attempt.
    pub fn attempt(&self, result: Attempt) {
        if let Some(c) = self.attempts.get(result as usize) {
            c.inc();
        }
    }

    /// Attempts so far with `result`.
    pub fn attempts(&self, result: Attempt) -> u64 {
        self.attempts.get(result as usize).map_or(0, Counter::get)
    }

    /// The in-progress gauge of listener `name`: resolve it once per listener (this takes
    /// a lock) and [`SessionGauge::enter`] it per session (an atomic add).
    pub fn smtp_sessions(&self, listener: &str) -> SessionGauge {
        let label = self.listeners.label(listener);
        SessionGauge(self.sessions.get_or_create_owned(&[("listener", label)]))
    }

    /// The text exposition: the process-wide metrics, then `scrape`'s, then `# EOF`.
    pub fn render(&self, scrape: &Scrape) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        encode_registry(&mut out, &self.registry)?;
        encode_registry(&mut out, &scrape.registry())?;
        encode_eof(&mut out)?;
        Ok(out)
    }
}

/// The SMTP sessions of one listener (see [`Metrics::smtp_sessions`]).
#[derive(Clone, Debug)]
pub struct SessionGauge(Gauge);

impl SessionGauge {
    /// One session more until the guard is dropped (also on panic).
    pub fn enter(&self) -> SessionGuard {
        self.0.inc();
        SessionGuard(self.0.clone())
    }

    /// Sessions open now.
    pub fn get(&self) -> i64 {
        self.0.get()
    }
}

/// Counts one session in progress while it lives.
#[derive(Debug)]
pub struct SessionGuard(Gauge);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Label values of one label, at most `cap` distinct; later ones become [`OTHER`].
/// Takes a short lock: for resolving handles, not for counting.
#[derive(Debug)]
pub struct BoundedLabels {
    cap: usize,
    seen: Mutex<Vec<String>>,
}

impl BoundedLabels {
    /// At most `cap` distinct values.
    pub fn new(cap: usize) -> BoundedLabels {
        BoundedLabels {
            cap,
            seen: Mutex::new(Vec::new()),
        }
    }

    /// The label value for `name`: itself (cleaned, [`clean_label`]) while there is
    /// room or it was seen before, else [`OTHER`].
    pub fn label(&self, name: &str) -> String {
        let name = clean_label(name);
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.contains(&name) {
            return name;
        }
        if seen.len() < self.cap {
            seen.push(name.clone());
            return name;
        }
        OTHER.to_owned()
    }
}

/// `name` as a label value: at most [`MAX_LABEL_LEN`] characters, each outside
/// `[A-Za-z0-9_.:@#+-]` replaced by `_`; empty becomes `_`.
pub fn clean_label(name: &str) -> String {
    let mut out: String = name
        .chars()
        .take(MAX_LABEL_LEN)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.:@#+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// One worker as the watchdog saw it at the scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSample {
    /// Its name (`queue.scheduler`, `delivery#7@smtp:relay`, ...).
    pub name: String,
    /// Its kind (`listener`, `delivery`, ...).
    pub kind: &'static str,
    /// Working or with work waiting.
    pub busy: bool,
    /// Work waiting and no progress for longer than the stall limit.
    pub stalled: bool,
    /// Seconds since its last beat.
    pub heartbeat_age_secs: f64,
    /// Items it finished.
    pub processed: u64,
}

/// What is measured at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// Messages per queue state (`incoming`, `active`, ...), from the spool.
    pub queue_states: Vec<(&'static str, u64)>,
    /// The watchdog's workers; `None` when the watchdog is off.
    pub workers: Option<Vec<WorkerSample>>,
}

type Labels2 = [(&'static str, String); 2];

impl Scrape {
    fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("tern");
        let states = Family::<Labels1, Gauge>::default();
        for (state, n) in &self.queue_states {
            states
                .get_or_create(&[("state", (*state).to_owned())])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        r.register(
            "queue_messages",
            "Messages in the spool now, by queue state",
            states,
        );
        let Some(workers) = &self.workers else {
            return r;
        };
        let busy = Family::<Labels2, Gauge>::default();
        let stalled = Family::<Labels2, Gauge>::default();
        let age = Family::<Labels2, Gauge<f64, AtomicU64>>::default();
        let processed = Family::<Labels2, Counter>::default();
        for (labels, w) in bounded_workers(workers) {
            busy.get_or_create(&labels).inc_by(w.busy);
            stalled.get_or_create(&labels).inc_by(w.stalled);
            let a = age.get_or_create(&labels);
            if w.age > a.get() {
                a.set(w.age);
            }
            processed.get_or_create(&labels).inc_by(w.processed);
        }
        r.register(
            "worker_busy",
            "1 when the worker is working or has work waiting (for worker=\"other\": how many)",
            busy,
        );
        r.register(
            "worker_stalled",
            "1 when the worker has work and made no progress past its limit",
            stalled,
        );
        r.register_with_unit(
            "worker_heartbeat_age",
            "Seconds since the worker's last beat (worker=\"other\": the oldest)",
            Unit::Seconds,
            age,
        );
        r.register("worker_processed", "Items the worker finished", processed);
        r.register(
            "workers",
            "Workers registered with the watchdog",
            ConstGaugeI64::new(i64::try_from(workers.len()).unwrap_or(i64::MAX)),
        );
        r
    }
}

type ConstGaugeI64 = prometheus_client::metrics::gauge::ConstGauge<i64>;

/// One worker's values, ready to add into its label set.
struct WorkerValues {
    busy: i64,
    stalled: i64,
    age: f64,
    processed: u64,
}

/// The first [`MAX_WORKER_LABELS`] workers by name, the rest as `worker="other"` with
/// their kind.
fn bounded_workers(workers: &[WorkerSample]) -> impl Iterator<Item = (Labels2, WorkerValues)> {
    workers.iter().enumerate().map(|(i, w)| {
        let name = if i < MAX_WORKER_LABELS {
            clean_label(&w.name)
        } else {
            OTHER.to_owned()
        };
        (
            [("worker", name), ("kind", w.kind.to_owned())],
            WorkerValues {
                busy: i64::from(w.busy),
                stalled: i64::from(w.stalled),
                age: w.heartbeat_age_secs,
                processed: w.processed,
            },
        )
    })
}

#[cfg(test)]
mod tests;
