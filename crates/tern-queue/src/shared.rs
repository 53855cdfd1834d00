//! Destination state shared with other nodes (docs/cluster/state.md): the hook the
//! scheduler tells its own changes to ([`DestinationSync`]) and the changes other nodes
//! made that it applies ([`SharedMark`], through [`QueueHandle::apply_shared`]).
//!
//! The queue knows nothing of how marks travel (Redis, in `tern-cluster`): the binary
//! wires a [`DestinationSync`] in with [`QueueHandle::share_destinations`].
//!
//! Invariants:
//! - The scheduler never waits on the hook: [`DestinationSync::publish`] must return at
//!   once (hand the change to a task); it is called from the scheduler's loop.
//! - A change applied from another node is never published again (no echo): only the
//!   scheduler's own down marks and administrators' actions on this node are published.
//! - Marks from other nodes go through the queue's command channel, like every other
//!   change of the scheduler's state: no lock is shared with it.
//!
//! Trust: a [`SharedMark`] comes from Redis, written by another node (or anyone who can
//! write to Redis): its name is only compared with next hop names, its reason and node
//! are shown to administrators only, bounded by the caller.

use crate::channel::{Cmd, QueueHandle};
use std::sync::Arc;

/// A destination's shared state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedState {
    /// Every host failed on the node that set it: nothing is tried until `until_unix_ms`.
    Down {
        /// When the mark lapses (Unix milliseconds).
        until_unix_ms: u64,
        /// Why (the last error), for people.
        reason: String,
    },
    /// Suspended by an administrator until a resume on any node.
    Suspended,
    /// Resumed, or retried now (the down mark cleared), by an administrator.
    Active,
}

impl SharedState {
    /// The word used in Redis and in the API.
    pub fn as_str(&self) -> &'static str {
        match self {
            SharedState::Down { .. } => "down",
            SharedState::Suspended => "suspended",
            SharedState::Active => "active",
        }
    }
}

/// One change of a destination's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedMark {
    /// The next hop's name (`mx:example.com`, ...).
    pub name: String,
    /// The new state.
    pub state: SharedState,
    /// When the change was made (Unix milliseconds, the clock of the node that made it):
    /// the later action wins on a conflict.
    pub at_unix_ms: u64,
    /// The node that made it (empty for this node's own changes, until published).
    pub node: String,
}

/// Where the scheduler tells its own changes. Implementations must not block.
pub trait DestinationSync: Send + Sync + 'static {
    /// This node's name (shown as who set a mark).
    fn node(&self) -> &str;
    /// This node marked a destination down, or an administrator acted on it here.
    fn publish(&self, mark: SharedMark);
}

impl QueueHandle {
    /// Wires the hook the scheduler tells its own destination changes to (once, at
    /// start; a second call replaces the first).
    pub fn share_destinations(&self, sync: Arc<dyn DestinationSync>) {
        self.send(Cmd::ShareDestinations(sync));
    }

    /// Applies a change another node made (never published again).
    pub fn apply_shared(&self, mark: SharedMark) {
        self.send(Cmd::Shared(mark));
    }
}
