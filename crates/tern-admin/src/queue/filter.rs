//! Which messages a request is about: the filter of `GET /queue` and of the bulk actions,
//! the scan that applies it, and the summary of each message. Also used by the CLI on a
//! read-only spool when no server runs, so both print the same thing.
//!
//! Rules: text filters (sender, recipient, destination, error) are case-insensitive
//! substrings, at most [`MAX_TEXT`] characters. `destination` matches the domains of the
//! recipients not yet delivered or failed (all recipients when none is open). `error`
//! matches the message's last error and every recipient's last reply. Ages are whole
//! seconds since arrival, both bounds inclusive. `ids` (bulk actions only: the CLI acts
//! page by page) is at most [`crate::MAX_PAGE`] ids and reads only those messages instead
//! of the whole spool.
//!
//! Cost: without `ids`, a scan reads the envelope and the delivery record of every message
//! (two small reads each, like Postfix's `mailq`): O(queue) per request.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use tern_spool::{
    DeliveryRecord, ListedMessage, QueueId, QueueState, RecipientStatus, Spool, SpoolError,
};
use utoipa::ToSchema;

/// Longest text filter, characters.
pub const MAX_TEXT: usize = 256;

/// The filter as a client sends it (bulk body; the list's query has the same keys).
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// incoming, active, deferred, hold, poison or corrupt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Substring of a recipient domain still to be delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// Substring of the sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// Substring of a recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// At least this old, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_age_secs: Option<u64>,
    /// At most this old, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_secs: Option<u64>,
    /// At least this many delivery attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_attempts: Option<u32>,
    /// Substring of the last error or of a recipient's last reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Only these queue ids (at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<String>>,
}

/// A validated filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this state.
    pub state: Option<QueueState>,
    /// Lower-cased substrings.
    pub destination: Option<String>,
    /// See [`FilterSpec::sender`].
    pub sender: Option<String>,
    /// See [`FilterSpec::recipient`].
    pub recipient: Option<String>,
    /// See [`FilterSpec::min_age_secs`].
    pub min_age_secs: Option<u64>,
    /// See [`FilterSpec::max_age_secs`].
    pub max_age_secs: Option<u64>,
    /// See [`FilterSpec::min_attempts`].
    pub min_attempts: Option<u32>,
    /// See [`FilterSpec::error`].
    pub error: Option<String>,
    /// See [`FilterSpec::ids`].
    pub ids: Option<BTreeSet<QueueId>>,
}

fn text(name: &str, v: Option<String>) -> Result<Option<String>, String> {
    match v {
        None => Ok(None),
        Some(s) if s.chars().count() > MAX_TEXT => {
            Err(format!("{name} is longer than {MAX_TEXT} characters"))
        }
        Some(s) if s.chars().any(char::is_control) => {
            Err(format!("{name} holds control characters"))
        }
        Some(s) => Ok(Some(s.to_lowercase())),
    }
}

/// Parses a state name for a parameter.
pub fn parse_state(s: &str) -> Result<QueueState, String> {
    QueueState::parse(s).ok_or_else(|| {
        format!("unknown state {s:?}: use incoming, active, deferred, hold, poison or corrupt")
    })
}

impl Filter {
    /// Validates a client's filter.
    pub fn from_spec(spec: FilterSpec) -> Result<Filter, String> {
        let ids = match spec.ids {
            None => None,
            Some(list) if list.len() > crate::MAX_PAGE => {
                return Err(format!("ids holds more than {} ids", crate::MAX_PAGE));
            }
            Some(list) => {
                let mut set = BTreeSet::new();
                for s in list {
                    let id = QueueId::parse(&s).map_err(|_| format!("{s:?} is not a queue id"))?;
                    set.insert(id);
                }
                Some(set)
            }
        };
        if let (Some(lo), Some(hi)) = (spec.min_age_secs, spec.max_age_secs)
            && lo > hi
        {
            return Err("min_age_secs is greater than max_age_secs".into());
        }
        Ok(Filter {
            state: spec.state.as_deref().map(parse_state).transpose()?,
            destination: text("destination", spec.destination)?,
            sender: text("sender", spec.sender)?,
            recipient: text("recipient", spec.recipient)?,
            min_age_secs: spec.min_age_secs,
            max_age_secs: spec.max_age_secs,
            min_attempts: spec.min_attempts,
            error: text("error", spec.error)?,
            ids,
        })
    }

