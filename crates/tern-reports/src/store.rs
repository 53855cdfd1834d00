//! Where report data is kept between observations and reports: the [`ReportStore`]
//! trait, the period bookkeeping every implementation shares ([`Ledger`], sans-I/O),
//! and the in-memory store ([`MemoryStore`], for tests and as the model of a shared
//! backend). The journal in the data directory is [`crate::journal::FileStore`].
//!
//! Periods: one period is open at a time; observations go into it. It closes when the
//! clock passes its end (aligned to the interval, so to UTC days), or early when an
//! administrator asks for the reports now: then the period ends at that second and the
//! next one begins there, so no message is reported twice or left out. A closed period
//! stays until the report of each of its domains is queued ([`ReportStore::mark_sent`]);
//! then it is forgotten. At most [`MAX_CLOSED`] closed periods wait; past it the oldest
//! is given up (a queue that refuses reports for a week would otherwise grow the store
//! without bound).
//!
//! Cost rules for implementors: [`ReportStore::add`] and [`ReportStore::due`] do no I/O
//! and hold the store's one lock for a few map operations per observation;
//! [`ReportStore::flush`], [`ReportStore::close`] and [`ReportStore::mark_sent`] may
//! write and sync (call them from a blocking thread). No method awaits.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use crate::aggregate::{Added, Caps, Dmarc, Period, period_begin};
use crate::kind::{Kind, Row};

/// Closed periods kept waiting for their reports.
pub const MAX_CLOSED: usize = 7;

/// Why the store could not do something. The observations already added stay in
/// memory; what was not written may be lost at a crash (event 4129).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Writing or syncing a journal file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The data directory is unusable (not a directory, a link, not Tern's own).
    #[error("{0}")]
    Unsafe(String),
}

/// What [`ReportStore::add`] did with a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddCounts {
    /// Observations counted.
    pub counted: u64,
    /// Dropped by `max_domains`.
    pub domain_cap: u64,
    /// Dropped by `max_rows`.
    pub row_cap: u64,
    /// Dropped because they named no policy domain.
    pub invalid: u64,
    /// Closed periods given up (more than [`MAX_CLOSED`] waiting).
    pub periods_given_up: u64,
}

/// Report data, per policy domain and period, of one [`Kind`] of report.
pub trait ReportStore<K: Kind = Dmarc>: Send + Sync + 'static {
    /// Folds observations into the open period (rolling over first when `now` is past
    /// its end). No I/O.
    fn add(&self, batch: Vec<K::Obs>, now: u64) -> AddCounts;
    /// Makes what was added durable. May block.
    fn flush(&self) -> Result<(), StoreError>;
    /// Closes the open period when `now` is past its end, or at `now` when `early`
    /// and it holds data. Returns how many closed periods were given up. May block.
    fn close(&self, now: u64, early: bool) -> Result<u64, StoreError>;
    /// The closed periods waiting for reports, each with only the domains whose report
    /// is not yet queued. No I/O.
    fn due(&self) -> Vec<Period<K>>;
    /// Records that the report of `domain` for the period beginning at `begin` is
    /// queued; the period is forgotten when all its domains are. May block.
    fn mark_sent(&self, begin: u64, domain: &str) -> Result<(), StoreError>;
}

/// A closed period and the domains already reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed<K: Kind = Dmarc> {
    /// The data.
    pub period: Period<K>,
    /// Domains whose report is queued.
    pub sent: BTreeSet<String>,
}

/// The period bookkeeping shared by the stores (sans-I/O).
#[derive(Debug, Clone)]
pub struct Ledger<K: Kind = Dmarc> {
    /// The caps of every period.
    pub caps: Caps,
    /// Period length, seconds.
    pub interval: u64,
    /// The period observations go to; `None` until the first one.
    pub open: Option<Period<K>>,
    /// Closed periods by their begin.
    pub closed: BTreeMap<u64, Closed<K>>,
    /// No new period begins before this (the end of the last one closed early).
    pub floor: u64,
    /// Closed periods given up so far (more than [`MAX_CLOSED`] waiting).
    pub given_up: u64,
}

