//! The report store in the data directory: an append-only journal per period.
//!
//! Layout: `<data_dir>/dmarc-reports/` (mode 0700, Tern's own, never a link), one
//! `period-<begin>.jnl` per open or closed period (mode 0600), `corrupt/` for
//! quarantined files. A journal is lines `<crc32c, 8 hex digits> <JSON>\n`:
//! - `{"t":"open","begin":B,"end":E}` first;
//! - `{"t":"rows","domain":..,"policy":..,"rua":[..],"dropped":N,"rows":[[key,n],..]}`:
//!   counts *added* since the previous flush (at most 256 rows a line);
//! - `{"t":"lost","n":N}`: messages dropped by `max_domains`;
//! - `{"t":"end","end":E}`: the period closed (early, or at its end);
//! - `{"t":"sent","domain":D}`: D's report is queued.
//!
//! Durability: new data is appended and `fdatasync`ed every `flush_secs` (by the
//! writer thread), so a crash loses at most that much; closing a period and marking a
//! report sent are written and synced at once. A file is created (then its directory
//! synced) before the first data goes in; a period wholly reported is unlinked (then
//! the directory synced).
//!
//! Reading back (at start): every line is checked (checksum, JSON, the same cleaning
//! and caps as live observations). A bad last line is what a crash while appending
//! leaves and is dropped silently; any other bad line, an unknown name, or something
//! that is not a regular file gets the file moved to `corrupt/` with a `.reason`, and
//! the lines that were good are kept. Every journal is then rewritten compact (written
//! beside, synced, renamed over), so appends never follow a torn line. Nothing here
//! stops the start: a directory that cannot be used turns reports off (event 4131).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::aggregate::{Caps, Dmarc, Period, clean_text};
use crate::kind::{Kind, Row};
use crate::store::{AddCounts, Ledger, ReportStore, StoreError, add_batch};

/// Longest journal line read back (a rows line holds at most 256 rows).
const MAX_LINE: usize = 1 << 20;
/// Rows written per line.
const ROWS_PER_LINE: usize = 256;
/// Largest journal read back (lines are read one at a time).
const MAX_FILE: u64 = 1 << 30;

/// One journal line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase", bound = "")]
enum Line<K: Kind> {
    Open {
        begin: u64,
        end: u64,
    },
    Rows {
        domain: String,
        policy: K::Policy,
        rua: Vec<String>,
        dropped: u64,
        rows: Vec<(K::Key, u64)>,
    },
    Lost {
        n: u64,
    },
    End {
        end: u64,
    },
    Sent {
        domain: String,
    },
}

fn encode<K: Kind>(line: &Line<K>) -> Vec<u8> {
    let json = serde_json::to_vec(line).unwrap_or_default();
    let mut out = format!("{:08x} ", crc32c::crc32c(&json)).into_bytes();
    out.extend_from_slice(&json);
    out.push(b'\n');
    out
}

