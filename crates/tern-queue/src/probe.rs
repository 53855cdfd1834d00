//! Suspects and probes: which message a death of the process is counted against, and how
//! the messages that were in process at that death are cleared.
//!
//! The rule (docs/RELIABILITY.md, "Poison messages", gives the reasons):
//! - A message in process when the process died is a **suspect**, not a culprit: no crash
//!   is counted against it for being there.
//! - A crash is counted against a message only when the evidence points at it, the first
//!   of: the **last gasp** (the dying thread named the message it was processing: those
//!   named, and only those); the **probe mark** (a probe mark naming that suspect alone
//!   was in force); **alone** (exactly one message was in process: that one). Nothing
//!   else counts. Each counted crash is written to the message's delivery record,
//!   durably, before the message is touched again, and once only per death (the record
//!   keeps the number of the run it was counted for, so a start cut short and repeated
//!   does not count it twice). At `queue.poison_threshold` the message goes to `poison/`.
//! - Suspects wait in `active/`, out of the normal flow, in a line: fewest crashes first,
//!   the most implicated (smallest allowed group) first among those, a message just
//!   counted behind its equals. Once the run has lasted `queue.probe_delay_secs`, they
//!   are probed a group at a time while other mail flows: `probe <ids>` is appended to
//!   the probe journal and synced before any member is processed, `done <id>` after each
//!   member's processing ended; a member is then an ordinary message again. Groups hold
//!   at most `queue.probe_group_size` suspects, and at most the smallest group each member
//!   may be probed in: when the process dies during a group's probe, its members still in
//!   `active/` may next be probed only in groups of half as many (rounded up), so a
//!   message that kills Tern whenever it is processed ends up probed alone, and counted,
//!   after about log2(group size) more deaths; a kill that no message caused lands on a
//!   lone probe only rarely, and must do so twice for the same message to poison it.
//!
//! At start ([`recover`]) the previous run's evidence is read, the rule applied
//! ([`attribute`], sans-I/O), the crashes counted, the new line made ([`order_line`]) and
//! written as this run's journal before any message is processed (so that at the next
//! death "in process" is exactly what is in `active/` and not waiting in this line), and
//! the last-gasp record emptied and armed. The scheduler then runs the line through
//! [`Suspects`]; each member of a group is a message task given the group ([`Probe`],
//! `message::spawn`).
//!
//! Trust: the evidence files are read by the spool, bounded and strictly parsed; a journal
//! that does not parse counts nothing (damage never invents a culprit).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tern_events::{catalog, fields};
use tern_spool::crash::{JournalEntry, Suspect};
use tern_spool::{
    CorruptReason, CrashEvidence, DeliveryRecord, JournalRead, ProbeJournal, QueueId, QueueState,
    SpoolError,
};
use tern_watchdog::clock::unix_micros;
use tokio::sync::OnceCell;

use crate::Context;
use crate::channel::Next;

/// A message found in `active/` at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ActiveMessage {
    pub id: QueueId,
    /// Its envelope's recipients (for a record made from nothing).
    pub recipients: usize,
    /// Crashes counted against it so far (0 when its record cannot be read).
    pub crashes: u32,
}

/// What the evidence points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// A fatal signal on a thread processing the message.
    LastGasp,
    /// A probe mark naming it alone was in force.
    Probe,
    /// It was the only message in process.
    Alone,
}

impl Cause {
    fn as_str(self) -> &'static str {
        match self {
            Cause::LastGasp => "last_gasp",
            Cause::Probe => "probe",
            Cause::Alone => "alone",
        }
    }
}

/// How the previous run ended, as far as the evidence tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// It ended without a clean stop.
    pub crashed: bool,
    /// Its number (from its journal), when its journal was read.
    pub run: Option<u64>,
    /// What the crash is counted against, and why.
    pub culprits: Vec<QueueId>,
    pub cause: Option<Cause>,
    /// Members of a probe group of several that had not finished: not counted, but
    /// probed next in groups of half as many.
    pub implicated: Vec<QueueId>,
    /// The fatal signal of its last gasp, if it left one.
    pub signal: Option<i32>,
    /// Messages of `active/` that were in process (not waiting suspects), by id.
    pub in_process: Vec<QueueId>,
    /// Its suspects that were still waiting for their probe, in line order.
    pub waiting: Vec<Suspect>,
    /// Why its journal could not be used, if it could not.
    pub note: Option<String>,
}