/// What [`Ledger::add`] did with one observation: the period it went to and how.
pub type Placed = (u64, Added);

impl<K: Kind> Ledger<K> {
    /// An empty ledger.
    pub fn new(caps: Caps, interval: u64) -> Ledger<K> {
        Ledger {
            caps,
            interval: interval.max(1),
            open: None,
            closed: BTreeMap::new(),
            floor: 0,
            given_up: 0,
        }
    }

    /// A new open period holding `now`.
    fn open_at(&self, now: u64) -> Period<K> {
        let aligned = period_begin(now, self.interval);
        let end = aligned.saturating_add(self.interval);
        let begin = self.floor.clamp(aligned, end.saturating_sub(1));
        Period::new(begin.min(now), end)
    }

    /// Moves the open period to the closed ones when `now` is past its end (or at once
    /// when `early`, ending it at `now`). Returns the begin of the period closed.
    pub fn close(&mut self, now: u64, early: bool) -> (Option<u64>, u64) {
        let due = match &self.open {
            Some(p) if now >= p.end => true,
            Some(p) if early && !p.is_empty() => now > p.begin,
            _ => false,
        };
        if !due {
            return (None, 0);
        }
        let Some(mut period) = self.open.take() else {
            return (None, 0);
        };
        if now < period.end {
            period.end = now;
            self.floor = now;
        }
        let begin = period.begin;
        let mut given_up = 0;
        if !period.is_empty() {
            self.closed.insert(
                begin,
                Closed {
                    period,
                    sent: BTreeSet::new(),
                },
            );
        }
        while self.closed.len() > MAX_CLOSED {
            self.closed.pop_first();
            given_up += 1;
        }
        self.given_up += given_up;
        (Some(begin), given_up)
    }

    /// Folds one cleaned observation's row in at `now`.
    pub fn add(&mut self, row: Row<K>, now: u64) -> Placed {
        let now = now.max(self.floor);
        if self.open.as_ref().is_none_or(|p| now >= p.end) {
            self.close(now, false);
            self.open = Some(self.open_at(now));
        }
        let caps = self.caps;
        match self.open.as_mut() {
            Some(p) => (p.begin, p.add(row, caps)),
            None => (0, Added::DomainCap),
        }
    }

    /// The closed periods with their unreported domains.
    pub fn due(&self) -> Vec<Period<K>> {
        self.closed
            .values()
            .map(|c| {
                let mut p = c.period.clone();
                p.domains.retain(|d, _| !c.sent.contains(d));
                p
            })
            .collect()
    }

    /// Marks a domain reported; `true` when its period is now wholly reported (and
    /// forgotten).
    pub fn mark_sent(&mut self, begin: u64, domain: &str) -> bool {
        let Some(c) = self.closed.get_mut(&begin) else {
            return false;
        };
        c.sent.insert(domain.to_owned());
        if c.period.domains.keys().all(|d| c.sent.contains(d)) {
            self.closed.remove(&begin);
            return true;
        }
        false
    }
}

/// Counts the outcome of one observation.
pub(crate) fn count(counts: &mut AddCounts, added: Added) {
    match added {
        Added::Counted | Added::NewRow => counts.counted += 1,
        Added::DomainCap => counts.domain_cap += 1,
        Added::RowCap => counts.row_cap += 1,
    }
}

/// Cleans and adds a batch to `ledger`, calling `placed` with each observation kept
/// and where it went.
pub(crate) fn add_batch<K: Kind>(
    ledger: &mut Ledger<K>,
    batch: Vec<K::Obs>,
    now: u64,
    mut placed: impl FnMut(&Row<K>, Placed),
) -> AddCounts {
    let mut counts = AddCounts::default();
    let before = ledger.given_up;
    for obs in batch {
        match K::clean(obs) {
            Some(obs) => {
                let row = K::split(obs);
                let kept = row.clone();
                let at = ledger.add(row, now);
                count(&mut counts, at.1);
                placed(&kept, at);
            }
            None => counts.invalid += 1,
        }
    }
    counts.periods_given_up = ledger.given_up - before;
    counts
}