fn decode<K: Kind>(text: &[u8]) -> Option<Line<K>> {
    let (crc, json) = (text.get(..8)?, text.get(9..)?);
    if text.get(8) != Some(&b' ') {
        return None;
    }
    let crc = u32::from_str_radix(std::str::from_utf8(crc).ok()?, 16).ok()?;
    if crc32c::crc32c(json) != crc {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// Counts added since the last flush, per period and domain.
#[derive(Debug)]
struct Delta<K: Kind> {
    policy: Option<K::Policy>,
    rua: Vec<String>,
    rows: BTreeMap<K::Key, u64>,
    dropped: u64,
}

impl<K: Kind> Default for Delta<K> {
    fn default() -> Self {
        Delta {
            policy: None,
            rua: Vec::new(),
            rows: BTreeMap::new(),
            dropped: 0,
        }
    }
}

/// What is known of one journal file.
#[derive(Debug, Default)]
struct JournalFile {
    /// The `end` line written (closed period).
    end_written: bool,
    /// Domains whose `sent` line is written.
    sent_written: std::collections::BTreeSet<String>,
}

#[derive(Debug)]
struct Inner<K: Kind> {
    ledger: Ledger<K>,
    deltas: BTreeMap<(u64, String), Delta<K>>,
    lost: BTreeMap<u64, u64>,
    files: BTreeMap<u64, JournalFile>,
}

/// What opening the store found.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Journals read back.
    pub journals: usize,
    /// Messages counted in them.
    pub messages: u64,
    /// Files moved to `corrupt/`, with why.
    pub quarantined: Vec<(PathBuf, String)>,
}

/// The journal store (see the module documentation).
#[derive(Debug)]
pub struct FileStore<K: Kind = Dmarc> {
    dir: PathBuf,
    inner: Mutex<Inner<K>>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Makes `dir` (mode 0700) or checks the one there: a real directory (not a link),
/// owned by this process's user, mode forced to 0700.
fn own_dir(dir: &Path) -> Result<(), StoreError> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(dir)(e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(io_err(dir))?;
    if !meta.file_type().is_dir() {
        return Err(StoreError::Unsafe(format!(
            "{} is not a directory (a link or a file is never followed)",
            dir.display()
        )));
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(StoreError::Unsafe(format!(
            "{} belongs to another user (uid {})",
            dir.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(dir))?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Opens a journal for appending (created 0600 when `create`), never through a link.
fn open_file(path: &Path, create: bool) -> Result<File, StoreError> {
    let f = OpenOptions::new()
        .append(true)
        .create(create)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err(path))?;
    let meta = f.metadata().map_err(io_err(path))?;
    if !meta.file_type().is_file() {
        return Err(StoreError::Unsafe(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if meta.mode() & 0o777 != 0o600 {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(path))?;
    }
    Ok(f)
}

fn journal_name(begin: u64) -> String {
    format!("period-{begin}.jnl")
}

fn parse_name(name: &str) -> Option<u64> {
    let n = name.strip_prefix("period-")?.strip_suffix(".jnl")?;
    if n.is_empty() || n.len() > 20 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// The lines of a period's state, for a compact rewrite.
fn lines_of<K: Kind>(period: &Period<K>, closed: bool, sent: &[&String]) -> Vec<Line<K>> {
    let mut out = vec![Line::Open {
        begin: period.begin,
        end: period.end,
    }];
    for (domain, data) in &period.domains {
        let rows: Vec<(K::Key, u64)> = data.rows.iter().map(|(k, n)| (k.clone(), *n)).collect();
        let mut chunks = rows.chunks(ROWS_PER_LINE).peekable();
        let mut first = true;
        while first || chunks.peek().is_some() {
            out.push(Line::Rows {
                domain: domain.clone(),
                policy: data.policy.clone(),
                rua: data.rua.clone(),
                dropped: if first { data.dropped } else { 0 },
                rows: chunks.next().map(<[_]>::to_vec).unwrap_or_default(),
            });
            first = false;
        }
    }
    if period.dropped_domains > 0 {
        out.push(Line::Lost {
            n: period.dropped_domains,
        });
    }
    if closed {
        out.push(Line::End { end: period.end });
    }
    for d in sent {
        out.push(Line::Sent {
            domain: (*d).clone(),
        });
    }
    out
}

/// One journal read back: the period, whether it was closed, the domains sent, and
/// whether a line other than the last was bad.
struct ReadBack<K: Kind> {
    period: Period<K>,
    closed: bool,
    sent: Vec<String>,
    damaged: Option<String>,
    messages: u64,
}

/// Journal lines read one at a time: `Ok(line)`, or `Err(n)` for a damaged line `n`
/// (checksum, JSON, length, no end of line). Memory: one line, at most [`MAX_LINE`].
struct LineReader<R> {
    reader: R,
    buf: Vec<u8>,
    n: usize,
}

impl<R: BufRead> LineReader<R> {
    fn next_line<K: Kind>(&mut self) -> Result<Option<Result<Line<K>, usize>>, String> {
        self.buf.clear();
        let got = (&mut self.reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| e.to_string())?;
        if got == 0 {
            return Ok(None);
        }
        self.n += 1;
        if self.buf.len() > MAX_LINE {
            // Skip the rest of an over-long line, a buffer at a time.
            loop {
                let chunk = self.reader.fill_buf().map_err(|e| e.to_string())?;
                if chunk.is_empty() {
                    break;
                }
                match chunk.iter().position(|b| *b == b'\n') {
                    Some(i) => {
                        self.reader.consume(i + 1);
                        break;
                    }
                    None => {
                        let len = chunk.len();
                        self.reader.consume(len);
                    }
                }
            }
            return Ok(Some(Err(self.n)));
        }
        let complete = self.buf.last() == Some(&b'\n');
        let text = self.buf.strip_suffix(b"\n").unwrap_or(&self.buf);
        Ok(Some(match decode(text) {
            Some(line) if complete => Ok(line),
            _ => Err(self.n),
        }))
    }
}

fn read_journal<K: Kind>(path: &Path, caps: Caps) -> Result<ReadBack<K>, String> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if !meta.file_type().is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_FILE {
        return Err(format!("larger than {MAX_FILE} octets"));
    }
    let mut lines = LineReader {
        reader: BufReader::new(f.take(MAX_FILE)),
        buf: Vec::new(),
        n: 0,
    };
    let Some(Ok(Line::Open { begin, end })) = lines.next_line::<K>()? else {
        return Err("no valid opening line".into());
    };
    if end <= begin {
        return Err(format!("period end {end} is not after its begin {begin}"));
    }
    let mut back = ReadBack {
        period: Period::new(begin, end),
        closed: false,
        sent: Vec::new(),
        damaged: None,
        messages: 0,
    };
    let mut damaged = None;
    let mut current = lines.next_line()?;
    while let Some(this) = current.take() {
        let following = lines.next_line()?;
        match this {
            Ok(line) => apply(&mut back, line, caps, &mut damaged),
            // A bad last line is a torn append: dropped without damage.
            Err(n) if following.is_some() => {
                damaged.get_or_insert_with(|| {
                    format!("line {n} is damaged (checksum, JSON or length)")
                });
            }
            Err(_) => {}
        }
        current = following;
    }
    back.damaged = damaged;
    Ok(back)
}

/// Applies one journal line read back to `back`.
fn apply<K: Kind>(back: &mut ReadBack<K>, line: Line<K>, caps: Caps, damaged: &mut Option<String>) {
    let begin = back.period.begin;
    match line {
        Line::Rows {
            domain,
            policy,
            rua,
            dropped,
            rows,
        } => {
            for (key, count) in rows {
                // The same cleaning as a live observation.
                let obs = K::join(
                    Row {
                        domain: domain.clone(),
                        policy: policy.clone(),
                        rua: rua.clone(),
                        key,
                    },
                    begin,
                );
                let Some(obs) = K::clean(obs) else {
                    damaged.get_or_insert_with(|| "a row without a policy domain".into());
                    continue;
                };
                let row = K::split(obs);
                if row.domain != clean_text(&domain, 255).to_lowercase() {
                    damaged.get_or_insert_with(|| "a row under another domain".into());
                    continue;
                }
                back.period
                    .add_count(&row.domain, &row.policy, &row.rua, row.key, count, caps);
                back.messages = back.messages.saturating_add(count);
            }
            back.period
                .add_dropped(&clean_text(&domain, 255).to_lowercase(), dropped);
        }
        Line::Lost { n } => {
            back.period.dropped_domains = back.period.dropped_domains.saturating_add(n);
        }
        Line::End { end } => {
            if end > back.period.begin && end <= back.period.end {
                back.period.end = end;
                back.closed = true;
            } else {
                damaged.get_or_insert_with(|| format!("end {end} outside the period"));
            }
        }
        Line::Sent { domain } => {
            let domain = clean_text(&domain, 255).to_lowercase();
            if back.sent.len() < caps.max_domains && !back.sent.contains(&domain) {
                back.sent.push(domain);
            }
        }
        Line::Open { .. } => {
            damaged.get_or_insert_with(|| "a second opening line".into());
        }
    }
}

impl<K: Kind> FileStore<K> {
    /// Opens (or makes) the store in `dir` at time `now`, reading back every journal
    /// (see the module documentation).
    pub fn open(
        dir: &Path,
        caps: Caps,
        interval: u64,
        now: u64,
    ) -> Result<(FileStore<K>, OpenReport), StoreError> {
        own_dir(dir)?;
        let mut report = OpenReport::default();
        let mut ledger = Ledger::new(caps, interval);
        let mut read: Vec<ReadBack<K>> = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(io_err(dir))?;
        let mut names: Vec<(String, PathBuf)> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "corrupt" {
                continue;
            }
            names.push((name, entry.path()));
        }
        names.sort();
        for (name, path) in names {
            if name.starts_with(".tmp-") {
                // A rewrite a crash interrupted: the journal it was made from is there.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if parse_name(&name).is_none() {
                quarantine(dir, &path, "not a name Tern gives", &mut report);
                continue;
            }
            match read_journal(&path, caps) {
                Ok(back) => {
                    if let Some(why) = &back.damaged {
                        quarantine_copy(dir, &path, why, &mut report);
                    }
                    report.journals += 1;
                    report.messages = report.messages.saturating_add(back.messages);
                    read.push(back);
                }
                Err(why) => quarantine(dir, &path, &why, &mut report),
            }
        }
        // The latest period not closed and not over stays open; the others are closed.
        read.sort_by_key(|b| b.period.begin);
        let open_at = read
            .iter()
            .rposition(|b| !b.closed && now < b.period.end)
            .filter(|i| *i + 1 == read.len());
        let mut files = BTreeMap::new();
        for (i, back) in read.into_iter().enumerate() {
            let begin = back.period.begin;
            ledger.floor = ledger
                .floor
                .max(if back.closed { back.period.end } else { 0 });
            if Some(i) == open_at {
                ledger.open = Some(back.period);
                files.insert(begin, JournalFile::default());
                continue;
            }
            let mut closed = crate::store::Closed {
                period: back.period,
                sent: back.sent.into_iter().collect(),
            };
            closed
                .sent
                .retain(|d| closed.period.domains.contains_key(d));
            if closed.period.is_empty()
                || closed
                    .period
                    .domains
                    .keys()
                    .all(|d| closed.sent.contains(d))
            {
                files.insert(begin, JournalFile::default());
                continue; // wholly reported: removed below
            }
            let sent_written = closed.sent.clone();
            ledger.closed.insert(begin, closed);
            files.insert(
                begin,
                JournalFile {
                    end_written: true,
                    sent_written,
                },
            );
        }
        while ledger.closed.len() > crate::store::MAX_CLOSED {
            ledger.closed.pop_first();
        }
        let store = FileStore {
            dir: dir.to_path_buf(),
            inner: Mutex::new(Inner {
                ledger,
                deltas: BTreeMap::new(),
                lost: BTreeMap::new(),
                files,
            }),
        };
        store.compact_all()?;
        Ok((store, report))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rewrites every journal from memory (at open): compact, no torn tail.
    fn compact_all(&self) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let mut keep = BTreeMap::new();
        let mut periods: Vec<(Period<K>, bool, Vec<String>)> = Vec::new();
        if let Some(p) = &inner.ledger.open {
            periods.push((p.clone(), false, Vec::new()));
        }
        for c in inner.ledger.closed.values() {
            periods.push((c.period.clone(), true, c.sent.iter().cloned().collect()));
        }
        for (period, closed, sent) in periods {
            let begin = period.begin;
            let sent_refs: Vec<&String> = sent.iter().collect();
            let mut bytes = Vec::new();
            for line in lines_of(&period, closed, &sent_refs) {
                bytes.extend(encode(&line));
            }
            let tmp = self.dir.join(format!(".tmp-{}", journal_name(begin)));
            let _ = std::fs::remove_file(&tmp);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp)
                .map_err(io_err(&tmp))?;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io_err(&tmp))?;
            f.write_all(&bytes).map_err(io_err(&tmp))?;
            f.sync_data().map_err(io_err(&tmp))?;
            let path = self.dir.join(journal_name(begin));
            std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
            keep.insert(
                begin,
                JournalFile {
                    end_written: closed,
                    sent_written: sent.into_iter().collect(),
                },
            );
        }
        for begin in inner.files.keys() {
            if !keep.contains_key(begin) {
                let path = self.dir.join(journal_name(*begin));
                let _ = std::fs::remove_file(&path);
            }
        }
        inner.files = keep;
        drop(inner);
        sync_dir(&self.dir)
    }

    /// Writes what changed since the last flush to each period's journal and syncs it;
    /// removes the journals of periods no longer kept.
    fn write_out(&self, inner: &mut Inner<K>) -> Result<(), StoreError> {
        let mut created = false;
        let mut periods: Vec<(u64, u64, bool)> = Vec::new();
        if let Some(p) = &inner.ledger.open {
            periods.push((p.begin, p.end, false));
        }
        for c in inner.ledger.closed.values() {
            periods.push((c.period.begin, c.period.end, true));
        }
        let mut deltas = std::mem::take(&mut inner.deltas);
        let mut lost = std::mem::take(&mut inner.lost);
        for (begin, end, closed) in &periods {
            let path = self.dir.join(journal_name(*begin));
            let mut bytes = Vec::new();
            let new_file = !inner.files.contains_key(begin);
            if new_file {
                bytes.extend(encode(&Line::<K>::Open {
                    begin: *begin,
                    end: *end,
                }));
            }
            let keys: Vec<(u64, String)> = deltas
                .range((*begin, String::new())..)
                .take_while(|((b, _), _)| b == begin)
                .map(|(k, _)| k.clone())
                .collect();
            for key in keys {
                let Some(delta) = deltas.remove(&key) else {
                    continue;
                };
                let Some(policy) = delta.policy else { continue };
                let rows: Vec<(K::Key, u64)> = delta.rows.into_iter().collect();
                let mut chunks = rows.chunks(ROWS_PER_LINE).peekable();
                let mut first = true;
                while first || chunks.peek().is_some() {
                    bytes.extend(encode(&Line::<K>::Rows {
                        domain: key.1.clone(),
                        policy: policy.clone(),
                        rua: delta.rua.clone(),
                        dropped: if first { delta.dropped } else { 0 },
                        rows: chunks.next().map(<[_]>::to_vec).unwrap_or_default(),
                    }));
                    first = false;
                }
            }
            if let Some(n) = lost.remove(begin) {
                bytes.extend(encode(&Line::<K>::Lost { n }));
            }
            let file = inner.files.entry(*begin).or_default();
            if *closed && !file.end_written {
                bytes.extend(encode(&Line::<K>::End { end: *end }));
                file.end_written = true;
            }
            if let Some(c) = inner.ledger.closed.get(begin) {
                for d in &c.sent {
                    if file.sent_written.insert(d.clone()) {
                        bytes.extend(encode(&Line::<K>::Sent { domain: d.clone() }));
                    }
                }
            }
            if bytes.is_empty() {
                continue;
            }
            let mut f = open_file(&path, new_file)?;
            f.write_all(&bytes).map_err(io_err(&path))?;
            f.sync_data().map_err(io_err(&path))?;
            created |= new_file;
        }
        // Periods reported in full, or given up: their journals go.
        let gone: Vec<u64> = inner
            .files
            .keys()
            .filter(|b| !periods.iter().any(|(p, _, _)| p == *b))
            .copied()
            .collect();
        for begin in &gone {
            inner.files.remove(begin);
            let path = self.dir.join(journal_name(*begin));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        if created || !gone.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// Moves `path` to `corrupt/` with a `.reason` (a name only: never followed or opened).
fn quarantine(dir: &Path, path: &Path, why: &str, report: &mut OpenReport) {
    let corrupt = dir.join("corrupt");
    let _ = own_dir(&corrupt);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stamp = tern_watchdog::clock::unix_ms();
    let target = corrupt.join(format!("{name}.{stamp}"));
    if std::fs::rename(path, &target).is_ok() {
        write_reason(&target, why);
        let _ = sync_dir(dir);
    }
    report
        .quarantined
        .push((path.to_path_buf(), why.to_owned()));
}

/// Keeps a copy of a damaged journal in `corrupt/` (its good lines stay in use).
fn quarantine_copy(dir: &Path, path: &Path, why: &str, report: &mut OpenReport) {
    let corrupt = dir.join("corrupt");
    let _ = own_dir(&corrupt);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stamp = tern_watchdog::clock::unix_ms();
    let target = corrupt.join(format!("{name}.{stamp}"));
    let copied = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .and_then(|mut from| {
            let mut to = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&target)?;
            to.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            std::io::copy(&mut (&mut from).take(MAX_FILE), &mut to)?;
            to.sync_data()
        });
    if copied.is_ok() {
        write_reason(&target, why);
    }
    report
        .quarantined
        .push((path.to_path_buf(), why.to_owned()));
}

fn write_reason(target: &Path, why: &str) {
    let mut reason = target.as_os_str().to_owned();
    reason.push(".reason");
    let _ = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(PathBuf::from(reason))
        .and_then(|mut f| {
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            f.write_all(format!("{why}\n").as_bytes())
        });
}

impl<K: Kind> ReportStore<K> for FileStore<K> {
    fn add(&self, batch: Vec<K::Obs>, now: u64) -> AddCounts {
        let mut inner = self.lock();
        let Inner {
            ledger,
            deltas,
            lost,
            ..
        } = &mut *inner;
        add_batch(ledger, batch, now, |row, (begin, added)| {
            use crate::aggregate::Added;
            match added {
                Added::DomainCap => *lost.entry(begin).or_default() += 1,
                Added::Counted | Added::NewRow | Added::RowCap => {
                    let d = deltas.entry((begin, row.domain.clone())).or_default();
                    if d.policy.as_ref() != Some(&row.policy) {
                        d.policy = Some(row.policy.clone());
                    }
                    if d.rua != row.rua {
                        d.rua = row.rua.clone();
                    }
                    if added == Added::RowCap {
                        d.dropped += 1;
                    } else {
                        *d.rows.entry(row.key.clone()).or_default() += 1;
                    }
                }
            }
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        let mut inner = self.lock();
        self.write_out(&mut inner)
    }

    fn close(&self, now: u64, early: bool) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let (_, given_up) = inner.ledger.close(now, early);
        self.write_out(&mut inner)?;
        Ok(given_up)
    }

    fn due(&self) -> Vec<Period<K>> {
        self.lock().ledger.due()
    }

    fn mark_sent(&self, begin: u64, domain: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.ledger.mark_sent(begin, domain);
        self.write_out(&mut inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::tests::obs;

    const CAPS: Caps = Caps {
        max_domains: 10,
        max_rows: 100,
    };
    const DAY: u64 = 86_400;
    const T0: u64 = 20_000 * DAY + 3600;

    fn open(dir: &Path, now: u64) -> (FileStore, OpenReport) {
        FileStore::open(dir, CAPS, DAY, now).unwrap()
    }

    fn total(p: &Period) -> u64 {
        p.domains.values().flat_map(|d| d.rows.values()).sum()
    }

    #[test]
    fn a_restart_keeps_the_periods_data_and_what_was_sent() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dmarc-reports");
        let (s, _) = open(&dir, T0);
        s.add(
            vec![
                obs("a.test", "192.0.2.1", "pass"),
                obs("a.test", "192.0.2.1", "pass"),
                obs("b.test", "192.0.2.9", "fail"),
            ],
            T0,
        );
        s.flush().unwrap();
        s.add(vec![obs("a.test", "192.0.2.2", "pass")], T0 + 5);
        s.flush().unwrap();
        // Not flushed: lost at the "crash" (dropping the store).
        s.add(vec![obs("a.test", "192.0.2.3", "pass")], T0 + 6);
        drop(s);

        let (s, report) = open(&dir, T0 + 10);
        assert_eq!(report.journals, 1);
        assert_eq!(report.messages, 4);
        assert!(report.quarantined.is_empty());
        s.add(vec![obs("a.test", "192.0.2.1", "pass")], T0 + 20);
        s.close(T0 + 30, true).unwrap();
        s.mark_sent(20_000 * DAY, "a.test").unwrap();
        drop(s);

        let (s, _) = open(&dir, T0 + 40);
        let due = s.due();
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].begin, due[0].end), (20_000 * DAY, T0 + 30));
        assert_eq!(due[0].domains.keys().collect::<Vec<_>>(), ["b.test"]);
        s.mark_sent(20_000 * DAY, "b.test").unwrap();
        assert!(s.due().is_empty());
        // Wholly reported: its journal is gone.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".jnl"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
        // A new observation after the early close starts where it ended.
        s.add(vec![obs("a.test", "192.0.2.1", "pass")], T0 + 50);
        s.close(T0 + 60, true).unwrap();
        assert_eq!(s.due()[0].begin, T0 + 30);
    }

    #[test]
    fn files_are_0600_in_a_0700_directory_whatever_the_umask() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dmarc-reports");
        std::fs::DirBuilder::new().mode(0o777).create(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let (s, _) = open(&dir, T0);
        s.add(vec![obs("a.test", "192.0.2.1", "pass")], T0);
        s.flush().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(journal_name(20_000 * DAY))), 0o600);
    }

    #[test]
    fn a_torn_last_line_is_dropped_silently() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        let (s, _) = open(&dir, T0);
        s.add(vec![obs("a.test", "192.0.2.1", "pass")], T0);
        s.flush().unwrap();
        drop(s);
        let path = dir.join(journal_name(20_000 * DAY));
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"0badc0de {\"t\":\"rows\",\"dom").unwrap();
        drop(f);
        let (s, report) = open(&dir, T0 + 1);
        assert!(report.quarantined.is_empty(), "{:?}", report.quarantined);
        assert_eq!(report.messages, 1);
        // Rewritten compact: appending works again.
        s.add(vec![obs("a.test", "192.0.2.1", "pass")], T0 + 2);
        s.flush().unwrap();
        drop(s);
        let (s, _) = open(&dir, T0 + 3);
        s.close(T0 + 4, true).unwrap();
        assert_eq!(total(&s.due()[0]), 2);
    }

    #[test]
    fn damage_inside_a_journal_is_quarantined_and_the_good_lines_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        let (s, _) = open(&dir, T0);
        s.add(vec![obs("a.test", "192.0.2.1", "pass")], T0);
        s.flush().unwrap();
        s.add(vec![obs("b.test", "192.0.2.1", "pass")], T0);
        s.flush().unwrap();
        drop(s);
        let path = dir.join(journal_name(20_000 * DAY));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // Flip a byte in the second line (the first rows line).
        let bad = lines[1].replacen("a.test", "x.test", 1);
        let damaged = [lines[0], &bad, lines[2]].join("\n") + "\n";
        std::fs::write(&path, damaged).unwrap();
        // Junk that Tern did not write, and a link where a journal would be.
        std::fs::write(dir.join("notes.txt"), "hello").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join(journal_name(1))).unwrap();

        let (s, report) = open(&dir, T0 + 1);
        let why: Vec<String> = report.quarantined.iter().map(|q| q.1.clone()).collect();
        assert_eq!(report.quarantined.len(), 3, "{why:?}");
        assert!(why.iter().any(|w| w.contains("line 2")), "{why:?}");
        assert!(!dir.join("notes.txt").exists());
        assert!(std::fs::symlink_metadata(dir.join(journal_name(1))).is_err());
        let corrupt: Vec<_> = std::fs::read_dir(dir.join("corrupt")).unwrap().collect();
        assert_eq!(corrupt.len(), 6, "three files and their reasons");
        s.close(T0 + 2, true).unwrap();
        let due = s.due();
        assert_eq!(due[0].domains.keys().collect::<Vec<_>>(), ["b.test"]);
    }

    #[test]
    fn an_over_long_line_is_damage_skipped_without_holding_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        let (s, _) = open(&dir, T0);
        s.add(vec![obs("a.test", "192.0.2.1", "pass")], T0);
        s.flush().unwrap();
        drop(s);
        let path = dir.join(journal_name(20_000 * DAY));
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&vec![b'x'; 3 * MAX_LINE]).unwrap();
        f.write_all(b"\n").unwrap();
        drop(f);
        let (s, _) = open(&dir, T0 + 1);
        s.add(vec![obs("a.test", "192.0.2.1", "pass")], T0 + 1);
        s.flush().unwrap();
        drop(s);
        // The long line is not the last one now: damage, quarantined, good lines kept.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&vec![b'y'; 3 * MAX_LINE]).unwrap();
        f.write_all(b"\n").unwrap();
        f.write_all(&encode(&Line::<Dmarc>::Lost { n: 2 })).unwrap();
        drop(f);
        let (s, report) = open(&dir, T0 + 2);
        assert_eq!(report.quarantined.len(), 1, "{:?}", report.quarantined);
        assert_eq!(report.messages, 2);
        s.close(T0 + 3, true).unwrap();
        assert_eq!(s.due()[0].dropped_domains, 2);
    }

    #[test]
    fn a_period_over_while_tern_was_down_is_closed_at_start() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        let (s, _) = open(&dir, T0);
        s.add(vec![obs("a.test", "192.0.2.1", "pass")], T0);
        s.flush().unwrap();
        drop(s);
        let (s, _) = open(&dir, T0 + 2 * DAY);
        let due = s.due();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].end, 20_001 * DAY);
    }

    #[test]
    fn a_directory_of_another_kind_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("elsewhere");
        std::fs::create_dir(&target).unwrap();
        let link = tmp.path().join("d");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            FileStore::<Dmarc>::open(&link, CAPS, DAY, T0),
            Err(StoreError::Unsafe(_))
        ));
    }
}
