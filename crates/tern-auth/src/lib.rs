//! Tern's SMTP AUTH (RFC 4954) below the session: SASL mechanisms as sans-I/O state
//! machines (`sasl`), credentials from a Dovecot passwd-file (`passwd`, `scheme`) or from
//! Dovecot's auth socket (`dovecot`), brute-force protection (`guard`), the sender-login
//! map (`sender_map`), and the service that ties them together for a session
//! (`service`). The SMTP side (commands, replies, TLS rules) is `tern-smtpd`'s.
//!
//! Knows nothing else of Tern: the session counts metrics and emits events from what
//! these types return.
//!
//! Trust: client responses are hostile and bounded (`sasl::MAX_RESPONSE`); credential
//! files are read without following links, must not be open to others, and are bounded
//! in size (`private_file`); Dovecot's lines are bounded and timed.

#![forbid(unsafe_code)]

pub mod config;
pub mod dovecot;
#[doc(hidden)]
pub mod fuzzing;
pub mod guard;
pub mod passwd;
pub mod private_file;
pub mod sasl;
pub mod scheme;
pub mod sender_map;
pub mod service;

pub use config::{AuthConfig, SenderCheck};
pub use sasl::Mechanism;
pub use service::{AuthService, Exchange, Failure, FailureReason, LoadReport, Step};
