//! DKIM signing for Tern (RFC 6376, Ed25519 by RFC 8463), on Stalwart's `mail-auth`.
//!
//! - [`config`]: the `[dkim]` section (signing domains, keys, header list, origins,
//!   failure policy) and its checks;
//! - [`keys`]: key files (read with owner, mode and link checks), parsing, generation,
//!   DNS records and their comparison;
//! - [`rules`]: which mail is signed (origin, From domain), sans-I/O;
//! - [`sign`]: the loaded state ([`Signing`], swapped on reload) and one message's
//!   streaming signatures ([`Signatures`]);
//! - [`arc`]: ARC sealing (RFC 8617) of forwarded mail with the same key handling: the
//!   `[arc]` section, the chain plan, the seal and the chain validation at delivery.
//!
//! This crate knows nothing else of Tern: the queue (`tern-queue/src/signing.rs`) feeds
//! it the final bytes of each SMTP transaction, the binary loads it and reports key
//! events. Signing happens per delivery attempt, after any 8BITMIME downgrade, so the
//! signature covers exactly what the peer receives (docs/DKIM.md, docs/CONVERSION.md).
//!
//! Trust: key files are secrets and are checked before use (see [`keys`]); message
//! content is hostile and bounded ([`sign::MAX_HEADER_SECTION`]); nothing here panics
//! on any input.

#![deny(unsafe_code)]

pub mod arc;
pub mod config;
pub mod keys;
pub mod rules;
pub mod sign;

pub use config::{Algorithm, DkimConfig, OnFailure, Origin};
pub use rules::{Source, Unsigned};
pub use sign::{Decision, DomainSigner, KeyLoad, SignError, Signatures, Signing};
