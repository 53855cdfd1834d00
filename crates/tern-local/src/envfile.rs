//! The envelope file: one small JSON document beside a message file (`<stem>.env` beside
//! `<stem>.eml`) that carries the message's envelope.
//!
//! One format for both directions, so that one Tern's drop directory can serve as
//! another's pickup directory: the drop transport and `tern sendmail` write it, the
//! pickup service reads it. Version 1 (docs/CONNECTORS.md has the full description):
//!
//! ```json
//! {"version": 1,
//!  "sender": "alice@example.com",
//!  "recipients": ["bob@example.net",
//!                 {"address": "carol@example.org", "notify": "failure,delay",
//!                  "orcpt": "rfc822;carol@example.org"}],
//!  "ret": "hdrs", "envid": "abc123", "smtputf8": false}
//! ```
//!
//! `sender` is `""` (or `"<>"`) for the null sender; `recipients` are strings or objects;
//! `notify` is `never` or a comma list of `success`, `failure`, `delay`; `ret` is `full` or
//! `hdrs`. The drop transport adds `queue_id`, `arrival` (RFC 3339), `size` and `body`
//! (`7bit`, `8bitmime`, `binarymime`), which the pickup service accepts and ignores (it
//! looks at the content itself). Unknown keys are refused, so a writer's typo is reported
//! instead of silently changing where mail goes.
//!
//! Trust: read from a shared directory, so untrusted: at most [`MAX_LEN`] octets, every
//! address validated like an SMTP path, every text field bounded and free of control
//! characters.

use serde::{Deserialize, Serialize};
use tern_spool::{BodyType, DsnRet, Envelope, Notify, Recipient, RecipientStatus};

use crate::submit::{Recipients, SubmitError, qualify};

/// The format version this code writes and reads.
pub const VERSION: u32 = 1;
/// Largest envelope file read, in octets.
pub const MAX_LEN: u64 = 1024 * 1024;
/// Longest `envid` (RFC 3461 §4.4 allows 100 characters).
pub const MAX_ENVID: usize = 100;
/// Longest `orcpt`.
pub const MAX_ORCPT: usize = 500;

/// An envelope file as written on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeFile {
    /// Always [`VERSION`].
    pub version: u32,
    /// Reverse path without angle brackets; empty for the null sender.
    pub sender: String,
    /// Recipients in order; never empty when valid.
    pub recipients: Vec<RecipientEntry>,
    /// DSN RET (`full` or `hdrs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<String>,
    /// DSN ENVID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
    /// The message needs SMTPUTF8 (an address is not ASCII).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub smtputf8: bool,
    /// Informational (drop transport): Tern's queue id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_id: Option<String>,
    /// Informational (drop transport): arrival time, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrival: Option<String>,
    /// Informational (drop transport): size of the message file in octets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Informational (drop transport): `7bit`, `8bitmime` or `binarymime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// One recipient: an address, or an object with DSN parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RecipientEntry {
    /// Just the address.
    Address(String),
    /// The address with DSN parameters.
    Detailed(RecipientDetail),
}

/// A recipient with DSN parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientDetail {
    /// Forward path without angle brackets.
    pub address: String,
    /// DSN NOTIFY: `never`, or a comma list of `success`, `failure`, `delay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
    /// DSN ORCPT (`addr-type;address`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<String>,
}

/// Why an envelope file cannot be used (the text goes into the badmail reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvFileError {
    /// Larger than [`MAX_LEN`].
    #[error("envelope file of {len} octets, more than the limit of {MAX_LEN}")]
    TooLarge {
        /// Its length.
        len: u64,
    },
    /// Not JSON of the documented shape (the parser's message says where).
    #[error("envelope file is not valid: {0}")]
    Json(String),
    /// A version this Tern does not read.
    #[error("envelope file version {0} is not supported (this Tern reads version {VERSION})")]
    Version(u32),
    /// No recipients.
    #[error("envelope file lists no recipients")]
    NoRecipients,
    /// An address or the recipient count is not acceptable.
    #[error(transparent)]
    Address(#[from] SubmitError),
    /// `notify`, `ret`, `envid` or `orcpt` is not acceptable.
    #[error("envelope file field {field}: {why}")]
    Field {
        /// The key.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
}

/// The envelope an envelope file gives, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedEnvelope {
    /// Reverse path; empty for the null sender.
    pub sender: String,
    /// Recipients, pending, without duplicates.
    pub recipients: Vec<Recipient>,
    /// DSN RET.
    pub dsn_ret: Option<DsnRet>,
    /// DSN ENVID.
    pub dsn_envid: Option<String>,
    /// SMTPUTF8 is needed: asked for, or an address is not ASCII.
    pub smtputf8: bool,
}

