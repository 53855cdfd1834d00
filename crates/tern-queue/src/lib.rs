//! Tern's queue manager: moves messages from `incoming/` to `active/` and on to delivered,
//! deferred, held or bounced.
//!
//! Shape (one actor, no locks):
//! - The **scheduler** ([`scheduler`]) is one task that owns every piece of queue state:
//!   the backlog of messages waiting to be loaded, the retry timers of deferred messages,
//!   and one queue of delivery jobs per next hop with its concurrency count and its "down
//!   until" mark. Everything else talks to it through one unbounded channel, so no code
//!   here holds a lock, let alone two, and nothing can deadlock on lock order.
//! - Each message being processed runs in its own **message task** ([`message`]): it
//!   moves the file to `active/`, reads and validates it, routes every pending recipient,
//!   hands one job per next hop to the scheduler, waits for their results, sends bounces
//!   and delay notices, and then removes, defers or holds the message (its decisions are
//!   the sans-I/O [`plan`] and [`apply`]; the rest is I/O). A panic in it ends
//!   that task only; it is caught at the task's join handle, counted against the message
//!   like a crash, and the message is deferred (or poisoned at the threshold).
//! - Each connection is a **delivery worker** ([`attempt`]): the scheduler starts one
//!   when a next hop has jobs and free slots; it walks the MX list, delivers the job, then
//!   asks for another job for the same next hop to reuse its connection. When there is
//!   none it hands the connection to the scheduler's **connection cache** (`conncache`,
//!   by endpoint: address, port and TLS policy) and ends, so idle connections hold no
//!   slot; a later worker for any next hop whose MX leads to that endpoint reuses it. Its slot is
//!   returned by a guard's `Drop`, so a panic cannot leak it. Jobs for the local
//!   transports (`maildir:<i>`, `lmtp:<i>` next hops) go through the same workers and
//!   limits; [`local`] delivers them (Maildir files, or an LMTP session).
//!
//! - A death of the process is counted against a message only when the evidence points
//!   at it ([`probe`]): the messages in process at that death are **suspects**, kept in
//!   `active/` and probed one at a time by the scheduler (a durable probe mark per probe),
//!   and a fatal signal leaves a **last gasp** naming the message its thread was
//!   processing ([`last_gasp`]).
//!
//! Invariants:
//! - A message is in exactly one state directory (moves are link, fsync, unlink: see
//!   `tern_spool`); the scheduler processes a message id at most once at a time.
//! - A recipient is only ever tried again while its status is pending or deferred; its
//!   delivered or failed status is written to the delivery record before the message
//!   leaves `active/` for `deferred/` or `hold/`. A bounce is committed to the spool
//!   before the record says it was sent, so a crash can repeat a bounce, never lose one.
//! - Routing uses the routing table as it was when the message task started: a reload
//!   changes what later tasks see, never a delivery in progress.
//!
//! Watchdog: the scheduler and every delivery worker carry a heartbeat (see
//! `tern_watchdog`). The scheduler counts the commands waiting in its channel (senders
//! add, it takes off) and is busy between a command or wake-up and its next wait; it is
//! only reported when stalled, never restarted, since it owns the queue state. Each
//! delivery worker is busy while it has a job, counts progress after every step (see
//! [`budget`]), and is restartable: restarting aborts its task, whose slot guard returns
//! the concurrency slot and whose job's channel closes, so the message task defers the
//! job's recipients (they are retried after the usual backoff).
//!
//! At-least-once: a crash after a peer accepted a message but before the message was
//! removed or its record written delivers it again at the next start. The window is one
//! delivery attempt.

#![deny(unsafe_code)]

pub mod admin;
mod apply;
pub mod attempt;
mod budget;
pub mod channel;
pub mod config;
mod conncache;
mod connection;
pub mod content;
mod conversion;
mod dane;
mod dispatch;
#[cfg(test)]
mod dispatch_schedules;
mod dropdir;
pub mod dsn;
#[cfg(feature = "fault-injection")]
mod fault_injection;
pub mod intake;
pub mod job;
// The crate's only unsafe code: the fatal-signal handler and its setup.
#[allow(unsafe_code)]
mod last_gasp;
pub mod local;
pub mod message;
mod mtasts;
mod plan;
mod probe;
pub mod requests;
mod retries;
pub mod scheduler;
mod sealing;
pub mod security;
mod shared;
mod signing;
mod transaction;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tern_deliver::ClientContext;
use tern_events::EventLog;
use tern_local::LocalDirectory;
use tern_route::RoutingTable;
use tern_route::dns::Resolver;
use tern_spool::Spool;
use tern_watchdog::Watchdog;

