//! Why an outbound session or transaction failed, and at which stage.
//!
//! A [`SessionError`] always ends the session: the connection is closed or out of sync.
//! Refusals the server states politely inside a transaction (a 5xx to RCPT, a 4xx after
//! the data) are not errors; they are per-recipient results in
//! [`crate::TransactionOutcome`].
//!
//! How the caller maps an error onto recipients:
//! - [`SessionError::is_connection_failure`] errors happened before any transaction
//!   (connect, greeting, EHLO, TLS): try the next MX, and count the destination as down;
//! - [`SessionError::Timeout`] or [`SessionError::Dropped`] at [`Stage::DataBlock`] or
//!   [`Stage::DataEnd`]: the server may have the message (the duplicate window), so
//!   every recipient is deferred, never bounced;
//! - anything else during `send`: defer every recipient of the transaction.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::reply::Reply;

/// The protocol step an error happened in; `Display` is lower case (`data-block`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stage {
    /// TCP connect.
    Connect,
    /// Waiting for the greeting.
    Greeting,
    /// EHLO or HELO.
    Ehlo,
    /// STARTTLS command and the TLS handshake.
    StartTls,
    /// MAIL FROM (and the write of a pipelined command group).
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA command, up to 354.
    DataStart,
    /// Sending the content.
    DataBlock,
    /// Waiting for the reply to the end-of-data marker.
    DataEnd,
    /// RSET.
    Rset,
    /// QUIT.
    Quit,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Connect => "connect",
            Stage::Greeting => "greeting",
            Stage::Ehlo => "ehlo",
            Stage::StartTls => "starttls",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::DataStart => "data-start",
            Stage::DataBlock => "data-block",
            Stage::DataEnd => "data-end",
            Stage::Rset => "rset",
            Stage::Quit => "quit",
        })
    }
}

/// Why a session could not be set up or a transaction could not be completed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// TCP connect failed (refused, unreachable). Connection failure: try the next MX.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// Address tried.
        addr: SocketAddr,
        /// What the OS said.
        source: io::Error,
    },
    /// Connecting to a Unix socket (LMTP) failed: no such socket, refused, permission
    /// denied. Connection failure.
    #[error("connect to unix:{}: {source}", path.display())]
    ConnectUnix {
        /// The socket.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The peer did not answer (or did not accept our writes) within the stage's time
    /// limit. At `data-block`/`data-end` the message state is unknown: defer.
    #[error("timeout at {stage}")]
    Timeout {
        /// Where.
        stage: Stage,
    },
    /// The peer closed or reset the connection. At `data-block`/`data-end` the message
    /// state is unknown: defer.
    #[error("connection lost at {stage}")]
    Dropped {
        /// Where.
        stage: Stage,
    },
    /// The greeting was not 2xx (typically `421` or `554`): the server will not talk to
    /// us. QUIT was sent.
    #[error("greeting refused: {0}")]
    Greeting(Reply),
    /// The server greeted with this process's own loop mark
    /// ([`ClientConfig::loop_mark`](crate::ClientConfig::loop_mark)): it is this very
    /// server, so delivering would relay the mail to itself. QUIT was sent. The caller
    /// treats the host as itself (RFC 5321 §5.1: no host of its preference or worse is
    /// tried) and keeps the mail; Postfix reports the same case as "mail for X loops
    /// back to myself".
    #[error("mail loops back to myself: the server greeted with this Tern's own banner")]
    LoopsBack,
    /// EHLO was refused with 4xx, or EHLO with 5xx and then HELO too; in LMTP, LHLO
    /// was refused.
    #[error("EHLO/HELO refused: {0}")]
    Ehlo(Reply),
    /// Policy `encrypt` or `verify` and the server does not offer STARTTLS.
    #[error("STARTTLS required by policy but not offered")]
    TlsUnavailable,
    /// STARTTLS was refused while the policy requires TLS.
    #[error("STARTTLS refused: {0}")]
    StartTls(Reply),
    /// The TLS handshake failed, including certificate verification under `verify` and
    /// `dane`.
    #[error("TLS handshake ({failure}): {detail}")]
    TlsHandshake {
        /// RFC 8460's result type.
        failure: crate::TlsFailure,
        /// What rustls (or the check) said.
        detail: String,
    },
    /// The peer sent something that is not a valid reply (malformed, over-long, too many
    /// lines, an unexpected code such as 250 to DATA, or data after the 220 to STARTTLS).
    #[error("protocol error at {stage}: {detail}")]
    Protocol {
        /// Where.
        stage: Stage,
        /// What was wrong.
        detail: String,
    },
    /// Another I/O error.
    #[error("I/O error at {stage}: {source}")]
    Io {
        /// Where.
        stage: Stage,
        /// What the OS said.
        source: io::Error,
    },
    /// The transaction's envelope cannot be written as commands (a control character or
    /// angle bracket in an address); nothing was sent. A bug upstream: hold the message.
    #[error("invalid envelope: {0}")]
    Envelope(String),
    /// The RSET that starts a transaction on a reused connection was refused (a `421`
    /// from a server that closes idle connections, for one). Nothing of the transaction
    /// was delivered (no content was sent); the session is unusable: open a new one.
    #[error("RSET refused: {0}")]
    ResetRefused(Reply),
    /// `send` on a session that an earlier error or a refused RSET left out of sync;
    /// nothing was sent. Open a new session.
    #[error("session is no longer usable")]
    Unusable,
    /// The message content could not be read while it was being sent (the spool's
    /// integrity check failed, or a read error). The end-of-data marker was never sent,
    /// so the server discards what it received; the connection is closed without QUIT
    /// (a QUIT now would be taken as content). Nothing was delivered: defer every
    /// recipient; the peer sees a connection closed in the middle of the data.
    #[error("reading the message content: {0}")]
    Content(io::Error),
}

