//! Tern's local delivery (mail that ends on this machine) and its local ways in and out
//! (directories shared with other systems and programs on the same machine).
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
//!   with `Return-Path`/`Delivered-To`, unique names and the optional quota; the path is
//!   walked with directory descriptors (`dirwalk`), so no link a local user made, and no
//!   swap after the walk, redirects the write.
//! - [`pickup`]: the pickup service. Another system (or `tern sendmail`, through
//!   [`maildrop`]) leaves message files in a directory; Tern claims each one, queues it
//!   durably through the [`tern_spool::MessageIntake`] seam, and only then removes it.
//!   Unusable files go to `badmail/` with a reason. The file formats are in [`envfile`]
//!   and docs/CONNECTORS.md.
//! - [`dropdir`]: the `drop` transport's writer: each message and its envelope are
//!   written into a directory for another system to collect, never visible half-written.
//! - [`maildrop`]: how a local program submits into the pickup directory (the files
//!   `tern sendmail` writes), also as a [`tern_spool::MessageIntake`] for `sendmail -bs`.
//! - [`submit`]: what Tern does to locally submitted mail: header parsing (mail-parser),
//!   the envelope taken from the headers, and header hygiene (Date and Message-ID added
//!   when missing, Bcc removed when the recipients came from the headers).
//!
//! # Invariants
//!
//! - A [`LocalDirectory`] is immutable once built; a reload builds a new one and the
//!   caller swaps it atomically (ArcSwap), so lookups never wait. A map file with any
//!   error builds nothing: the caller keeps the old directory.
//! - A message file is visible in a Maildir's `new/` only complete and synced, and only
//!   in the directories that were checked.
//! - Every file and directory Tern creates gets its mode explicitly, never through the
//!   umask.
//!
//! # Trust
//!
//! Every file in a shared directory was written by another program and is
//! untrusted: names are validated, sizes are capped before anything is read, symlinks are
//! never followed, and a malformed file is an answer (badmail), never a panic. Local users
//! are untrusted too: a Maildir may belong to its user, who may change it at any moment;
//! only links made by root or Tern are followed on a mailbox path, and Tern's own
//! directories are never a mailbox (docs/LOCAL.md, "Mailbox paths").
//!
//! Addresses looked up come from SMTP clients (untrusted, already syntax-checked by
//! `tern-proto`); nothing reachable from them panics, and a mailbox name derived from a
//! local part (catch-all `{local}`) is accepted only from a small safe alphabet, so an
//! address can never name a path outside the Maildir root. Map files and the
//! configuration come from the operator; they are checked completely and bounded in
//! size.
//!
//! Dependencies: `tern-spool`, `tern-proto`, `tern-events` and `tern-watchdog` only (for
//! the pickup service), never `tern-smtpd` or `tern-queue`, which both use this crate.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod address;
pub mod directory;
mod dirwalk;
pub mod dropdir;
mod durable;
pub mod envfile;
pub mod maildir;
pub mod maildrop;
pub mod maps;
pub mod pickup;
pub mod submit;

pub use directory::{
    LocalConfig, LocalDirectory, LocalProblem, Mailbox, MailboxTarget, QuotaAction, Refusal,
    Resolution,
};
pub use maildir::{ContentShape, Maildir, MaildirError, ShapeCounter, Streamed};
pub use maps::MapError;
