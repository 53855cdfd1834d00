//! The message tracking log: one JSON line per step of a message's life, and the search
//! that follows a message through it (`tern track`, `GET /api/v1/track`).
//!
//! Records are derived from events: every [`EventDef`] with a `track` step (catalogue
//! entries ending in `track = "..."`) is also written here by the event writer thread,
//! whatever the log level (the level filters the event log, never this log). A record is
//! the event's fields with `at_unix_ms`, `event` (the event's name), `event_id`, `step`
//! and `id` (the queue id; events name it `queue_id`) first; a comma-separated `to` field
//! becomes a JSON array of addresses.
//!
//! Files: `<dir>/tracking.jsonl` is the current file. When it would pass
//! `max_file_bytes`, or its first record is older than `max_file_age`, it is renamed to
//! `tracking-<UTC timestamp>.jsonl` (names sort in time order) and a new one is started;
//! of the renamed files the newest `keep_files` are kept. All of this happens on the
//! writer thread: a session never waits for a write or a rotation. When the writer falls
//! behind, records are counted and one `tracking.lost` record says how many.
//!
//! Reading is bounded: lines longer than [`MAX_LINE`] are skipped, at most
//! [`MAX_FOLLOWED`] queue ids are followed, and at most `limit` records (the newest) are
//! returned.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::EventDef;

/// The current file's name in the tracking directory.
pub const CURRENT: &str = "tracking.jsonl";
/// Prefix of rotated files.
const ROTATED_PREFIX: &str = "tracking-";
/// Suffix of every tracking file.
const SUFFIX: &str = ".jsonl";
/// Longest line read back; longer ones are skipped.
pub const MAX_LINE: usize = 1024 * 1024;
/// Most queue ids one search follows.
pub const MAX_FOLLOWED: usize = 100_000;
/// Most records one search returns.
pub const MAX_LIMIT: usize = 10_000;

/// Where and how the tracking log is written.
#[derive(Debug, Clone)]
pub struct TrackingConfig {
    /// The directory (`<data_dir>/tracking`), created if missing.
    pub dir: PathBuf,
    /// The current file is rotated before it would pass this size.
    pub max_file_bytes: u64,
    /// The current file is rotated when its first record is this old.
    pub max_file_age: Duration,
    /// Rotated files kept (the newest); older ones are removed.
    pub keep_files: usize,
}

/// The writer thread's end of the tracking log.
pub(crate) struct TrackingSink {
    cfg: TrackingConfig,
    file: Option<BufWriter<File>>,
    /// Bytes in the current file.
    size: u64,
    /// When the current file's first record was written; `None` while it is empty.
    first_ms: Option<u64>,
    /// Name of the last rotated file's timestamp, to keep names strictly increasing.
    last_rotated_ms: u64,
}

impl TrackingSink {
    /// Opens (appends to) the current file, creating the directory.
    pub(crate) fn open(cfg: TrackingConfig) -> io::Result<TrackingSink> {
        crate::private::ensure_dir(&cfg.dir)?;
        let path = cfg.dir.join(CURRENT);
        let file = crate::private::open_append(&path)?;
        let size = file.metadata()?.len();
        let first_ms = if size > 0 {
            first_record_ms(&path)
        } else {
            None
        };
        Ok(TrackingSink {
            cfg,
            file: Some(BufWriter::with_capacity(64 * 1024, file)),
            size,
            // A file whose first record cannot be read counts as started now.
            first_ms: first_ms.or((size > 0).then(tern_watchdog::clock::unix_ms)),
            last_rotated_ms: 0,
        })
    }

    /// The tracking directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// Appends one record (a JSON line without its newline), rotating first when the
    /// file is full or old.
    pub(crate) fn write(&mut self, line: &str, now_ms: u64) -> io::Result<()> {
        let len = line.len() as u64 + 1;
        if self.size > 0 && (self.size + len > self.cfg.max_file_bytes || self.too_old(now_ms)) {
            self.rotate(now_ms)?;
        }
        if self.file.is_none() {
            self.reopen()?;
        }
        let Some(f) = self.file.as_mut() else {
            return Err(io::Error::other("tracking file not open"));
        };
        f.write_all(line.as_bytes())?;
        f.write_all(b"\n")?;
        self.size += len;
        if self.first_ms.is_none() {
            self.first_ms = Some(now_ms);
        }
        Ok(())
    }

