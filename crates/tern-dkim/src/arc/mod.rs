//! ARC sealing (RFC 8617) of the mail Tern forwards, on mail-auth's `ArcSealer`.
//!
//! - [`config`]: the `[arc]` section and its checks;
//! - [`chain`]: sans-I/O, what a message already carries (its ARC sets, Tern's own
//!   Authentication-Results on top) and the plan for it: seal with which `cv=` and which
//!   ARC-Authentication-Results, validate the chain first, or do not seal and why;
//! - [`seal`]: the loaded key ([`Sealing`], swapped on reload), one message's ARC set
//!   ([`Sealer::seal`]) and the chain validation at delivery ([`ChainValidator`]).
//!
//! Which mail is sealed is the queue's decision (`tern-queue/src/sealing.rs`: mail from
//! outside, not from a relay network nor authenticated, leaving by SMTP); it seals per
//! delivery attempt, after any 8BITMIME downgrade and any DKIM signature, so the set
//! covers exactly what the peer receives (docs/DKIM.md, "ARC sealing").

pub mod chain;
pub mod config;
pub mod seal;

pub use chain::{Cv, Plan, Results, Unsealed};
pub use config::ArcConfig;
pub use seal::{ArcKeyLoad, ChainValidator, SealError, Sealer, Sealing, plan, wire_form};
