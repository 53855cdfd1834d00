//! What makes one kind of aggregate report (DMARC, TLS-RPT): the generic part of the
//! period data, the store, the journal and the recorder is written once over [`Kind`].
//!
//! A kind says what an observation is, how it is cleaned (every string and list
//! bounded before anything is kept), and how it splits into a [`Row`]: the policy
//! domain its report is about, what the report says of that domain once (`policy`),
//! the `rua` URIs when observations carry them, and the key of the counted row. A kind
//! may refuse a new row within a domain ([`Kind::admits`]: TLS-RPT caps the policies per
//! domain); the refusal counts like the `max_rows` cap.
//!
//! Invariant: [`Kind::join`] followed by [`Kind::clean`] and [`Kind::split`] gives back
//! the same row for a row that was cleaned once: the journal relies on it to read rows
//! back through the same cleaning as live observations.

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tern_events::EventDef;

use crate::aggregate::DomainData;
use crate::store::AddCounts;

/// One cleaned observation, split the way the period keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row<K: Kind> {
    /// The policy domain (lowercase).
    pub domain: String,
    /// What the report says once per domain (the last seen in the period).
    pub policy: K::Policy,
    /// `rua` URIs carried by the observation (empty when the kind looks them up later).
    pub rua: Vec<String>,
    /// The counted row.
    pub key: K::Key,
}

/// The events the recorder and the store emit, per kind.
#[derive(Debug)]
pub struct KindEvents {
    /// Observations dropped because the writer's queue was full (`dropped`).
    pub dropped: &'static EventDef,
    /// Observations not kept at a cap (`domains_dropped`, `rows_dropped`).
    pub capped: &'static EventDef,
    /// Closed periods given up (`periods`).
    pub given_up: &'static EventDef,
    /// Writing the store failed (`error`).
    pub store_failed: &'static EventDef,
}

/// A kind of aggregate report (see the module documentation).
pub trait Kind: Debug + Clone + Copy + PartialEq + Eq + Default + Send + Sync + 'static {
    /// What the producers hand over.
    type Obs: Clone + Debug + Send + 'static;
    /// What a report states once per domain.
    type Policy: Clone + PartialEq + Eq + Debug + Serialize + DeserializeOwned + Send + Sync;
    /// What a counted row is keyed by.
    type Key: Clone + Ord + Debug + Serialize + DeserializeOwned + Send + Sync;
    /// Short name (thread names).
    const NAME: &'static str;

    /// The observation bounded and normalised, or `None` when it names no policy domain.
    fn clean(obs: Self::Obs) -> Option<Self::Obs>;
    /// A cleaned observation split into its row.
    fn split(obs: Self::Obs) -> Row<Self>;
    /// An observation made back from a stored row (to clean it again when read back).
    fn join(row: Row<Self>, at: u64) -> Self::Obs;
    /// Whether a new row `key` may join `data` (beyond `max_rows`). Default: yes.
    fn admits(_data: &DomainData<Self>, _key: &Self::Key) -> bool {
        true
    }
    /// The events of this kind.
    fn events() -> &'static KindEvents;
    /// Counts what a batch did into the metrics (default: nothing).
    fn account(_counts: &AddCounts) {}
    /// Counts one observation dropped at a full queue into the metrics.
    fn count_dropped_full() {}
}