impl EnvelopeFile {
    /// An envelope file for the given sender and plain recipients.
    pub fn new(sender: &str, recipients: &[String]) -> EnvelopeFile {
        EnvelopeFile {
            version: VERSION,
            sender: sender.to_owned(),
            recipients: recipients
                .iter()
                .map(|r| RecipientEntry::Address(r.clone()))
                .collect(),
            ret: None,
            envid: None,
            smtputf8: false,
            queue_id: None,
            arrival: None,
            size: None,
            body: None,
        }
    }

    /// The envelope file of a stored message, for the recipients `rcpts` (indices into
    /// its recipients; out-of-range indices are skipped). With `stored`, the
    /// informational fields of the drop transport are filled in.
    pub fn from_envelope(env: &Envelope, rcpts: &[usize], stored: bool) -> EnvelopeFile {
        let recipients = rcpts
            .iter()
            .filter_map(|i| env.recipients.get(*i))
            .map(|r| {
                RecipientEntry::Detailed(RecipientDetail {
                    address: r.address.clone(),
                    notify: r.notify.as_ref().map(notify_text),
                    orcpt: r.orcpt.clone(),
                })
            })
            .collect();
        let p = &env.params;
        EnvelopeFile {
            version: VERSION,
            sender: env.sender.clone(),
            recipients,
            ret: p.dsn_ret.map(|r| match r {
                DsnRet::Full => "full".to_owned(),
                DsnRet::Hdrs => "hdrs".to_owned(),
            }),
            envid: p.dsn_envid.clone(),
            smtputf8: p.smtputf8,
            queue_id: stored.then(|| env.id.to_string()),
            arrival: stored.then(|| rfc3339(env.arrival_micros)),
            size: stored.then_some(env.size),
            body: stored.then(|| {
                match p.body {
                    BodyType::SevenBit => "7bit",
                    BodyType::EightBitMime => "8bitmime",
                    BodyType::BinaryMime => "binarymime",
                }
                .to_owned()
            }),
        }
    }

    /// One line of JSON and a newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec());
        v.push(b'\n');
        v
    }

    /// Parses an envelope file's bytes (the caller has read at most `MAX_LEN + 1`).
    pub fn parse(bytes: &[u8]) -> Result<EnvelopeFile, EnvFileError> {
        let len = bytes.len() as u64;
        if len > MAX_LEN {
            return Err(EnvFileError::TooLarge { len });
        }
        // Only `version` first, so an unknown version gets its own answer.
        #[derive(Deserialize)]
        struct Probe {
            version: Option<u32>,
        }
        if let Ok(Probe { version: Some(v) }) = serde_json::from_slice::<Probe>(bytes)
            && v != VERSION
        {
            return Err(EnvFileError::Version(v));
        }
        let file: EnvelopeFile =
            serde_json::from_slice(bytes).map_err(|e| EnvFileError::Json(e.to_string()))?;
        if file.version != VERSION {
            return Err(EnvFileError::Version(file.version));
        }
        Ok(file)
    }

    /// Validates the envelope: addresses (a bare local part gets `@hostname`), at most
    /// `limit` recipients, duplicates dropped, DSN fields checked.
    pub fn resolve(&self, hostname: &str, limit: usize) -> Result<ResolvedEnvelope, EnvFileError> {
        let sender = match self.sender.trim() {
            "" | "<>" => String::new(),
            s => qualify(
                s.trim_start_matches('<').trim_end_matches('>'),
                hostname,
                "envelope sender",
            )?,
        };
        let mut seen = Recipients::new(limit);
        let mut recipients = Vec::new();
        for entry in &self.recipients {
            let (address, notify, orcpt) = match entry {
                RecipientEntry::Address(a) => (a.as_str(), None, None),
                RecipientEntry::Detailed(d) => {
                    (d.address.as_str(), d.notify.as_deref(), d.orcpt.as_deref())
                }
            };
            let address = qualify(address, hostname, "envelope recipient")?;
            if !seen.push(address.clone())? {
                continue;
            }
            recipients.push(Recipient {
                address,
                orcpt: orcpt
                    .map(|o| bounded_text("orcpt", o, MAX_ORCPT))
                    .transpose()?,
                notify: notify.map(parse_notify).transpose()?,
                status: RecipientStatus::Pending,
            });
        }
        if recipients.is_empty() {
            return Err(EnvFileError::NoRecipients);
        }
        let dsn_ret = match self.ret.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None => None,
            Some("full") => Some(DsnRet::Full),
            Some("hdrs") => Some(DsnRet::Hdrs),
            Some(other) => {
                return Err(EnvFileError::Field {
                    field: "ret",
                    why: format!("{other:?} is neither full nor hdrs"),
                });
            }
        };
        let dsn_envid = self
            .envid
            .as_deref()
            .map(|e| bounded_text("envid", e, MAX_ENVID))
            .transpose()?;
        let international = !sender.is_ascii() || recipients.iter().any(|r| !r.address.is_ascii());
        Ok(ResolvedEnvelope {
            sender,
            recipients,
            dsn_ret,
            dsn_envid,
            smtputf8: self.smtputf8 || international,
        })
    }
}