    /// Whether the filter is empty (it would match every message).
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// Whether `entry` passes, at `now_ms`.
    pub fn matches(&self, entry: &Entry, now_ms: u64) -> bool {
        let l = &entry.listed;
        if self.state.is_some_and(|s| s != l.state) {
            return false;
        }
        if self.ids.as_ref().is_some_and(|ids| !ids.contains(&l.id)) {
            return false;
        }
        let age = entry.age_secs(now_ms);
        if self.min_age_secs.is_some_and(|m| age < m) || self.max_age_secs.is_some_and(|m| age > m)
        {
            return false;
        }
        if self.min_attempts.is_some_and(|m| entry.attempts() < m) {
            return false;
        }
        let env = l.envelope.as_ref();
        if let Some(s) = &self.sender
            && !env.is_some_and(|e| e.sender.to_lowercase().contains(s))
        {
            return false;
        }
        if let Some(r) = &self.recipient
            && !env.is_some_and(|e| {
                e.recipients
                    .iter()
                    .any(|x| x.address.to_lowercase().contains(r))
            })
        {
            return false;
        }
        if let Some(d) = &self.destination
            && !entry.destinations().iter().any(|x| x.contains(d))
        {
            return false;
        }
        if let Some(want) = &self.error {
            let rec = entry.record.as_ref();
            let in_last = rec
                .and_then(|r| r.last_error.as_deref())
                .is_some_and(|e| e.to_lowercase().contains(want));
            let in_rcpt = rec.is_some_and(|r| {
                r.recipients
                    .iter()
                    .any(|x| reply_of(&x.status).is_some_and(|t| t.to_lowercase().contains(want)))
            });
            if !in_last && !in_rcpt {
                return false;
            }
        }
        true
    }
}

/// A recipient status's reply, if it has one.
pub fn reply_of(s: &RecipientStatus) -> Option<&str> {
    match s {
        RecipientStatus::Pending => None,
        RecipientStatus::Delivered { reply }
        | RecipientStatus::Deferred { reply }
        | RecipientStatus::Failed { reply } => Some(reply),
    }
}

/// A status's name in the API.
pub fn status_name(s: &RecipientStatus) -> &'static str {
    match s {
        RecipientStatus::Pending => "pending",
        RecipientStatus::Delivered { .. } => "delivered",
        RecipientStatus::Deferred { .. } => "deferred",
        RecipientStatus::Failed { .. } => "failed",
    }
}

/// One message as found by [`scan`]: its listing and its delivery record.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Id, state, envelope (none for corrupt entries), file size.
    pub listed: ListedMessage,
    /// The delivery record, when it has one and it could be read.
    pub record: Option<DeliveryRecord>,
    /// For a quarantined entry: why (its `.reason` file, first 2 KiB).
    pub corrupt_reason: Option<String>,
}

/// `GET /queue`'s view of one message.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Summary {
    /// Queue id.
    pub id: String,
    /// incoming, active, deferred, hold, poison or corrupt.
    pub state: String,
    /// Envelope sender; empty for the null sender `<>` and for corrupt entries.
    pub sender: String,
    /// Envelope recipients (empty for corrupt entries).
    pub recipients: Vec<String>,
    /// Content size in octets (file size for corrupt entries).
    pub size: u64,
    /// Arrival, Unix ms (from the queue id for corrupt entries).
    pub arrival_unix_ms: u64,
    /// Seconds since arrival.
    pub age_secs: u64,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Why it waits (the last error of the message), if known.
    pub last_error: Option<String>,
    /// When it is tried again (deferred mail), Unix ms.
    pub next_attempt_unix_ms: Option<u64>,
    /// Lower-cased domains of the recipients still to be delivered.
    pub destinations: Vec<String>,
}

fn micros_to_ms(m: i64) -> u64 {
    u64::try_from(m / 1000).unwrap_or(0)
}

impl Entry {
    /// Arrival, Unix ms.
    pub fn arrival_ms(&self) -> u64 {
        micros_to_ms(
            self.listed
                .envelope
                .as_ref()
                .map_or(self.listed.id.arrival_micros(), |e| e.arrival_micros),
        )
    }

