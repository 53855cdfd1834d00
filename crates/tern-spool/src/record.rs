//! The delivery record: what the queue has learned about a message since it arrived.
//!
//! The message's content and envelope are written once and never changed. Everything
//! that changes while a message waits in the queue (attempt count, next retry time, each
//! recipient's status, whether a bounce or a delay notice was sent) is this record. It is
//! stored as an authenticated frame appended to the message file itself (JSON from
//! [`encode_json`], see `format::frame` and the `format` module header, "Version 2"); the
//! last valid frame is the record. A message without a record has had no attempt finish
//! yet: all its recipients are pending.
//!
//! Legacy record files: older versions kept the record in a separate file,
//! `records/<id>`, replaced atomically. Such a file is still read ([`decode`]) when the
//! message file has no frame, and removed by the next write (which appends a frame).
//! This version writes one only for a message still resident in a segment (no file of
//! its own). On disk: a 16-octet header, then a JSON document.
//!
//! ```text
//! 0   8  magic "TERNREC1"
//! 8   4  length of the JSON in octets (u32 little endian)
//! 12  4  CRC32C of the JSON (u32 little endian)
//! 16  .. JSON (serde of `DeliveryRecord`)
//! ```
//!
//! Trust: a record read from disk is validated by [`decode`] (magic, exact length, CRC,
//! JSON shape, id, recipient count) or, from a frame whose MAC verified, by
//! [`decode_json`] (JSON shape, id, recipient count) before use. A record that fails is corrupt and its
//! message is quarantined with it; a record is never silently ignored, since that would
//! send the message again to recipients that already have it.

use serde::{Deserialize, Serialize};

use crate::envelope::{MAX_RECIPIENTS, RecipientStatus};
use crate::error::CorruptReason;
use crate::id::QueueId;

/// Magic at the start of every record file (the last octet is the format version).
pub const RECORD_MAGIC: &[u8; 8] = b"TERNREC1";
/// Header length in octets.
pub const RECORD_HEADER_LEN: usize = 16;
/// Largest record accepted from disk (a sanity bound: 100k recipients with their last
/// replies fit well below it).
pub const MAX_RECORD_LEN: usize = 64 << 20;
/// Longest reply text kept per recipient (remote replies can be long; the record stays
/// bounded).
pub const MAX_REPLY_LEN: usize = 2048;

/// What the queue knows about one message beyond its envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// The message this record belongs to; must equal the file name.
    pub id: QueueId,
    /// Delivery attempts finished so far.
    pub attempts: u32,
    /// When the first attempt finished, microseconds since the Unix epoch.
    #[serde(default)]
    pub first_attempt_micros: Option<i64>,
    /// When the last attempt finished.
    #[serde(default)]
    pub last_attempt_micros: Option<i64>,
    /// When the next attempt is due (deferred messages).
    #[serde(default)]
    pub next_attempt_micros: Option<i64>,
    /// A delay notice was sent for this message (at most one is sent).
    #[serde(default)]
    pub delay_notice_sent: bool,
    /// The last error that concerned the whole message (no route, connection failures).
    #[serde(default)]
    pub last_error: Option<String>,
    /// Crashes counted against this message: deaths of the process that the evidence
    /// attributed to it (its probe was running, a last gasp named it, or it was alone in
    /// process; see docs/RELIABILITY.md) and panics of its processing. At the poison
    /// threshold the message goes to `poison/`.
    #[serde(default)]
    pub crashes: u32,
    /// The run (a random number each start of the queue draws, see [`crate::crash`])
    /// whose death was last counted in `crashes`: a start cut short after it counted a
    /// crash, and repeated, does not count the same crash twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_run: Option<u64>,
    /// The quarantine hold of its envelope (`quarantine = "hold"`) was applied: after a
    /// release the message is routed as usual.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quarantine_held: bool,
    /// One entry per envelope recipient, in envelope order. Invariant: same length as
    /// the envelope's recipient list (checked by the queue when it loads both).
    pub recipients: Vec<RecipientRecord>,
}

