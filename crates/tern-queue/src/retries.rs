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
//! Each waiting message also names the next hops its deferred recipients wait for, with
//! the last deferral text of each, so the scheduler can say how many messages wait for a
//! destination and why (`GET /destinations`), and retry a destination now by making its
//! messages due at once. Both maps are bounded by the number of waiting messages.
//!
//! Owned by the scheduler task; no locks.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use tern_route::NextHop;
use tern_spool::{DeliveryRecord, QueueId, QueueState};

/// The messages waiting for one next hop.
#[derive(Default)]
struct HopWaiting {
    ids: HashSet<QueueId>,
    /// The deferral text of the message that last joined.
    last_error: String,
}

#[derive(Default)]
pub(crate) struct Retries {
    by_due: BTreeSet<(Instant, QueueId)>,
    due_of: HashMap<QueueId, Instant>,
    /// The next hops each waiting message waits for.
    hops_of: HashMap<QueueId, Vec<NextHop>>,
    by_hop: HashMap<NextHop, HopWaiting>,
    /// Where a message waits when it is not `deferred/`.
    from: HashMap<QueueId, QueueState>,
    /// Records newer than the disk (writing them failed). Bounded by the retries.
    unsaved: HashMap<QueueId, Box<DeliveryRecord>>,
}

impl Retries {
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
        self.by_due.insert((due, id));
        self.due_of.insert(id, due);
        if !hops.is_empty() {
            let mut names = Vec::with_capacity(hops.len());
            for (hop, error) in hops {
                let w = self.by_hop.entry(hop.clone()).or_default();
                w.ids.insert(id);
                w.last_error = error;
                names.push(hop);
            }
            self.hops_of.insert(id, names);
        }
        if state == QueueState::Deferred {
            self.from.remove(&id);
        } else {
            self.from.insert(id, state);
        }
        if let Some(r) = record {
            self.unsaved.insert(id, r);
        }
    }

    /// When the next retry is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.by_due.first().map(|(t, _)| *t)
    }

    /// The next message due at `now` or earlier, with the state it waits in.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(QueueId, QueueState)> {
        let &(due, id) = self.by_due.first()?;
        if due > now {
            return None;
        }
        self.by_due.pop_first();
        self.forget(id);
        let state = self.from.remove(&id).unwrap_or(QueueState::Deferred);
        Some((id, state))
    }

    /// Takes `id` out of the due order and the next hops' lists (not `from`/`unsaved`).
    fn forget(&mut self, id: QueueId) {
        if let Some(due) = self.due_of.remove(&id) {
            self.by_due.remove(&(due, id));
        }
        for hop in self.hops_of.remove(&id).unwrap_or_default() {
            if let Some(w) = self.by_hop.get_mut(&hop) {
                w.ids.remove(&id);
                if w.ids.is_empty() {
                    self.by_hop.remove(&hop);
                }
            }
        }
    }

    /// Makes every message waiting for `hop` due at `now` (an administrator's retry);
    /// returns how many.
    pub(crate) fn make_due(&mut self, hop: &NextHop, now: Instant) -> usize {
        let ids: Vec<QueueId> = self
            .by_hop
            .get(hop)
            .map(|w| w.ids.iter().copied().collect())
            .unwrap_or_default();
        for id in &ids {
            if let Some(due) = self.due_of.get_mut(id)
                && *due > now
            {
                self.by_due.remove(&(*due, *id));
                *due = now;
                self.by_due.insert((now, *id));
            }
        }
        ids.len()
    }

    /// Every next hop that messages wait for: how many, and the last deferral text.
    pub(crate) fn hops(&self) -> impl Iterator<Item = (&NextHop, usize, &str)> {
        self.by_hop
            .iter()
            .map(|(hop, w)| (hop, w.ids.len(), w.last_error.as_str()))
    }

    /// Whether messages wait for `hop`.
    #[cfg(test)]
    pub(crate) fn waits_for(&self, hop: &NextHop) -> bool {
        self.by_hop.contains_key(hop)
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
        let due = *self.due_of.get(&id)?;
        let hops = self
            .hops_of
            .get(&id)
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        let error = self
                            .by_hop
                            .get(h)
                            .map(|w| w.last_error.clone())
                            .unwrap_or_default();
                        (h.clone(), error)
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.forget(id);
        let state = self.from.remove(&id).unwrap_or(QueueState::Deferred);
        Some((due, state, self.unsaved.remove(&id), hops))
    }

    /// The record the message's last attempt could not write, for the task that runs it
    /// now (given out once).
    pub(crate) fn take_unsaved(&mut self, id: QueueId) -> Option<Box<DeliveryRecord>> {
        self.unsaved.remove(&id)
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
}
