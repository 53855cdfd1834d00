//! Messages waiting for their next attempt: by due time, with the state directory each
//! one waits in and, after a spool error, the delivery record its last attempt could not
//! write.
//!
//! Invariants: an id is in the set at most once per `insert` by the scheduler (which
//! keeps an id in one of backlog, retries and running); `pop_due` hands out the state the
//! message is in (`deferred/` unless a spool error left it elsewhere), and the unsaved
//! record is given to exactly one task (`take_unsaved` when the task starts), since it is
//! newer than the disk and must not be lost while the message waits.
//!
//! Each waiting message also names the next hops its deferred recipients wait for, so
//! the scheduler can say how many messages wait for a destination and why (`GET
//! /destinations`, with the last deferral text per next hop), and retry a destination now
//! by making its messages due at once.
//!
//! Memory (issue 16 §2: a backlog of millions of deferred messages): nothing of a
//! message's envelope is kept, only its id, its due time (nanoseconds after `base`, a
//! `u64`) and its next hops as indexes into a table of the next hops in use (one inline,
//! more in a boxed slice); per next hop, a count and its last deferral text. That is two
//! entries per message (the map by id, the ordered set by due time), about 130 bytes with
//! the maps' slack. Making a next hop due walks every waiting message (an
//! administrator's action, milliseconds for a million). A next hop's slot is freed when
//! no message waits for it, so the table is bounded by the destinations waiting.
//!
//! After a restart the backlog is scheduled before it is read (`Spool::load_deferred`):
//! a message first waits here *unread*, with the due time its file's modification time
//! gave and no next hops known ([`Retries::insert_unread`]); when its file has been read,
//! [`Retries::learn`] gives it its next hops and the record's own due time, unless it
//! already ran or was deferred again meanwhile (then it is no longer unread and what
//! the queue knows is newer). An administrator's retry of a next hop while messages
//! are unread is remembered ([`Retries::make_due`]) and applied to each one that turns
//! out to wait for it, until the reading ends ([`Retries::end_reading`]).
//!
//! Owned by the scheduler task; no locks.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use tern_route::NextHop;
use tern_spool::{DeliveryRecord, QueueId, QueueState};

/// No next hop in `Waiting::first`.
const NO_HOP: u32 = u32::MAX;

/// In `Waiting::first`: the message's file is not read yet, its next hops are unknown.
const UNREAD: u32 = u32::MAX - 1;

/// Most retries of next hops remembered while messages are unread.
const MAX_ASKED: usize = 1024;

/// One waiting message.
struct Waiting {
    /// Due time, nanoseconds after `Retries::base`.
    due: u64,
    /// Its first next hop (index into `hops`), `NO_HOP`, or `UNREAD`.
    first: u32,
    /// Its other next hops, if any.
    more: Option<Box<[u32]>>,
}

impl Waiting {
    fn hop_indexes(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::once(self.first)
            .filter(|h| *h != NO_HOP && *h != UNREAD)
            .chain(self.more.iter().flat_map(|m| m.iter().copied()))
    }
}

/// A next hop messages wait for.
struct HopSlot {
    hop: NextHop,
    /// Messages waiting for it.
    count: usize,
    /// The deferral text of the message that last joined.
    last_error: String,
}

pub(crate) struct Retries {
    /// The origin of the due times.
    base: Instant,
    by_due: BTreeSet<(u64, QueueId)>,
    waiting: HashMap<QueueId, Waiting>,
    /// The next hops in use, by index; `None`: a free slot.
    hops: Vec<Option<HopSlot>>,
    hop_index: HashMap<NextHop, u32>,
    free_hops: Vec<u32>,
    /// Where a message waits when it is not `deferred/`.
    from: HashMap<QueueId, QueueState>,
    /// Records newer than the disk (writing them failed). Bounded by the retries.
    unsaved: HashMap<QueueId, Box<DeliveryRecord>>,
    /// Messages waiting unread (module header).
    unread: usize,
    /// Names of the next hops an administrator retried while messages were unread;
    /// bounded by the next hops named in those actions (at most [`MAX_ASKED`]),
    /// emptied when the reading ends.
    retry_asked: Vec<String>,
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            base: Instant::now(),
            by_due: BTreeSet::new(),
            waiting: HashMap::new(),
            hops: Vec::new(),
            hop_index: HashMap::new(),
            free_hops: Vec::new(),
            from: HashMap::new(),
            unsaved: HashMap::new(),
            unread: 0,
            retry_asked: Vec::new(),
        }
    }
}

