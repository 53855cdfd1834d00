//! The in-memory backend: one process's buckets in a bounded table.
//!
//! Each key used has an entry: its GCRA `tat` and the end of its current reporting
//! window (`reported_until`). An entry expires at `max(tat, reported_until)`: after that
//! its bucket is full again and no refusal of it is being reported, so forgetting it
//! changes no decision. An index ordered by expiry finds expired entries first.
//!
//! Bounds: at most `max_keys` entries. Every check drops up to [`SWEEP`] expired entries
//! from the front of the index (the table shrinks without a timer). When a new key finds
//! the table full, every expired entry is dropped; if none is, the entry that expires
//! soonest is evicted: the key nearest to a full bucket, so a flood of spoofed addresses
//! (each one entry a single unit from full) pushes out its own entries before those of
//! keys actually held back. Evictions are counted (`tern_rate_limit_keys_evicted_total`)
//! and the number of entries is a gauge (`tern_rate_limit_keys`). Memory per entry is
//! about 150 octets plus a user name or domain, twice (map and index).
//!
//! Locking: one `std::sync::Mutex`, held for the few map operations of one check, never
//! across an `.await` (there is none) and never with another lock. A poisoned mutex is
//! taken over: the table holds nothing a panic could leave half-updated in a harmful way
//! (at worst a key's bucket is a little fuller or emptier).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use crate::gcra::{Step, step};
use crate::{Charge, Decision, Key, PendingDecision, RateLimiter, Refusal};

/// Expired entries dropped per check at most, besides those a full table drops.
const SWEEP: usize = 4;

/// One key's state.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// GCRA theoretical arrival time, ns.
    tat: u64,
    /// Refusals are not reported again before this time, ns.
    reported_until: u64,
}

impl Entry {
    fn expiry(&self) -> u64 {
        self.tat.max(self.reported_until)
    }
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<Key, Entry>,
    /// `(expiry, key)` of every entry. Invariant: exactly one element per entry of
    /// `entries`, with that entry's current expiry.
    by_expiry: BTreeSet<(u64, Key)>,
    evicted: u64,
}

impl Table {
    fn get(&self, key: &Key) -> Option<Entry> {
        self.entries.get(key).copied()
    }

    /// Stores `entry` for `key`, making room first when the key is new.
    fn put(&mut self, key: &Key, entry: Entry, now: u64, max: usize) {
        match self.entries.get_mut(key) {
            Some(old) => {
                let before = old.expiry();
                *old = entry;
                if before != entry.expiry() {
                    self.by_expiry.remove(&(before, key.clone()));
                    self.by_expiry.insert((entry.expiry(), key.clone()));
                }
            }
            None => {
                if self.entries.len() >= max {
                    self.sweep(now, usize::MAX);
                }
                if self.entries.len() >= max
                    && let Some((_, soonest)) = self.by_expiry.pop_first()
                {
                    self.entries.remove(&soonest);
                    self.evicted = self.evicted.saturating_add(1);
                    tern_metrics::get().rate_limit_evicted.inc();
                }
                self.entries.insert(key.clone(), entry);
                self.by_expiry.insert((entry.expiry(), key.clone()));
            }
        }
    }

    /// Drops up to `most` entries that expired by `now`.
    fn sweep(&mut self, now: u64, most: usize) {
        for _ in 0..most {
            match self.by_expiry.first() {
                Some((expiry, _)) if *expiry <= now => {}
                _ => return,
            }
            if let Some((_, key)) = self.by_expiry.pop_first() {
                self.entries.remove(&key);
            }
        }
    }
}

/// The in-memory [`RateLimiter`] (see the module header for its bounds).
#[derive(Debug)]
pub struct MemoryLimiter {
    table: Mutex<Table>,
    max_keys: usize,
}

