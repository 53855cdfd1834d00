//! Inbound message authentication for Tern: SPF (RFC 7208), DKIM (RFC 6376, RFC 8463),
//! DMARC (RFC 7489) and ARC (RFC 8617) verification, the Authentication-Results header
//! field (RFC 8601) and the policy decision (docs/FILTERING.md).
//!
//! Layers: the sans-I/O cores ([`psl`], [`dmarc`], [`results`], [`policy`], [`config`])
//! are plain functions with unit tests; [`verifier`] does the DNS through mail-auth 0.13
//! (its `ring` backend, as tern-dkim) over a hickory resolver the binary builds from
//! `[dns]`, with bounded TTL caches ([`cache`]).
//!
//! Invariants: every check is bounded in time by the caller's deadline and in work by
//! RFC limits and `max_signatures`; nothing here refuses a message for Tern's own limits
//! (see `verifier.rs`); the header field rendered is safe whatever the sender wrote.

#![forbid(unsafe_code)]

pub mod cache;
pub mod config;
pub mod dmarc;
pub mod policy;
pub mod psl;
pub mod results;
pub mod verifier;

pub use config::{DmarcRejectAction, QuarantineMode, SpfFailAction, TempErrorAction, VerifyConfig};
pub use policy::{Action, Decision};
pub use results::{AuthResult, Verdicts};
pub use verifier::{Budget, Client, Outcome, QUARANTINE_FIELD, Verifier};