/// What the queue knows about one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RecipientRecord {
    /// Where the recipient stands.
    #[serde(default)]
    pub status: RecipientStatus,
    /// Attempts that included this recipient.
    #[serde(default)]
    pub attempts: u32,
    /// The host that gave the last reply (`mx.example.com[192.0.2.1]`), if any.
    #[serde(default)]
    pub remote_mta: Option<String>,
    /// A DSN (bounce or success notice) covering this recipient was queued; it is never
    /// sent twice.
    #[serde(default)]
    pub dsn_sent: bool,
    /// The last attempts that included this recipient, oldest first: at most
    /// [`MAX_HISTORY`] entries, each reply cut to [`MAX_HISTORY_REPLY`] octets, and kept
    /// only for messages of at most [`HISTORY_MAX_RECIPIENTS`] recipients, so a record
    /// stays far below [`MAX_RECORD_LEN`] (see [`RecipientRecord::remember`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<AttemptEntry>,
    /// The reply behind `status`, typed (code, enhanced status code, text, the host that
    /// gave it), for the DSN builder. Written with every status since it was added; a
    /// record written before has none, and `status`'s text and `remote_mta` are all
    /// there is. Readers that show the reply keep using `status`, which is still written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Reply>,
}

/// A reply as the queue keeps it: from a remote server (`remote` names it) or made by
/// Tern for a local decision (`remote` is `None`). Its `Display` is the reply as one
/// line, `550 5.1.1 text`, the form `RecipientStatus` stores.
///
/// Invariants: `text` and `remote` are at most [`MAX_REPLY_LEN`] octets each
/// ([`Reply::new`] and [`Reply::with_remote`] cut them). A record from disk may hold any
/// values (it is Tern's own, checksummed, but not trusted to be sane): [`Reply::status`]
/// never returns an ill-formed status whatever they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// The enhanced status code (RFC 3463), `(class, subject, detail)`, when the reply
    /// had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enhanced: Option<(u8, u16, u16)>,
    /// The text after the code and the enhanced status code (the lines of a multi-line
    /// reply joined by spaces); may be empty.
    #[serde(default)]
    pub text: String,
    /// `host[address]` of the server that gave the reply; `None` for Tern's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

impl Reply {
    /// A reply, its text and remote host cut to their bounds.
    pub fn new(
        code: u16,
        enhanced: Option<(u8, u16, u16)>,
        text: &str,
        remote: Option<&str>,
    ) -> Reply {
        Reply {
            code,
            enhanced,
            text: cut(text, MAX_REPLY_LEN),
            remote: remote.map(|r| cut(r, MAX_REPLY_LEN)),
        }
    }

    /// The same reply, given by `remote`.
    pub fn with_remote(mut self, remote: &str) -> Reply {
        self.remote = Some(cut(remote, MAX_REPLY_LEN));
        self
    }

    /// The DSN status (RFC 3464 §2.3.4): the enhanced status code when there is a
    /// well-formed one (class 2, 4 or 5, subject and detail of at most three digits),
    /// else the default of the reply code's class (`2.0.0`, `4.0.0`, `5.0.0`).
    pub fn status(&self) -> String {
        match self.enhanced {
            Some((class @ (2 | 4 | 5), subject, detail)) if subject < 1000 && detail < 1000 => {
                format!("{class}.{subject}.{detail}")
            }
            _ => match self.code / 100 {
                2 => "2.0.0".into(),
                4 => "4.0.0".into(),
                _ => "5.0.0".into(),
            },
        }
    }
}

impl std::fmt::Display for Reply {
    /// `550 5.1.1 text` (without the parts that are absent).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some((c, s, d)) = self.enhanced {
            write!(f, " {c}.{s}.{d}")?;
        }
        if !self.text.is_empty() {
            write!(f, " {}", self.text)?;
        }
        Ok(())
    }
}

