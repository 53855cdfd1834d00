//! What the admin handlers act on: handles to the running server's parts.
//!
//! Every field is a cheap handle (an `Arc` inside); none is a lock. The binary builds one
//! [`AdminState`] after its listeners and queue are up and hands it to
//! [`crate::AdminServer::start`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tern_events::EventLog;
use tern_queue::QueueHandle;
use tern_spool::Spool;
use tern_spool::backpressure::BackPressure;
use tern_watchdog::Watchdog;

/// What only the binary can do (it owns the configuration file and the signal loop).
pub trait Control: Send + Sync {
    /// Reloads the configuration, like SIGHUP; `Ok` with what changed, or the problems
    /// that made the new file unusable (nothing changed then).
    fn reload(&self) -> Result<String, ControlError>;
    /// The effective configuration (defaults filled in) as JSON, secrets replaced by
    /// `"<redacted>"`.
    fn effective_config(&self) -> serde_json::Value;
    /// Sends the DMARC aggregate reports now (docs/REPORTS.md): closes the open period
    /// and queues every report due. `Off` when the reports are off (the default, for
    /// servers without them).
    fn send_dmarc_reports(&self) -> ControlFuture<Result<DmarcRun, ControlError>> {
        Box::pin(async {
            Err(ControlError::Off(
                "DMARC aggregate reports are off ([dmarc_reports] enabled = false)".into(),
            ))
        })
    }
    /// Takes over the spool at `path` (another node's; docs/cluster/adopt.md): fences it,
    /// merges every message in every state here and schedules them. `Conflict` when it
    /// cannot be adopted (this node's own spool, not a spool, locked by a live process,
    /// another adoption running).
    fn adopt_spool(&self, path: String) -> ControlFuture<Result<AdoptRun, ControlError>> {
        let _ = path;
        Box::pin(async {
            Err(ControlError::Unavailable(
                "this server cannot adopt a spool".into(),
            ))
        })
    }
    /// Sends the SMTP TLS reports now (RFC 8460; docs/TLS.md): closes the open period
    /// and sends every report due. `Off` when sending is off (the default).
    fn send_tls_reports(&self) -> ControlFuture<Result<TlsRun, ControlError>> {
        Box::pin(async {
            Err(ControlError::Off(
                "TLS reports are off ([tls_reports] enabled = false)".into(),
            ))
        })
    }
}

/// What an adoption did (`POST /spool/adopt`, `tern spool adopt`; docs/cluster/adopt.md).
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct AdoptRun {
    /// The adopted spool's directory (absolute).
    pub path: String,
    /// The node whose spool it was (its `node` file), when known.
    pub node: Option<String>,
    /// Messages adopted from each state there.
    pub incoming: usize,
    /// Messages that were `active` there (they crashed with their node: counted, then
    /// deferred due at once, or poisoned at `queue.poison_threshold`).
    pub active: usize,
    /// Messages adopted from `deferred/` (their retry times kept).
    pub deferred: usize,
    /// Messages adopted from `hold/`.
    pub hold: usize,
    /// Messages adopted from `poison/`.
    pub poison: usize,
    /// Of the `active` ones, poisoned here.
    pub poisoned: usize,
    /// Messages that were here already (an interrupted adoption run again): removed
    /// there only.
    pub already_here: usize,
    /// Entries of its `corrupt/` moved into this one's.
    pub corrupt_moved: usize,
    /// Entries left in its `corrupt/`.
    pub corrupt_left: usize,
    /// Whether the fence was recorded in Redis (`<prefix>:fence:<node>`); `false` alone,
    /// without a node name, or while Redis was unreachable (the spool's marker fences).
    pub fenced_in_redis: bool,
    /// How long it took, in seconds.
    pub secs: f64,
}