impl Verdict {
    /// For event 4015.
    fn evidence(&self) -> &'static str {
        match (self.cause, self.implicated.is_empty()) {
            (Some(c), _) => c.as_str(),
            (None, false) => "probe_group",
            (None, true) => "none",
        }
    }
}

/// Applies the rule (module header) to the previous run's `evidence`, given the messages
/// now in `active/`.
pub(crate) fn attribute(evidence: &CrashEvidence, active: &BTreeSet<QueueId>) -> Verdict {
    let mut v = Verdict {
        crashed: false,
        run: None,
        culprits: Vec::new(),
        cause: None,
        implicated: Vec::new(),
        signal: None,
        in_process: Vec::new(),
        waiting: Vec::new(),
        note: None,
    };
    let journal = match &evidence.journal {
        JournalRead::Read(j) => j,
        // Nothing to tell the waiting suspects from the messages in process, nor a probe:
        // everything in active/ is a suspect and nothing is counted. (A start after a
        // version without probes, or after damage.)
        JournalRead::Missing | JournalRead::Unusable(_) => {
            v.crashed = !active.is_empty();
            v.in_process = active.iter().copied().collect();
            if let JournalRead::Unusable(why) = &evidence.journal {
                v.note = Some(format!("probe journal unusable: {why}"));
            } else if v.crashed {
                v.note = Some("no probe journal".into());
            }
            return v;
        }
    };
    v.run = Some(journal.run);
    v.waiting = journal
        .waiting()
        .filter(|s| active.contains(&s.id))
        .collect();
    let waiting: HashSet<QueueId> = v.waiting.iter().map(|s| s.id).collect();
    v.in_process = active
        .iter()
        .copied()
        .filter(|id| !waiting.contains(id))
        .collect();
    if journal.stopped {
        return v;
    }
    v.crashed = true;
    let gasps: Vec<_> = evidence
        .gasps
        .iter()
        .filter(|g| g.run == journal.run)
        .collect();
    v.signal = gasps.first().map(|g| g.signal);
    let named: BTreeSet<QueueId> = gasps
        .iter()
        .filter_map(|g| g.id)
        .filter(|id| active.contains(id))
        .collect();
    // Members of the group in probe that had not finished (a finished one left active/).
    let unfinished: Vec<QueueId> = journal
        .probing
        .iter()
        .copied()
        .filter(|id| active.contains(id))
        .collect();
    if !named.is_empty() {
        v.culprits = named.into_iter().collect();
        v.cause = Some(Cause::LastGasp);
    } else if let ([only], 1) = (unfinished.as_slice(), journal.group_size) {
        v.culprits = vec![*only];
        v.cause = Some(Cause::Probe);
    } else if !unfinished.is_empty() {
        v.implicated = unfinished;
    } else if let [only] = v.in_process.as_slice() {
        v.culprits = vec![*only];
        v.cause = Some(Cause::Alone);
    }
    v
}

/// The new suspect line: the previous line's waiting suspects in their order, then the
/// messages that were in process (by id), each with the largest group it may be probed
/// in (`group` for a message never implicated, half the unfinished members of its group
/// for an implicated one, 1 for a message a crash was just counted against); then,
/// stably, fewest crashes first, a message just counted behind the others with as many,
/// the most implicated first. `gone` (poisoned, quarantined, held) are left out.
pub(crate) fn order_line(
    verdict: &Verdict,
    crashes: &HashMap<QueueId, u32>,
    gone: &HashSet<QueueId>,
    group: usize,
) -> Vec<Suspect> {
    let group = group.max(1);
    let half = verdict.implicated.len().div_ceil(2).max(1);
    let mut line: Vec<Suspect> = verdict
        .waiting
        .iter()
        .map(|s| Suspect {
            id: s.id,
            max_group: s.max_group.clamp(1, group),
        })
        .chain(verdict.in_process.iter().map(|&id| {
            let max_group = if verdict.culprits.contains(&id) {
                1
            } else if verdict.implicated.contains(&id) {
                half.min(group)
            } else {
                group
            };
            Suspect { id, max_group }
        }))
        .filter(|s| !gone.contains(&s.id))
        .collect();
    line.sort_by_key(|s| {
        (
            crashes.get(&s.id).copied().unwrap_or(0),
            verdict.culprits.contains(&s.id),
            s.max_group,
        )
    });
    line
}

