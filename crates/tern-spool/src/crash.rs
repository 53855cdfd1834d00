//! Crash evidence kept in the spool: the probe journal and the last-gasp record. The
//! queue reads both at the next start to decide which message, if any, a death of the
//! process is counted against (the rule and its reasons are in docs/RELIABILITY.md,
//! "Poison messages"; `tern_queue::probe` applies it). This module is the sans-I/O part:
//! the two formats, made and parsed here and nowhere else. The files themselves are
//! handled by `Spool::crash_evidence`, `Spool::start_probe_journal` and
//! `Spool::open_last_gasp`.
//!
//! `spool/probe`, the **probe journal** of the run that owns the spool (text, one entry
//! per line):
//!
//! ```text
//! TERNPROBE1 <run: 16 hex digits> <start: microseconds since the epoch>
//! line <queue id> <n>   one per suspect, in the order they are to be probed; n: the
//!                       largest probe group it may be probed in (1: alone)
//! begin                 end of the header
//! probe <queue id>...   a probe group (1 to MAX_PROBE_GROUP suspects), appended and
//!                       fdatasynced before any of them is processed
//! done <queue id>       a member's processing ended (synced with the group's last)
//! stopped               a clean stop
//! ```
//!
//! The header (up to `begin`) is written to `probe.new`, synced, renamed over `probe` and
//! the spool directory synced, before the run processes any message, so a journal either
//! has its whole header or is the previous run's. At most one group is probed at a time:
//! every member of a group has its `done` before the next `probe`. A group is one line,
//! so a group cut short by a power loss is no group at all.
//!
//! `spool/last-gasp`, the **last-gasp record**: fixed lines of [`GASP_LINE_LEN`] octets,
//! `TERNGASP1 <run: 16 hex digits> <signal: 3 digits> <queue id, or 15 '-'>`, padded with
//! spaces and ended by a newline. A dying thread writes one at its own slot (line index)
//! from a signal handler, which is why [`gasp_line`] allocates nothing and cannot panic.
//!
//! Trust: both files are Tern's own, but they are read as untrusted input: bounded reads
//! (by the caller), strict parsing. A journal that does not parse gives no evidence at
//! all (damage must never invent a culprit); a gasp line that does not parse is skipped.

use std::collections::BTreeSet;

use crate::id::{QUEUE_ID_LEN, QueueId};

/// Length of one last-gasp line, newline included.
pub const GASP_LINE_LEN: usize = 64;
/// Most last-gasp lines (crashing threads) recorded and read.
pub const MAX_GASP_LINES: usize = 64;
/// Largest probe journal read (a sanity bound: some 600,000 suspects).
pub const MAX_JOURNAL_LEN: usize = 16 << 20;
/// Largest probe group.
pub const MAX_PROBE_GROUP: usize = 1000;

const GASP_MAGIC: &[u8] = b"TERNGASP1 ";
const JOURNAL_MAGIC: &str = "TERNPROBE1";
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Copies `bytes` into `buf` from `at` (what does not fit is dropped); returns the
/// position after them. Never panics.
fn put(buf: &mut [u8; GASP_LINE_LEN], at: usize, bytes: &[u8]) -> usize {
    for (slot, b) in buf.iter_mut().skip(at).zip(bytes) {
        *slot = *b;
    }
    at.saturating_add(bytes.len())
}

/// One last-gasp line: run `run` died of `signal` on a thread processing message `id`
/// (its text form), or on a thread processing none. Async-signal-safe: a stack array,
/// arithmetic, no allocation, no lock, no panic.
pub fn gasp_line(run: u64, signal: i32, id: Option<[u8; QUEUE_ID_LEN]>) -> [u8; GASP_LINE_LEN] {
    let mut buf = [b' '; GASP_LINE_LEN];
    let mut at = put(&mut buf, 0, GASP_MAGIC);
    let mut hex = [0u8; 16];
    for (i, slot) in hex.iter_mut().enumerate() {
        let shift = 60u32.saturating_sub(4u32.saturating_mul(i as u32));
        let nibble = ((run >> shift) & 0xf) as usize;
        *slot = HEX.get(nibble).copied().unwrap_or(b'0');
    }
    at = put(&mut buf, at, &hex);
    at = put(&mut buf, at, b" ");
    let sig = signal.clamp(0, 999) as u32;
    let digits = [
        b'0' + (sig / 100) as u8,
        b'0' + (sig / 10 % 10) as u8,
        b'0' + (sig % 10) as u8,
    ];
    at = put(&mut buf, at, &digits);
    at = put(&mut buf, at, b" ");
    match id {
        Some(text) => put(&mut buf, at, &text),
        None => put(&mut buf, at, &[b'-'; QUEUE_ID_LEN]),
    };
    put(&mut buf, GASP_LINE_LEN - 1, b"\n");
    buf
}