/// Parses an enhanced status code `class.subject.detail` (RFC 3463: class 2, 4 or 5,
/// subject and detail of one to three digits), as Tern writes them in its own replies
/// and in the `reject` routes' configuration.
pub fn parse_enhanced(text: &str) -> Option<(u8, u16, u16)> {
    let mut parts = text.split('.');
    let (Some(c), Some(s), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let num = |p: &str| {
        (!p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<u16>().ok())
            .flatten()
    };
    let class = match c {
        "2" => 2,
        "4" => 4,
        "5" => 5,
        _ => return None,
    };
    Some((class, num(s)?, num(d)?))
}

/// One attempt's result for one recipient, for the operator (`GET /api/v1/queue/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptEntry {
    /// When the attempt finished, microseconds since the Unix epoch.
    pub at_micros: i64,
    /// `delivered`, `deferred` or `failed`.
    pub result: String,
    /// The host that answered, if any.
    #[serde(default)]
    pub remote: Option<String>,
    /// The reply (cut to [`MAX_HISTORY_REPLY`] octets).
    #[serde(default)]
    pub reply: Option<String>,
}

/// Most attempts remembered per recipient.
pub const MAX_HISTORY: usize = 5;
/// Longest reply kept in an [`AttemptEntry`].
pub const MAX_HISTORY_REPLY: usize = 256;
/// Messages with more recipients keep no per-recipient history (only the last status).
pub const HISTORY_MAX_RECIPIENTS: usize = 1000;

impl RecipientRecord {
    /// Appends one attempt's result to the history, dropping the oldest beyond
    /// [`MAX_HISTORY`]. `recipients` is the message's recipient count: above
    /// [`HISTORY_MAX_RECIPIENTS`] nothing is kept.
    pub fn remember(&mut self, recipients: usize, entry: AttemptEntry) {
        if recipients > HISTORY_MAX_RECIPIENTS {
            return;
        }
        let mut entry = entry;
        entry.reply = entry.reply.map(|r| cut(&r, MAX_HISTORY_REPLY));
        entry.remote = entry.remote.map(|r| cut(&r, MAX_HISTORY_REPLY));
        self.history.push(entry);
        let extra = self.history.len().saturating_sub(MAX_HISTORY);
        self.history.drain(..extra);
    }
}

impl DeliveryRecord {
    /// A fresh record for a message with `recipients` recipients, all pending.
    pub fn new(id: QueueId, recipients: usize) -> DeliveryRecord {
        DeliveryRecord {
            id,
            attempts: 0,
            first_attempt_micros: None,
            last_attempt_micros: None,
            next_attempt_micros: None,
            delay_notice_sent: false,
            last_error: None,
            crashes: 0,
            crash_run: None,
            quarantine_held: false,
            recipients: vec![RecipientRecord::default(); recipients],
        }
    }
}

/// Encodes a record for disk.
pub fn encode(record: &DeliveryRecord) -> Vec<u8> {
    // Serialising plain structs of strings and integers cannot fail.
    let json = serde_json::to_vec(record).unwrap_or_default();
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + json.len());
    out.extend_from_slice(RECORD_MAGIC);
    out.extend_from_slice(&u32::try_from(json.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&json).to_le_bytes());
    out.extend_from_slice(&json);
    out
}

/// The record's JSON, as a record frame in the message file carries it
/// (`format::frame`).
pub fn encode_json(record: &DeliveryRecord) -> Vec<u8> {
    // Serialising plain structs of strings and integers cannot fail.
    serde_json::to_vec(record).unwrap_or_default()
}

/// Decodes and validates a record read from a legacy `records/<expected>` file.
pub fn decode(bytes: &[u8], expected: QueueId) -> Result<DeliveryRecord, CorruptReason> {
    let bad = |what: &str| CorruptReason::BadRecord(what.to_string());
    if bytes.len() > MAX_RECORD_LEN {
        return Err(bad("record larger than the limit"));
    }
    let (Some(magic), Some(len), Some(crc), Some(json)) = (
        bytes.get(0..8),
        bytes.get(8..12),
        bytes.get(12..16),
        bytes.get(RECORD_HEADER_LEN..),
    ) else {
        return Err(bad("record shorter than its header"));
    };
    if magic != RECORD_MAGIC {
        return Err(bad("bad magic or unknown record version"));
    }
    let le = |b: &[u8]| b.try_into().map(u32::from_le_bytes).unwrap_or(u32::MAX);
    if usize::try_from(le(len)).ok() != Some(json.len()) {
        return Err(bad("record length does not match the file"));
    }
    if crc32c::crc32c(json) != le(crc) {
        return Err(bad("record checksum mismatch"));
    }
    decode_json(json, expected)
}