    /// Whole seconds since arrival.
    pub fn age_secs(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.arrival_ms()) / 1000
    }

    /// Attempts from the record.
    pub fn attempts(&self) -> u32 {
        self.record.as_ref().map_or(0, |r| r.attempts)
    }

    /// Domains of the open recipients (all when none is open), lower-cased, sorted,
    /// distinct.
    pub fn destinations(&self) -> Vec<String> {
        let Some(env) = &self.listed.envelope else {
            return Vec::new();
        };
        let open = |i: usize| {
            self.record
                .as_ref()
                .and_then(|r| r.recipients.get(i))
                .is_none_or(|r| {
                    matches!(
                        r.status,
                        RecipientStatus::Pending | RecipientStatus::Deferred { .. }
                    )
                })
        };
        let domain = |a: &str| {
            a.rsplit_once('@')
                .map_or(String::new(), |(_, d)| d.to_lowercase())
        };
        let mut set: BTreeSet<String> = env
            .recipients
            .iter()
            .enumerate()
            .filter(|(i, _)| open(*i))
            .map(|(_, r)| domain(&r.address))
            .collect();
        if set.is_empty() {
            set = env.recipients.iter().map(|r| domain(&r.address)).collect();
        }
        set.into_iter().collect()
    }

    /// The summary at `now_ms`.
    pub fn summary(&self, now_ms: u64) -> Summary {
        let l = &self.listed;
        let env = l.envelope.as_ref();
        let rec = self.record.as_ref();
        Summary {
            id: l.id.to_string(),
            state: l.state.as_str().to_owned(),
            sender: env.map(|e| e.sender.clone()).unwrap_or_default(),
            recipients: env
                .map(|e| e.recipients.iter().map(|r| r.address.clone()).collect())
                .unwrap_or_default(),
            size: env.map_or(l.file_size, |e| e.size),
            arrival_unix_ms: self.arrival_ms(),
            age_secs: self.age_secs(now_ms),
            attempts: self.attempts(),
            last_error: rec
                .and_then(|r| r.last_error.clone())
                .or_else(|| self.corrupt_reason.clone()),
            next_attempt_unix_ms: rec
                .and_then(|r| r.next_attempt_micros)
                .filter(|_| l.state == QueueState::Deferred)
                .map(micros_to_ms),
            destinations: self.destinations(),
        }
    }
}

/// The message with `id`, wherever it is (`None` when it is in no state).
pub fn entry_of(spool: &Spool, id: QueueId) -> Result<Option<Entry>, SpoolError> {
    let Some(state) = spool.find(id, &QueueState::ALL) else {
        return Ok(None);
    };
    let listed = if state == QueueState::Corrupt {
        let file_size = match spool.path_of(state, id).symlink_metadata() {
            Ok(m) => m.len(),
            Err(_) => return Ok(None),
        };
        ListedMessage {
            id,
            state,
            envelope: None,
            file_size,
        }
    } else {
        match spool.peek(state, id, 0) {
            Ok(p) => ListedMessage {
                id,
                state,
                envelope: Some(p.envelope),
                file_size: p.file_size,
            },
            // Moved on since `find`: look once more.
            Err(SpoolError::NotFound) => return entry_of_once_more(spool, id),
            Err(SpoolError::Corrupt(_)) => ListedMessage {
                id,
                state: QueueState::Corrupt,
                envelope: None,
                file_size: spool
                    .path_of(state, id)
                    .symlink_metadata()
                    .map_or(0, |m| m.len()),
            },
            Err(e) => return Err(e),
        }
    };
    Ok(Some(with_record(spool, listed)))
}