/// One line of a last-gasp record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastGasp {
    /// The run that wrote it.
    pub run: u64,
    /// The signal that was killing the process (SIGABRT for an abort or a panic that
    /// could not unwind, SIGSEGV, SIGBUS, SIGILL, SIGFPE).
    pub signal: i32,
    /// The message the crashing thread was processing; `None` for none.
    pub id: Option<QueueId>,
}

/// The lines of a last-gasp record that parse (at most [`MAX_GASP_LINES`]); anything else
/// (zeros of a slot never written, damage) is skipped.
pub fn parse_gasps(bytes: &[u8]) -> Vec<LastGasp> {
    bytes
        .chunks(GASP_LINE_LEN)
        .take(MAX_GASP_LINES)
        .filter_map(parse_gasp)
        .collect()
}

fn parse_gasp(line: &[u8]) -> Option<LastGasp> {
    let text = std::str::from_utf8(line.strip_prefix(GASP_MAGIC)?).ok()?;
    let text = text.strip_suffix('\n')?;
    let mut parts = text.split(' ').filter(|p| !p.is_empty());
    let run = parts.next().filter(|r| r.len() == 16)?;
    let run = u64::from_str_radix(run, 16).ok()?;
    let signal = parts.next().filter(|s| s.len() == 3)?.parse().ok()?;
    let id = match parts.next()? {
        dashes if dashes.bytes().all(|b| b == b'-') && dashes.len() == QUEUE_ID_LEN => None,
        id => Some(QueueId::parse(id).ok()?),
    };
    if parts.next().is_some() {
        return None;
    }
    Some(LastGasp { run, signal, id })
}

/// A suspect in a journal's line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suspect {
    /// The message.
    pub id: QueueId,
    /// The largest probe group it may be probed in (1: alone), at most
    /// [`MAX_PROBE_GROUP`].
    pub max_group: usize,
}

/// What a run's probe journal says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalState {
    /// The run that wrote it.
    pub run: u64,
    /// When that run started, microseconds since the epoch.
    pub started_micros: i64,
    /// Its suspects, in the order they were to be probed.
    pub line: Vec<Suspect>,
    /// Suspects whose probe ended.
    pub done: BTreeSet<QueueId>,
    /// The members of the group being probed when the journal ends that had not ended
    /// (empty when no group was).
    pub probing: BTreeSet<QueueId>,
    /// How many suspects that group's probe mark named (0 when none was being probed).
    pub group_size: usize,
    /// The run stopped cleanly.
    pub stopped: bool,
}

impl JournalState {
    /// Suspects still waiting for their probe when the journal ends: in the line, not
    /// done, not being probed. They were not in process.
    pub fn waiting(&self) -> impl Iterator<Item = Suspect> + '_ {
        self.line
            .iter()
            .copied()
            .filter(|s| !self.done.contains(&s.id) && !self.probing.contains(&s.id))
    }
}

/// The header of a new journal: the run, its start, its suspect line.
pub fn journal_header(run: u64, started_micros: i64, line: &[Suspect]) -> Vec<u8> {
    let mut out = format!("{JOURNAL_MAGIC} {run:016x} {started_micros}\n").into_bytes();
    out.reserve(line.len().saturating_mul(11 + QUEUE_ID_LEN) + 6);
    for s in line {
        out.extend_from_slice(b"line ");
        out.extend_from_slice(&s.id.to_ascii());
        out.extend_from_slice(format!(" {}\n", s.max_group).as_bytes());
    }
    out.extend_from_slice(b"begin\n");
    out
}

/// An entry appended to a journal after its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalEntry {
    /// The probe of these suspects (one group) starts.
    Probe(Vec<QueueId>),
    /// The probe of this suspect ended.
    Done(QueueId),
    /// The run stops cleanly.
    Stopped,
}

impl JournalEntry {
    /// The entry's line.
    pub fn encode(&self) -> Vec<u8> {
        let (word, ids): (&str, &[QueueId]) = match self {
            JournalEntry::Probe(ids) => ("probe", ids),
            JournalEntry::Done(id) => ("done", std::slice::from_ref(id)),
            JournalEntry::Stopped => ("stopped", &[]),
        };
        let mut out = word.as_bytes().to_vec();
        for id in ids {
            out.push(b' ');
            out.extend_from_slice(&id.to_ascii());
        }
        out.push(b'\n');
        out
    }
}

