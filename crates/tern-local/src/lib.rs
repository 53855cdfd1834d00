//! Tern's local delivery: mail that ends on this machine.
//!
//! # Parts
//!
//! - [`address`]: how a local address is normalised for lookups (lower case, one
//!   trailing dot removed from the domain).
//! - [`maps`]: the two map files an operator writes, the mailbox map (address to
//!   mailbox, like Postfix's `virtual_mailbox_maps`) and the alias map (address to one or
//!   more addresses, like `/etc/aliases`), parsed with every error located as
//!   `file:line`.
//! - [`directory`]: [`LocalDirectory`], the compiled `[local]` section: local domains,
//!   both maps and the catch-all mailboxes. It answers the two questions of local
//!   delivery: at RCPT time, what an address expands to ([`LocalDirectory::resolve`],
//!   with loop, depth and duplicate control), and at delivery time, which mailbox an
//!   address is ([`LocalDirectory::mailbox`]).
//! - [`maildir`]: delivery into a Maildir (tmp, fsync, rename into new, fsync new),
//!   with `Return-Path`/`Delivered-To`, unique names and the optional quota.
//!
//! # Invariants
//!
//! - A [`LocalDirectory`] is immutable once built; a reload builds a new one and the
//!   caller swaps it atomically (ArcSwap), so lookups never wait. A map file with any
//!   error builds nothing: the caller keeps the old directory.
//! - A message file is visible in a Maildir's `new/` only complete and synced.
//!
//! # Trust
//!
//! Addresses looked up come from SMTP clients (untrusted, already syntax-checked by
//! `tern-proto`); nothing reachable from them panics, and a mailbox name derived from a
//! local part (catch-all `{local}`) is accepted only from a small safe alphabet, so an
//! address can never name a path outside the Maildir root. Map files and the
//! configuration come from the operator; they are checked completely and bounded in
//! size.
//!
//! This crate depends on no other Tern crate, so any of them may use it.

#![warn(missing_docs)]

pub mod address;
pub mod directory;
pub mod maildir;
pub mod maps;

pub use directory::{
    LocalConfig, LocalDirectory, LocalProblem, Mailbox, MailboxTarget, QuotaAction, Refusal,
    Resolution,
};
pub use maildir::{Maildir, MaildirError};
pub use maps::MapError;