/// `never`, or the comma list of the flags set.
pub fn notify_text(n: &Notify) -> String {
    if n.never {
        return "never".to_owned();
    }
    let mut parts = Vec::new();
    if n.success {
        parts.push("success");
    }
    if n.failure {
        parts.push("failure");
    }
    if n.delay {
        parts.push("delay");
    }
    parts.join(",")
}

/// Parses a NOTIFY list as [`notify_text`] writes it (any case).
pub fn parse_notify(text: &str) -> Result<Notify, EnvFileError> {
    let bad = |why: String| EnvFileError::Field {
        field: "notify",
        why,
    };
    let mut n = Notify::default();
    for word in text.split(',').map(str::trim) {
        match word.to_ascii_lowercase().as_str() {
            "never" => n.never = true,
            "success" => n.success = true,
            "failure" => n.failure = true,
            "delay" => n.delay = true,
            other => {
                return Err(bad(format!(
                    "{other:?} is not never, success, failure or delay"
                )));
            }
        }
    }
    if n.never && (n.success || n.failure || n.delay) {
        return Err(bad("never excludes the others".into()));
    }
    Ok(n)
}

fn bounded_text(field: &'static str, s: &str, max: usize) -> Result<String, EnvFileError> {
    if s.len() > max {
        return Err(EnvFileError::Field {
            field,
            why: format!("longer than {max} octets"),
        });
    }
    if !s.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Err(EnvFileError::Field {
            field,
            why: "only printable ASCII without spaces is allowed".into(),
        });
    }
    Ok(s.to_owned())
}

