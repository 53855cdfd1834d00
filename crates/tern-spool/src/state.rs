//! Queue states: the fixed directories a message file can live in.
//!
//! Invariant: every state's directory name is its [`QueueState::as_str`], and that name is
//! the only place a state becomes a path component (see `Spool::path_of`). `tmp/` is not
//! a state: nothing there is a message yet.
//!
//! Trust: [`QueueState::parse`] accepts exactly the lower-case names and nothing else.

/// Where a message stands in the queue; one directory per state.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum QueueState {
    /// Committed by a session, not yet picked up by the scheduler.
    Incoming,
    /// Being delivered.
    Active,
    /// Waiting for its next retry.
    Deferred,
    /// Held by the operator; not scheduled until released.
    Hold,
    /// Crashed the server too often; never retried automatically.
    Poison,
    /// Quarantined: failed validation. Listed for the operator, never read as mail.
    Corrupt,
}

impl QueueState {
    /// Every state, in directory order.
    pub const ALL: [QueueState; 6] = [
        QueueState::Incoming,
        QueueState::Active,
        QueueState::Deferred,
        QueueState::Hold,
        QueueState::Poison,
        QueueState::Corrupt,
    ];

    /// The states whose messages count as queued (see `Spool::queued`).
    pub const QUEUED: [QueueState; 4] = [
        QueueState::Incoming,
        QueueState::Active,
        QueueState::Deferred,
        QueueState::Hold,
    ];

    /// The directory name and the name used in logs, config and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueState::Incoming => "incoming",
            QueueState::Active => "active",
            QueueState::Deferred => "deferred",
            QueueState::Hold => "hold",
            QueueState::Poison => "poison",
            QueueState::Corrupt => "corrupt",
        }
    }

    /// Parses a state name as produced by [`QueueState::as_str`].
    pub fn parse(s: &str) -> Option<QueueState> {
        QueueState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether messages in this state count toward `Spool::queued`.
    pub fn is_queued(self) -> bool {
        QueueState::QUEUED.contains(&self)
    }
}

impl std::fmt::Display for QueueState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_distinct() {
        for s in QueueState::ALL {
            assert_eq!(QueueState::parse(s.as_str()), Some(s));
        }
        assert_eq!(QueueState::parse("Incoming"), None);
        assert_eq!(QueueState::parse("tmp"), None);
        assert_eq!(QueueState::parse(""), None);
        let json = serde_json::to_string(&QueueState::Deferred).ok();
        assert_eq!(json.as_deref(), Some("\"deferred\""));
    }

    #[test]
    fn queued_states_exclude_poison_and_corrupt() {
        assert!(QueueState::Hold.is_queued());
        assert!(!QueueState::Poison.is_queued());
        assert!(!QueueState::Corrupt.is_queued());
    }
}