pub use channel::QueueHandle;
pub use config::{DelayNotices, DeliveryConfig, QueueConfig};
pub use conversion::LargeConversions;
pub use dane::Dane;
pub use intake::QueueIntake;
pub use requests::{
    AdminAction, AdminDone, AdminRefusal, DeferredShape, DestinationAction, DestinationError,
    DestinationInfo, DestinationState, DestinationTls, HostTlsInfo,
};
pub use scheduler::Queue;
pub use shared::{DestinationSync, SharedMark, SharedState};

/// Settings that can change on reload, swapped as one unit.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// The routing table.
    pub routes: Arc<RoutingTable>,
    /// Scheduling and retry settings.
    pub queue: QueueConfig,
    /// Local domains, mailboxes and aliases (the mailbox of each recipient of a local
    /// transport is looked up here); reloaded with the routes.
    pub local: Arc<LocalDirectory>,
    /// DKIM signing: domains, loaded keys, rules (`tern-dkim`); a reload that cannot
    /// read a key keeps the key loaded before.
    pub dkim: Arc<tern_dkim::Signing>,
    /// ARC sealing of forwarded mail: the `[arc]` key and limits (`tern_dkim::arc`); a
    /// reload that cannot read the key keeps the key loaded before.
    pub arc: Arc<tern_dkim::arc::Sealing>,
}

/// Everything the queue's tasks share. Read-only after start except `runtime`, which a
/// reload swaps atomically (readers never wait).
pub struct Context {
    /// The spool.
    pub spool: Spool,
    /// Event log.
    pub events: EventLog,
    /// Reloadable settings.
    pub runtime: ArcSwap<Runtime>,
    /// Outbound SMTP settings that do not change at run time.
    pub delivery: DeliveryConfig,
    /// DNS resolver (with its TTL cache).
    pub resolver: Resolver,
    /// TLS contexts of the SMTP client.
    pub client: Arc<ClientContext>,
    /// Our host name (Reporting-MTA, bounces' From, MX self-detection).
    pub hostname: String,
    /// Where Tern's listeners accept mail (every interface address behind a wildcard
    /// listener), for the MX self rule; refreshed on reload.
    pub own_addrs: tern_route::OwnAddresses,
    /// Grace period for deliveries in progress at shutdown.
    pub shutdown_grace: Duration,
    /// Where DSNs are queued (announced to this queue like any new message).
    pub intake: QueueIntake,
    /// Where delivery workers register their heartbeats; `None`: not watched.
    pub watchdog: Option<Watchdog>,
    /// Large 7-bit conversions run one at a time (`conversion.rs`); large ARC sealings
    /// share the permits (`sealing.rs`).
    pub large_conversions: LargeConversions,
    /// Validates ARC chains at delivery when the message carries no verdict of Tern's
    /// verifier (`sealing.rs`), through the `[dns]` name servers; `None`: it could not
    /// be built, and such mail goes unsealed (reason temperror).
    pub arc_chain: Option<tern_dkim::arc::ChainValidator>,
    /// Where delivery workers hand each session's TLS outcome under the policy in force
    /// (SMTP TLS reporting, RFC 8460; `security.rs`).
    pub tls_reports: Arc<dyn tern_reports::tlsrpt::TlsReportRecorder>,
    /// The TLS policy each destination's hosts were last tried under (`tern dest`).
    pub tls_book: security::TlsBook,
    /// Destination domains' MTA-STS policies (`mtasts.rs`); `None`: `[mta_sts]` is off.
    pub mta_sts: Option<Arc<tern_mtasts::MtaSts>>,
    /// DANE (RFC 7672) for routes with `tls = "dane"` or `"dane-only"`: the
    /// DNSSEC-validating resolver of `[dane]` (`dane.rs`).
    pub dane: Dane,
}
