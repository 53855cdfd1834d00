//! The narrow seam through which receivers hand new messages to storage.
//!
//! The SMTP server (and later the pickup directory and `tern sendmail`) depend on these two
//! traits, not on [`Spool`]: a second storage backend (for example a database shared by
//! several nodes) can slot in by implementing them, without touching the receivers.
//!
//! Cost and concurrency rules for implementors:
//! - [`MessageIntake::begin`] does no I/O and takes no lock held across an await; it only
//!   allocates the queue id, so a session can call it on its hot path.
//! - [`MessageDraft::write`] may buffer or write through, but must keep memory bounded
//!   whatever the message size.
//! - [`MessageDraft::commit`] resolves `Ok` only when content and envelope are durable:
//!   the receiver answers `250` right after. Dropping a draft (or a commit future before it
//!   completes) must leave nothing that recovery would treat as an accepted message.

use std::future::Future;
use std::pin::Pin;

use crate::envelope::Envelope;
use crate::error::SpoolError;
use crate::id::QueueId;
use crate::store::{MessageWriter, Spool};

/// A boxed, sendable future (the traits are used as trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where new messages go.
pub trait MessageIntake: Send + Sync + 'static {
    /// Starts a new message; allocates its queue id. No I/O.
    fn begin(&self) -> Box<dyn MessageDraft>;
    /// Messages currently queued (for back pressure and tools).
    fn queued(&self) -> usize;
}

/// One message being received.
pub trait MessageDraft: Send {
    /// The queue id allocated by `begin`.
    fn id(&self) -> QueueId;
    /// Content bytes written so far.
    fn written(&self) -> u64;
    /// Appends content.
    fn write<'a>(&'a mut self, data: &'a [u8]) -> BoxFuture<'a, Result<(), SpoolError>>;
    /// Makes the message durable; `Ok` means the receiver may acknowledge it.
    fn commit(self: Box<Self>, envelope: Envelope) -> BoxFuture<'static, Result<(), SpoolError>>;
}

impl MessageIntake for Spool {
    fn begin(&self) -> Box<dyn MessageDraft> {
        Box::new(Spool::begin(self))
    }

    fn queued(&self) -> usize {
        Spool::queued(self)
    }
}

impl MessageDraft for MessageWriter {
    fn id(&self) -> QueueId {
        MessageWriter::id(self)
    }

    fn written(&self) -> u64 {
        MessageWriter::written(self)
    }

    fn write<'a>(&'a mut self, data: &'a [u8]) -> BoxFuture<'a, Result<(), SpoolError>> {
        Box::pin(MessageWriter::write(self, data))
    }

    fn commit(self: Box<Self>, envelope: Envelope) -> BoxFuture<'static, Result<(), SpoolError>> {
        Box::pin(MessageWriter::commit(*self, envelope))
    }
}
