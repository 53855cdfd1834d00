//! Wall-clock time as Tern records it: the one helper every crate uses for "now" in
//! Unix milliseconds or microseconds (event and record timestamps, ages, due times that
//! are written down).
//!
//! Invariants: never panics and never goes negative; a clock set before 1970 reads as 0
//! and one past the integer's range saturates. Durations between two events inside one
//! process are measured with `Instant` (monotonic) instead; these functions are for
//! values that leave the process (files, events, the admin API) and for comparing with
//! such values. Code whose decisions depend on time takes `now` as a parameter (or a
//! [`crate::Clock`]) so it can be tested without this.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, as milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Now, as microseconds since the Unix epoch (the unit of the spool's timestamps).
pub fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_and_microseconds_agree_and_are_after_2020() {
        let ms = unix_ms();
        let us = unix_micros();
        let after = unix_ms();
        // 2020-01-01 in ms.
        assert!(ms > 1_577_836_800_000, "{ms}");
        let us_as_ms = u64::try_from(us / 1000).unwrap();
        assert!(ms <= us_as_ms && us_as_ms <= after, "{ms} {us} {after}");
    }
}
