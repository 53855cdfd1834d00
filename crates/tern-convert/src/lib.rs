//! Content conversion for next hops that cannot take a message as it is stored: the
//! 8BITMIME downgrade (RFC 6152 §3, RFC 2045, RFC 2047, RFC 2231).
//!
//! [`downgrade`] turns a message with 8-bit (or binary) content into a 7-bit message
//! with the same meaning: the same MIME structure, the same decoded content in every
//! part, the same header fields. Only what must change changes (see `downgrade.rs` for
//! the rules, docs/CONVERSION.md for the operator's view). What cannot be converted
//! without changing the meaning, such as an 8-bit address (which needs SMTPUTF8), is a
//! [`DowngradeError`]; the caller keeps the message and says why.
//!
//! Two forms, same output (property-tested on the corpus and generated messages, for
//! pieces of 1, 7, 4096 octets and whole):
//! - [`downgrade`] takes the message as one buffer (small messages);
//! - [`Scanner`] then [`Plan::writer`] stream it: the input is fed twice, in pieces of
//!   any size (plan, then write), and the copy comes out piece by piece, checked as it
//!   comes. Memory is bounded whatever the size of the message: a line prefix and
//!   a few header fields of at most 64 KiB each, a few octets of encoder state, a few
//!   dozen octets per entity. The streaming form refuses two things the buffer form
//!   could read: a header field it must read whole over 64 KiB (an 8-bit one, or the
//!   first Content-Type or Content-Transfer-Encoding; the buffer form refuses it too,
//!   so that both agree), and a line over 64 KiB whose start does not say what it is
//!   ([`DowngradeError::LineTooLong`]).
//!
//! Layout:
//! - `lines`: line ends and MIME delimiter lines, as a receiver sees them;
//! - `header`: header sections, Content-Type and Content-Transfer-Encoding (values
//!   parsed by mail-parser);
//! - `structure`: the MIME tree of a buffer, read in one forward pass;
//! - `walk`: the same reading of a stream, as a push state machine;
//! - `fields`: 8-bit header fields rewritten (encoded words, RFC 2231) or refused;
//! - `encode`: quoted-printable, base64 (whole and streaming, one code), encoded words,
//!   RFC 2231 values;
//! - `downgrade`: the edits, their application and the final checks, on a buffer;
//! - `stream`: the same edits in two passes over a stream, and the same checks on the
//!   copy as it is written.
//!
//! Why the structure is not mail-parser's: mail-parser finds a boundary anywhere in a
//! line and as the prefix of a longer one, which is lenient reading but not where a
//! receiver following RFC 2046 §5.1.1 sees parts begin. Encoding a range whose ends
//! differ from the receiver's would move or hide its part boundaries, so the tree is
//! read with the RFC's whole-line rule; mail-parser parses the field values (quoting,
//! comments, RFC 2231 continuations, encoded words, addresses).
//!
//! Invariants of an `Ok` result (both forms): every octet is 7-bit; reading it again
//! gives the same tree (checked on every conversion, not only in tests; the streaming
//! form reads its copy as it writes it); the stored message is never touched (the copy
//! is new, at most 5 times the input plus 128 octets per encoded part: quoted-printable
//! triples an 8-bit octet, encoded words and RFC 2231 values add their delimiters, an
//! encoded part may gain three fields). A streaming copy is only valid once
//! [`Writer::finish`] returned `Ok`: an error at any point means the octets written so
//! far must be thrown away.
//!
//! Trust: the content is hostile. No panic, no indexing, no recursion deeper than
//! [`Limits::max_depth`] entities (the walker has no recursion at all), no more than
//! [`Limits::max_parts`] of them; the work is linear in the size (times the depth, for
//! lines starting with `--`). No I/O: the streaming form is fed pieces and returns
//! octets.

#![forbid(unsafe_code)]

mod downgrade;
mod encode;
mod fields;
#[doc(hidden)]
pub mod fuzzing;
mod header;
mod lines;
mod stream;
mod structure;
mod walk;

pub use stream::{Plan, Scanner, Writer, downgrade_pieces};

use std::borrow::Cow;

/// What the stored content may hold, from the envelope's `BODY=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// 8-bit MIME (`BODY=8BITMIME`, or 8-bit octets without a declaration): parts with
    /// 8-bit octets are encoded.
    EightBit,
    /// Binary MIME (`BODY=BINARYMIME`): parts with 8-bit octets, NUL, bare CR or LF, or
    /// lines over 998 octets are encoded too, since DATA cannot carry them. The message
    /// must be MIME ([`DowngradeError::NotMime`]).
    Binary,
}

/// Bounds on the work for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of multiparts and message/rfc822 (the message is depth 0).
    /// Postfix's `mime_nesting_limit` is 100.
    pub max_depth: usize,
    /// Most entities (the message, each body part, each nested message).
    pub max_parts: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_depth: 100,
            max_parts: 10_000,
        }
    }
}

