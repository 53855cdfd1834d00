//! The message envelope: everything about a message except its content.
//!
//! The envelope is stored as a JSON section of the message file (see `format`), so that an
//! operator can read it with ordinary tools and so that fields can be added in later
//! format versions without breaking older files (unknown fields are ignored on read; every
//! field added later must have a serde default).
//!
//! Trust: an envelope read back from disk is validated by [`Envelope::validate`] before
//! use; a file whose envelope fails validation is corrupt and is quarantined.

use serde::{Deserialize, Serialize};

use crate::QueueId;

/// Longest address Tern stores (RFC 5321 §4.5.3.1.3 path limit is 256 octets).
pub const MAX_ADDRESS_LEN: usize = 256;
/// Most recipients one envelope may hold on disk (a sanity bound, far above any listener
/// limit).
pub const MAX_RECIPIENTS: usize = 100_000;

/// Sender, recipients and the facts of the SMTP transaction that brought a message in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The message's queue id; must equal the id in the file name.
    pub id: QueueId,
    /// Reverse path without angle brackets; empty for the null sender `<>`.
    pub sender: String,
    /// Recipients in the order they were accepted; never empty.
    pub recipients: Vec<Recipient>,
    /// ESMTP parameters of MAIL FROM that matter after acceptance.
    pub params: MailParams,
    /// Who handed the message to Tern.
    pub client: ClientInfo,
    /// Arrival time, microseconds since the Unix epoch (UTC).
    pub arrival_micros: i64,
    /// Size of the stored content in octets, including the Received header Tern added.
    pub size: u64,
    /// Set by inbound verification when the DMARC policy quarantined the message
    /// (docs/FILTERING.md): `hold` parks it in the hold queue at its first routing (a
    /// release then delivers it), `route:<key>` routes every recipient by the routing
    /// table's entry for the domain `<key>`. Absent for every other message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<String>,
}

/// Body type from `MAIL FROM ... BODY=` (RFC 6152, RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyType {
    /// No BODY parameter or `BODY=7BIT`.
    #[default]
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
    /// `BODY=BINARYMIME` (only with BDAT).
    BinaryMime,
}

/// DSN `RET` parameter (RFC 3461 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DsnRet {
    /// Return the full message in a DSN.
    Full,
    /// Return only the headers.
    Hdrs,
}

/// MAIL FROM parameters kept with the message.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MailParams {
    /// `SIZE=` as declared by the client, if any.
    #[serde(default)]
    pub declared_size: Option<u64>,
    /// `BODY=`.
    #[serde(default)]
    pub body: BodyType,
    /// `SMTPUTF8` was given.
    #[serde(default)]
    pub smtputf8: bool,
    /// DSN `RET=`.
    #[serde(default)]
    pub dsn_ret: Option<DsnRet>,
    /// DSN `ENVID=`, decoded from xtext.
    #[serde(default)]
    pub dsn_envid: Option<String>,
}

/// DSN `NOTIFY=` for one recipient (RFC 3461 §4.1). `never` excludes the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Notify {
    /// `NOTIFY=SUCCESS`.
    #[serde(default)]
    pub success: bool,
    /// `NOTIFY=FAILURE`.
    #[serde(default)]
    pub failure: bool,
    /// `NOTIFY=DELAY`.
    #[serde(default)]
    pub delay: bool,
    /// `NOTIFY=NEVER`.
    #[serde(default)]
    pub never: bool,
}

/// Where one recipient stands. Later issues add attempt history; every state a recipient
/// can be in exists from format version 1.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum RecipientStatus {
    /// Not yet delivered.
    #[default]
    Pending,
    /// Delivered; `reply` is what the next hop said.
    Delivered {
        /// The accepting reply.
        reply: String,
    },
    /// Temporarily failed; will be retried.
    Deferred {
        /// The last temporary failure.
        reply: String,
    },
    /// Permanently failed; a bounce was or will be sent.
    Failed {
        /// The permanent failure.
        reply: String,
    },
}

/// One recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// Forward path without angle brackets, as accepted.
    pub address: String,
    /// DSN `ORCPT=` (addr-type;address), decoded from xtext.
    #[serde(default)]
    pub orcpt: Option<String>,
    /// DSN `NOTIFY=`; `None` when the client did not give it.
    #[serde(default)]
    pub notify: Option<Notify>,
    /// Delivery state.
    #[serde(default)]
    pub status: RecipientStatus,
}

impl Recipient {
    /// A recipient as accepted without DSN parameters (no `ORCPT=`, no `NOTIFY=`), not
    /// yet attempted.
    pub fn new(address: impl Into<String>) -> Recipient {
        Recipient {
            address: address.into(),
            orcpt: None,
            notify: None,
            status: RecipientStatus::Pending,
        }
    }
}

/// The client that submitted the message.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClientInfo {
    /// Client IP address and port, as text (`192.0.2.1:40000`, `[2001:db8::1]:40000`).
    pub address: String,
    /// Reverse-DNS name confirmed by a forward lookup, if any.
    #[serde(default)]
    pub verified_name: Option<String>,
    /// The EHLO/HELO argument.
    pub helo: String,
    /// `EHLO` (true) or `HELO` (false).
    #[serde(default)]
    pub esmtp: bool,
    /// TLS protocol version and cipher suite, when the session was encrypted.
    #[serde(default)]
    pub tls: Option<String>,
    /// Name of the listener that accepted the connection.
    #[serde(default)]
    pub listener: String,
    /// The client was inside a relay network (`relay.networks`) when it was admitted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub relay_network: bool,
    /// The SASL identity the client authenticated as (SMTP AUTH), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticated: Option<String>,
}

/// Why an envelope read from disk is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The envelope's id is not the id in the file name.
    #[error("envelope id {found} does not match file id {expected}")]
    IdMismatch {
        /// Id from the file name.
        expected: QueueId,
        /// Id inside the envelope.
        found: QueueId,
    },
    /// No recipients.
    #[error("envelope has no recipients")]
    NoRecipients,
    /// More than [`MAX_RECIPIENTS`].
    #[error("envelope has {0} recipients, more than the limit")]
    TooManyRecipients(usize),
    /// An address is too long or holds control characters.
    #[error("invalid address {0:?}")]
    BadAddress(String),
}

impl Envelope {
    /// Checks the invariants an envelope from disk must hold.
    pub fn validate(&self, expected: QueueId) -> Result<(), EnvelopeError> {
        if self.id != expected {
            return Err(EnvelopeError::IdMismatch {
                expected,
                found: self.id,
            });
        }
        if self.recipients.is_empty() {
            return Err(EnvelopeError::NoRecipients);
        }
        if self.recipients.len() > MAX_RECIPIENTS {
            return Err(EnvelopeError::TooManyRecipients(self.recipients.len()));
        }
        check_address(&self.sender, true)?;
        if let Some(q) = &self.quarantine {
            check_address(q, false)?;
        }
        for r in &self.recipients {
            check_address(&r.address, false)?;
        }
        Ok(())
    }
}

fn check_address(a: &str, may_be_empty: bool) -> Result<(), EnvelopeError> {
    let ok = (may_be_empty || !a.is_empty())
        && a.len() <= MAX_ADDRESS_LEN
        && !a.chars().any(|c| c.is_control());
    if ok {
        Ok(())
    } else {
        Err(EnvelopeError::BadAddress(a.to_string()))
    }
}
