//! MTA-STS (RFC 8461) for Tern's outbound mail: does a destination domain publish a
//! policy, and which.
//!
//! - [`policy`] (sans I/O): the `_mta-sts` TXT record and the policy file grammars,
//!   strict and bounded; the `mx` pattern match.
//! - [`cache`] (sans I/O): when a cached policy is used, refreshed or dropped
//!   (RFC 8461 §5.1), the memory of failed fetches, the bounded set of domains.
//! - [`store`]: the cache persisted in `<data_dir>/mta-sts/` (0700 directory, 0600
//!   files written atomically, read back with validation, bad files moved aside).
//! - [`service`]: [`MtaSts::lookup`], which the delivery workers ask (through
//!   `tern-queue`'s `mtasts.rs`): the TXT through Tern's resolver (`tern-route`), the
//!   policy over HTTPS (`tern-https`), lookups of one domain coalesced, events
//!   4151–4155.
//!
//! What the policy means for each MX host (enforce: only matching hosts, under `verify`;
//! testing: audited) is decided in `tern-queue`'s `security.rs`. docs/TLS.md, "MTA-STS".

pub mod cache;
pub mod policy;
pub mod service;
pub mod store;

pub use service::{Config, FailKind, Lookup, MtaSts, SetupError};
