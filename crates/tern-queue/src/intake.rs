//! The intake the receivers use: the spool's, plus a word to the scheduler after each
//! commit, so a new message is scheduled at once without anyone scanning `incoming/`
//! while commits run.
//!
//! Invariant: the scheduler hears of a message only after its commit returned `Ok`
//! (content, envelope and directory entry durable). If the word is lost (the queue has
//! stopped), the message is in `incoming/` and the next start's scan finds it.

use tern_spool::intake::BoxFuture;
use tern_spool::{
    Envelope, MessageDraft, MessageIntake, MessageWriter, QueueId, Spool, SpoolError,
};

use crate::channel::QueueHandle;

/// [`MessageIntake`] over a spool that submits every committed message to the queue.
#[derive(Clone)]
pub struct QueueIntake {
    spool: Spool,
    queue: QueueHandle,
}

impl QueueIntake {
    /// Wraps `spool`; commits are announced on `queue`.
    pub fn new(spool: Spool, queue: QueueHandle) -> QueueIntake {
        QueueIntake { spool, queue }
    }
}

impl MessageIntake for QueueIntake {
    fn begin(&self) -> Box<dyn MessageDraft> {
        Box::new(Draft {
            inner: self.spool.begin(),
            queue: self.queue.clone(),
        })
    }

    fn queued(&self) -> usize {
        self.spool.queued()
    }
}

struct Draft {
    inner: MessageWriter,
    queue: QueueHandle,
}

impl MessageDraft for Draft {
    fn id(&self) -> QueueId {
        self.inner.id()
    }

    fn written(&self) -> u64 {
        self.inner.written()
    }

    fn write<'a>(&'a mut self, data: &'a [u8]) -> BoxFuture<'a, Result<(), SpoolError>> {
        Box::pin(self.inner.write(data))
    }

    fn commit(self: Box<Self>, envelope: Envelope) -> BoxFuture<'static, Result<(), SpoolError>> {
        let Draft { inner, queue } = *self;
        let id = inner.id();
        Box::pin(async move {
            inner.commit(envelope).await?;
            queue.submit(id);
            Ok(())
        })
    }
}