impl Retries {
    fn offset(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    fn instant(&self, offset: u64) -> Instant {
        self.base + Duration::from_nanos(offset)
    }

    /// The index of `hop`, taking a slot for it if it has none; counts one more message.
    fn join_hop(&mut self, hop: NextHop, error: String) -> u32 {
        if let Some(&i) = self.hop_index.get(&hop)
            && let Some(Some(slot)) = self.hops.get_mut(i as usize)
        {
            slot.count += 1;
            slot.last_error = error;
            return i;
        }
        let slot = HopSlot {
            hop: hop.clone(),
            count: 1,
            last_error: error,
        };
        let i = match self.free_hops.pop() {
            Some(i) => {
                if let Some(s) = self.hops.get_mut(i as usize) {
                    *s = Some(slot);
                }
                i
            }
            None => {
                self.hops.push(Some(slot));
                u32::try_from(self.hops.len() - 1).unwrap_or(NO_HOP - 1)
            }
        };
        self.hop_index.insert(hop, i);
        i
    }

    /// One message less waits for hop `i`; its slot is freed at zero.
    fn leave_hop(&mut self, i: u32) {
        let Some(entry) = self.hops.get_mut(i as usize) else {
            return;
        };
        let empty = match entry {
            Some(slot) => {
                slot.count = slot.count.saturating_sub(1);
                slot.count == 0
            }
            None => false,
        };
        if empty && let Some(slot) = entry.take() {
            self.hop_index.remove(&slot.hop);
            self.free_hops.push(i);
        }
    }

    /// Message `id`, now in `state`, is due at `due`; `record` is newer than its record on
    /// disk, if set; `hops` are the next hops its deferred recipients wait for, with the
    /// deferral text of each (empty when unknown).
    pub(crate) fn insert(
        &mut self,
        due: Instant,
        id: QueueId,
        state: QueueState,
        record: Option<Box<DeliveryRecord>>,
        hops: Vec<(NextHop, String)>,
    ) {
        self.forget(id);
        let due = self.offset(due);
        self.by_due.insert((due, id));
        let mut indexes: Vec<u32> = Vec::with_capacity(hops.len());
        for (hop, error) in hops {
            let i = self.join_hop(hop, error);
            if !indexes.contains(&i) {
                indexes.push(i);
            } else {
                self.leave_hop(i);
            }
        }
        let first = indexes.first().copied().unwrap_or(NO_HOP);
        let more = (indexes.len() > 1).then(|| indexes.get(1..).unwrap_or_default().into());
        self.waiting.insert(id, Waiting { due, first, more });
        if state == QueueState::Deferred {
            self.from.remove(&id);
        } else {
            self.from.insert(id, state);
        }
        if let Some(r) = record {
            self.unsaved.insert(id, r);
        }
    }

    /// Message `id`, in `deferred/` and not read yet, is due at `due` (module header).
    pub(crate) fn insert_unread(&mut self, due: Instant, id: QueueId) {
        self.forget(id);
        let due = self.offset(due);
        self.by_due.insert((due, id));
        self.waiting.insert(
            id,
            Waiting {
                due,
                first: UNREAD,
                more: None,
            },
        );
        self.unread += 1;
        self.from.remove(&id);
    }

    /// The file of `id` was read: if it still waits unread, it now waits for `hops`,
    /// due at `due` (the record's next attempt: the truth), or at `now` if an
    /// administrator retried one of those next hops meanwhile, and `None` is returned.
    /// When `id` does not wait unread (it ran, or waits with what the queue learnt
    /// since), nothing changes and `hops` are given back.
    pub(crate) fn learn(
        &mut self,
        id: QueueId,
        due: Instant,
        now: Instant,
        hops: Vec<(NextHop, String)>,
    ) -> Option<Vec<(NextHop, String)>> {
        if self.waiting.get(&id).is_none_or(|w| w.first != UNREAD) {
            return Some(hops);
        }
        let asked = !self.retry_asked.is_empty()
            && hops.iter().any(|(h, _)| {
                let name = h.to_string();
                self.retry_asked.contains(&name)
            });
        self.insert(
            if asked { now } else { due },
            id,
            QueueState::Deferred,
            None,
            hops,
        );
        None
    }

    /// The reading of the backlog ended: a message still unread (its file was
    /// quarantined or left before it was read) waits for no known next hop, and
    /// retries asked for meanwhile are forgotten. Walks the waiting messages once.
    pub(crate) fn end_reading(&mut self) {
        self.retry_asked.clear();
        if self.unread == 0 {
            return;
        }
        for w in self.waiting.values_mut() {
            if w.first == UNREAD {
                w.first = NO_HOP;
            }
        }
        self.unread = 0;
    }

    /// Messages waiting unread.
    pub(crate) fn unread(&self) -> usize {
        self.unread
    }

    /// An administrator retries the next hop named `name` while messages wait unread:
    /// each of them found waiting for it when its file is read is due at once
    /// (`learn`). `false` when no message waits unread, or too many next hops were
    /// asked for already.
    pub(crate) fn ask_retry(&mut self, name: &str) -> bool {
        if self.unread == 0 {
            return false;
        }
        if self.retry_asked.iter().any(|n| n == name) {
            return true;
        }
        if self.retry_asked.len() >= MAX_ASKED {
            return false;
        }
        self.retry_asked.push(name.to_owned());
        true
    }

    /// Whether `id` waits here.
    pub(crate) fn contains(&self, id: QueueId) -> bool {
        self.waiting.contains_key(&id)
    }

    /// When the next retry is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.by_due.first().map(|(t, _)| self.instant(*t))
    }

