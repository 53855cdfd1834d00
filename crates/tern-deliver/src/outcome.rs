//! What a transaction achieved, per recipient.
//!
//! The mapping to a recipient's fate is in one place, [`RcptOutcome::result`]:
//! delivered only on a 2xx reply to the data, permanent on 5xx, transient on anything
//! else (4xx, or a code that makes no sense at that step).

use crate::reply::Reply;

/// The result of one [`crate::SmtpSession::send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionOutcome {
    /// Reply to MAIL FROM.
    pub mail: Reply,
    /// One entry per recipient of the transaction, in the same order.
    pub recipients: Vec<RcptOutcome>,
    /// The reply that ended the data phase for the accepted recipients: the final reply
    /// after the content, or the refusal of the DATA command itself; in LMTP, the last of
    /// the per-recipient replies (each recipient's own is in its [`RcptOutcome`]). `None`
    /// when DATA was not reached (MAIL refused, or no recipient accepted).
    pub data: Option<Reply>,
}

impl TransactionOutcome {
    /// Number of recipients delivered by this transaction.
    pub fn delivered(&self) -> usize {
        self.recipients
            .iter()
            .filter(|r| matches!(r.result(), RecipientResult::Delivered(_)))
            .count()
    }
}

/// What happened to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RcptOutcome {
    /// RCPT accepted; `data` is the reply that decided the message for this recipient
    /// (see [`TransactionOutcome::data`]). Delivered iff `data.is_positive()`.
    Accepted {
        /// Reply to RCPT TO.
        rcpt: Reply,
        /// Final reply for the content.
        data: Reply,
    },
    /// RCPT refused with this reply.
    Rejected(Reply),
    /// MAIL FROM was refused: the recipient shares that reply.
    MailRejected(Reply),
}

/// The recipient's fate, for the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientResult {
    /// The server took responsibility for the message (2xx after the data).
    Delivered(Reply),
    /// Try again later.
    Transient(Reply),
    /// Give up and bounce.
    Permanent(Reply),
}

impl RecipientResult {
    /// The reply behind the result.
    pub fn reply(&self) -> &Reply {
        match self {
            RecipientResult::Delivered(r)
            | RecipientResult::Transient(r)
            | RecipientResult::Permanent(r) => r,
        }
    }
}

impl RcptOutcome {
    /// The reply that decided this recipient's fate.
    pub fn reply(&self) -> &Reply {
        match self {
            RcptOutcome::Accepted { data, .. } => data,
            RcptOutcome::Rejected(r) | RcptOutcome::MailRejected(r) => r,
        }
    }

    /// Delivered, transient or permanent.
    pub fn result(&self) -> RecipientResult {
        let reply = self.reply().clone();
        match self {
            RcptOutcome::Accepted { data, .. } if data.is_positive() => {
                RecipientResult::Delivered(reply)
            }
            _ if reply.is_permanent() => RecipientResult::Permanent(reply),
            _ => RecipientResult::Transient(reply),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(code: u16) -> Reply {
        Reply::new(code, None, vec!["x".into()])
    }

    #[test]
    fn results() {
        let ok = RcptOutcome::Accepted {
            rcpt: r(250),
            data: r(250),
        };
        assert_eq!(ok.result(), RecipientResult::Delivered(r(250)));
        let data_temp = RcptOutcome::Accepted {
            rcpt: r(250),
            data: r(451),
        };
        assert_eq!(data_temp.result(), RecipientResult::Transient(r(451)));
        let data_perm = RcptOutcome::Accepted {
            rcpt: r(250),
            data: r(554),
        };
        assert_eq!(data_perm.result(), RecipientResult::Permanent(r(554)));
        assert_eq!(
            RcptOutcome::Rejected(r(550)).result(),
            RecipientResult::Permanent(r(550))
        );
        assert_eq!(
            RcptOutcome::Rejected(r(450)).result(),
            RecipientResult::Transient(r(450))
        );
        assert_eq!(
            RcptOutcome::MailRejected(r(421)).result(),
            RecipientResult::Transient(r(421))
        );
        // A reply that makes no sense at that step is never a delivery.
        assert_eq!(
            RcptOutcome::Rejected(r(354)).result(),
            RecipientResult::Transient(r(354))
        );
        let outcome = TransactionOutcome {
            mail: r(250),
            recipients: vec![ok, data_temp],
            data: Some(r(250)),
        };
        assert_eq!(outcome.delivered(), 1);
    }
}