impl SessionError {
    /// True for failures before or during the greeting, EHLO and TLS set-up: the
    /// destination is not accepting mail from us now, so mark it down and try the next.
    pub fn is_connection_failure(&self) -> bool {
        match self {
            SessionError::Connect { .. }
            | SessionError::ConnectUnix { .. }
            | SessionError::Greeting(_)
            | SessionError::LoopsBack
            | SessionError::Ehlo(_)
            | SessionError::TlsUnavailable
            | SessionError::StartTls(_)
            | SessionError::TlsHandshake { .. } => true,
            SessionError::Timeout { stage }
            | SessionError::Dropped { stage }
            | SessionError::Protocol { stage, .. }
            | SessionError::Io { stage, .. } => matches!(
                stage,
                Stage::Connect | Stage::Greeting | Stage::Ehlo | Stage::StartTls
            ),
            SessionError::Envelope(_)
            | SessionError::Unusable
            | SessionError::ResetRefused(_)
            | SessionError::Content(_) => false,
        }
    }

    /// RFC 8460's result type when this error is TLS failing as the policy required
    /// (STARTTLS missing or refused, a handshake or certificate check that failed).
    pub fn tls_failure(&self) -> Option<crate::TlsFailure> {
        match self {
            SessionError::TlsUnavailable | SessionError::StartTls(_) => {
                Some(crate::TlsFailure::StarttlsNotSupported)
            }
            SessionError::TlsHandshake { failure, .. } => Some(*failure),
            _ => None,
        }
    }

    /// The stage the error belongs to.
    pub fn stage(&self) -> Stage {
        match self {
            SessionError::Connect { .. } | SessionError::ConnectUnix { .. } => Stage::Connect,
            SessionError::Greeting(_) | SessionError::LoopsBack => Stage::Greeting,
            SessionError::Ehlo(_) => Stage::Ehlo,
            SessionError::TlsUnavailable
            | SessionError::StartTls(_)
            | SessionError::TlsHandshake { .. } => Stage::StartTls,
            SessionError::Timeout { stage }
            | SessionError::Dropped { stage }
            | SessionError::Protocol { stage, .. }
            | SessionError::Io { stage, .. } => *stage,
            SessionError::Envelope(_) | SessionError::Unusable => Stage::Mail,
            SessionError::ResetRefused(_) => Stage::Rset,
            SessionError::Content(_) => Stage::DataBlock,
        }
    }

    /// True when the message may have been delivered although no final reply was read:
    /// a timeout or lost connection while sending the content or waiting for its reply.
    pub fn is_data_unknown(&self) -> bool {
        matches!(
            self,
            SessionError::Timeout {
                stage: Stage::DataBlock | Stage::DataEnd
            } | SessionError::Dropped {
                stage: Stage::DataBlock | Stage::DataEnd
            }
        )
    }

    /// Classifies an I/O error at `stage`.
    pub(crate) fn io(stage: Stage, source: io::Error) -> SessionError {
        match source.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::WriteZero => SessionError::Dropped { stage },
            io::ErrorKind::TimedOut => SessionError::Timeout { stage },
            _ => SessionError::Io { stage, source },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_display_is_lowercase() {
        assert_eq!(Stage::DataBlock.to_string(), "data-block");
        assert_eq!(Stage::StartTls.to_string(), "starttls");
        assert_eq!(Stage::Greeting.to_string(), "greeting");
    }

    #[test]
    fn connection_failure_classification() {
        let reply = Reply::new(421, None, vec!["busy".into()]);
        assert!(SessionError::Greeting(reply.clone()).is_connection_failure());
        assert!(
            SessionError::Timeout {
                stage: Stage::Greeting
            }
            .is_connection_failure()
        );
        assert!(SessionError::TlsUnavailable.is_connection_failure());
        assert!(SessionError::LoopsBack.is_connection_failure());
        assert_eq!(SessionError::LoopsBack.stage(), Stage::Greeting);
        assert!(!SessionError::Timeout { stage: Stage::Rcpt }.is_connection_failure());
        assert!(
            !SessionError::Dropped {
                stage: Stage::DataEnd
            }
            .is_connection_failure()
        );
        assert!(
            SessionError::Dropped {
                stage: Stage::DataEnd
            }
            .is_data_unknown()
        );
        assert!(!SessionError::Dropped { stage: Stage::Mail }.is_data_unknown());
        assert_eq!(SessionError::StartTls(reply).stage(), Stage::StartTls);
    }

    #[test]
    fn io_errors_are_classified() {
        let e = SessionError::io(Stage::Rcpt, io::Error::from(io::ErrorKind::ConnectionReset));
        assert!(matches!(e, SessionError::Dropped { stage: Stage::Rcpt }));
        let e = SessionError::io(Stage::Rcpt, io::Error::other("x"));
        assert!(matches!(
            e,
            SessionError::Io {
                stage: Stage::Rcpt,
                ..
            }
        ));
    }
}