    /// Called at every poll of the writer: rotates an old file, flushes.
    pub(crate) fn tick(&mut self, now_ms: u64) -> io::Result<()> {
        if self.size > 0 && self.too_old(now_ms) {
            self.rotate(now_ms)?;
        }
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }

    fn too_old(&self, now_ms: u64) -> bool {
        let age = u64::try_from(self.cfg.max_file_age.as_millis()).unwrap_or(u64::MAX);
        self.first_ms
            .is_some_and(|first| now_ms.saturating_sub(first) >= age)
    }

    fn reopen(&mut self) -> io::Result<()> {
        let path = self.cfg.dir.join(CURRENT);
        let file = crate::private::open_append(&path)?;
        self.size = file.metadata()?.len();
        self.file = Some(BufWriter::with_capacity(64 * 1024, file));
        Ok(())
    }

    /// Renames the current file to its timestamped name, starts a new one and removes
    /// the rotated files past `keep_files`.
    fn rotate(&mut self, now_ms: u64) -> io::Result<()> {
        if let Some(mut f) = self.file.take() {
            f.flush()?;
        }
        let current = self.cfg.dir.join(CURRENT);
        let mut ms = now_ms.max(self.last_rotated_ms.saturating_add(1));
        // Names must be new; a bounded walk past names taken (e.g. by an earlier run).
        let mut target = self.cfg.dir.join(rotated_name(ms));
        for _ in 0..1000 {
            if !target.exists() {
                break;
            }
            ms += 1;
            target = self.cfg.dir.join(rotated_name(ms));
        }
        std::fs::rename(&current, &target)?;
        self.last_rotated_ms = ms;
        self.first_ms = None;
        self.size = 0;
        self.reopen()?;
        self.prune()
    }

    fn prune(&self) -> io::Result<()> {
        let rotated = rotated_files(&self.cfg.dir)?;
        let excess = rotated.len().saturating_sub(self.cfg.keep_files);
        for old in rotated.iter().take(excess) {
            std::fs::remove_file(old)?;
        }
        Ok(())
    }
}

