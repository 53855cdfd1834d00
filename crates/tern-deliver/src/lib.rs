//! Tern's outbound SMTP client (RFC 5321 client side): sessions with STARTTLS policy,
//! pipelined transactions and per-recipient results; and the same client in LMTP mode
//! (RFC 2033: LHLO, TCP or a Unix socket, one reply per recipient after the data).
//!
//! Layout:
//! - [`reply`]: sans-I/O reply parser (bounded: 2048-octet lines, 100 lines a reply);
//! - [`capabilities`]: EHLO keywords;
//! - [`envelope`]: the [`Transaction`] to send, ESMTP parameters, [`check_compat`];
//! - [`data`]: dot-stuffing, sans-I/O;
//! - [`context`]: configuration, time limits and the two TLS configurations;
//! - [`session`]: [`SmtpSession`], the network part;
//! - [`outcome`] and [`error`]: what the caller maps onto recipient states.
//!
//! The caller's contract, in order: build one [`ClientContext`] per configuration;
//! [`SmtpSession::connect`] to one MX address (a [`SessionError`] with
//! [`SessionError::is_connection_failure`] means try the next one); run
//! [`check_compat`] on the session's [`Capabilities`] before each message; call
//! [`SmtpSession::send`] and map each [`RcptOutcome::result`]; reuse the session while
//! [`SmtpSession::is_usable`]; end with [`SmtpSession::quit`].
//!
//! Mid-transaction failures: a [`SessionError::Timeout`] or [`SessionError::Dropped`] at
//! [`Stage::DataBlock`] or [`Stage::DataEnd`] means the message's state is unknown for
//! the accepted recipients (the server may have queued it). The caller defers them;
//! a retry may then deliver a duplicate. This window is inherent to SMTP (RFC 1047) and
//! is kept short by answering promptly, not closed. Any other error during `send` also
//! defers every recipient of the transaction.
//!
//! Trust: everything read from the network is untrusted and bounded; no code reachable
//! from it can panic. Envelope values come from Tern's spool and are re-checked for
//! characters that could inject commands.

#![forbid(unsafe_code)]

pub mod capabilities;
mod connection;
pub mod context;
pub mod dane;
pub mod data;
pub mod envelope;
pub mod error;
pub mod outcome;
pub mod reply;
pub mod security;
pub mod session;

pub use capabilities::Capabilities;
pub use context::{ClientConfig, ClientContext, ClientError, Timeouts, TlsPolicy};
pub use envelope::{
    Body, DsnRet, Incompatible, Notify, OutRecipient, Transaction, check_compat, xtext,
};
pub use error::{SessionError, Stage};
pub use outcome::{RcptOutcome, RecipientResult, TransactionOutcome};
pub use reply::{Reply, ReplyError, ReplyParser};
pub use security::{DaneTlsa, TlsFailure, TlsRequest, Tlsa};
pub use session::{Endpoint, SmtpSession};

/// Entry points for fuzz targets (`fuzz/` outside the workspace): raw bytes in,
/// invariants asserted, never a panic.
#[doc(hidden)]
pub mod fuzzing {
    use crate::reply::{MAX_LINES, ReplyParser};

    /// Feeds `data` to a reply parser and checks every reply it yields.
    pub fn reply_parser(data: &[u8]) {
        let mut parser = ReplyParser::new();
        let mut rest = data;
        while !rest.is_empty() {
            let Ok((used, reply)) = parser.advance(rest) else {
                return;
            };
            assert!(used > 0 && used <= rest.len());
            if let Some(reply) = reply {
                assert!((200..600).contains(&reply.code));
                assert!(!reply.lines.is_empty() && reply.lines.len() <= MAX_LINES);
            }
            rest = rest.get(used..).unwrap_or_default();
        }
    }

    /// Dot-stuffs `data` and checks that the end-of-data marker appears only at the end.
    pub fn dot_stuffer(data: &[u8]) {
        let out = crate::data::dot_stuff(data);
        assert!(out.ends_with(b".\r\n"));
        let body = out.get(..out.len().saturating_sub(3)).unwrap_or_default();
        assert!(!body.windows(5).any(|w| w == b"\r\n.\r\n"));
    }
}
