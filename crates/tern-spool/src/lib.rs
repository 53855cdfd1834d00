//! Tern's durable message store.
//!
//! A spool is a directory with fixed subdirectories, one per queue state, holding one file
//! per message named by its [`QueueId`]:
//!
//! ```text
//! <dir>/spool.lock   exclusive flock of the one read-write user
//! <dir>/spool.key    secret key authenticating segment frames (mode 0600, never shown)
//! <dir>/probe        the probe journal of the run holding the lock (`crash`)
//! <dir>/last-gasp    what a dying run was processing, written by its signal handler
//! <dir>/node         the cluster node running on it (`adopt`; mode 0600)
//! <dir>/adopted      fence marker: this spool was adopted by another node (`adopt`)
//! <dir>/tmp/         messages being written; never a queue state
//! <dir>/incoming/    committed, not yet picked up by the scheduler
//! <dir>/active/      being delivered
//! <dir>/deferred/    waiting for a retry
//! <dir>/hold/        held by the operator
//! <dir>/poison/      crashed the server too often; never retried automatically
//! <dir>/corrupt/     quarantine: files that failed validation, plus `<name>.reason`
//! <dir>/records/     legacy delivery records (`record`); records are now frames in the message file
//! <dir>/segments/    shared segment files of new messages (the default commit mode)
//! <dir>/free/, alloc/  files kept for reuse; placement directories (always empty)
//! ```
//!
//! Contract:
//! - When [`MessageWriter::commit`] returns `Ok`, the content and the envelope are on disk
//!   and fsynced (file data and the directory entry in `incoming/`).
//! - A message that was not committed never appears in a queue directory: files are
//!   written in `tmp/` and renamed into `incoming/` only after `fdatasync`. Every change to
//!   a state directory is one atomic rename or unlink, so a file seen in a state directory
//!   is always complete.
//! - Corrupt entries, and anything in a spool directory that Tern did not make, are
//!   quarantined into `corrupt/` with a reason, logged (event 3003), never opened beyond
//!   a non-blocking, non-following type check, never deleted and never fatal.
//! - There is no index file: the queue is the set of files. The count of queued messages
//!   is kept in memory and rebuilt by the scan at [`Spool::open`].
//!
//! Trust: everything read from disk is treated as hostile and validated by [`format`](mod@format)
//! (bounded lengths, checksums, strict layout) before use.

#![warn(missing_docs)]
// The few system calls the standard library lacks live in `store::sys`, the only module
// allowed `unsafe`.
#![deny(unsafe_code)]

pub mod backpressure;
pub mod crash;
pub mod envelope;
mod error;
pub mod format;
pub mod id;
pub mod intake;
pub mod record;

/// Filesystem primitives with the spool's guarantees, for other durable writers of Tern
/// (the pickup and drop directories): a rename that never replaces, a directory fsync.
pub mod fs {
    pub use crate::store::sys::{rename_noreplace, sync_dir};
}
mod state;
mod store;
#[cfg(test)]
mod testutil;

pub use envelope::{
    BodyType, ClientInfo, DsnRet, Envelope, EnvelopeError, MailParams, Notify, Recipient,
    RecipientStatus,
};
pub use error::{CorruptReason, Section, SpoolError};
pub use id::{QueueId, QueueIdError};
pub use intake::{MessageDraft, MessageIntake};
pub use record::{AttemptEntry, DeliveryRecord, RecipientRecord};
pub use state::QueueState;
/// Adoption of another node's spool and the files that fence it (`store::adopt`).
pub mod adopt {
    pub use crate::store::{
        ADOPTED_FILE, AdoptMarker, AdoptOptions, AdoptReport, AdoptedMessage, NODE_FILE, SpoolNode,
        read_marker, read_node, remove_marker, write_node,
    };
}
pub use store::{
    AsyncBodyReader, BODY_CHUNK, BacklogStep, BodyError, BodyReader, CommitMode, CrashEvidence,
    DELETABLE, DeferredEntry, DeferredLoad, DiskSpace, FinishedRecovery, JournalRead,
    ListedMessage, MessageWriter, PeekedMessage, ProbeJournal, RELEASABLE, RecoveryReport, Spool,
    StoredMessage, SyncStats,
};

/// Entry points for fuzzers (`fuzz/` wraps these in three-line targets). Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    /// Runs the file decoder, the segment scanner and the queue id parser on arbitrary bytes. Must never panic
    /// and never allocate more than the input's size plus bounded overhead.
    pub fn decode(data: &[u8]) {
        let _ = crate::format::decode(data, None);
        if let Some(tail) = data.len().checked_sub(crate::format::TRAILER_LEN)
            && let Some(t) = data.get(tail..)
        {
            let _ = crate::format::decode_trailer(t, data.len() as u64);
        }
        if let Ok(s) = std::str::from_utf8(data) {
            let _ = crate::QueueId::parse(s);
        }
        crate::store::segment_scan(data);
    }

    /// Edits a genuine segment (records, one carrying forged frames in its body, and a
    /// seal) with `data` and scans it: panics if a byte is not accounted for, a record
    /// does not validate, or anything but a genuine record is trusted.
    pub fn segment(data: &[u8]) {
        crate::store::segment_edited(data);
    }

    /// Runs the delivery-record decoder on arbitrary bytes. Must never panic.
    pub fn record(data: &[u8]) {
        let _ = crate::record::decode(data, crate::QueueId::generate());
    }
}