    /// The next message due at `now` or earlier, with the state it waits in.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(QueueId, QueueState)> {
        let &(due, id) = self.by_due.first()?;
        if self.instant(due) > now {
            return None;
        }
        self.forget(id);
        let state = self.from.remove(&id).unwrap_or(QueueState::Deferred);
        Some((id, state))
    }

    /// Takes `id` out of the due order and the next hops' counts (not `from`/`unsaved`).
    fn forget(&mut self, id: QueueId) {
        let Some(w) = self.waiting.remove(&id) else {
            return;
        };
        if w.first == UNREAD {
            self.unread = self.unread.saturating_sub(1);
        }
        self.by_due.remove(&(w.due, id));
        for i in w.hop_indexes() {
            self.leave_hop(i);
        }
    }

    /// Makes every message waiting for `hop` due at `now` (an administrator's retry);
    /// returns how many. Walks every waiting message. While messages wait unread, the
    /// retry also applies to each of them that turns out to wait for `hop` (`learn`).
    pub(crate) fn make_due(&mut self, hop: &NextHop, now: Instant) -> usize {
        self.ask_retry(&hop.to_string());
        let Some(&index) = self.hop_index.get(hop) else {
            return 0;
        };
        let now = self.offset(now);
        let mut n = 0;
        for (id, w) in &mut self.waiting {
            if !w.hop_indexes().any(|i| i == index) {
                continue;
            }
            n += 1;
            if w.due > now {
                self.by_due.remove(&(w.due, *id));
                w.due = now;
                self.by_due.insert((now, *id));
            }
        }
        n
    }

    /// Every next hop that messages wait for: how many, and the last deferral text.
    pub(crate) fn hops(&self) -> impl Iterator<Item = (&NextHop, usize, &str)> {
        self.hops
            .iter()
            .flatten()
            .map(|s| (&s.hop, s.count, s.last_error.as_str()))
    }

    /// Whether messages wait for `hop`.
    #[cfg(test)]
    pub(crate) fn waits_for(&self, hop: &NextHop) -> bool {
        self.hop_index.contains_key(hop)
    }

    /// Takes message `id` out (an administrator acts on it): when it was due, where it
    /// waits, its unsaved record and the next hops it waits for (with their deferral
    /// texts), to put it back as it was if the action does not apply. `None` when it is
    /// not waiting here.
    #[allow(clippy::type_complexity)]
    pub(crate) fn remove(
        &mut self,
        id: QueueId,
    ) -> Option<(
        Instant,
        QueueState,
        Option<Box<DeliveryRecord>>,
        Vec<(NextHop, String)>,
    )> {
        let w = self.waiting.get(&id)?;
        let due = self.instant(w.due);
        let hops = w
            .hop_indexes()
            .filter_map(|i| self.hops.get(i as usize).and_then(Option::as_ref))
            .map(|s| (s.hop.clone(), s.last_error.clone()))
            .collect();
        self.forget(id);
        let state = self.from.remove(&id).unwrap_or(QueueState::Deferred);
        Some((due, state, self.unsaved.remove(&id), hops))
    }

    /// The record the message's last attempt could not write, for the task that runs it
    /// now (given out once).
    pub(crate) fn take_unsaved(&mut self, id: QueueId) -> Option<Box<DeliveryRecord>> {
        self.unsaved.remove(&id)
    }

    /// The waiting messages grouped by the next hops they wait for, each group with its
    /// count per age bucket (`bucket_of(id)`, clamped below `buckets`), and the unread
    /// ones' counts per bucket. Messages that wait for no known next hop are left out.
    /// One walk over the waiting messages; the answer is bounded by the distinct sets
    /// of next hops.
    #[allow(clippy::type_complexity)]
    pub(crate) fn shape(
        &self,
        bucket_of: &dyn Fn(QueueId) -> usize,
        buckets: usize,
    ) -> (Vec<(Vec<NextHop>, Vec<u64>)>, Vec<u64>) {
        let mut groups: HashMap<(u32, Option<&[u32]>), Vec<u64>> = HashMap::new();
        let mut unread = vec![0; buckets];
        for (id, w) in &self.waiting {
            if w.first == NO_HOP {
                continue;
            }
            let b = bucket_of(*id).min(buckets.saturating_sub(1));
            if w.first == UNREAD {
                if let Some(c) = unread.get_mut(b) {
                    *c += 1;
                }
                continue;
            }
            let counts = groups
                .entry((w.first, w.more.as_deref()))
                .or_insert_with(|| vec![0; buckets]);
            if let Some(c) = counts.get_mut(b) {
                *c += 1;
            }
        }
        let groups = groups
            .into_iter()
            .map(|((first, more), counts)| {
                let hops = std::iter::once(first)
                    .chain(more.into_iter().flatten().copied())
                    .filter_map(|i| self.hops.get(i as usize).and_then(Option::as_ref))
                    .map(|s| s.hop.clone())
                    .collect();
                (hops, counts)
            })
            .collect();
        (groups, unread)
    }

    /// Messages waiting.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tern_spool::RecipientStatus;

    #[test]
    fn a_removed_message_is_no_longer_due_and_gives_back_its_record() {
        let mut r = Retries::default();
        let now = Instant::now();
        let (a, b) = (QueueId::generate(), QueueId::generate());
        let rec = DeliveryRecord::new(a, 1);
        let hop = NextHop::Relay {
            name: "smtp:[192.0.2.1]:25".into(),
        };
        r.insert(
            now,
            a,
            QueueState::Active,
            Some(Box::new(rec.clone())),
            vec![(hop.clone(), "451 busy".into())],
        );
        r.insert(now, b, QueueState::Deferred, None, Vec::new());
        let (due, state, unsaved, hops) = r.remove(a).unwrap();
        assert_eq!((due, state), (now, QueueState::Active));
        assert_eq!(unsaved.as_deref(), Some(&rec));
        assert_eq!(hops, vec![(hop.clone(), "451 busy".to_owned())]);
        assert!(
            !r.waits_for(&hop),
            "a removed message no longer counts for its hop"
        );
        assert!(r.remove(a).is_none());
        assert_eq!(r.pop_due(now), Some((b, QueueState::Deferred)));
        assert_eq!(r.pop_due(now), None);
        // Inserted again with a new time: only the new entry counts.
        r.insert(
            now + Duration::from_secs(5),
            b,
            QueueState::Deferred,
            None,
            Vec::new(),
        );
        r.insert(now, b, QueueState::Deferred, None, Vec::new());
        assert_eq!(r.pop_due(now), Some((b, QueueState::Deferred)));
        assert_eq!(r.next_due(), None);
    }

    #[test]
    fn contains_answers_for_a_waiting_message_only() {
        // The scheduler keeps no second set of the ids waiting here (`is_queued` asks
        // this), so it must be exact through insert, pop and remove.
        let mut r = Retries::default();
        let now = Instant::now();
        let (a, b) = (QueueId::generate(), QueueId::generate());
        assert!(!r.contains(a));
        r.insert(now, a, QueueState::Deferred, None, Vec::new());
        r.insert(
            now + Duration::from_secs(60),
            b,
            QueueState::Deferred,
            None,
            Vec::new(),
        );
        assert!(r.contains(a) && r.contains(b));
        assert_eq!(r.pop_due(now), Some((a, QueueState::Deferred)));
        assert!(!r.contains(a) && r.contains(b));
        assert!(r.remove(b).is_some());
        assert!(!r.contains(b));
        r.insert(now, a, QueueState::Deferred, None, Vec::new());
        r.insert(now, a, QueueState::Deferred, None, Vec::new());
        assert!(r.contains(a));
        assert_eq!(r.pop_due(now), Some((a, QueueState::Deferred)));
        assert!(!r.contains(a));
    }

    #[test]
    fn an_unread_message_learns_its_hops_and_the_records_due_time_once() {
        let mut r = Retries::default();
        let now = Instant::now();
        let hop = NextHop::Relay {
            name: "smtp:[192.0.2.1]:25".into(),
        };
        let (a, b, c) = (
            QueueId::generate(),
            QueueId::generate(),
            QueueId::generate(),
        );
        // Scheduled from the file times: `a` early (a time a crash lost), `b` later.
        r.insert_unread(now, a);
        r.insert_unread(now + Duration::from_secs(60), b);
        r.insert_unread(now + Duration::from_secs(60), c);
        assert_eq!(r.unread(), 3);
        assert!(
            !r.waits_for(&hop),
            "no next hop is known before the files are read"
        );
        let bucket = |_: QueueId| 0;
        let (groups, unread) = r.shape(&bucket, 1);
        assert!(groups.is_empty());
        assert_eq!(unread, vec![3]);
        // `a`'s record says an hour: the record wins.
        let later = now + Duration::from_secs(3600);
        assert!(
            r.learn(a, later, now, vec![(hop.clone(), "451 busy".into())])
                .is_none()
        );
        assert_eq!(r.unread(), 2);
        assert!(r.waits_for(&hop));
        assert_eq!(r.pop_due(now), None, "a is due in an hour now");
        // `b` ran and was deferred again meanwhile: what the queue knows is newer.
        assert_eq!(
            r.pop_due(now + Duration::from_secs(60)),
            Some((b, QueueState::Deferred))
        );
        r.insert(later, b, QueueState::Deferred, None, Vec::new());
        let back = r.learn(b, now, now, vec![(hop.clone(), String::new())]);
        assert_eq!(
            back.map(|h| h.len()),
            Some(1),
            "nothing changes, hops given back"
        );
        assert_eq!(r.remove(b).map(|x| x.0), Some(later));
        // `c` is never read (quarantined): at the end it waits for no known next hop.
        r.end_reading();
        assert_eq!(r.unread(), 0);
        let (groups, unread) = r.shape(&bucket, 1);
        assert_eq!(unread, vec![0]);
        assert_eq!(groups.len(), 1, "only a's next hop: c is left out");
        assert_eq!(
            r.pop_due(now + Duration::from_secs(60)),
            Some((c, QueueState::Deferred))
        );
    }

    #[test]
    fn a_destination_retried_while_unread_reaches_each_message_as_it_is_read() {
        let mut r = Retries::default();
        let now = Instant::now();
        let hop = NextHop::Relay {
            name: "smtp:[192.0.2.1]:25".into(),
        };
        let other = NextHop::Relay {
            name: "smtp:[192.0.2.2]:25".into(),
        };
        let later = now + Duration::from_secs(3600);
        let (a, b, c) = (
            QueueId::generate(),
            QueueId::generate(),
            QueueId::generate(),
        );
        for id in [a, b, c] {
            r.insert_unread(later, id);
        }
        // The administrator retries `hop` before any file is read: nothing known waits
        // for it yet, but the request is kept.
        assert_eq!(r.make_due(&hop, now), 0);
        assert!(
            r.learn(a, later, now, vec![(hop.clone(), String::new())])
                .is_none()
        );
        assert!(
            r.learn(b, later, now, vec![(other.clone(), String::new())])
                .is_none()
        );
        assert_eq!(
            r.pop_due(now),
            Some((a, QueueState::Deferred)),
            "a waits for hop"
        );
        assert_eq!(r.pop_due(now), None, "b waits for another next hop");
        // Once the reading ended, the request is forgotten.
        r.end_reading();
        r.insert(
            later,
            a,
            QueueState::Deferred,
            None,
            vec![(hop.clone(), String::new())],
        );
        assert!(
            r.learn(c, later, now, vec![(hop.clone(), String::new())])
                .is_some()
        );
        assert_eq!(r.pop_due(now), None);
    }

    #[test]
    fn a_deferral_retries_from_deferred_without_a_record() {
        let mut r = Retries::default();
        let now = Instant::now();
        let id = QueueId::generate();
        r.insert(now, id, QueueState::Deferred, None, Vec::new());
        assert_eq!(r.next_due(), Some(now));
        assert_eq!(r.pop_due(now), Some((id, QueueState::Deferred)));
        assert_eq!(r.pop_due(now), None);
        assert!(r.take_unsaved(id).is_none());
    }

    #[test]
    fn a_retry_after_a_spool_error_starts_where_the_message_is_with_its_unsaved_record() {
        let mut r = Retries::default();
        let now = Instant::now();
        let (stuck, later) = (QueueId::generate(), QueueId::generate());
        let mut record = DeliveryRecord::new(stuck, 2);
        record.recipients[0].status = RecipientStatus::Delivered {
            reply: "250 ok".into(),
        };
        r.insert(
            now,
            stuck,
            QueueState::Active,
            Some(Box::new(record.clone())),
            Vec::new(),
        );
        r.insert(
            now + Duration::from_secs(60),
            later,
            QueueState::Deferred,
            None,
            Vec::new(),
        );
        assert_eq!(r.pop_due(now), Some((stuck, QueueState::Active)));
        assert_eq!(r.pop_due(now), None, "the other one is not due yet");
        assert_eq!(r.take_unsaved(stuck).as_deref(), Some(&record));
        assert!(r.take_unsaved(stuck).is_none(), "given out once");
        // Deferred normally the next time: no stale state is kept.
        r.insert(now, stuck, QueueState::Deferred, None, Vec::new());
        assert_eq!(r.pop_due(now), Some((stuck, QueueState::Deferred)));
    }

    #[test]
    fn messages_are_counted_per_next_hop_and_a_hop_can_be_made_due() {
        let mut r = Retries::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(600);
        let a = NextHop::Mx {
            domain: "a.test".into(),
        };
        let b = NextHop::Relay {
            name: "smtp:[192.0.2.1]:25".into(),
        };
        let (m1, m2, m3) = (
            QueueId::generate(),
            QueueId::generate(),
            QueueId::generate(),
        );
        r.insert(
            later,
            m1,
            QueueState::Deferred,
            None,
            vec![(a.clone(), "451 one".into())],
        );
        r.insert(
            later,
            m2,
            QueueState::Deferred,
            None,
            vec![(a.clone(), "451 two".into()), (b.clone(), "421 b".into())],
        );
        r.insert(
            later,
            m3,
            QueueState::Deferred,
            None,
            vec![(b.clone(), "421 b".into())],
        );
        let mut seen: Vec<(String, usize, String)> = r
            .hops()
            .map(|(h, n, e)| (h.to_string(), n, e.to_owned()))
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("mx:a.test".into(), 2, "451 two".into()),
                ("smtp:[192.0.2.1]:25".into(), 2, "421 b".into())
            ]
        );
        assert_eq!(r.pop_due(now), None, "nothing due yet");
        assert_eq!(r.make_due(&a, now), 2);
        let mut due = vec![r.pop_due(now).unwrap().0, r.pop_due(now).unwrap().0];
        due.sort();
        let mut want = vec![m1, m2];
        want.sort();
        assert_eq!(due, want);
        assert_eq!(r.pop_due(now), None, "m3 waits for b only");
        assert!(!r.waits_for(&a), "a's list emptied as its messages left");
        assert!(r.waits_for(&b));
        assert_eq!(r.hops().count(), 1);
        assert_eq!(r.next_due(), Some(later));
        // Inserted again (the next attempt deferred it): counted once.
        r.insert(
            later,
            m3,
            QueueState::Deferred,
            None,
            vec![(b.clone(), "x".into())],
        );
        assert_eq!(r.hops().next().map(|(_, n, _)| n), Some(1));
        assert_eq!(r.make_due(&b, now), 1);
        assert_eq!(r.pop_due(now).map(|x| x.0), Some(m3));
        assert_eq!(r.pop_due(now), None);
        assert_eq!(r.hops().count(), 0);
    }

    #[test]
    fn a_hop_slot_is_freed_and_reused_and_a_message_counts_once_per_hop() {
        let mut r = Retries::default();
        let now = Instant::now();
        let a = NextHop::Mx {
            domain: "a.test".into(),
        };
        let b = NextHop::Mx {
            domain: "b.test".into(),
        };
        let m = QueueId::generate();
        r.insert(
            now,
            m,
            QueueState::Deferred,
            None,
            vec![(a.clone(), "1".into()), (a.clone(), "2".into())],
        );
        assert_eq!(r.hops().map(|(_, n, _)| n).collect::<Vec<_>>(), vec![1]);
        assert_eq!(r.pop_due(now), Some((m, QueueState::Deferred)));
        assert_eq!(r.hops().count(), 0);
        assert!(!r.waits_for(&a));
        r.insert(
            now,
            m,
            QueueState::Deferred,
            None,
            vec![(b.clone(), "3".into())],
        );
        assert_eq!(r.hops.len(), 1, "a's slot was reused for b");
        assert!(r.waits_for(&b));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn a_large_backlog_costs_a_bounded_number_of_bytes_per_message() {
        // The per-message layout: one map entry (id, due, hop index) and one ordered
        // entry (due, id). Guard against regressions that put something big back in.
        assert!(std::mem::size_of::<Waiting>() <= 32);
        assert!(std::mem::size_of::<(QueueId, Waiting)>() <= 48);
        assert!(std::mem::size_of::<(u64, QueueId)>() <= 32);
    }

    #[test]
    fn the_shape_groups_messages_by_next_hops_and_age_bucket() {
        let mut r = Retries::default();
        let now = Instant::now();
        let a = NextHop::Mx {
            domain: "a.test".into(),
        };
        let b = NextHop::Relay {
            name: "smtp:[192.0.2.1]:25".into(),
        };
        let ids: Vec<QueueId> = (0..5).map(|_| QueueId::generate()).collect();
        for (n, id) in ids.iter().enumerate() {
            let hops = match n {
                0..=2 => vec![(a.clone(), String::new())],
                3 => vec![(a.clone(), String::new()), (b.clone(), String::new())],
                _ => Vec::new(),
            };
            r.insert(now, *id, QueueState::Deferred, None, hops);
        }
        let old = ids[0];
        let (mut shape, unread) = r.shape(&|id| usize::from(id != old) * 9, 3);
        assert_eq!(unread, vec![0, 0, 0]);
        shape.sort_by_key(|(h, _)| h.len());
        assert_eq!(
            shape,
            vec![
                (vec![a.clone()], vec![1, 0, 2]),
                (vec![a, b], vec![0, 0, 1])
            ],
            "the message without a next hop is left out; bucket 9 is clamped to the last"
        );
    }
}