/// A boxed future of a [`Control`] request.
pub type ControlFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// What a DMARC report run did (`POST /dmarc-reports/send`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DmarcRun {
    /// Closed periods looked at.
    pub periods: usize,
    /// Domains reported.
    pub domains: usize,
    /// Report messages queued.
    pub queued: usize,
    /// Report addresses skipped (unusable, over their size limit, not authorised,
    /// lookup failed; events 4123-4125).
    pub skipped: usize,
    /// Domains whose report could not be queued (tried again later; event 4126).
    pub failed: usize,
    /// In a cluster: periods waiting on the other nodes (the merged report is not
    /// queued yet; run again within 15 seconds; docs/cluster/state.md).
    pub waiting: usize,
}

/// What a TLS report run did (`POST /tls-reports/send`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct TlsRun {
    /// Closed periods looked at.
    pub periods: usize,
    /// Policy domains done (reported, or without a `_smtp._tls` record: event 4165).
    pub domains: usize,
    /// Report messages queued to `mailto:` addresses.
    pub queued: usize,
    /// Reports POSTed to `https:` addresses (2xx).
    pub posted: usize,
    /// Report addresses skipped (event 4164).
    pub skipped: usize,
    /// Domains whose report no address took (tried again later; event 4166).
    pub failed: usize,
}

/// Why a [`Control`] request failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The new configuration was refused; one line per problem.
    #[error("the configuration was refused: {}", .0.join("; "))]
    Refused(Vec<String>),
    /// The server could not do it now (e.g. it is stopping).
    #[error("{0}")]
    Unavailable(String),
    /// The feature asked for is off in the configuration (409).
    #[error("{0}")]
    Off(String),
    /// The request does not apply now, or to what it names (409).
    #[error("{0}")]
    Conflict(String),
}

/// The destination (next hop name, e.g. `mx:example.com`) of a recipient domain with
/// the routes in force, from the binary; for the queue summary.
pub type NextHopOf = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// Shared by every handler.
pub struct AdminState {
    /// The bearer token ([`crate::auth`]).
    pub token: String,
    /// The spool.
    pub spool: Spool,
    /// The queue's command channel; `None` when delivery is off (`queue.deliver = false`).
    pub queue: Option<QueueHandle>,
    /// The event log.
    pub events: EventLog,
    /// The workers' heartbeats; `None` when the watchdog is off.
    pub watchdog: Option<Watchdog>,
    /// The SMTP side's back pressure, for `/readyz`.
    pub back_pressure: BackPressure,
    /// Reload and configuration, from the binary.
    pub control: Arc<dyn Control>,
    /// Routes a recipient domain to its destination's name; `None` when delivery is
    /// off (the summary then groups by domain).
    pub next_hop: Option<NextHopOf>,
    /// The message tracking log's directory (`<data_dir>/tracking`), read by
    /// `GET /api/v1/track`.
    pub tracking_dir: std::path::PathBuf,
    /// Set once every listener is bound; cleared when the server starts stopping.
    pub listeners_up: AtomicBool,
    /// When the admin listener started.
    pub started: Instant,
    /// The overview's throughput history, written by the sampler task
    /// ([`crate::overview`]); `Default::default()` when building the state.
    pub history: crate::overview::History,
    /// `/readyz`'s last spool probe ([`crate::health`]); `Default::default()` when
    /// building the state.
    pub readiness: crate::health::ProbeCache,
    /// The shared control plane, on a cluster node (`[cluster] enabled`); `None` alone.
    pub cluster: Option<tern_cluster::Cluster>,
    /// `[[delivery.destination_limits]]` with their backends (`GET /destinations`
    /// shows them); `None` with delivery off.
    pub destination_limits: Option<Arc<tern_queue::destlimits::DestinationLimits>>,
}

impl AdminState {
    /// Whether every SMTP listener is up.
    pub fn listeners_up(&self) -> bool {
        self.listeners_up.load(Ordering::Acquire)
    }

    /// Marks the SMTP listeners up (after they are bound) or down (at the stop).
    pub fn set_listeners_up(&self, up: bool) {
        self.listeners_up.store(up, Ordering::Release);
    }
}