/// A converted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downgraded<'a> {
    /// The 7-bit message; borrowed when nothing needed a change.
    pub content: Cow<'a, [u8]>,
    /// Body parts whose body was encoded or re-encoded.
    pub parts_encoded: usize,
    /// Header fields rewritten.
    pub fields_encoded: usize,
}

/// Why a message cannot be converted to 7 bit without changing its meaning. Every
/// variant means the same to the delivery engine: the message is not sent to this
/// next hop and stays queued (a temporary failure, `4.6.3` "conversion required but
/// not supported", RFC 3463), bounced only when it expires. The text is safe to show in
/// a reply or a log: names copied from the message are printable ASCII, at most 64
/// octets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DowngradeError {
    /// Multiparts and messages nested deeper than the limit.
    #[error("the MIME structure is nested deeper than {limit} levels")]
    TooDeep {
        /// [`Limits::max_depth`].
        limit: usize,
    },
    /// More entities than the limit.
    #[error("the message has more than {limit} MIME parts")]
    TooManyParts {
        /// [`Limits::max_parts`].
        limit: usize,
    },
    /// An address (not a display name) with 8-bit characters: only SMTPUTF8 can carry it.
    #[error("an address in the {field} field has 8-bit characters, which need SMTPUTF8")]
    EightBitAddress {
        /// The field name.
        field: String,
    },
    /// 8-bit octets in a structured field that has no 7-bit encoding (Message-ID,
    /// Received, DKIM-Signature…) or could not be read.
    #[error("the {field} field has 8-bit octets and no 7-bit form")]
    EightBitStructuredField {
        /// The field name.
        field: String,
    },
    /// 8-bit octets that are not UTF-8 in an address or parameter field: the
    /// characters, hence the rewritten field, cannot be known.
    #[error("the {field} field has 8-bit octets that are not UTF-8")]
    NotUtf8Field {
        /// The field name.
        field: String,
    },
    /// A multipart boundary with 8-bit characters: its delimiter lines cannot be 7-bit.
    #[error("a MIME boundary has 8-bit characters")]
    EightBitBoundary,
    /// 8-bit content under an encoding Tern does not know (x-uuencode, …).
    #[error("8-bit content under the unknown Content-Transfer-Encoding {encoding:?}")]
    UnknownEncoding {
        /// The encoding's name, lower case, printable, at most 40 octets.
        encoding: String,
    },
    /// 8-bit content in a type that must not be encoded (message/partial,
    /// message/external-body, RFC 2046 §5.2).
    #[error("8-bit content in a {media_type} part, which must not be encoded")]
    EncodingForbidden {
        /// The media type.
        media_type: String,
    },
    /// Binary content (`BODY=BINARYMIME`) that is not MIME: no part to encode.
    #[error("binary content without a MIME-Version field")]
    NotMime,
    /// A header field that must be read whole (one with 8-bit octets, or the first
    /// Content-Type or Content-Transfer-Encoding of a section) is longer than 64 KiB.
    #[error("the {field} field is longer than 64 KiB")]
    FieldTooLong {
        /// The field name (printable, at most 64 octets).
        field: String,
    },
    /// A line longer than 64 KiB whose beginning does not say what it is: it starts
    /// like a delimiter line and goes on with white space, or it is in a header section
    /// and starts with 64 KiB of field-name characters.
    #[error("a line longer than 64 KiB cannot be read as MIME")]
    LineTooLong,
    /// Reading the converted copy gave another structure than the original (text the
    /// conversion touched would form or hide a delimiter line).
    #[error("the conversion would change the MIME structure")]
    StructureChanged,
    /// One of the conversion's own checks failed: a bug in Tern, never sent.
    #[error("internal check failed: {check}")]
    Inconsistent {
        /// Which check.
        check: &'static str,
    },
}

/// Whether every octet of `content` is 7-bit.
pub fn is_7bit(content: &[u8]) -> bool {
    !lines::has_8bit(content)
}

/// Converts `content` to 7 bit for a next hop without 8BITMIME (or, for
/// [`Source::Binary`], without BINARYMIME). Content that needs nothing is returned
/// borrowed and unchanged.
pub fn downgrade<'a>(
    content: &'a [u8],
    source: Source,
    limits: &Limits,
) -> Result<Downgraded<'a>, DowngradeError> {
    if source == Source::EightBit && is_7bit(content) {
        return Ok(Downgraded {
            content: Cow::Borrowed(content),
            parts_encoded: 0,
            fields_encoded: 0,
        });
    }
    downgrade::run(content, source, limits)
}

/// [`downgrade`] of 8-bit content with the default limits, as an owned copy.
pub fn downgrade_8bit(content: &[u8]) -> Result<Vec<u8>, DowngradeError> {
    downgrade(content, Source::EightBit, &Limits::default()).map(|d| d.content.into_owned())
}