/// `tracking-20261202T024133.123Z.jsonl` for the given Unix milliseconds.
fn rotated_name(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{ROTATED_PREFIX}{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z{SUFFIX}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// The rotated files in `dir`, oldest first.
fn rotated_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(ROTATED_PREFIX) && name.ends_with(SUFFIX) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Every tracking file in `dir` in time order: the rotated ones, then the current one.
/// A missing directory has none.
pub fn files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = match rotated_files(dir) {
        Ok(v) => v,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let current = dir.join(CURRENT);
    if current.exists() {
        out.push(current);
    }
    Ok(out)
}

/// Opens every tracking file in time order, safe against a rotation meanwhile: the
/// current file is opened first, then the rotated ones are listed; a rotated file that is
/// the inode already open as the current one (renamed since) is skipped, so no record is
/// read twice or out of order, and none older than the search is missed.
fn open_files(dir: &Path) -> io::Result<Vec<File>> {
    use std::os::unix::fs::MetadataExt;
    let current = match File::open(dir.join(CURRENT)) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let current_ino = match &current {
        Some(f) => {
            let m = f.metadata()?;
            Some((m.dev(), m.ino()))
        }
        None => None,
    };
    let rotated = match rotated_files(dir) {
        Ok(v) => v,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut out = Vec::with_capacity(rotated.len() + 1);
    for path in rotated {
        let file = match File::open(&path) {
            Ok(f) => f,
            // Pruned since the listing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let m = file.metadata()?;
        if Some((m.dev(), m.ino())) == current_ino {
            continue;
        }
        out.push(file);
    }
    out.extend(current);
    Ok(out)
}

fn first_record_ms(path: &Path) -> Option<u64> {
    let file = File::open(path).ok()?;
    let mut reader = BufReader::new(file.take(MAX_LINE as u64));
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).ok()?;
    let v: Value = serde_json::from_slice(&line).ok()?;
    v.get("at_unix_ms")?.as_u64()
}

/// The tracking record of one occurrence of `def`.
pub(crate) fn record(def: &EventDef, at_unix_ms: u64, fields: &[(&'static str, String)]) -> Value {
    let mut obj = Map::new();
    obj.insert("at_unix_ms".into(), at_unix_ms.into());
    obj.insert("event".into(), def.name.into());
    obj.insert("event_id".into(), def.id.into());
    obj.insert("step".into(), def.track.unwrap_or("").into());
    let id = fields
        .iter()
        .find(|(k, _)| *k == "queue_id" || *k == "id")
        .map_or("", |(_, v)| v.as_str());
    obj.insert("id".into(), id.into());
    for (k, v) in fields {
        match *k {
            "queue_id" | "id" => {}
            "to" => {
                let list: Vec<Value> = v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::from(s.to_owned()))
                    .collect();
                obj.insert("to".into(), Value::Array(list));
            }
            // The record's own keys win over a field of the same name.
            "at_unix_ms" | "event" | "event_id" | "step" => {}
            _ => {
                obj.insert((*k).into(), v.clone().into());
            }
        }
    }
    Value::Object(obj)
}

/// The record written when the writer fell behind and dropped `lost` records.
pub(crate) fn lost_record(at_unix_ms: u64, lost: u64) -> Value {
    serde_json::json!({
        "at_unix_ms": at_unix_ms,
        "event": "tracking.lost",
        "event_id": 7061,
        "step": "lost",
        "id": "",
        "lost": lost,
    })
}

/// What a search found.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// Matching records in time order (the newest `limit` of them).
    pub records: Vec<Value>,
    /// More records matched than `limit`; the oldest were left out.
    pub truncated: bool,
    /// The queue ids followed, in the order they were first seen.
    pub ids: Vec<String>,
}

/// Follows `query` (a queue id, a Message-ID with or without angle brackets, or an
/// address) through the tracking files in `dir`:
/// - a queue id: its records, and those of the DSNs it produced (`dsn_id`), and theirs;
/// - a Message-ID: the records of every queue id that carried it;
/// - an address: the records of every message from or to it.
///
/// Matching is case-insensitive; angle brackets are ignored. At most `limit` records
/// (at most [`MAX_LIMIT`]), the newest, are returned.
pub fn search(dir: &Path, query: &str, limit: usize) -> io::Result<Found> {
    let limit = limit.clamp(1, MAX_LIMIT);
    let q = normalise(query);
    let mut followed: HashSet<String> = HashSet::new();
    let mut ids = Vec::new();
    let mut records: VecDeque<Value> = VecDeque::new();
    let mut truncated = false;
    if q.is_empty() {
        return Ok(Found::default());
    }
    for file in open_files(dir)? {
        let mut reader = BufReader::with_capacity(64 * 1024, file);
        let mut line = Vec::new();
        while let Some(complete) = read_line_bounded(&mut reader, &mut line, MAX_LINE)? {
            if !complete {
                continue;
            }
            let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            let Some(id) = v
                .get("id")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            else {
                continue;
            };
            if !followed.contains(id) && matches(&v, id, &q) && followed.len() < MAX_FOLLOWED {
                followed.insert(id.to_owned());
                ids.push(id.to_owned());
            }
            if !followed.contains(id) {
                continue;
            }
            if let Some(dsn) = v.get("dsn_id").and_then(Value::as_str)
                && !dsn.is_empty()
                && !followed.contains(dsn)
                && followed.len() < MAX_FOLLOWED
            {
                followed.insert(dsn.to_owned());
                ids.push(dsn.to_owned());
            }
            if records.len() == limit {
                records.pop_front();
                truncated = true;
            }
            records.push_back(v);
        }
    }
    Ok(Found {
        records: records.into(),
        truncated,
        ids,
    })
}

/// Lower case, without surrounding white space and angle brackets.
fn normalise(s: &str) -> String {
    s.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_ascii_lowercase()
}

fn matches(v: &Value, id: &str, q: &str) -> bool {
    if id.eq_ignore_ascii_case(q) {
        return true;
    }
    let same = |key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .is_some_and(|s| normalise(s) == q)
    };
    if same("message_id") || same("sender") || same("recipient") {
        return true;
    }
    v.get("to").and_then(Value::as_array).is_some_and(|list| {
        list.iter()
            .filter_map(Value::as_str)
            .any(|s| normalise(s) == q)
    })
}

/// Reads one line into `buf` (without its newline). `None` at the end of the input;
/// `Some(false)` for a line longer than `max` (skipped to its end, `buf` cleared).
fn read_line_bounded(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<bool>> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let available = r.fill_buf()?;
        if available.is_empty() {
            return Ok(any.then_some(!too_long));
        }
        any = true;
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (available.get(..i).unwrap_or_default(), Some(i + 1)),
            None => (available, None),
        };
        if !too_long {
            if buf.len() + chunk.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = done.unwrap_or(available.len());
        r.consume(used);
        if done.is_some() {
            return Ok(Some(!too_long));
        }
    }
}

/// A readable timeline of `records`, grouped by queue id in the order the ids were
/// first seen; one line per record.
pub fn timeline(records: &[Value]) -> String {
    let mut order: Vec<&str> = Vec::new();
    for r in records {
        let id = r.get("id").and_then(Value::as_str).unwrap_or("");
        if !order.contains(&id) {
            order.push(id);
        }
    }
    let mut out = String::new();
    for id in order {
        out.push_str(&format!("queue id {id}\n"));
        for r in records
            .iter()
            .filter(|r| r.get("id").and_then(Value::as_str).unwrap_or("") == id)
        {
            out.push_str("  ");
            out.push_str(&timeline_line(r));
            out.push('\n');
        }
    }
    out
}

fn timeline_line(r: &Value) -> String {
    let at = r.get("at_unix_ms").and_then(Value::as_u64).unwrap_or(0);
    let step = r.get("step").and_then(Value::as_str).unwrap_or("");
    let mut line = format!("{}  {step:<10}", format_ms(at));
    let Some(obj) = r.as_object() else {
        return line;
    };
    for (k, v) in obj {
        if matches!(k.as_str(), "at_unix_ms" | "step" | "id" | "event_id") {
            continue;
        }
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Array(list) => list
                .iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        line.push(' ');
        line.push_str(k);
        line.push('=');
        if text.is_empty() || text.contains([' ', '"', '=']) {
            line.push_str(&format!("{text:?}"));
        } else {
            line.push_str(&text);
        }
    }
    line
}

/// `2026-12-02 02:41:33.123` (UTC).
pub fn format_ms(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;

    fn cfg(dir: &Path, max_file_bytes: u64, keep_files: usize) -> TrackingConfig {
        TrackingConfig {
            dir: dir.to_owned(),
            max_file_bytes,
            max_file_age: Duration::from_secs(3600),
            keep_files,
        }
    }

    fn line(def: &EventDef, at: u64, fields: &[(&'static str, String)]) -> String {
        record(def, at, fields).to_string()
    }

    #[test]
    fn records_rename_queue_id_and_split_recipients() {
        let r = record(
            &catalog::SMTP_MESSAGE_QUEUED,
            7,
            &[
                ("queue_id", "Q1".into()),
                ("sender", "a@x.test".into()),
                ("to", "b@y.test, c@z.test".into()),
            ],
        );
        assert_eq!(r["id"], "Q1");
        assert_eq!(r["event"], "smtp.message.queued");
        assert_eq!(r["event_id"], 2003);
        assert_eq!(r["step"], "received");
        assert_eq!(r["at_unix_ms"], 7);
        assert_eq!(r["to"], serde_json::json!(["b@y.test", "c@z.test"]));
        assert!(r.get("queue_id").is_none());
    }

    #[test]
    fn size_rotation_keeps_every_record_and_bounds_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = TrackingSink::open(cfg(dir.path(), 2000, 100)).unwrap();
        for i in 0..200u64 {
            let l = line(
                &catalog::SMTP_MESSAGE_QUEUED,
                1_000 + i,
                &[("queue_id", format!("Q{i:04}"))],
            );
            sink.write(&l, 1_000 + i).unwrap();
        }
        sink.tick(2_000).unwrap();
        let all = files(dir.path()).unwrap();
        assert!(all.len() > 5, "rotated several times: {all:?}");
        let mut seen = Vec::new();
        for f in &all {
            let text = std::fs::read_to_string(f).unwrap();
            assert!(
                text.len() as u64 <= 2000,
                "{} is {} bytes",
                f.display(),
                text.len()
            );
            for l in text.lines() {
                let v: Value = serde_json::from_str(l).unwrap();
                seen.push(v["id"].as_str().unwrap().to_owned());
            }
        }
        let expected: Vec<String> = (0..200).map(|i| format!("Q{i:04}")).collect();
        assert_eq!(
            seen, expected,
            "every record once, in order, across the files"
        );

        // keep_files bounds the rotated files.
        let mut sink = TrackingSink::open(cfg(dir.path(), 2000, 2)).unwrap();
        for i in 0..100u64 {
            let l = line(
                &catalog::SMTP_MESSAGE_QUEUED,
                5_000 + i,
                &[("queue_id", "R".into())],
            );
            sink.write(&l, 5_000 + i).unwrap();
        }
        assert_eq!(rotated_files(dir.path()).unwrap().len(), 2);
    }

    #[test]
    fn age_rotation_starts_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path(), 1 << 20, 10);
        c.max_file_age = Duration::from_secs(10);
        let mut sink = TrackingSink::open(c.clone()).unwrap();
        let l = line(
            &catalog::SMTP_MESSAGE_QUEUED,
            1_000,
            &[("queue_id", "A".into())],
        );
        sink.write(&l, 1_000).unwrap();
        sink.tick(5_000).unwrap();
        assert_eq!(rotated_files(dir.path()).unwrap().len(), 0);
        sink.tick(11_000).unwrap();
        assert_eq!(rotated_files(dir.path()).unwrap().len(), 1);
        // A reopened file knows its age from its first record.
        let l = line(
            &catalog::SMTP_MESSAGE_QUEUED,
            20_000,
            &[("queue_id", "B".into())],
        );
        sink.write(&l, 20_000).unwrap();
        sink.tick(20_000).unwrap();
        drop(sink);
        let mut again = TrackingSink::open(c).unwrap();
        again.tick(31_000).unwrap();
        assert_eq!(rotated_files(dir.path()).unwrap().len(), 2);
    }

    fn write_all(dir: &Path, lines: &[Value]) {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(dir.join(CURRENT), text).unwrap();
    }

    fn sample(dir: &Path) {
        write_all(
            dir,
            &[
                record(
                    &catalog::SMTP_MESSAGE_QUEUED,
                    1,
                    &[
                        ("queue_id", "Q1".into()),
                        ("message_id", "<m1@x.test>".into()),
                        ("sender", "a@x.test".into()),
                        ("to", "b@y.test".into()),
                    ],
                ),
                record(
                    &catalog::SMTP_MESSAGE_QUEUED,
                    2,
                    &[
                        ("queue_id", "Q2".into()),
                        ("message_id", "<m2@x.test>".into()),
                        ("sender", "c@x.test".into()),
                        ("to", "d@y.test".into()),
                    ],
                ),
                record(
                    &catalog::DELIVERY_FAILED,
                    3,
                    &[("queue_id", "Q1".into()), ("reply", "550 no".into())],
                ),
                record(
                    &catalog::DSN_QUEUED,
                    4,
                    &[("queue_id", "Q1".into()), ("dsn_id", "Q3".into())],
                ),
                record(
                    &catalog::SMTP_MESSAGE_QUEUED,
                    5,
                    &[("queue_id", "Q9".into()), ("sender", "B@Y.test".into())],
                ),
                record(
                    &catalog::DELIVERY_DELIVERED,
                    6,
                    &[("queue_id", "Q3".into()), ("host", "mx".into())],
                ),
            ],
        );
    }

    fn ids(found: &Found) -> Vec<(String, u64)> {
        found
            .records
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_owned(),
                    r["at_unix_ms"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn a_queue_id_is_followed_into_its_dsn() {
        let dir = tempfile::tempdir().unwrap();
        sample(dir.path());
        let found = search(dir.path(), "Q1", 100).unwrap();
        let want: Vec<(String, u64)> = vec![
            ("Q1".into(), 1),
            ("Q1".into(), 3),
            ("Q1".into(), 4),
            ("Q3".into(), 6),
        ];
        assert_eq!(ids(&found), want);
        assert_eq!(found.ids, vec!["Q1".to_owned(), "Q3".to_owned()]);
        assert!(!found.truncated);
    }

    #[test]
    fn message_ids_and_addresses_match_without_case_or_brackets() {
        let dir = tempfile::tempdir().unwrap();
        sample(dir.path());
        let by_mid = search(dir.path(), "m2@X.test", 100).unwrap();
        assert_eq!(ids(&by_mid), vec![("Q2".to_owned(), 2)]);
        let by_addr = search(dir.path(), "<b@y.test>", 100).unwrap();
        // To b@y.test (Q1, and its DSN Q3) and from B@Y.test (Q9).
        assert_eq!(
            by_addr.ids,
            vec!["Q1".to_owned(), "Q3".to_owned(), "Q9".to_owned()]
        );
        assert!(
            search(dir.path(), "nobody@y.test", 100)
                .unwrap()
                .records
                .is_empty()
        );
        assert!(search(dir.path(), "  ", 100).unwrap().records.is_empty());
    }

    #[test]
    fn the_limit_keeps_the_newest_records() {
        let dir = tempfile::tempdir().unwrap();
        sample(dir.path());
        let found = search(dir.path(), "Q1", 2).unwrap();
        assert_eq!(
            ids(&found),
            vec![("Q1".to_owned(), 4), ("Q3".to_owned(), 6)]
        );
        assert!(found.truncated);
    }

    #[test]
    fn over_long_and_broken_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let good = record(
            &catalog::SMTP_MESSAGE_QUEUED,
            1,
            &[("queue_id", "Q1".into())],
        );
        let long = format!("{{\"id\":\"Q1\",\"x\":\"{}\"}}", "a".repeat(MAX_LINE + 10));
        let text = format!("{good}\n{long}\nnot json\n{good}");
        std::fs::write(dir.path().join(CURRENT), text).unwrap();
        let found = search(dir.path(), "Q1", 100).unwrap();
        assert_eq!(
            found.records.len(),
            2,
            "the two good lines, the last without newline"
        );
    }

    #[test]
    fn a_missing_directory_has_no_records() {
        let dir = tempfile::tempdir().unwrap();
        let found = search(&dir.path().join("none"), "Q1", 10).unwrap();
        assert!(found.records.is_empty());
    }

    #[test]
    fn the_timeline_groups_by_queue_id() {
        let dir = tempfile::tempdir().unwrap();
        sample(dir.path());
        let found = search(dir.path(), "Q1", 100).unwrap();
        let text = timeline(&found.records);
        let q1 = text.find("queue id Q1").unwrap();
        let q3 = text.find("queue id Q3").unwrap();
        assert!(q1 < q3, "{text}");
        assert!(text.contains("received"), "{text}");
        assert!(text.contains("reply=\"550 no\""), "{text}");
        assert!(text.contains("1970-01-01 00:00:00.006"), "{text}");
    }

    #[test]
    fn rotated_names_sort_in_time_order() {
        let a = rotated_name(1_000);
        let b = rotated_name(1_001);
        let c = rotated_name(10_000_000_000);
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!(a, "tracking-19700101T000001.000Z.jsonl");
    }

    #[test]
    fn a_file_rotated_after_it_was_opened_is_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let r = record(
            &catalog::SMTP_MESSAGE_QUEUED,
            1,
            &[("queue_id", "Q1".into())],
        );
        std::fs::write(dir.path().join(CURRENT), format!("{r}\n")).unwrap();
        let opened = File::open(dir.path().join(CURRENT)).unwrap();
        // The same inode under a rotated name, as if rotated after the search opened it.
        std::fs::hard_link(dir.path().join(CURRENT), dir.path().join(rotated_name(5))).unwrap();
        drop(opened);
        let found = search(dir.path(), "Q1", 10).unwrap();
        assert_eq!(found.records.len(), 1, "{:?}", found.records);
    }
}