/// Parses a journal. A last line without its newline is an append cut short and is
/// ignored; anything else out of place makes the whole journal unusable (`Err` says why).
pub fn parse_journal(bytes: &[u8]) -> Result<JournalState, String> {
    if bytes.len() > MAX_JOURNAL_LEN {
        return Err("the probe journal is larger than the limit".into());
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "the probe journal is not text")?;
    // Only complete lines: what follows the last newline was never finished.
    let complete = match text.rfind('\n') {
        Some(end) => text.get(..end).unwrap_or_default(),
        None => return Err("the probe journal has no complete header".into()),
    };
    let mut lines = complete.split('\n');
    let header = lines.next().unwrap_or_default();
    let mut fields = header.split(' ');
    if fields.next() != Some(JOURNAL_MAGIC) {
        return Err("the probe journal does not start with its magic".into());
    }
    let run = fields
        .next()
        .filter(|r| r.len() == 16)
        .and_then(|r| u64::from_str_radix(r, 16).ok())
        .ok_or("the probe journal's run is not 16 hex digits")?;
    let started_micros = fields
        .next()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or("the probe journal's start time is not a number")?;
    if fields.next().is_some() {
        return Err("the probe journal's header has extra fields".into());
    }
    let id_of = |text: &str, what: &str| {
        QueueId::parse(text).map_err(|e| format!("bad queue id in `{what}` entry: {e}"))
    };
    let mut state = JournalState {
        run,
        started_micros,
        line: Vec::new(),
        done: BTreeSet::new(),
        probing: BTreeSet::new(),
        group_size: 0,
        stopped: false,
    };
    let mut in_line = BTreeSet::new();
    let mut probed = BTreeSet::new();
    let mut begun = false;
    for entry in lines {
        if state.stopped {
            return Err("an entry follows `stopped`".into());
        }
        let (word, rest) = entry.split_once(' ').unwrap_or((entry, ""));
        match (begun, word) {
            (false, "line") => {
                let (id, n) = rest
                    .split_once(' ')
                    .ok_or("a `line` entry without its group")?;
                let id = id_of(id, "line")?;
                let max_group = n
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_PROBE_GROUP).contains(n))
                    .ok_or_else(|| format!("bad group size for {id}"))?;
                if !in_line.insert(id) {
                    return Err(format!("{id} is twice in the suspect line"));
                }
                state.line.push(Suspect { id, max_group });
            }
            (false, "begin") if rest.is_empty() => begun = true,
            (true, "probe") => {
                if !state.probing.is_empty() {
                    return Err("a probe group starts while another is probed".into());
                }
                let mut group = BTreeSet::new();
                for id in rest.split(' ') {
                    let id = id_of(id, "probe")?;
                    if !in_line.contains(&id) || !probed.insert(id) || !group.insert(id) {
                        return Err(format!("probe of {id}, which is not a waiting suspect"));
                    }
                }
                if group.len() > MAX_PROBE_GROUP {
                    return Err("a probe group larger than the limit".into());
                }
                state.group_size = group.len();
                state.probing = group;
            }
            (true, "done") => {
                let id = id_of(rest, "done")?;
                if !state.probing.remove(&id) {
                    return Err(format!("`done` for {id}, which is not being probed"));
                }
                state.done.insert(id);
                if state.probing.is_empty() {
                    state.group_size = 0;
                }
            }
            (true, "stopped") if rest.is_empty() => state.stopped = true,
            _ => return Err(format!("unexpected entry `{}`", entry.escape_debug())),
        }
    }
    if !begun {
        return Err("the probe journal has no complete header".into());
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(n: usize) -> Vec<QueueId> {
        (0..n).map(|_| QueueId::generate()).collect()
    }

    #[test]
    fn gasp_lines_round_trip_at_their_fixed_length() {
        let id = QueueId::generate();
        let a = gasp_line(0xdead_beef_0000_0001, 6, Some(id.to_ascii()));
        let b = gasp_line(u64::MAX, 11, None);
        assert_eq!(a.len(), GASP_LINE_LEN);
        assert_eq!(a[GASP_LINE_LEN - 1], b'\n');
        let mut file = a.to_vec();
        file.extend_from_slice(&[0u8; GASP_LINE_LEN]); // a slot never written
        file.extend_from_slice(&b);
        file.extend_from_slice(b"TERNGASP1 junk"); // cut short
        let got = parse_gasps(&file);
        assert_eq!(
            got,
            vec![
                LastGasp {
                    run: 0xdead_beef_0000_0001,
                    signal: 6,
                    id: Some(id)
                },
                LastGasp {
                    run: u64::MAX,
                    signal: 11,
                    id: None
                },
            ]
        );
    }

    #[test]
    fn damaged_gasp_lines_are_skipped() {
        let id = QueueId::generate();
        let good = gasp_line(7, 6, Some(id.to_ascii()));
        for pos in [0, 12, 30, 40, GASP_LINE_LEN - 1] {
            let mut bad = good;
            bad[pos] = b'#';
            assert!(parse_gasps(&bad).is_empty(), "damage at {pos} accepted");
        }
        assert_eq!(parse_gasps(&good).len(), 1);
    }

    fn line(ids: &[QueueId], max_group: usize) -> Vec<Suspect> {
        ids.iter().map(|&id| Suspect { id, max_group }).collect()
    }

    #[test]
    fn journal_round_trip_with_probe_groups_and_a_clean_stop() {
        let a = ids(4);
        let mut j = journal_header(42, 1_700_000_000_000_000, &line(&a, 64));
        j.extend(JournalEntry::Probe(vec![a[0]]).encode());
        j.extend(JournalEntry::Done(a[0]).encode());
        j.extend(JournalEntry::Probe(vec![a[1], a[2]]).encode());
        j.extend(JournalEntry::Done(a[2]).encode());
        let s = parse_journal(&j).unwrap();
        assert_eq!((s.run, s.started_micros), (42, 1_700_000_000_000_000));
        assert_eq!(s.line, line(&a, 64));
        assert_eq!(s.probing, [a[1]].into());
        assert_eq!(s.group_size, 2);
        assert_eq!(s.waiting().map(|s| s.id).collect::<Vec<_>>(), vec![a[3]]);
        assert!(!s.stopped);
        // An append cut short is ignored, not an error: a group cut short is no group.
        let mut cut = j.clone();
        cut.extend_from_slice(b"done ");
        assert_eq!(parse_journal(&cut).unwrap(), s);
        j.extend(JournalEntry::Done(a[1]).encode());
        let mut half = j.clone();
        let group = JournalEntry::Probe(vec![a[3]]).encode();
        half.extend_from_slice(&group[..group.len() - 1]);
        let s = parse_journal(&half).unwrap();
        assert!(s.probing.is_empty() && s.group_size == 0);
        j.extend(JournalEntry::Stopped.encode());
        let s = parse_journal(&j).unwrap();
        assert!(s.stopped);
        assert_eq!(s.done.len(), 3);
    }

    #[test]
    fn a_journal_out_of_order_gives_no_evidence() {
        let a = ids(2);
        let other = QueueId::generate();
        let head = journal_header(1, 0, &line(&a, 2));
        let with = |entries: &[JournalEntry]| {
            let mut j = head.clone();
            for e in entries {
                j.extend(e.encode());
            }
            j
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("header cut", head[..head.len() - 3].to_vec()),
            ("no begin", head[..20].to_vec()),
            ("outsider probed", with(&[JournalEntry::Probe(vec![other])])),
            (
                "two groups at once",
                with(&[
                    JournalEntry::Probe(vec![a[0]]),
                    JournalEntry::Probe(vec![a[1]]),
                ]),
            ),
            (
                "twice in a group",
                with(&[JournalEntry::Probe(vec![a[0], a[0]])]),
            ),
            ("done without probe", with(&[JournalEntry::Done(a[0])])),
            (
                "probed twice",
                with(&[
                    JournalEntry::Probe(vec![a[0]]),
                    JournalEntry::Done(a[0]),
                    JournalEntry::Probe(vec![a[0]]),
                ]),
            ),
            (
                "after stopped",
                with(&[JournalEntry::Stopped, JournalEntry::Probe(vec![a[0]])]),
            ),
            ("empty group", [head.clone(), b"probe\n".to_vec()].concat()),
            ("garbage", [head.clone(), b"probe\x00x\n".to_vec()].concat()),
            (
                "group size 0",
                String::from_utf8(journal_header(1, 0, &line(&a, 1)))
                    .unwrap()
                    .replace(" 1\n", " 0\n")
                    .into_bytes(),
            ),
            (
                "bad magic",
                b"TERNPROBE9 0000000000000001 0\nbegin\n".to_vec(),
            ),
        ];
        for (name, bytes) in cases {
            assert!(parse_journal(&bytes).is_err(), "{name} accepted");
        }
    }

    proptest! {
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_journal(&data);
            let _ = parse_gasps(&data);
        }

        #[test]
        fn any_gasp_line_parses_back(run in any::<u64>(), sig in 0i32..1000, some in any::<bool>()) {
            let id = QueueId::generate();
            let line = gasp_line(run, sig, some.then(|| id.to_ascii()));
            let got = parse_gasps(&line);
            prop_assert_eq!(got, vec![LastGasp { run, signal: sig, id: some.then_some(id) }]);
        }
    }
}
