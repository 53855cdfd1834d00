//! Tern's operational event log: numbered, structured, rate-limited.
//!
//! Every operationally significant thing Tern does is an [`EventDef`] from [`catalog`]: a
//! stable numeric id, a name, a severity and a text for the operator. [`EventLog::emit`]
//! records one occurrence with its fields; a background thread writes it as one JSON line
//! to `events.jsonl` in the data directory and as one readable line to stderr.
//!
//! Invariants:
//! - `emit` never blocks on I/O and never takes a lock: it hands the event to a bounded
//!   channel. If the writer falls behind by more than [`QUEUE_CAPACITY`] events, further
//!   events are counted and the count is reported once the writer catches up, so mail flow
//!   never waits for logging.
//! - Repeats of notices, warnings and errors are rate-limited by (event id, value of the
//!   first field): at most [`BURST`] lines per key per [`WINDOW`]; the rest are counted
//!   and reported as one line with a `repeated` field when the window closes. The key map
//!   is bounded ([`MAX_KEYS`]); past it, keys fall back to the event id alone. Debug and
//!   info events (one per session or message, each with its own identity) are never
//!   collapsed: they are the record of normal traffic, not a fault repeating.
//! - Dropping the last handle flushes and stops the writer thread; [`EventLog::flush`]
//!   waits (bounded) until everything emitted before it is written.
//! - Events whose definition has a tracking step ([`EventDef::track`]) are also written
//!   to the message tracking log ([`tracking`]) when one is open, whatever the log level,
//!   and never rate-limited; the log level filters the event log only.

#![forbid(unsafe_code)]

pub mod catalog;
pub mod private;
pub mod tracking;

use std::collections::HashMap;
use std::fmt::Display;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

/// How many events may wait for the writer thread before new ones are counted as lost.
pub const QUEUE_CAPACITY: usize = 16_384;
/// Lines written per rate-limit key per window before repeats are only counted.
pub const BURST: u32 = 10;
/// Length of a rate-limit window.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Most rate-limit keys tracked at once.
pub const MAX_KEYS: usize = 4096;
/// How often the writer thread collects queued events.
const POLL_EVERY: Duration = Duration::from_millis(50);
/// How often closed windows are looked for.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// How serious an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Detail for debugging.
    Debug,
    /// Normal operation.
    Info,
    /// Worth an operator's attention, not a fault of Tern's.
    Notice,
    /// Degraded operation.
    Warning,
    /// A fault that needs an operator.
    Error,
}

impl Severity {
    fn from_u8(v: u8) -> Severity {
        match v {
            0 => Severity::Debug,
            1 => Severity::Info,
            2 => Severity::Notice,
            3 => Severity::Warning,
            _ => Severity::Error,
        }
    }

    /// The lower-case name used in logs and config.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Debug => "debug",
            Severity::Info => "info",
            Severity::Notice => "notice",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }

    /// Parses a severity name as written in the config.
    pub fn parse(s: &str) -> Option<Severity> {
        Some(match s {
            "debug" => Severity::Debug,
            "info" => Severity::Info,
            "notice" => Severity::Notice,
            "warning" => Severity::Warning,
            "error" => Severity::Error,
            _ => return None,
        })
    }
}

/// One kind of event: its stable id and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventDef {
    /// Stable numeric id (documented in docs/EVENTS.md).
    pub id: u32,
    /// Dotted name, stable like the id.
    pub name: &'static str,
    /// Default severity.
    pub severity: Severity,
    /// What happened.
    pub summary: &'static str,
    /// What the operator should do.
    pub action: &'static str,
    /// The step of a message's life this event records in the tracking log
    /// (`received`, `attempt`, `delivered`, ...); `None` for events not tracked.
    pub track: Option<&'static str>,
}