fn entry_of_once_more(spool: &Spool, id: QueueId) -> Result<Option<Entry>, SpoolError> {
    let Some(state) = spool.find(id, &QueueState::ALL) else {
        return Ok(None);
    };
    if state == QueueState::Corrupt {
        return Ok(None);
    }
    match spool.peek(state, id, 0) {
        Ok(p) => Ok(Some(with_record(
            spool,
            ListedMessage {
                id,
                state,
                envelope: Some(p.envelope),
                file_size: p.file_size,
            },
        ))),
        Err(SpoolError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

fn with_record(spool: &Spool, listed: ListedMessage) -> Entry {
    // A record that cannot be read is shown as absent; the queue quarantines the message
    // when it loads it.
    if listed.state == QueueState::Corrupt {
        let corrupt_reason = reason_of(spool, listed.id);
        return Entry {
            listed,
            record: None,
            corrupt_reason,
        };
    }
    let record = spool.read_record(listed.id).ok().flatten();
    Entry {
        listed,
        record,
        corrupt_reason: None,
    }
}

/// The `reason:` line of a quarantined entry's `.reason` file (bounded read).
fn reason_of(spool: &Spool, id: QueueId) -> Option<String> {
    use std::io::Read;
    let mut path = spool.path_of(QueueState::Corrupt, id).into_os_string();
    path.push(".reason");
    let file = std::fs::File::open(path).ok()?;
    let mut buf = Vec::new();
    file.take(2048).read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.lines()
        .find_map(|l| l.strip_prefix("reason: "))
        .map(|r| format!("quarantined: {}", r.trim()))
}

/// One page of the messages `filter` matches: (total, the page). Without any filter but
/// the state, for `active`, `deferred`, `hold` and `poison` (states whose messages all
/// have a file of their own), only the directory's names are read and the page's
/// messages alone are opened, in queue id order (the time each transaction began), so a
/// page of a queue of a million costs a directory read, not a million file reads.
/// Otherwise everything is [`scan`]ned, oldest first. Blocking.
pub fn page(
    spool: &Spool,
    filter: &Filter,
    now_ms: u64,
    offset: usize,
    limit: usize,
) -> Result<(usize, Vec<Entry>), SpoolError> {
    let names_only = *filter
        == Filter {
            state: filter.state,
            ..Filter::default()
        };
    match filter.state {
        Some(
            state @ (QueueState::Active
            | QueueState::Deferred
            | QueueState::Hold
            | QueueState::Poison),
        ) if names_only => {
            let ids = spool.ids(state)?;
            let mut out = Vec::with_capacity(limit.min(ids.len()));
            for id in ids.iter().skip(offset).take(limit) {
                // A message that moved on since the names were read is left out.
                if let Some(e) = entry_of(spool, *id)?
                    && e.listed.state == state
                {
                    out.push(e);
                }
            }
            Ok((ids.len(), out))
        }
        _ => {
            let all = scan(spool, filter, now_ms)?;
            let total = all.len();
            Ok((total, all.into_iter().skip(offset).take(limit).collect()))
        }
    }
}

/// Every message `filter` matches, oldest first (then by id). Blocking.
pub fn scan(spool: &Spool, filter: &Filter, now_ms: u64) -> Result<Vec<Entry>, SpoolError> {
    let mut out = Vec::new();
    if let Some(ids) = &filter.ids {
        for id in ids {
            if let Some(e) = entry_of(spool, *id)? {
                out.push(e);
            }
        }
    } else {
        for listed in spool.list(filter.state)? {
            out.push(with_record(spool, listed));
        }
    }
    out.retain(|e| filter.matches(e, now_ms));
    out.sort_by_key(|e| (e.arrival_ms(), e.listed.id));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_spool::{ClientInfo, Envelope, MailParams, Recipient};

    fn entry(state: QueueState, sender: &str, rcpts: &[&str], arrival_ms: i64) -> Entry {
        let id = QueueId::generate();
        let env = Envelope {
            quarantine: None,
            id,
            sender: sender.into(),
            recipients: rcpts.iter().map(|a| Recipient::new(*a)).collect(),
            params: MailParams::default(),
            client: ClientInfo::default(),
            arrival_micros: arrival_ms * 1000,
            size: 10,
        };
        Entry {
            listed: ListedMessage {
                id,
                state,
                envelope: Some(env),
                file_size: 100,
            },
            record: None,
            corrupt_reason: None,
        }
    }

    fn spec(json: &str) -> Result<Filter, String> {
        let s: FilterSpec = serde_json::from_str(json).map_err(|e| e.to_string())?;
        Filter::from_spec(s)
    }

    #[test]
    fn text_filters_are_case_insensitive_substrings() {
        let e = entry(
            QueueState::Deferred,
            "Alice@Client.TEST",
            &["bob@Example.com"],
            0,
        );
        let now = 3_600_000;
        assert!(
            spec(r#"{"sender":"alice@client"}"#)
                .unwrap()
                .matches(&e, now)
        );
        assert!(spec(r#"{"recipient":"BOB@"}"#).unwrap().matches(&e, now));
        assert!(
            spec(r#"{"destination":"example.COM"}"#)
                .unwrap()
                .matches(&e, now)
        );
        assert!(
            !spec(r#"{"destination":"client.test"}"#)
                .unwrap()
                .matches(&e, now)
        );
        assert!(!spec(r#"{"sender":"carol"}"#).unwrap().matches(&e, now));
        assert!(spec(r#"{"state":"deferred"}"#).unwrap().matches(&e, now));
        assert!(!spec(r#"{"state":"hold"}"#).unwrap().matches(&e, now));
    }

    #[test]
    fn ages_attempts_and_errors_come_from_the_envelope_and_record() {
        let mut e = entry(
            QueueState::Deferred,
            "a@x.test",
            &["b@y.test", "c@z.test"],
            0,
        );
        let now = 600_000; // ten minutes after arrival
        assert!(spec(r#"{"min_age_secs":600}"#).unwrap().matches(&e, now));
        assert!(!spec(r#"{"min_age_secs":601}"#).unwrap().matches(&e, now));
        assert!(spec(r#"{"max_age_secs":600}"#).unwrap().matches(&e, now));
        assert!(!spec(r#"{"max_age_secs":599}"#).unwrap().matches(&e, now));
        assert!(!spec(r#"{"min_attempts":1}"#).unwrap().matches(&e, now));
        assert!(!spec(r#"{"error":"greylisted"}"#).unwrap().matches(&e, now));
        let mut rec = DeliveryRecord::new(e.listed.id, 2);
        rec.attempts = 3;
        rec.recipients[0].status = RecipientStatus::Delivered {
            reply: "250 ok".into(),
        };
        rec.recipients[1].status = RecipientStatus::Deferred {
            reply: "450 4.2.0 Greylisted".into(),
        };
        e.record = Some(rec);
        assert!(spec(r#"{"min_attempts":3}"#).unwrap().matches(&e, now));
        assert!(spec(r#"{"error":"greylisted"}"#).unwrap().matches(&e, now));
        // y.test was delivered: only z.test is still a destination.
        assert_eq!(e.destinations(), vec!["z.test".to_owned()]);
        assert!(
            !spec(r#"{"destination":"y.test"}"#)
                .unwrap()
                .matches(&e, now)
        );
        let s = e.summary(now);
        assert_eq!((s.attempts, s.age_secs, s.size), (3, 600, 10));
    }

    #[test]
    fn bad_filters_are_refused_with_a_reason() {
        for bad in [
            r#"{"state":"frozen"}"#,
            r#"{"ids":["nope"]}"#,
            r#"{"min_age_secs":10,"max_age_secs":5}"#,
            r#"{"colour":"red"}"#,
            r#"{"min_attempts":-1}"#,
        ] {
            assert!(spec(bad).is_err(), "{bad} accepted");
        }
        let long = format!(r#"{{"sender":"{}"}}"#, "a".repeat(MAX_TEXT + 1));
        assert!(spec(&long).is_err());
        let many: Vec<String> = (0..=crate::MAX_PAGE)
            .map(|_| QueueId::generate().to_string())
            .collect();
        let s = FilterSpec {
            ids: Some(many),
            ..FilterSpec::default()
        };
        assert!(Filter::from_spec(s).is_err());
        assert!(spec("{}").unwrap().is_empty());
        assert!(!spec(r#"{"state":"poison"}"#).unwrap().is_empty());
    }

    #[test]
    fn ids_select_only_those_messages() {
        let a = entry(QueueState::Hold, "a@x.test", &["b@y.test"], 0);
        let b = entry(QueueState::Hold, "a@x.test", &["b@y.test"], 0);
        let f = Filter::from_spec(FilterSpec {
            ids: Some(vec![a.listed.id.to_string()]),
            ..FilterSpec::default()
        })
        .unwrap();
        assert!(f.matches(&a, 0));
        assert!(!f.matches(&b, 0));
    }
}