impl MemoryLimiter {
    /// A limiter that tracks at most `max_keys` keys (at least 1).
    pub fn new(max_keys: usize) -> MemoryLimiter {
        MemoryLimiter {
            table: Mutex::new(Table::default()),
            max_keys: max_keys.max(1),
        }
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries evicted so far because the table was full.
    pub fn evicted(&self) -> u64 {
        self.lock().evicted
    }

    /// The decision, synchronously (what the trait's future returns).
    pub fn check_now(&self, charges: &[Charge], now_ms: u64) -> Decision {
        let now = now_ms.saturating_mul(1_000_000);
        let mut table = self.lock();
        table.sweep(now, SWEEP);
        // First pass: every charge against the state as it would be after the charges
        // before it (two charges may name one key).
        let mut next: Vec<(usize, u64)> = Vec::with_capacity(charges.len());
        for (i, c) in charges.iter().enumerate() {
            let earlier = next
                .iter()
                .rev()
                .find(|(j, _)| charges.get(*j).is_some_and(|o| o.key == c.key))
                .map(|(_, tat)| *tat);
            let tat = earlier
                .or_else(|| table.get(&c.key).map(|e| e.tat))
                .unwrap_or(0);
            match step(tat, now, c.cost, &c.rate) {
                Step::Conform(t) => next.push((i, t)),
                Step::Wait(wait) => {
                    let old = table.get(&c.key).unwrap_or(Entry {
                        tat: 0,
                        reported_until: 0,
                    });
                    let first_in_window = now >= old.reported_until;
                    if first_in_window {
                        let entry = Entry {
                            tat: old.tat,
                            reported_until: now.saturating_add(c.rate.period_ns()),
                        };
                        table.put(&c.key, entry, now, self.max_keys);
                    }
                    let decision = Decision::Refused(Refusal {
                        charge: i,
                        retry_after_ms: wait.map(|ns| ns.div_ceil(1_000_000)),
                        first_in_window,
                    });
                    publish(&table);
                    return decision;
                }
            }
        }
        for (i, tat) in next {
            if let Some(c) = charges.get(i) {
                let reported_until = table.get(&c.key).map_or(0, |e| e.reported_until);
                table.put(
                    &c.key,
                    Entry {
                        tat,
                        reported_until,
                    },
                    now,
                    self.max_keys,
                );
            }
        }
        publish(&table);
        Decision::Allowed
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Sets the entries gauge (one atomic store).
fn publish(table: &Table) {
    let n = i64::try_from(table.entries.len()).unwrap_or(i64::MAX);
    tern_metrics::get().rate_limit_keys.set(n);
}

impl RateLimiter for MemoryLimiter {
    fn check<'a>(&'a self, charges: &'a [Charge], now_ms: u64) -> PendingDecision<'a> {
        let decision = self.check_now(charges, now_ms);
        Box::pin(std::future::ready(decision))
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use proptest::prelude::*;

    use super::*;
    use crate::{ClientNet, Rate};

    fn rate(count: u32, period_ms: u64) -> Rate {
        Rate::new(count, period_ms).unwrap_or_else(|e| panic!("{e}"))
    }

    fn client(n: u8) -> Key {
        Key::client_messages(ClientNet::of(IpAddr::from([192, 0, 2, n]), 32, 64))
    }

    fn charge(key: Key, rate: Rate, cost: u32) -> Charge {
        Charge { key, rate, cost }
    }

    const T0: u64 = 1_800_000_000_000;

    #[test]
    fn burst_refusal_reported_once_per_window_then_allowed_again() {
        let l = MemoryLimiter::new(100);
        let c = [charge(client(1), rate(3, 2000), 1)];
        for _ in 0..3 {
            assert_eq!(l.check_now(&c, T0), Decision::Allowed);
        }
        let Decision::Refused(first) = l.check_now(&c, T0) else {
            panic!("fourth message allowed");
        };
        assert!(first.first_in_window);
        assert_eq!(first.retry_after_ms, Some(667));
        let Decision::Refused(again) = l.check_now(&c, T0 + 100) else {
            panic!("refused then allowed without time passing");
        };
        assert!(!again.first_in_window, "reported twice in one window");
        // One unit is back after period / count.
        assert_eq!(l.check_now(&c, T0 + 667), Decision::Allowed);
        // Rested, then over again after the window: reported again.
        for _ in 0..3 {
            assert_eq!(l.check_now(&c, T0 + 5000), Decision::Allowed);
        }
        let Decision::Refused(later) = l.check_now(&c, T0 + 5000) else {
            panic!("over the limit allowed");
        };
        assert!(later.first_in_window);
    }

    #[test]
    fn all_or_nothing_names_the_first_refused_charge() {
        let l = MemoryLimiter::new(100);
        let tight = rate(1, 60_000);
        let loose = rate(100, 60_000);
        let user = Key::user_messages("alice");
        assert_eq!(
            l.check_now(
                &[charge(client(1), loose, 1), charge(user.clone(), tight, 1)],
                T0
            ),
            Decision::Allowed
        );
        let Decision::Refused(r) = l.check_now(
            &[charge(client(1), loose, 1), charge(user.clone(), tight, 1)],
            T0,
        ) else {
            panic!("user over its limit allowed");
        };
        assert_eq!(r.charge, 1);
        // The client's charge was not spent by the refused check: 99 more fit.
        for _ in 0..99 {
            assert_eq!(
                l.check_now(&[charge(client(1), loose, 1)], T0),
                Decision::Allowed
            );
        }
        assert!(matches!(
            l.check_now(&[charge(client(1), loose, 1)], T0),
            Decision::Refused(_)
        ));
    }

    #[test]
    fn one_key_twice_in_a_call_counts_twice() {
        let l = MemoryLimiter::new(10);
        let k = client(1);
        let r = rate(2, 1000);
        let c = [
            charge(k.clone(), r, 1),
            charge(k.clone(), r, 1),
            charge(k, r, 1),
        ];
        assert!(matches!(
            l.check_now(&c, T0),
            Decision::Refused(Refusal { charge: 2, .. })
        ));
    }

    #[test]
    fn rested_keys_are_forgotten_and_the_table_never_passes_its_cap() {
        let l = MemoryLimiter::new(50);
        let r = rate(10, 1000);
        // A flood of one-off addresses.
        for i in 0..1000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            let k = Key::client_connections(ClientNet::of(ip, 32, 64));
            assert_eq!(l.check_now(&[charge(k, r, 1)], T0), Decision::Allowed);
            assert!(l.len() <= 50);
        }
        assert!(l.evicted() >= 950);
        // A key held back survives the flood: it expires last.
        let held = client(9);
        for _ in 0..10 {
            l.check_now(&[charge(held.clone(), r, 1)], T0);
        }
        for i in 0..200u32 {
            let ip = IpAddr::from((i + 5000).to_be_bytes());
            let k = Key::client_connections(ClientNet::of(ip, 32, 64));
            l.check_now(&[charge(k, r, 1)], T0);
        }
        assert!(matches!(
            l.check_now(&[charge(held, r, 1)], T0),
            Decision::Refused(_)
        ));
        // Everything rested: the sweep empties the table as checks go by.
        for _ in 0..100 {
            l.check_now(&[], T0 + 10_000);
        }
        assert!(l.is_empty(), "{} entries left", l.len());
    }

    proptest! {
        /// Over any schedule, the accepted cost between two accepted requests never
        /// exceeds the burst plus one unit per emission interval, and a refused request
        /// changes nothing (the next accepted one follows the same bound).
        #[test]
        fn a_limit_is_never_exceeded(
            count in 1u32..20,
            period_s in 1u64..120,
            schedule in proptest::collection::vec((0u64..5000, 1u32..4), 1..300),
        ) {
            let r = rate(count, period_s * 1000);
            let l = MemoryLimiter::new(4);
            let k = client(7);
            let t_ns = r.emission_ns();
            let mut now = T0;
            let mut accepted: Vec<(u64, u32)> = Vec::new();
            for (dt, cost) in schedule {
                now += dt;
                if l.check_now(&[charge(k.clone(), r, cost)], now) == Decision::Allowed {
                    accepted.push((now, cost));
                }
            }
            for i in 0..accepted.len() {
                let mut sum = 0u64;
                for j in i..accepted.len() {
                    sum += u64::from(accepted[j].1);
                    let span_ns = (accepted[j].0 - accepted[i].0) * 1_000_000;
                    prop_assert!(
                        sum <= u64::from(count) + span_ns / t_ns,
                        "{sum} units in {span_ns} ns at {r}"
                    );
                }
            }
        }

        /// A key left alone for a whole period (plus the rounding of the emission
        /// interval, under a millisecond) gets its whole burst, whatever happened before.
        #[test]
        fn a_rested_key_gets_its_burst(
            count in 1u32..20,
            schedule in proptest::collection::vec((0u64..500, 1u32..4), 0..100),
        ) {
            let r = rate(count, 1000);
            let l = MemoryLimiter::new(4);
            let k = client(3);
            let mut now = T0;
            for (dt, cost) in schedule {
                now += dt;
                l.check_now(&[charge(k.clone(), r, cost)], now);
            }
            now += 1001;
            prop_assert_eq!(l.check_now(&[charge(k, r, count)], now), Decision::Allowed);
        }
    }
}