/// Fields of one occurrence, in order. Build with [`fields!`].
pub type Fields = Vec<(&'static str, String)>;

/// Builds [`Fields`] from `key => value` pairs whose values implement `Display`.
#[macro_export]
macro_rules! fields {
    ($($k:literal => $v:expr),* $(,)?) => {
        vec![$(($k, ::std::string::ToString::to_string(&$v))),*]
    };
}

struct Occurrence {
    def: &'static EventDef,
    at: time::OffsetDateTime,
    fields: Fields,
    /// At or above the log level: written to the event log (else only tracked).
    logged: bool,
}

enum Msg {
    Event(Occurrence),
    /// Write everything queued before this, then answer.
    Flush(SyncSender<()>),
}

struct Shared {
    lost: AtomicU64,
    min_severity: AtomicU8,
    /// Tracked records not written because the writer fell behind.
    tracking_lost: AtomicU64,
    /// A tracking log is open: tracked events are sent whatever the level.
    tracking: AtomicBool,
}

/// A cheap, cloneable handle to the event log.
#[derive(Clone)]
pub struct EventLog {
    shared: Arc<Shared>,
    tx: Option<SyncSender<Msg>>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog").finish_non_exhaustive()
    }
}

/// Where the writer thread sends lines.
pub struct Sinks {
    /// JSON lines file, appended to.
    pub json: Option<File>,
    /// Readable lines to stderr.
    pub stderr: bool,
    /// The message tracking log, if any.
    pub tracking: Option<tracking::TrackingConfig>,
}

impl EventLog {
    /// Opens (appends to) `json_path` and starts the writer thread. `stderr` adds the
    /// readable copy.
    pub fn open(json_path: Option<&Path>, stderr: bool) -> std::io::Result<EventLog> {
        Self::open_with_tracking(json_path, stderr, None)
    }

    /// [`EventLog::open`] plus the message tracking log in `tracking.dir` (created if
    /// missing; an error if it cannot be opened).
    pub fn open_with_tracking(
        json_path: Option<&Path>,
        stderr: bool,
        tracking: Option<tracking::TrackingConfig>,
    ) -> std::io::Result<EventLog> {
        let json = match json_path {
            Some(p) => Some(private::open_append(p)?),
            None => None,
        };
        Ok(Self::with_sinks(Sinks {
            json,
            stderr,
            tracking,
        }))
    }

    /// A log that records nothing (for tests and tools that only read).
    pub fn discard() -> EventLog {
        EventLog {
            shared: Arc::new(Shared {
                lost: AtomicU64::new(0),
                min_severity: AtomicU8::new(Severity::Error as u8 + 1),
                tracking_lost: AtomicU64::new(0),
                tracking: AtomicBool::new(false),
            }),
            tx: None,
        }
    }

    /// Starts a writer thread on the given sinks. The thread ends when the last handle
    /// is dropped, after writing everything queued.
    pub fn with_sinks(sinks: Sinks) -> EventLog {
        let (tx, rx) = sync_channel(QUEUE_CAPACITY);
        let shared = Arc::new(Shared {
            lost: AtomicU64::new(0),
            min_severity: AtomicU8::new(Severity::Info as u8),
            tracking_lost: AtomicU64::new(0),
            tracking: AtomicBool::new(sinks.tracking.is_some()),
        });
        let thread_shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("tern-events".into())
            .spawn(move || writer_loop(rx, sinks, &thread_shared));
        EventLog {
            shared,
            tx: spawned.ok().map(|_| tx),
        }
    }

    /// Sets the lowest severity that is written; can be changed at run time.
    pub fn set_min_severity(&self, s: Severity) {
        self.shared.min_severity.store(s as u8, Ordering::Relaxed);
    }

    /// Sets the lowest severity written and records the change (event 7065, field `by`
    /// says who changed it); the record is written whatever the old and new level.
    pub fn change_level(&self, level: Severity, by: &str) {
        let old = self.min_severity();
        self.set_min_severity(level);
        self.send(
            &catalog::LOG_LEVEL_CHANGED,
            fields!("level" => level.as_str(), "from" => old.as_str(), "by" => by),
            true,
        );
    }

    /// The lowest severity written now.
    pub fn min_severity(&self) -> Severity {
        Severity::from_u8(self.shared.min_severity.load(Ordering::Relaxed))
    }

    /// Tracked records not written because the writer fell behind, since the start.
    pub fn tracking_lost(&self) -> u64 {
        self.shared.tracking_lost.load(Ordering::Relaxed)
    }

