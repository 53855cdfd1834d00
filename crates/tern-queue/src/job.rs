//! The types the queue's tasks pass each other: a loaded message, a job (one message's
//! recipients for one next hop) and its result per recipient. Behaviour lives in the
//! files that use them (`message.rs` makes jobs and applies results, `attempt.rs`,
//! `local.rs` and `dropdir.rs` carry them out); keeping the types here means none of
//! those files imports another for its types.
//!
//! Invariants: a job's `rcpts` index the message's envelope recipients and are never
//! empty; its `reply` is answered at most once ([`Job::answer`] consumes it), and a job
//! dropped unanswered is seen by the message task as its worker ending without a result.

use std::sync::Arc;

use tern_local::LocalDirectory;
use tern_route::{NextHop, Transport};
use tern_spool::{Envelope, QueueState};
use tokio::sync::oneshot;

use crate::content::ContentFacts;

/// A message loaded for delivery: its validated envelope and what its load learned of
/// the content, which stays on disk and is streamed by each delivery (`content.rs`).
pub struct LoadedMessage {
    /// The envelope as stored.
    pub envelope: Envelope,
    /// Where its file is while it is loaded (`active/` for the message task).
    pub state: QueueState,
    /// Length, 7-bit or not, line ends and the first octets of the content.
    pub facts: ContentFacts,
}

/// One message's recipients for one next hop.
pub(crate) struct Job {
    pub hop: NextHop,
    pub transport: Arc<Transport>,
    /// The recipients' domain (for the MX lookup).
    pub domain: String,
    /// The local directory of the message task's moment (mailboxes of local transports).
    pub local: Arc<LocalDirectory>,
    pub msg: Arc<LoadedMessage>,
    /// Indices into the envelope's recipients.
    pub rcpts: Vec<usize>,
    pub reply: oneshot::Sender<JobResult>,
}

impl Job {
    /// Sends the result to the message task (which may be gone at shutdown).
    pub(crate) fn answer(self, result: JobResult) {
        let _ = self.reply.send(result);
    }
}

/// Who sends the success notice a delivered recipient asked for (NOTIFY=SUCCESS,
/// RFC 3461 §4.1), and what its action says (RFC 3464 §2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuccessNotice {
    /// The next hop offered DSN and took the request on with the message: it reports.
    NextHop,
    /// Passed to a system that does not report delivery (a peer without DSN, a
    /// connector directory): Tern reports `relayed`.
    Relayed,
    /// Tern itself put the message in the recipient's mailbox: Tern reports
    /// `delivered`.
    Delivered,
}

/// What happened to one recipient in one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptResult {
    /// The next hop accepted it, or Tern put it in the mailbox.
    Delivered {
        /// The accepting reply.
        reply: String,
        /// `host[address]` that accepted it.
        remote: String,
        /// Who answers a requested success notice (NOTIFY=SUCCESS).
        notice: SuccessNotice,
    },
    /// Temporary failure; retried later.
    Deferred {
        /// The reply or local reason, starting with a 3-digit code.
        reply: String,
        /// The host that gave it, when one did.
        remote: Option<String>,
    },
    /// Permanent failure; bounced.
    Failed {
        /// The reply or local reason, starting with a 3-digit code.
        reply: String,
        /// The host that gave it, when one did.
        remote: Option<String>,
    },
}

/// A job's outcome: one result per recipient index of the job.
#[derive(Debug, Clone)]
pub(crate) struct JobResult {
    pub outcomes: Vec<(usize, RcptResult)>,
}

impl JobResult {
    pub(crate) fn all(job: &Job, r: &RcptResult) -> JobResult {
        JobResult {
            outcomes: job.rcpts.iter().map(|i| (*i, r.clone())).collect(),
        }
    }

    pub(crate) fn deferred_all(job: &Job, reason: &str) -> JobResult {
        JobResult::deferred(&job.rcpts, reason)
    }

    pub(crate) fn deferred(rcpts: &[usize], reason: &str) -> JobResult {
        let r = RcptResult::Deferred {
            reply: local_reply(451, reason),
            remote: None,
        };
        JobResult::each(rcpts, &r)
    }

    /// The same result for each of `rcpts`.
    pub(crate) fn each(rcpts: &[usize], r: &RcptResult) -> JobResult {
        JobResult {
            outcomes: rcpts.iter().map(|i| (*i, r.clone())).collect(),
        }
    }
}

/// A reply for a local decision: `code` plus the text, which starts with an enhanced
/// status code.
pub(crate) fn local_reply(code: u16, text: &str) -> String {
    format!("{code} {text}")
}