/// Decodes and validates a record's JSON (from a legacy file, after its header was
/// checked, or from an authenticated record frame): shape, id, recipient count.
pub fn decode_json(json: &[u8], expected: QueueId) -> Result<DeliveryRecord, CorruptReason> {
    let bad = |what: &str| CorruptReason::BadRecord(what.to_string());
    if json.len() > MAX_RECORD_LEN {
        return Err(bad("record larger than the limit"));
    }
    let record: DeliveryRecord =
        serde_json::from_slice(json).map_err(|e| bad(&format!("record JSON: {e}")))?;
    if record.id != expected {
        return Err(bad("record id does not match its message"));
    }
    if record.recipients.len() > MAX_RECIPIENTS {
        return Err(bad("record has too many recipients"));
    }
    Ok(record)
}

/// Cuts a reply to [`MAX_REPLY_LEN`] octets on a character boundary.
pub fn bounded_reply(reply: &str) -> String {
    cut(reply, MAX_REPLY_LEN)
}

fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> DeliveryRecord {
        let mut r = DeliveryRecord::new(QueueId::generate(), 2);
        r.attempts = 3;
        r.crashes = 1;
        r.crash_run = Some(u64::MAX);
        r.next_attempt_micros = Some(1_700_000_000_000_000);
        r.recipients[0].status = RecipientStatus::Delivered {
            reply: "250 ok".into(),
        };
        r.recipients[1].status = RecipientStatus::Deferred {
            reply: "451 later".into(),
        };
        r
    }

    #[test]
    fn round_trip() {
        let r = sample();
        assert_eq!(decode(&encode(&r), r.id).unwrap(), r);
    }

    #[test]
    fn every_kind_of_damage_is_caught() {
        let r = sample();
        let good = encode(&r);
        let mut flipped = good.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x20;
        let mut magic = good.clone();
        magic[7] = b'9';
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("truncated", good[..good.len() - 1].to_vec()),
            ("header only", good[..RECORD_HEADER_LEN].to_vec()),
            ("flipped", flipped),
            ("version", magic),
        ];
        for (name, bytes) in cases {
            assert!(decode(&bytes, r.id).is_err(), "{name} accepted");
        }
        assert!(
            decode(&good, QueueId::generate()).is_err(),
            "wrong id accepted"
        );
    }

    #[test]
    fn typed_replies_are_optional_and_round_trip() {
        // Written with the typed reply: it comes back.
        let mut rec = sample();
        rec.recipients[0].reply = Some(Reply::new(
            250,
            Some((2, 0, 0)),
            "ok",
            Some("mx.test[192.0.2.1]"),
        ));
        rec.recipients[1].reply = Some(Reply::new(451, None, "later", None));
        let bytes = encode(&rec);
        let json = String::from_utf8_lossy(&bytes[RECORD_HEADER_LEN..]).into_owned();
        assert!(json.contains(r#""reply":{"code":250,"enhanced":[2,0,0],"text":"ok","remote":"mx.test[192.0.2.1]"}"#), "{json}");
        assert_eq!(decode(&bytes, rec.id).unwrap(), rec);
        // Written without (before the field existed): decodes, with none.
        let old = br#"{"id":"ID","attempts":1,"recipients":[{"status":{"state":"failed","reply":"550 5.1.1 no"},"remote_mta":"mx.test[192.0.2.1]"}]}"#;
        let json = String::from_utf8_lossy(old).replace("ID", &rec.id.to_string());
        let mut bytes = RECORD_MAGIC.to_vec();
        bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(json.as_bytes()).to_le_bytes());
        bytes.extend_from_slice(json.as_bytes());
        let got = decode(&bytes, rec.id).unwrap();
        assert_eq!(got.recipients[0].reply, None);
        assert_eq!(
            got.recipients[0].status,
            RecipientStatus::Failed {
                reply: "550 5.1.1 no".into()
            }
        );
        // A record without typed replies writes no `reply` field at all.
        let plain = encode(&sample());
        assert!(!String::from_utf8_lossy(&plain).contains(r#""reply":{"#));
    }

    #[test]
    fn a_typed_reply_prints_as_the_status_text_and_gives_its_status() {
        let r = Reply::new(550, Some((5, 1, 1)), "no such user", Some("mx[192.0.2.1]"));
        assert_eq!(r.to_string(), "550 5.1.1 no such user");
        assert_eq!(r.status(), "5.1.1");
        assert_eq!(Reply::new(421, None, "", None).to_string(), "421");
        assert_eq!(Reply::new(421, None, "bye", None).status(), "4.0.0");
        assert_eq!(Reply::new(250, None, "ok", None).status(), "2.0.0");
        assert_eq!(Reply::new(550, None, "no", None).status(), "5.0.0");
        // Expiry keeps the transient status of the last deferral (as Postfix does).
        assert_eq!(
            Reply::new(554, Some((4, 4, 7)), "expired", None).status(),
            "4.4.7"
        );
        // Nonsense from a damaged record never makes an ill-formed status.
        assert_eq!(
            Reply::new(550, Some((7, 1, 1)), "x", None).status(),
            "5.0.0"
        );
        assert_eq!(
            Reply::new(450, Some((4, 1000, 1)), "x", None).status(),
            "4.0.0"
        );
        assert_eq!(Reply::new(0, None, "x", None).status(), "5.0.0");
        let long = Reply::new(550, None, &"x".repeat(MAX_REPLY_LEN * 2), None);
        assert_eq!(long.text.len(), MAX_REPLY_LEN);
    }

    #[test]
    fn enhanced_codes_parse_only_when_well_formed() {
        assert_eq!(parse_enhanced("5.7.1"), Some((5, 7, 1)));
        assert_eq!(parse_enhanced("4.4.100"), Some((4, 4, 100)));
        for bad in [
            "", "5.7", "5.7.1.2", "3.0.0", "5.a.1", "5..1", "5.1.1000", "5.7.1 ",
        ] {
            assert_eq!(parse_enhanced(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn long_replies_are_cut_on_a_char_boundary() {
        let s = "é".repeat(MAX_REPLY_LEN);
        let cut = bounded_reply(&s);
        assert!(cut.len() <= MAX_REPLY_LEN);
        assert!(s.starts_with(&cut));
    }

    #[test]
    fn history_is_bounded_and_skipped_for_huge_messages() {
        let mut r = RecipientRecord::default();
        for n in 0..(MAX_HISTORY as i64 + 3) {
            r.remember(
                2,
                AttemptEntry {
                    at_micros: n,
                    result: "deferred".into(),
                    remote: Some("mx.test[192.0.2.1]".into()),
                    reply: Some("x".repeat(MAX_HISTORY_REPLY * 2)),
                },
            );
        }
        assert_eq!(r.history.len(), MAX_HISTORY);
        assert_eq!(r.history[0].at_micros, 3, "the oldest went first");
        assert!(
            r.history
                .iter()
                .all(|e| e.reply.as_ref().unwrap().len() == MAX_HISTORY_REPLY)
        );
        let mut big = RecipientRecord::default();
        big.remember(
            HISTORY_MAX_RECIPIENTS + 1,
            AttemptEntry {
                at_micros: 1,
                result: "failed".into(),
                remote: None,
                reply: None,
            },
        );
        assert!(big.history.is_empty());
        // Records written before the history existed still decode.
        let mut rec = sample();
        rec.recipients[0].history = r.history.clone();
        assert_eq!(decode(&encode(&rec), rec.id).unwrap(), rec);
        let old = br#"{"id":"ID","attempts":1,"recipients":[{"status":{"state":"pending"}}]}"#;
        let json = String::from_utf8_lossy(old).replace("ID", &rec.id.to_string());
        let mut bytes = RECORD_MAGIC.to_vec();
        bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(json.as_bytes()).to_le_bytes());
        bytes.extend_from_slice(json.as_bytes());
        assert!(
            decode(&bytes, rec.id).unwrap().recipients[0]
                .history
                .is_empty()
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes, QueueId::generate());
        }
    }
}