/// What came of counting a crash against one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    /// Its crashes now.
    Crashes(u32),
    /// It left `active/` (poisoned, or its record was bad): no longer a suspect.
    Gone,
}

/// Counts the death of run `run` against message `id`, durably, once (see the module
/// header); at the threshold, moves it to `poison/` (event 4012).
async fn count_crash(
    ctx: &Context,
    id: QueueId,
    recipients: usize,
    run: u64,
    cause: Cause,
) -> Counted {
    let spool = &ctx.spool;
    let mut record = match spool.read_record(id) {
        Ok(Some(r)) => r,
        Ok(None) => DeliveryRecord::new(id, recipients),
        // Not a record at all: the spool sets it aside and holds the message (event
        // 3010).
        Err(SpoolError::Corrupt(CorruptReason::RecordNotAFile)) => {
            let _ = spool.hold_without_record(id, QueueState::Active).await;
            return Counted::Gone;
        }
        Err(SpoolError::Corrupt(reason)) => {
            let _ = spool.quarantine_message(QueueState::Active, id, &reason);
            return Counted::Gone;
        }
        Err(e) => {
            ctx.events.emit(
                &catalog::QUEUE_ERROR,
                fields!("queue_id" => id, "op" => "read record", "error" => e),
            );
            return Counted::Crashes(0);
        }
    };
    let threshold = ctx.runtime.load().queue.poison_threshold;
    if record.crash_run != Some(run) {
        record.crashes = record.crashes.saturating_add(1);
        record.crash_run = Some(run);
        record.last_error = Some(tern_spool::record::bounded_reply(&format!(
            "451 4.3.0 Tern died while processing this message (evidence: {}); it will be probed again",
            cause.as_str()
        )));
        if let Err(e) = spool.write_record(&record).await {
            ctx.events.emit(
                &catalog::QUEUE_ERROR,
                fields!("queue_id" => id, "op" => "write record", "error" => e),
            );
        }
        ctx.events.emit(
            &catalog::QUEUE_CRASH_COUNTED,
            fields!(
                "queue_id" => id,
                "crashes" => record.crashes,
                "threshold" => threshold,
                "evidence" => cause.as_str(),
            ),
        );
    }
    if record.crashes < threshold {
        return Counted::Crashes(record.crashes);
    }
    match spool
        .move_to(id, QueueState::Active, QueueState::Poison)
        .await
    {
        Ok(()) => {
            tern_metrics::get().poisoned.inc();
            ctx.events.emit(
                &catalog::QUEUE_POISONED,
                fields!("queue_id" => id, "crashes" => record.crashes),
            );
        }
        Err(e) => ctx.events.emit(
            &catalog::QUEUE_ERROR,
            fields!("queue_id" => id, "op" => "move to poison", "error" => e),
        ),
    }
    Counted::Gone
}

/// This run's probe journal, shared by the probes. `broken` once a write failed: the
/// journal may then say less than happened, so no further group starts in this run.
#[derive(Debug)]
pub(crate) struct ProbeLog {
    journal: ProbeJournal,
    broken: AtomicBool,
}

