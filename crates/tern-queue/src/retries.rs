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
//! Owned by the scheduler task; no locks.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use tern_spool::{DeliveryRecord, QueueId, QueueState};

#[derive(Default)]
pub(crate) struct Retries {
    by_due: BTreeSet<(Instant, QueueId)>,
    /// Each waiting message's entry in `by_due`, to take one out (`remove`).
    due_of: HashMap<QueueId, Instant>,
    /// Where a message waits when it is not `deferred/`.
    from: HashMap<QueueId, QueueState>,
    /// Records newer than the disk (writing them failed). Bounded by the retries.
    unsaved: HashMap<QueueId, Box<DeliveryRecord>>,
}

impl Retries {
    /// Message `id`, now in `state`, is due at `due`; `record` is newer than its record on
    /// disk, if set.
    pub(crate) fn insert(
        &mut self,
        due: Instant,
        id: QueueId,
        state: QueueState,
        record: Option<Box<DeliveryRecord>>,
    ) {
        if let Some(old) = self.due_of.insert(id, due) {
            self.by_due.remove(&(old, id));
        }
        self.by_due.insert((due, id));
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
        self.due_of.remove(&id);
        let state = self.from.remove(&id).unwrap_or(QueueState::Deferred);
        Some((id, state))
    }

    /// Takes message `id` out (an administrator acts on it): when it was due, where it
    /// waits, and its unsaved record. `None` when it is not waiting here.
    pub(crate) fn remove(
        &mut self,
        id: QueueId,
    ) -> Option<(Instant, QueueState, Option<Box<DeliveryRecord>>)> {
        let due = self.due_of.remove(&id)?;
        self.by_due.remove(&(due, id));
        let state = self.from.remove(&id).unwrap_or(QueueState::Deferred);
        Some((due, state, self.unsaved.remove(&id)))
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
        r.insert(now, a, QueueState::Active, Some(Box::new(rec.clone())));
        r.insert(now, b, QueueState::Deferred, None);
        let (due, state, unsaved) = r.remove(a).unwrap();
        assert_eq!((due, state), (now, QueueState::Active));
        assert_eq!(unsaved.as_deref(), Some(&rec));
        assert!(r.remove(a).is_none());
        assert_eq!(r.pop_due(now), Some((b, QueueState::Deferred)));
        assert_eq!(r.pop_due(now), None);
        // Inserted again with a new time: only the new entry counts.
        r.insert(now + Duration::from_secs(5), b, QueueState::Deferred, None);
        r.insert(now, b, QueueState::Deferred, None);
        assert_eq!(r.pop_due(now), Some((b, QueueState::Deferred)));
        assert_eq!(r.next_due(), None);
    }

    #[test]
    fn a_deferral_retries_from_deferred_without_a_record() {
        let mut r = Retries::default();
        let now = Instant::now();
        let id = QueueId::generate();
        r.insert(now, id, QueueState::Deferred, None);
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
        );
        r.insert(
            now + Duration::from_secs(60),
            later,
            QueueState::Deferred,
            None,
        );
        assert_eq!(r.pop_due(now), Some((stuck, QueueState::Active)));
        assert_eq!(r.pop_due(now), None, "the other one is not due yet");
        assert_eq!(r.take_unsaved(stuck).as_deref(), Some(&record));
        assert!(r.take_unsaved(stuck).is_none(), "given out once");
        // Deferred normally the next time: no stale state is kept.
        r.insert(now, stuck, QueueState::Deferred, None);
        assert_eq!(r.pop_due(now), Some((stuck, QueueState::Deferred)));
    }
}
