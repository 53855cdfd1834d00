//! Tern's local ways in and out: directories shared with other systems and programs on
//! the same machine.
//!
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
//! Trust: every file in a shared directory was written by another program and is
//! untrusted: names are validated, sizes are capped before anything is read, symlinks are
//! never followed, and a malformed file is an answer (badmail), never a panic.

#![warn(missing_docs)]

pub mod dropdir;
mod durable;
pub mod envfile;
pub mod maildrop;
pub mod pickup;
pub mod submit;