impl ProbeLog {
    async fn append(
        self: &Arc<Self>,
        ctx: &Context,
        entry: JournalEntry,
        sync: bool,
    ) -> Result<(), SpoolError> {
        let me = Arc::clone(self);
        let done = tokio::task::spawn_blocking(move || me.journal.append(&entry, sync)).await;
        let result = done.unwrap_or_else(|e| Err(SpoolError::BlockingTask(e.to_string())));
        if let Err(e) = &result {
            self.broken.store(true, Ordering::SeqCst);
            ctx.events.emit(
                &catalog::QUEUE_PROBE_UNAVAILABLE,
                fields!("file" => "probe", "error" => e),
            );
        }
        result
    }

    /// At a clean stop: says so in the journal, so the next start counts nothing.
    pub(crate) async fn stopped(self: &Arc<Self>, ctx: &Context) {
        if !self.broken.load(Ordering::SeqCst) {
            let _ = self.append(ctx, JournalEntry::Stopped, true).await;
        }
    }
}

/// One probe group, shared by the message tasks of its members.
#[derive(Debug)]
pub(crate) struct Probe {
    log: Arc<ProbeLog>,
    ids: Vec<QueueId>,
    /// Suspects behind the group (for event 4016).
    waiting: usize,
    /// Whether the group's mark was written; the first member to ask writes it.
    marked: OnceCell<bool>,
    /// Members whose processing has not ended.
    left: AtomicUsize,
}

impl Probe {
    /// Waits until the group's probe mark is on disk (the first member to call writes it,
    /// event 4016). `false`: it could not be written (event 4018); the message must not
    /// be processed.
    pub(crate) async fn mark(&self, ctx: &Context) -> bool {
        *self
            .marked
            .get_or_init(|| async {
                let entry = JournalEntry::Probe(self.ids.clone());
                if self.log.append(ctx, entry, true).await.is_err() {
                    return false;
                }
                let ids: Vec<String> = self.ids.iter().map(ToString::to_string).collect();
                ctx.events.emit(
                    &catalog::QUEUE_PROBE_STARTED,
                    fields!(
                        "queue_ids" => ids.join(","),
                        "group" => self.ids.len(),
                        "waiting" => self.waiting,
                    ),
                );
                // On record before the probe can kill the process (a write, not a sync).
                let events = ctx.events.clone();
                let _ =
                    tokio::task::spawn_blocking(move || events.flush(Duration::from_secs(1))).await;
                true
            })
            .await
    }

    /// The processing of member `id` ended with `next`: its `done` is written, synced
    /// with the group's last (event 4017).
    pub(crate) async fn unmark(&self, ctx: &Context, id: QueueId, next: &Next, started: Instant) {
        let last = self.left.fetch_sub(1, Ordering::SeqCst) <= 1;
        if self
            .log
            .append(ctx, JournalEntry::Done(id), last)
            .await
            .is_ok()
        {
            let outcome = match next {
                Next::Retry { .. } => "deferred",
                Next::Done | Next::Unprobed => "done",
            };
            ctx.events.emit(
                &catalog::QUEUE_PROBE_PASSED,
                fields!(
                    "queue_id" => id,
                    "outcome" => outcome,
                    "ms" => started.elapsed().as_millis(),
                ),
            );
        }
    }
}

/// The suspect line of this run, kept by the scheduler.
///
/// Invariants: `members` is the line plus the group in probe; at most one group is in
/// probe; none starts before `not_before`, nor without a working journal; a group holds
/// at most the `max_group` of each of its members.
#[derive(Debug)]
pub(crate) struct Suspects {
    line: VecDeque<Suspect>,
    members: HashSet<QueueId>,
    /// The group in probe: its members whose processing has not ended, with their
    /// `max_group` (to put them back if the probe did not run).
    group: HashMap<QueueId, usize>,
    not_before: Instant,
    log: Option<Arc<ProbeLog>>,
}

impl Suspects {
    fn new(line: Vec<Suspect>, log: Option<Arc<ProbeLog>>, not_before: Instant) -> Suspects {
        Suspects {
            members: line.iter().map(|s| s.id).collect(),
            line: line.into(),
            group: HashMap::new(),
            not_before,
            log,
        }
    }

    /// Whether `id` is a suspect (waiting or being probed).
    pub(crate) fn contains(&self, id: QueueId) -> bool {
        self.members.contains(&id)
    }

