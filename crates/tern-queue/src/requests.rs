//! What administrators ask the queue and what it answers: actions on one message
//! ([`AdminAction`], done by an admin task, `admin.rs`), actions on a destination
//! ([`DestinationAction`]) and the destinations' and deferred mail's views. Plain data,
//! no behaviour beyond naming and parsing: the scheduler and the admin task decide.
//!
//! Trust: an action or a destination name comes from the admin API (authenticated);
//! names are only compared with known next hops, never used as paths.

use tern_spool::{QueueId, QueueState};

/// What an administrator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAction {
    /// Remove the message; with `bounce`, the sender gets a bounce for the recipients
    /// not yet delivered first.
    Delete {
        /// Bounce before removing.
        bounce: bool,
    },
    /// Deferred → hold.
    Hold,
    /// Hold or poison → deferred, crash count reset, tried now.
    Release,
    /// A deferred message is tried now.
    Retry,
    /// Every undelivered recipient fails, a bounce goes to the sender, the message goes.
    Bounce,
    /// Poison → deferred, crash count reset, tried now.
    Resubmit,
}

impl AdminAction {
    /// The action's name in the API and in events.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminAction::Delete { .. } => "delete",
            AdminAction::Hold => "hold",
            AdminAction::Release => "release",
            AdminAction::Retry => "retry",
            AdminAction::Bounce => "bounce",
            AdminAction::Resubmit => "resubmit",
        }
    }

    /// Parses an action name; `bounce` is the body's flag for `delete`.
    pub fn parse(name: &str, bounce: bool) -> Option<AdminAction> {
        Some(match name {
            "delete" => AdminAction::Delete { bounce },
            "hold" => AdminAction::Hold,
            "release" => AdminAction::Release,
            "retry" => AdminAction::Retry,
            "bounce" => AdminAction::Bounce,
            "resubmit" => AdminAction::Resubmit,
            _ => return None,
        })
    }

    /// Whether the action applies to a message in `state` (the table in the module
    /// header).
    pub fn allowed_in(self, state: QueueState) -> bool {
        use QueueState as S;
        match self {
            AdminAction::Delete { bounce: false } => {
                matches!(state, S::Deferred | S::Hold | S::Poison | S::Corrupt)
            }
            AdminAction::Delete { bounce: true } | AdminAction::Bounce => {
                matches!(state, S::Deferred | S::Hold | S::Poison)
            }
            AdminAction::Hold | AdminAction::Retry => state == S::Deferred,
            AdminAction::Release => matches!(state, S::Hold | S::Poison),
            AdminAction::Resubmit => state == S::Poison,
        }
    }
}

/// A done action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminDone {
    /// Where the message was.
    pub from: QueueState,
    /// What happened, for people ("held", "bounced to s@example.com", ...).
    pub result: String,
}

/// Why an action was not done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminRefusal {
    /// No such message in the spool.
    #[error("no message {0} in the queue")]
    NotFound(QueueId),
    /// Not in this state (or the queue is working on it now).
    #[error("{0}")]
    Conflict(String),
    /// The queue is not running (stopping, or stopped).
    #[error("{0}")]
    Unavailable(String),
    /// A spool error (event 7008).
    #[error("{0}")]
    Failed(String),
}

/// A destination's state, as `GET /api/v1/destinations` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DestinationState {
    /// Deliveries may start.
    Active,
    /// Every host failed: nothing is tried until `down_until` (or a retry).
    Down,
    /// Suspended by an administrator until resumed (or a restart).
    Suspended,
}

/// One next hop as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationInfo {
    /// The next hop's name (`mx:example.com`, `smtp:[relay.example]:25`,
    /// `lmtp:unix:/run/dovecot/lmtp`, ...).
    pub name: String,
    /// Messages waiting for it: jobs queued now plus deferred messages whose
    /// recipients wait for it.
    pub queued: usize,
    /// Its state.
    pub state: DestinationState,
    /// When it comes back, Unix milliseconds, while down.
    pub down_until_unix_ms: Option<u64>,
    /// Deliveries (connections) in progress.
    pub in_use: usize,
    /// The most deliveries in progress at once (`queue.destination_concurrency`).
    pub limit: usize,
    /// Why it is down, or the last deferral of a message waiting for it.
    pub last_error: Option<String>,
    /// The TLS policy its hosts were last tried under (SMTP next hops that were tried
    /// since the start).
    pub tls: Option<DestinationTls>,
    /// The node that set its down mark or suspension, in a cluster (this node's name
    /// for its own marks; `None` outside a cluster or while active).
    pub set_by: Option<String>,
}

/// The TLS policy a destination's hosts were last tried under, and why (docs/TLS.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationTls {
    /// When it was decided, Unix milliseconds.
    pub decided_unix_ms: u64,
    /// The first usable host's policy (`dane (dane)`, `mta-sts (verify)`, `route (may)`,
    /// ...), or `refused` when the policy allows none of its hosts.
    pub summary: String,
    /// Per host, in the order they are tried (at most 32).
    pub hosts: Vec<HostTlsInfo>,
}

/// One host's TLS policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTlsInfo {
    /// The host name.
    pub host: String,
    /// `<source> (<client policy>)`: source `dane`, `mta-sts`, `mta-sts-testing` or
    /// `route`; client policy `none`, `may`, `encrypt`, `verify` or `dane`. `refused`
    /// when the host is not tried.
    pub policy: String,
    /// False when the policy in force forbids trying the host.
    pub usable: bool,
    /// Why, in words.
    pub reason: String,
}

/// What an administrator does to a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestinationAction {
    /// Clear its down mark and try its waiting messages now.
    Retry,
    /// No new connections until resumed; its messages wait in `deferred/`.
    Suspend,
    /// Lift a suspension and try its waiting messages now.
    Resume,
}

impl DestinationAction {
    /// The action's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationAction::Retry => "retry",
            DestinationAction::Suspend => "suspend",
            DestinationAction::Resume => "resume",
        }
    }
}

/// Why a destination request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    /// No such destination is known (nothing queued for it, not down, not suspended).
    #[error("no destination {0} in the queue")]
    Unknown(String),
    /// The action does not apply now.
    #[error("{0}")]
    Conflict(String),
    /// The queue has stopped.
    #[error("the queue is not running")]
    Stopped,
}

/// See [`QueueHandle::deferred_shape`](crate::QueueHandle::deferred_shape).
#[derive(Debug, Clone, Default)]
pub struct DeferredShape {
    /// (next hop names, count per age bucket) for each set of next hops messages wait
    /// for.
    pub groups: Vec<(Vec<String>, Vec<u64>)>,
    /// Messages scheduled but not read yet after a restart, per age bucket: their next
    /// hops are not known yet (all zero once the backlog is read).
    pub unread: Vec<u64>,
}

impl DeferredShape {
    /// Whether every waiting message is counted under its next hops.
    pub fn complete(&self) -> bool {
        self.unread.iter().all(|n| *n == 0)
    }
}
