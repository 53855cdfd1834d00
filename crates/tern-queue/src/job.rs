//! The types the queue's tasks pass each other: a loaded message, a job (one message's
//! recipients for one next hop) and its result per recipient, with the reply behind it,
//! typed ([`Reply`], kept as is in the delivery record for the DSN builder). Behaviour
//! lives in the files that use them (`plan.rs` decides the jobs and `message.rs` hands
//! them out, `attempt.rs`, `local.rs` and `dropdir.rs` carry them out, `apply.rs`
//! applies the results); keeping the types here means none of those files imports
//! another for its types.
//!
//! Invariants: a job's `rcpts` index the message's envelope recipients and are never
//! empty; its `reply` is answered at most once ([`Job::answer`] consumes it), and a job
//! dropped unanswered is seen by the message task as its worker ending without a result.

use std::sync::Arc;

use tern_local::LocalDirectory;
use tern_route::{NextHop, Transport};
use tern_spool::record::parse_enhanced;
use tern_spool::{Envelope, QueueState};
use tokio::sync::oneshot;

use crate::content::ContentFacts;

pub use tern_spool::record::Reply;

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

/// What happened to one recipient in one attempt. Each carries the reply behind it,
/// typed, with the host that gave it (`Reply::remote`, `None` for Tern's own decisions),
/// as far as the delivery record and the DSN builder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptResult {
    /// The next hop accepted it, or Tern put it in the mailbox.
    Delivered {
        /// The accepting reply; its `remote` is the host that accepted it (`host[address]`,
        /// or this host's name for a local delivery).
        reply: Reply,
        /// Who answers a requested success notice (NOTIFY=SUCCESS).
        notice: SuccessNotice,
    },
    /// Temporary failure; retried later.
    Deferred {
        /// The reply, or Tern's own reason.
        reply: Reply,
    },
    /// Permanent failure; bounced.
    Failed {
        /// The reply, or Tern's own reason.
        reply: Reply,
    },
}

impl RcptResult {
    /// The reply behind the result.
    pub fn reply(&self) -> &Reply {
        match self {
            RcptResult::Delivered { reply, .. }
            | RcptResult::Deferred { reply }
            | RcptResult::Failed { reply } => reply,
        }
    }

    /// `delivered`, `deferred` or `failed` (events, the record's history).
    pub fn name(&self) -> &'static str {
        match self {
            RcptResult::Delivered { .. } => "delivered",
            RcptResult::Deferred { .. } => "deferred",
            RcptResult::Failed { .. } => "failed",
        }
    }
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

/// A reply for a local decision: `code`, and `reason`, which Tern writes as an enhanced
/// status code and the text (`4.3.0 internal error`); the enhanced code is taken apart
/// here, where the reply is made, so nothing downstream parses a reply back. A reason
/// without one keeps all of its text.
pub(crate) fn local_reply(code: u16, reason: &str) -> Reply {
    let (first, rest) = reason.split_once(' ').unwrap_or((reason, ""));
    match parse_enhanced(first) {
        Some(enhanced) => Reply::new(code, Some(enhanced), rest, None),
        None => Reply::new(code, None, reason, None),
    }
}

/// A remote server's reply, as `tern-deliver` typed it, given by `remote`
/// (`host[address]`).
pub(crate) fn remote_reply(reply: &tern_deliver::Reply, remote: &str) -> Reply {
    Reply::new(reply.code, reply.enhanced, &reply.text(), Some(remote))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_reply_takes_its_enhanced_code_apart_and_prints_as_before() {
        let r = local_reply(554, "5.4.6 too many hops");
        assert_eq!(r.code, 554);
        assert_eq!(r.enhanced, Some((5, 4, 6)));
        assert_eq!(r.text, "too many hops");
        assert_eq!(r.remote, None);
        assert_eq!(r.to_string(), "554 5.4.6 too many hops");
        let bare = local_reply(451, "no status here");
        assert_eq!(
            (bare.enhanced, bare.text.as_str()),
            (None, "no status here")
        );
        assert_eq!(bare.to_string(), "451 no status here");
        assert_eq!(local_reply(451, "4.3.0").to_string(), "451 4.3.0");
    }

    #[test]
    fn a_remote_reply_keeps_its_parts_and_its_host() {
        let wire =
            tern_deliver::Reply::new(550, Some((5, 1, 1)), vec!["no such".into(), "user".into()]);
        let r = remote_reply(&wire, "mx.test[192.0.2.1]");
        assert_eq!(r.to_string(), wire.to_string());
        assert_eq!(r.enhanced, Some((5, 1, 1)));
        assert_eq!(r.text, "no such user");
        assert_eq!(r.remote.as_deref(), Some("mx.test[192.0.2.1]"));
    }
}