    fn can_probe(&self) -> bool {
        self.group.is_empty()
            && !self.line.is_empty()
            && self
                .log
                .as_ref()
                .is_some_and(|l| !l.broken.load(Ordering::SeqCst))
    }

    /// When the next group may start, if one is to start.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.can_probe().then_some(self.not_before)
    }

    /// The next group to probe now, if one may start: from the front of the line, as many
    /// as the first allows, while each allows a group that large.
    pub(crate) fn start_next(&mut self, now: Instant) -> Option<(Vec<QueueId>, Arc<Probe>)> {
        if !self.can_probe() || now < self.not_before {
            return None;
        }
        let log = Arc::clone(self.log.as_ref()?);
        let size = self.line.front()?.max_group.max(1);
        let mut ids = Vec::new();
        while ids.len() < size {
            match self.line.front() {
                Some(s) if s.max_group >= size => {
                    self.group.insert(s.id, s.max_group);
                    ids.push(s.id);
                    self.line.pop_front();
                }
                _ => break,
            }
        }
        let probe = Arc::new(Probe {
            log,
            waiting: self.line.len(),
            left: AtomicUsize::new(ids.len()),
            ids: ids.clone(),
            marked: OnceCell::new(),
        });
        Some((ids, probe))
    }

    /// The message task of `id` ended with `next`. A member whose probe did not run to
    /// its end (`Next::Unprobed`: cut at a stop, or the mark could not be written) stays
    /// a suspect, first in line.
    pub(crate) fn ended(&mut self, id: QueueId, next: &Next) {
        let Some(max_group) = self.group.remove(&id) else {
            return;
        };
        if matches!(next, Next::Unprobed) {
            self.line.push_front(Suspect { id, max_group });
        } else {
            self.members.remove(&id);
        }
    }

    /// Every suspect (left in `active/` by a clean stop, for the next start).
    pub(crate) fn all(&self) -> HashSet<QueueId> {
        self.members.clone()
    }
}

/// What [`recover`] hands the scheduler.
pub(crate) struct Recovered {
    pub suspects: Suspects,
    /// This run's journal, for the clean stop.
    pub log: Option<Arc<ProbeLog>>,
}