/// RFC 3339 (UTC) of microseconds since the epoch.
pub(crate) fn rfc3339(micros: i64) -> String {
    let nanos = i128::from(micros).saturating_mul(1000);
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(json: &str) -> Result<ResolvedEnvelope, EnvFileError> {
        EnvelopeFile::parse(json.as_bytes())?.resolve("h.test", 10)
    }

    #[test]
    fn the_documented_example_resolves() {
        let r = resolve(
            r#"{"version": 1, "sender": "alice@example.com",
                "recipients": ["bob@example.net",
                               {"address": "carol@example.org", "notify": "failure,delay",
                                "orcpt": "rfc822;carol@example.org"}],
                "ret": "hdrs", "envid": "abc123"}"#,
        )
        .unwrap();
        assert_eq!(r.sender, "alice@example.com");
        assert_eq!(r.recipients.len(), 2);
        assert_eq!(r.recipients[0].address, "bob@example.net");
        assert_eq!(r.recipients[0].notify, None);
        let n = r.recipients[1].notify.unwrap();
        assert!(n.failure && n.delay && !n.success && !n.never);
        assert_eq!(
            r.recipients[1].orcpt.as_deref(),
            Some("rfc822;carol@example.org")
        );
        assert_eq!(r.dsn_ret, Some(DsnRet::Hdrs));
        assert_eq!(r.dsn_envid.as_deref(), Some("abc123"));
        assert!(!r.smtputf8);
    }

    #[test]
    fn null_sender_bare_names_and_duplicates() {
        let r = resolve(
            r#"{"version":1,"sender":"<>","recipients":["root","ROOT@h.test","x@y.test"]}"#,
        )
        .unwrap();
        assert_eq!(r.sender, "");
        let a: Vec<&str> = r.recipients.iter().map(|r| r.address.as_str()).collect();
        assert_eq!(a, ["root@h.test", "x@y.test"]);
        let r = resolve(r#"{"version":1,"sender":"","recipients":["jörg@example.de"]}"#).unwrap();
        assert!(r.smtputf8);
    }

    #[test]
    fn every_bad_file_has_its_own_reason() {
        let cases = [
            (r#"not json"#, "not valid"),
            (
                r#"{"version":2,"sender":"","recipients":["a@b.test"]}"#,
                "version 2",
            ),
            (
                r#"{"version":1,"sender":"","recipients":[]}"#,
                "no recipients",
            ),
            (
                r#"{"version":1,"sender":"","recipients":["a@b.test"],"bcc":["x"]}"#,
                "unknown field",
            ),
            (
                r#"{"version":1,"sender":"a@","recipients":["a@b.test"]}"#,
                "envelope sender",
            ),
            (
                r#"{"version":1,"sender":"","recipients":["a b c"]}"#,
                "envelope recipient",
            ),
            (
                r#"{"version":1,"sender":"","recipients":[{"address":"a@b.test","notify":"never,success"}]}"#,
                "never excludes",
            ),
            (
                r#"{"version":1,"sender":"","recipients":[{"address":"a@b.test","notify":"sometimes"}]}"#,
                "notify",
            ),
            (
                r#"{"version":1,"sender":"","recipients":["a@b.test"],"ret":"all"}"#,
                "ret",
            ),
            (
                r#"{"version":1,"sender":"","recipients":["a@b.test"],"envid":"has space"}"#,
                "envid",
            ),
            (
                r#"{"version":1,"sender":"","recipients":[{"address":"a@b.test","orcpt":"x\u0001"}]}"#,
                "orcpt",
            ),
            (r#"{"sender":"","recipients":["a@b.test"]}"#, "version"),
        ];
        for (json, want) in cases {
            let e = resolve(json).unwrap_err().to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
        let big = vec![b' '; (MAX_LEN + 1) as usize];
        assert!(matches!(
            EnvelopeFile::parse(&big),
            Err(EnvFileError::TooLarge { .. })
        ));
        let many: Vec<String> = (0..11).map(|i| format!("\"r{i}@b.test\"")).collect();
        let json = format!(
            r#"{{"version":1,"sender":"","recipients":[{}]}}"#,
            many.join(",")
        );
        assert!(
            resolve(&json)
                .unwrap_err()
                .to_string()
                .contains("more than 10")
        );
    }

    #[test]
    fn a_stored_envelope_round_trips() {
        let env = Envelope {
            quarantine: None,
            id: tern_spool::QueueId::generate(),
            sender: "s@x.test".into(),
            recipients: vec![
                Recipient {
                    address: "a@x.test".into(),
                    orcpt: Some("rfc822;a@x.test".into()),
                    notify: Some(Notify {
                        success: true,
                        ..Notify::default()
                    }),
                    status: RecipientStatus::Pending,
                },
                Recipient::new("b@x.test"),
            ],
            params: tern_spool::MailParams {
                body: BodyType::EightBitMime,
                dsn_ret: Some(DsnRet::Full),
                dsn_envid: Some("E1".into()),
                ..Default::default()
            },
            client: Default::default(),
            arrival_micros: 1_700_000_000_000_000,
            size: 42,
        };
        let file = EnvelopeFile::from_envelope(&env, &[1, 0, 7], true);
        let json = file.to_json();
        assert!(json.ends_with(b"}\n"));
        let back = EnvelopeFile::parse(&json).unwrap();
        assert_eq!(back, file);
        assert_eq!(back.queue_id, Some(env.id.to_string()));
        assert_eq!(back.arrival.as_deref(), Some("2023-11-14T22:13:20Z"));
        assert_eq!(back.body.as_deref(), Some("8bitmime"));
        let r = back.resolve("h.test", 10).unwrap();
        assert_eq!(r.recipients[0].address, "b@x.test");
        assert_eq!(r.recipients[1], env.recipients[0]);
        assert_eq!(r.dsn_ret, Some(DsnRet::Full));
        assert_eq!(r.dsn_envid.as_deref(), Some("E1"));
    }
}
