//! The generic cell rate algorithm (GCRA), sans I/O: one bucket's decision from its
//! state and the time, nothing else.
//!
//! A bucket's whole state is its theoretical arrival time `tat` (nanoseconds on the
//! caller's clock; 0 for a bucket never used). With `T = ceil(period / count)`, a request
//! of `cost` at `now` conforms when `max(tat, now) + cost·T - now <= count·T`; it then
//! moves `tat` to `max(tat, now) + cost·T`. A refused request leaves `tat` alone.
//!
//! Guarantees (checked by the property tests in `memory.rs`):
//! - the accepted costs of any run of requests between `a` and `b` sum to at most
//!   `count + (b - a) / T`: the burst plus one unit per `T`, never more;
//! - a bucket whose `tat <= now` is full again (a rested key may spend `count` at once),
//!   so it holds no information and can be forgotten. A key is full again at most
//!   `count·T` after its last request: one period, plus under `count` nanoseconds of
//!   rounding.
//!
//! All arithmetic saturates; the bounds on [`Rate`] keep every product below 2^63 for
//! clock values up to the year 2262.

use crate::Rate;

/// The outcome for one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Conforms: the bucket's new `tat`.
    Conform(u64),
    /// Does not: nanoseconds until it would (`None`: never, the cost exceeds the burst).
    Wait(Option<u64>),
}

/// The decision for `cost` units from a bucket at `tat`, at `now` (nanoseconds).
pub(crate) fn step(tat: u64, now: u64, cost: u32, rate: &Rate) -> Step {
    if cost > rate.count() {
        return Step::Wait(None);
    }
    let t = rate.emission_ns();
    let limit = t.saturating_mul(u64::from(rate.count()));
    let new_tat = tat
        .max(now)
        .saturating_add(t.saturating_mul(u64::from(cost)));
    let ahead = new_tat.saturating_sub(now);
    if ahead <= limit {
        Step::Conform(new_tat)
    } else {
        Step::Wait(Some(ahead - limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(count: u32, period_ms: u64) -> Rate {
        Rate::new(count, period_ms).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn burst_then_one_per_emission_interval() {
        let r = rate(3, 3000); // T = 1 s
        let s = 1_000_000_000;
        let mut tat = 0;
        let now = 100 * s;
        for _ in 0..3 {
            match step(tat, now, 1, &r) {
                Step::Conform(t) => tat = t,
                Step::Wait(w) => panic!("refused within the burst: {w:?}"),
            }
        }
        assert_eq!(step(tat, now, 1, &r), Step::Wait(Some(s)));
        assert_eq!(step(tat, now + s - 1, 1, &r), Step::Wait(Some(1)));
        assert!(matches!(step(tat, now + s, 1, &r), Step::Conform(_)));
        // Rested for a whole period: the full burst is back.
        assert!(tat <= now + 3 * s);
        assert_eq!(step(tat, now + 3 * s, 3, &r), Step::Conform(now + 6 * s));
    }

    #[test]
    fn cost_above_the_burst_never_conforms() {
        assert_eq!(step(0, 0, 4, &rate(3, 1000)), Step::Wait(None));
    }

    #[test]
    fn time_going_backwards_counts_as_no_time() {
        let r = rate(1, 1000);
        let Step::Conform(tat) = step(0, 5_000_000_000, 1, &r) else {
            panic!("first request refused");
        };
        assert!(matches!(
            step(tat, 1_000_000_000, 1, &r),
            Step::Wait(Some(_))
        ));
    }
}