/// At start, before the scheduler runs (module header): judges the previous run's death,
/// counts what the evidence attributes, and prepares this run's journal, suspect line and
/// last gasp.
pub(crate) async fn recover(ctx: &Context, active: Vec<ActiveMessage>) -> Recovered {
    let spool = ctx.spool.clone();
    let read = tokio::task::spawn_blocking(move || spool.crash_evidence()).await;
    let evidence = match read.unwrap_or_else(|e| Err(SpoolError::BlockingTask(e.to_string()))) {
        Ok(e) => e,
        Err(e) => CrashEvidence {
            journal: JournalRead::Unusable(format!("cannot be read: {e}")),
            gasps: Vec::new(),
        },
    };
    let ids: BTreeSet<QueueId> = active.iter().map(|m| m.id).collect();
    let verdict = attribute(&evidence, &ids);
    let mut crashes: HashMap<QueueId, u32> = active.iter().map(|m| (m.id, m.crashes)).collect();
    let recipients: HashMap<QueueId, usize> = active.iter().map(|m| (m.id, m.recipients)).collect();
    let mut gone = HashSet::new();
    if let (Some(run), Some(cause)) = (verdict.run, verdict.cause) {
        for id in &verdict.culprits {
            let n = recipients.get(id).copied().unwrap_or(0);
            match count_crash(ctx, *id, n, run, cause).await {
                Counted::Crashes(c) => {
                    crashes.insert(*id, c);
                }
                Counted::Gone => {
                    gone.insert(*id);
                }
            }
        }
    }
    let cfg = ctx.runtime.load().queue.clone();
    let line = order_line(&verdict, &crashes, &gone, cfg.probe_group_size);
    let delay = Duration::from_secs(cfg.probe_delay_secs);
    if verdict.crashed {
        let counted: Vec<String> = verdict.culprits.iter().map(ToString::to_string).collect();
        ctx.events.emit(
            &catalog::QUEUE_AFTER_CRASH,
            fields!(
                "evidence" => verdict.evidence(),
                "signal" => verdict.signal.map(|s| s.to_string()).unwrap_or_default(),
                "counted" => counted.join(","),
                "implicated" => verdict.implicated.len(),
                "in_process" => verdict.in_process.len(),
                "suspects" => line.len(),
                "probe_in_secs" => delay.as_secs(),
                "note" => verdict.note.clone().unwrap_or_default(),
            ),
        );
    }
    if !verdict.culprits.is_empty() {
        // The same message may kill the process again in a moment: get the crash events
        // onto disk first.
        let events = ctx.events.clone();
        let _ = tokio::task::spawn_blocking(move || events.flush(Duration::from_secs(2))).await;
    }
    // This run: its number, its journal (the line, before any processing), its last gasp.
    let run: u64 = rand::random();
    let started = unix_micros();
    let spool = ctx.spool.clone();
    let header = line.clone();
    let made =
        tokio::task::spawn_blocking(move || spool.start_probe_journal(run, started, &header)).await;
    let log = match made.unwrap_or_else(|e| Err(SpoolError::BlockingTask(e.to_string()))) {
        Ok(journal) => Some(Arc::new(ProbeLog {
            journal,
            broken: AtomicBool::new(false),
        })),
        Err(e) => {
            ctx.events.emit(
                &catalog::QUEUE_PROBE_UNAVAILABLE,
                fields!("file" => "probe", "error" => e),
            );
            None
        }
    };
    let spool = ctx.spool.clone();
    let gasp = tokio::task::spawn_blocking(move || spool.open_last_gasp()).await;
    let armed = match gasp.unwrap_or_else(|e| Err(SpoolError::BlockingTask(e.to_string()))) {
        Ok(file) => crate::last_gasp::arm(file, run).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = armed {
        ctx.events.emit(
            &catalog::QUEUE_PROBE_UNAVAILABLE,
            fields!("file" => "last-gasp", "error" => e),
        );
    }
    Recovered {
        suspects: Suspects::new(line, log.clone(), Instant::now() + delay),
        log,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_spool::crash::{JournalState, LastGasp};

    fn ids(n: usize) -> Vec<QueueId> {
        let mut v: Vec<QueueId> = (0..n).map(|_| QueueId::generate()).collect();
        v.sort();
        v
    }

    fn suspects(ids: &[QueueId], max_group: usize) -> Vec<Suspect> {
        ids.iter().map(|&id| Suspect { id, max_group }).collect()
    }

    fn journal(run: u64, line: &[QueueId]) -> JournalState {
        JournalState {
            run,
            started_micros: 0,
            line: suspects(line, 64),
            done: BTreeSet::new(),
            probing: BTreeSet::new(),
            group_size: 0,
            stopped: false,
        }
    }

    fn evidence(j: JournalState, gasps: Vec<LastGasp>) -> CrashEvidence {
        CrashEvidence {
            journal: JournalRead::Read(j),
            gasps,
        }
    }

    fn set(v: &[QueueId]) -> BTreeSet<QueueId> {
        v.iter().copied().collect()
    }

    #[test]
    fn messages_in_process_at_a_kill_are_suspects_not_culprits() {
        let a = ids(5);
        let v = attribute(&evidence(journal(1, &[]), vec![]), &set(&a));
        assert!(v.crashed);
        assert!(v.culprits.is_empty(), "{v:?}");
        assert_eq!(v.in_process, a);
        assert_eq!(v.evidence(), "none");
    }

    #[test]
    fn a_lone_probe_is_the_culprit_and_waiting_suspects_were_not_in_process() {
        let a = ids(6);
        let mut j = journal(1, &a[..4]);
        j.done.insert(a[0]);
        j.probing = [a[1]].into();
        j.group_size = 1;
        // a[0] was probed, then taken again by the normal flow: in process, not waiting.
        let v = attribute(&evidence(j, vec![]), &set(&a));
        assert_eq!(v.culprits, vec![a[1]]);
        assert_eq!(v.cause, Some(Cause::Probe));
        assert_eq!(v.waiting, suspects(&[a[2], a[3]], 64));
        assert_eq!(v.in_process, vec![a[0], a[1], a[4], a[5]]);
    }

    #[test]
    fn a_group_in_probe_is_implicated_not_counted_even_down_to_one_member() {
        let a = ids(5);
        let mut j = journal(1, &a);
        j.probing = [a[0], a[1], a[2]].into();
        j.group_size = 4;
        let v = attribute(&evidence(j.clone(), vec![]), &set(&a));
        assert!(v.culprits.is_empty(), "{v:?}");
        assert_eq!(v.implicated, vec![a[0], a[1], a[2]]);
        assert_eq!(v.evidence(), "probe_group");
        let line = order_line(&v, &HashMap::new(), &HashSet::new(), 64);
        let groups: Vec<usize> = line.iter().map(|s| s.max_group).collect();
        assert_eq!(groups, vec![2, 2, 2, 64, 64], "halves first: {line:?}");
        // The last unfinished member of a group of several is not probed alone yet.
        j.probing = [a[0]].into();
        let v = attribute(&evidence(j, vec![]), &set(&a));
        assert!(v.culprits.is_empty());
        assert_eq!(v.implicated, vec![a[0]]);
        let line = order_line(&v, &HashMap::new(), &HashSet::new(), 64);
        assert_eq!(
            line[0],
            Suspect {
                id: a[0],
                max_group: 1
            }
        );
    }

    #[test]
    fn a_probe_whose_message_left_active_counts_nothing() {
        let a = ids(3);
        let mut j = journal(1, &a);
        j.probing = [a[0]].into();
        j.group_size = 1;
        let active = set(&a[1..]);
        let v = attribute(&evidence(j, vec![]), &active);
        assert!(v.culprits.is_empty(), "{v:?}");
    }

    #[test]
    fn alone_in_process_is_the_culprit_waiting_suspects_aside() {
        let a = ids(4);
        let v = attribute(&evidence(journal(1, &a[..3]), vec![]), &set(&a));
        assert_eq!(
            (v.culprits.clone(), v.cause),
            (vec![a[3]], Some(Cause::Alone))
        );
    }

    #[test]
    fn a_last_gasp_of_this_run_wins_over_the_probe_and_other_runs_count_nothing() {
        let a = ids(4);
        let mut j = journal(7, &a[..2]);
        j.probing = [a[0]].into();
        j.group_size = 1;
        let named = |run, id| LastGasp {
            run,
            signal: 6,
            id: Some(id),
        };
        let v = attribute(&evidence(j.clone(), vec![named(7, a[3])]), &set(&a));
        assert_eq!(
            (v.culprits.clone(), v.cause),
            (vec![a[3]], Some(Cause::LastGasp))
        );
        assert_eq!(v.signal, Some(6));
        // A line of an earlier run (the file was not emptied before a crash) is ignored.
        let v = attribute(&evidence(j.clone(), vec![named(6, a[3])]), &set(&a));
        assert_eq!(
            (v.culprits.clone(), v.cause),
            (vec![a[0]], Some(Cause::Probe))
        );
        // A last gasp naming no message leaves the probe mark to decide.
        let none = LastGasp {
            run: 7,
            signal: 11,
            id: None,
        };
        let v = attribute(&evidence(j, vec![none]), &set(&a));
        assert_eq!(
            (v.culprits.clone(), v.cause),
            (vec![a[0]], Some(Cause::Probe))
        );
        assert_eq!(v.signal, Some(11));
    }

    #[test]
    fn a_clean_stop_or_a_missing_journal_counts_nothing() {
        let a = ids(2);
        let mut j = journal(1, &a);
        j.probing = [a[0]].into();
        j.group_size = 1;
        j.stopped = true;
        let v = attribute(&evidence(j, vec![]), &set(&a));
        assert!(!v.crashed && v.culprits.is_empty());
        for journal in [JournalRead::Missing, JournalRead::Unusable("bad".into())] {
            let one = ids(1);
            let v = attribute(
                &CrashEvidence {
                    journal,
                    gasps: vec![],
                },
                &set(&one),
            );
            assert!(v.crashed && v.culprits.is_empty(), "{v:?}");
            assert!(v.note.is_some());
            assert_eq!(v.in_process, one);
        }
    }

    #[test]
    fn the_line_puts_fewest_crashes_first_and_the_culprit_last_among_equals() {
        let a = ids(5);
        let mut j = journal(1, &[a[4], a[0]]);
        j.probing = [a[0]].into();
        j.group_size = 1;
        let v = attribute(&evidence(j, vec![]), &set(&a));
        assert_eq!(v.culprits, vec![a[0]]);
        let mut crashes = HashMap::new();
        crashes.insert(a[0], 1);
        crashes.insert(a[2], 1); // counted at an earlier death
        let line = order_line(&v, &crashes, &HashSet::new(), 64);
        let order: Vec<QueueId> = line.iter().map(|s| s.id).collect();
        assert_eq!(order, vec![a[4], a[1], a[3], a[2], a[0]]);
        assert_eq!(line[4].max_group, 1, "a counted message is probed alone");
        let gone: HashSet<QueueId> = [a[0]].into();
        assert!(
            order_line(&v, &crashes, &gone, 64)
                .iter()
                .all(|s| s.id != a[0])
        );
        // A smaller configured group applies to every suspect.
        assert!(
            order_line(&v, &crashes, &gone, 2)
                .iter()
                .all(|s| s.max_group <= 2)
        );
    }

    fn log(spool: &tern_spool::Spool, line: &[Suspect]) -> Arc<ProbeLog> {
        Arc::new(ProbeLog {
            journal: spool.start_probe_journal(1, 0, line).unwrap(),
            broken: AtomicBool::new(false),
        })
    }

    #[test]
    fn groups_start_one_at_a_time_after_the_delay_within_every_members_limit() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) =
            tern_spool::Spool::open(&dir.path().join("spool"), tern_events::EventLog::discard())
                .unwrap();
        let a = ids(6);
        let mut line = suspects(&a[..2], 2);
        line.extend(suspects(&a[2..5], 3));
        line.push(Suspect {
            id: a[5],
            max_group: 1,
        });
        let log = log(&spool, &line);
        let now = Instant::now();
        let later = now + Duration::from_secs(30);
        let mut s = Suspects::new(line, Some(Arc::clone(&log)), later);
        assert_eq!(s.next_due(), Some(later));
        assert!(s.start_next(now).is_none(), "not before the delay");
        let (first, probe) = s.start_next(later).unwrap();
        assert_eq!(first, a[..2].to_vec());
        assert_eq!(probe.waiting, 4);
        assert!(s.start_next(later).is_none(), "one group at a time");
        assert_eq!(s.next_due(), None);
        s.ended(a[0], &Next::Done);
        assert!(s.start_next(later).is_none(), "until every member ended");
        s.ended(a[1], &Next::Done);
        let (second, _) = s.start_next(later).unwrap();
        assert_eq!(second, a[2..5].to_vec());
        for id in &second {
            s.ended(*id, &Next::Done);
        }
        let (third, _) = s.start_next(later).unwrap();
        assert_eq!(third, vec![a[5]], "alone");
        s.ended(a[5], &Next::Unprobed);
        assert!(s.contains(a[5]), "an unfinished probe leaves a suspect");
        log.broken.store(true, Ordering::SeqCst);
        assert!(
            s.start_next(later).is_none(),
            "no probe without a working journal"
        );
        assert_eq!(s.all(), [a[5]].into());
    }

    #[test]
    fn without_a_journal_nothing_is_probed() {
        let a = ids(3);
        let now = Instant::now();
        let mut s = Suspects::new(suspects(&a, 64), None, now);
        assert!(s.start_next(now).is_none());
        assert_eq!(s.next_due(), None);
        assert!(s.contains(a[0]));
    }
}