    /// Whether a tracking log is being written.
    pub fn tracking_enabled(&self) -> bool {
        self.shared.tracking.load(Ordering::Relaxed)
    }

    /// Records one occurrence of `def`. Never blocks.
    pub fn emit(&self, def: &'static EventDef, fields: Fields) {
        self.send(def, fields, false);
    }

    fn send(&self, def: &'static EventDef, fields: Fields, always: bool) {
        let logged =
            always || (def.severity as u8) >= self.shared.min_severity.load(Ordering::Relaxed);
        let tracked = def.track.is_some() && self.shared.tracking.load(Ordering::Relaxed);
        if !logged && !tracked {
            return;
        }
        let Some(tx) = &self.tx else { return };
        let occ = Occurrence {
            def,
            at: time::OffsetDateTime::now_utc(),
            fields,
            logged,
        };
        if tx.try_send(Msg::Event(occ)).is_err() {
            if logged {
                self.shared.lost.fetch_add(1, Ordering::Relaxed);
            }
            if tracked {
                self.shared.tracking_lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits (at most `timeout`) until everything emitted before this call is written,
    /// including the counts of rate-limited repeats. Used at shutdown and by tests.
    pub fn flush(&self, timeout: Duration) -> bool {
        let Some(tx) = &self.tx else { return true };
        let (ack_tx, ack_rx) = sync_channel(1);
        let deadline = Instant::now() + timeout;
        let mut msg = Msg::Flush(ack_tx);
        loop {
            match tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return false,
            }
        }
        ack_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

struct Window {
    started: Instant,
    written: u32,
    suppressed: u64,
    last: Option<Occurrence>,
}

fn writer_loop(rx: Receiver<Msg>, mut sinks: Sinks, shared: &Shared) {
    let mut json = sinks
        .json
        .take()
        .map(|f| BufWriter::with_capacity(64 * 1024, f));
    let mut err = sinks
        .stderr
        .then(|| BufWriter::with_capacity(16 * 1024, std::io::stderr()));
    let mut track = sinks.tracking.take().and_then(|cfg| {
        let dir = cfg.dir.clone();
        match tracking::TrackingSink::open(cfg) {
            Ok(s) => Some(s),
            Err(e) => {
                report_tracking_error(&dir, &e, &mut json, &mut err);
                None
            }
        }
    });
    let mut tracking_failing = false;
    let mut reported_tracking_lost = 0u64;
    let mut windows: HashMap<(u32, String), Window> = HashMap::new();
    let mut reported_lost = 0u64;
    let mut last_sweep = Instant::now();
    loop {
        // The writer polls instead of blocking in recv: an emitter then never has to wake
        // this thread (no futex call per event on the hot path). Events wait at most one
        // poll interval; `flush` waits for the next poll.
        std::thread::sleep(POLL_EVERY);
        let mut batch = Vec::new();
        let mut disconnected = false;
        loop {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        let now = Instant::now();
        let mut acks = Vec::new();
        for msg in batch {
            let occ = match msg {
                Msg::Event(o) => o,
                Msg::Flush(ack) => {
                    acks.push(ack);
                    continue;
                }
            };
            if occ.def.track.is_some()
                && let Some(sink) = track.as_mut()
            {
                let at_ms = u64::try_from(occ.at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
                let line = tracking::record(occ.def, at_ms, &occ.fields).to_string();
                let result = sink.write(&line, at_ms);
                note_tracking_result(
                    result,
                    sink.dir(),
                    &mut tracking_failing,
                    &mut json,
                    &mut err,
                );
            }
            if !occ.logged {
                continue;
            }
            // Debug and info events are the record of normal traffic: never collapsed.
            if occ.def.severity < Severity::Notice {
                write_line(&occ, None, &mut json, &mut err);
                continue;
            }
            let key_field = occ
                .fields
                .first()
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let mut key = (occ.def.id, key_field);
            if !windows.contains_key(&key) && windows.len() >= MAX_KEYS {
                key.1.clear();
            }
            let w = windows.entry(key).or_insert_with(|| Window {
                started: now,
                written: 0,
                suppressed: 0,
                last: None,
            });
            if w.written < BURST {
                w.written += 1;
                write_line(&occ, None, &mut json, &mut err);
            } else {
                w.suppressed += 1;
                w.last = Some(occ);
            }
        }
        let lost = shared.lost.load(Ordering::Relaxed);
        if lost > reported_lost {
            let note = format!(
                "event log fell behind: {} events not recorded",
                lost - reported_lost
            );
            if let Some(j) = json.as_mut() {
                let _ = writeln!(
                    j,
                    "{}",
                    serde_json::json!({"id": 0, "name": "events.lost", "severity": "warning", "message": note})
                );
            }
            if let Some(e) = err.as_mut() {
                let _ = writeln!(e, "tern: {note}");
            }
            reported_lost = lost;
        }
        if let Some(sink) = track.as_mut() {
            let now_ms = tern_watchdog::clock::unix_ms();
            let lost = shared.tracking_lost.load(Ordering::Relaxed);
            if lost > reported_tracking_lost {
                let line = tracking::lost_record(now_ms, lost - reported_tracking_lost);
                let result = sink.write(&line.to_string(), now_ms);
                note_tracking_result(
                    result,
                    sink.dir(),
                    &mut tracking_failing,
                    &mut json,
                    &mut err,
                );
                write_line(
                    &Occurrence {
                        def: &catalog::TRACKING_LOST,
                        at: time::OffsetDateTime::now_utc(),
                        fields: fields!("lost" => lost - reported_tracking_lost),
                        logged: true,
                    },
                    None,
                    &mut json,
                    &mut err,
                );
                reported_tracking_lost = lost;
            }
            let result = sink.tick(now_ms);
            note_tracking_result(
                result,
                sink.dir(),
                &mut tracking_failing,
                &mut json,
                &mut err,
            );
        }
        if !acks.is_empty() || last_sweep.elapsed() >= SWEEP_EVERY {
            close_windows(&mut windows, &mut json, &mut err, !acks.is_empty());
            last_sweep = Instant::now();
        }
        if let Some(j) = json.as_mut() {
            let _ = j.flush();
        }
        if let Some(e) = err.as_mut() {
            let _ = e.flush();
        }
        for ack in acks {
            let _ = ack.try_send(());
        }
        if disconnected {
            break;
        }
    }
    close_windows(&mut windows, &mut json, &mut err, true);
    if let Some(j) = json.as_mut() {
        let _ = j.flush();
    }
    if let Some(e) = err.as_mut() {
        let _ = e.flush();
    }
}

/// Reports a tracking write or rotation error once per run of failures (event 7062),
/// and its end.
fn note_tracking_result(
    result: std::io::Result<()>,
    dir: &Path,
    failing: &mut bool,
    json: &mut Option<BufWriter<File>>,
    err: &mut Option<BufWriter<std::io::Stderr>>,
) {
    match result {
        Ok(()) => *failing = false,
        Err(e) if !*failing => {
            *failing = true;
            report_tracking_error(dir, &e, json, err);
        }
        Err(_) => {}
    }
}

fn report_tracking_error(
    dir: &Path,
    e: &std::io::Error,
    json: &mut Option<BufWriter<File>>,
    err: &mut Option<BufWriter<std::io::Stderr>>,
) {
    write_line(
        &Occurrence {
            def: &catalog::TRACKING_FAILED,
            at: time::OffsetDateTime::now_utc(),
            fields: fields!("dir" => dir.display(), "error" => e),
            logged: true,
        },
        None,
        json,
        err,
    );
}

fn close_windows(
    windows: &mut HashMap<(u32, String), Window>,
    json: &mut Option<BufWriter<File>>,
    err: &mut Option<BufWriter<std::io::Stderr>>,
    all: bool,
) {
    let now = Instant::now();
    windows.retain(|_, w| {
        if all || now.duration_since(w.started) >= WINDOW {
            if let Some(last) = w.last.take() {
                write_line(&last, Some(w.suppressed), json, err);
            }
            false
        } else {
            true
        }
    });
}

fn write_line(
    occ: &Occurrence,
    repeated: Option<u64>,
    json: &mut Option<BufWriter<File>>,
    err: &mut Option<BufWriter<std::io::Stderr>>,
) {
    let ts = occ
        .at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    if let Some(j) = json.as_mut() {
        let mut obj = serde_json::Map::new();
        obj.insert("ts".into(), ts.clone().into());
        obj.insert("id".into(), occ.def.id.into());
        obj.insert("name".into(), occ.def.name.into());
        obj.insert("severity".into(), occ.def.severity.as_str().into());
        for (k, v) in &occ.fields {
            obj.insert((*k).into(), v.clone().into());
        }
        if let Some(n) = repeated {
            obj.insert("repeated".into(), n.into());
        }
        let _ = writeln!(j, "{}", serde_json::Value::Object(obj));
    }
    if let Some(e) = err.as_mut() {
        let mut line = format!(
            "{ts} {} {:>4} {}",
            occ.def.severity.as_str(),
            occ.def.id,
            occ.def.name
        );
        for (k, v) in &occ.fields {
            line.push(' ');
            line.push_str(k);
            line.push('=');
            push_display(&mut line, v);
        }
        if let Some(n) = repeated {
            line.push_str(&format!(" (repeated {n} times in the last window)"));
        }
        let _ = writeln!(e, "{line}");
    }
}

fn push_display(out: &mut String, v: &dyn Display) {
    let s = v.to_string();
    if s.is_empty() || s.contains([' ', '"', '=']) {
        out.push_str(&format!("{s:?}"));
    } else {
        out.push_str(&s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    #[test]
    fn writes_json_lines_with_id_and_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let log = EventLog::open(Some(&path), false).unwrap();
        log.emit(
            &catalog::SPOOL_CORRUPT,
            fields!("file" => "x/1", "reason" => "bad crc"),
        );
        assert!(log.flush(Duration::from_secs(5)));
        let lines = read_lines(&path);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["id"], 3003);
        assert_eq!(lines[0]["name"], "spool.corrupt.quarantined");
        assert_eq!(lines[0]["severity"], "error");
        assert_eq!(lines[0]["file"], "x/1");
        assert_eq!(lines[0]["reason"], "bad crc");
    }

    #[test]
    fn repeats_are_rate_limited_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let log = EventLog::open(Some(&path), false).unwrap();
        for _ in 0..100 {
            log.emit(
                &catalog::SMTP_RELAY_DENIED,
                fields!("client" => "192.0.2.1"),
            );
        }
        log.emit(
            &catalog::SMTP_RELAY_DENIED,
            fields!("client" => "192.0.2.2"),
        );
        assert!(log.flush(Duration::from_secs(5)));
        let lines = read_lines(&path);
        let first: Vec<_> = lines
            .iter()
            .filter(|l| l["client"] == "192.0.2.1")
            .collect();
        assert_eq!(
            first.len(),
            BURST as usize + 1,
            "burst lines plus one summary"
        );
        let summary = first.last().unwrap();
        assert_eq!(summary["repeated"], 100 - u64::from(BURST));
        assert_eq!(
            lines.iter().filter(|l| l["client"] == "192.0.2.2").count(),
            1
        );
    }

    #[test]
    fn info_events_are_never_collapsed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let log = EventLog::open(Some(&path), false).unwrap();
        for _ in 0..100 {
            log.emit(
                &catalog::SERVER_RELOADED,
                fields!("file" => "/etc/tern.toml"),
            );
        }
        assert!(log.flush(Duration::from_secs(5)));
        let lines = read_lines(&path);
        assert_eq!(lines.len(), 100, "every reload is on record");
        assert!(lines.iter().all(|l| l.get("repeated").is_none()));
    }

    #[test]
    fn below_min_severity_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let log = EventLog::open(Some(&path), false).unwrap();
        log.set_min_severity(Severity::Warning);
        log.emit(&catalog::SMTP_SESSION_STARTED, fields!("client" => "a"));
        log.emit(&catalog::SPOOL_IO_ERROR, fields!("error" => "b"));
        assert!(log.flush(Duration::from_secs(5)));
        let lines = read_lines(&path);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["id"], 3006);
    }

    fn tracking_log(dir: &Path) -> (EventLog, std::path::PathBuf) {
        let events = dir.join("events.jsonl");
        let cfg = tracking::TrackingConfig {
            dir: dir.join("tracking"),
            max_file_bytes: 1 << 20,
            max_file_age: Duration::from_secs(3600),
            keep_files: 3,
        };
        let log = EventLog::open_with_tracking(Some(&events), false, Some(cfg)).unwrap();
        (log, events)
    }

    #[test]
    fn tracked_events_reach_the_tracking_log_whatever_the_level() {
        let dir = tempfile::tempdir().unwrap();
        let (log, events) = tracking_log(dir.path());
        assert!(log.tracking_enabled());
        log.set_min_severity(Severity::Error);
        assert_eq!(log.min_severity(), Severity::Error);
        log.emit(
            &catalog::SMTP_MESSAGE_QUEUED,
            fields!("queue_id" => "Q1", "sender" => "a@x.test", "to" => "b@y.test"),
        );
        log.emit(&catalog::SMTP_SESSION_STARTED, fields!("client" => "c"));
        // A notice repeated past the burst is collapsed in the event log, never here.
        for _ in 0..(BURST + 5) {
            log.emit(&catalog::DELIVERY_DEFERRED, fields!("queue_id" => "Q1"));
        }
        assert!(log.flush(Duration::from_secs(5)));
        assert!(read_lines(&events).is_empty(), "nothing reaches the level");
        let tracked = read_lines(&dir.path().join("tracking").join(tracking::CURRENT));
        assert_eq!(tracked.len(), 1 + BURST as usize + 5, "{tracked:?}");
        assert_eq!(tracked[0]["step"], "received");
        assert_eq!(tracked[0]["id"], "Q1");
        assert_eq!(tracked[0]["to"][0], "b@y.test");
        assert!(tracked.iter().all(|r| r["id"] == "Q1"));
    }

    #[test]
    fn debug_events_are_logged_only_at_the_debug_level() {
        let dir = tempfile::tempdir().unwrap();
        let (log, events) = tracking_log(dir.path());
        assert_eq!(log.min_severity(), Severity::Info);
        log.emit(&catalog::QUEUE_MESSAGE_ACTIVE, fields!("queue_id" => "Q1"));
        log.set_min_severity(Severity::Debug);
        log.emit(&catalog::QUEUE_MESSAGE_ACTIVE, fields!("queue_id" => "Q2"));
        assert!(log.flush(Duration::from_secs(5)));
        let logged = read_lines(&events);
        assert_eq!(logged.len(), 1, "{logged:?}");
        assert_eq!(logged[0]["queue_id"], "Q2");
        let tracked = read_lines(&dir.path().join("tracking").join(tracking::CURRENT));
        assert_eq!(tracked.len(), 2, "both tracked: {tracked:?}");
    }

    #[test]
    fn without_a_tracking_log_untracked_levels_cost_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let log = EventLog::open(Some(&path), false).unwrap();
        assert!(!log.tracking_enabled());
        log.emit(&catalog::QUEUE_MESSAGE_ACTIVE, fields!("queue_id" => "Q1"));
        assert!(log.flush(Duration::from_secs(5)));
        assert!(read_lines(&path).is_empty());
        assert!(!dir.path().join("tracking").exists());
    }

    #[test]
    fn an_unusable_tracking_directory_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tracking"), b"a file, not a directory").unwrap();
        let (log, events) = tracking_log(dir.path());
        log.emit(&catalog::SMTP_MESSAGE_QUEUED, fields!("queue_id" => "Q1"));
        assert!(log.flush(Duration::from_secs(5)));
        let logged = read_lines(&events);
        assert!(logged.iter().any(|l| l["id"] == 7062), "{logged:?}");
        assert!(logged.iter().any(|l| l["id"] == 2003), "{logged:?}");
    }

    #[test]
    fn a_level_change_is_always_on_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let log = EventLog::open(Some(&path), false).unwrap();
        log.set_min_severity(Severity::Error);
        log.change_level(Severity::Warning, "api");
        assert_eq!(log.min_severity(), Severity::Warning);
        assert!(log.flush(Duration::from_secs(5)));
        let lines = read_lines(&path);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["id"], 7065);
        assert_eq!(lines[0]["level"], "warning");
        assert_eq!(lines[0]["from"], "error");
        assert_eq!(lines[0]["by"], "api");
    }
}