/// A store in memory only: everything is lost at a stop.
#[derive(Debug)]
pub struct MemoryStore<K: Kind = Dmarc> {
    ledger: Mutex<Ledger<K>>,
}

impl<K: Kind> MemoryStore<K> {
    /// An empty store.
    pub fn new(caps: Caps, interval: u64) -> MemoryStore<K> {
        MemoryStore {
            ledger: Mutex::new(Ledger::new(caps, interval)),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Ledger<K>) -> T) -> T {
        let mut guard = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

impl<K: Kind> ReportStore<K> for MemoryStore<K> {
    fn add(&self, batch: Vec<K::Obs>, now: u64) -> AddCounts {
        self.with(|l| add_batch(l, batch, now, |_, _| {}))
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn close(&self, now: u64, early: bool) -> Result<u64, StoreError> {
        Ok(self.with(|l| l.close(now, early).1))
    }

    fn due(&self) -> Vec<Period<K>> {
        self.with(|l| l.due())
    }

    fn mark_sent(&self, begin: u64, domain: &str) -> Result<(), StoreError> {
        self.with(|l| l.mark_sent(begin, domain));
        Ok(())
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

    #[test]
    fn a_period_closes_at_its_utc_day_end() {
        let s: MemoryStore = MemoryStore::new(CAPS, DAY);
        let t0 = 10 * DAY + 3600;
        s.add(vec![obs("a.test", "192.0.2.1", "pass")], t0);
        assert_eq!(s.close(t0 + 10, false).unwrap(), 0);
        assert!(s.due().is_empty(), "not before its end");
        s.close(11 * DAY, false).unwrap();
        let due = s.due();
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].begin, due[0].end), (10 * DAY, 11 * DAY));
        // The next observation opens the next day.
        s.add(vec![obs("a.test", "192.0.2.1", "pass")], 11 * DAY + 5);
        s.close(12 * DAY, false).unwrap();
        assert_eq!(s.due().len(), 2);
    }

    #[test]
    fn sending_early_splits_the_period_without_overlap() {
        let s: MemoryStore = MemoryStore::new(CAPS, DAY);
        let t0 = 10 * DAY + 3600;
        s.add(vec![obs("a.test", "192.0.2.1", "pass")], t0);
        s.close(t0 + 100, true).unwrap();
        s.add(vec![obs("a.test", "192.0.2.1", "pass")], t0 + 200);
        s.close(11 * DAY, false).unwrap();
        let due = s.due();
        assert_eq!(due.len(), 2);
        assert_eq!((due[0].begin, due[0].end), (10 * DAY, t0 + 100));
        assert_eq!((due[1].begin, due[1].end), (t0 + 100, 11 * DAY));
        // Nothing to send: an early close of an empty period does nothing.
        assert_eq!(s.close(11 * DAY + 1, true).unwrap(), 0);
        assert_eq!(s.due().len(), 2);
    }

    #[test]
    fn a_period_is_forgotten_once_every_domain_is_sent() {
        let s: MemoryStore = MemoryStore::new(CAPS, DAY);
        s.add(
            vec![
                obs("a.test", "192.0.2.1", "pass"),
                obs("b.test", "192.0.2.1", "pass"),
            ],
            DAY,
        );
        s.close(DAY + 10, true).unwrap();
        s.mark_sent(DAY, "a.test").unwrap();
        let due = s.due();
        assert_eq!(due[0].domains.keys().collect::<Vec<_>>(), ["b.test"]);
        s.mark_sent(DAY, "b.test").unwrap();
        assert!(s.due().is_empty());
    }

    #[test]
    fn closed_periods_waiting_are_bounded() {
        let s: MemoryStore = MemoryStore::new(CAPS, DAY);
        let mut given_up = 0;
        for d in 1..=(MAX_CLOSED as u64 + 3) {
            s.add(vec![obs("a.test", "192.0.2.1", "pass")], d * DAY);
            given_up += s.close(d * DAY + 1, true).unwrap();
        }
        assert_eq!(s.due().len(), MAX_CLOSED);
        assert_eq!(given_up, 3);
    }
}
