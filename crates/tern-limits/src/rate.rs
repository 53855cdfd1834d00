//! A rate as the configuration writes it: `"<count>/<period>"`.
//!
//! The period is a number with a unit (`s`, `m`, `h`, `d`), or a unit alone (`30/m`,
//! `100/hour`): `30/1m`, `3/2s`, `500/1h`. Bounds: a count of 1 to 1,000,000 and a period
//! of 1 second to 7 days, so every derived quantity fits in 64-bit nanoseconds.

use std::fmt;
use std::str::FromStr;

/// Most units per period.
const MAX_COUNT: u32 = 1_000_000;
/// Longest period, milliseconds (7 days).
const MAX_PERIOD_MS: u64 = 7 * 86_400_000;

/// "`count` per `period`": the burst is `count`, one unit comes back every
/// `period / count`.
///
/// Invariant: `1 <= count <= 1_000_000` and 1 s `<= period <= 7 d` (checked by
/// [`Rate::new`] and parsing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    count: u32,
    period_ms: u64,
}

/// Why a rate was refused (configuration keys name it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RateError {
    /// Not `<count>/<period>`.
    #[error("{0:?} is not a rate: write <count>/<period>, e.g. \"30/1m\" or \"500/1h\"")]
    Syntax(String),
    /// The count is 0 or above 1,000,000.
    #[error("the count must be 1 to 1000000")]
    Count,
    /// The period is under 1 second or over 7 days.
    #[error("the period must be 1s to 7d")]
    Period,
}

impl Rate {
    /// `count` per `period_ms` milliseconds.
    pub fn new(count: u32, period_ms: u64) -> Result<Rate, RateError> {
        if count == 0 || count > MAX_COUNT {
            return Err(RateError::Count);
        }
        if !(1000..=MAX_PERIOD_MS).contains(&period_ms) {
            return Err(RateError::Period);
        }
        Ok(Rate { count, period_ms })
    }

    /// The burst: units a rested key may spend at once.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The window, milliseconds.
    pub fn period_ms(&self) -> u64 {
        self.period_ms
    }

    /// The period in nanoseconds.
    pub(crate) fn period_ns(&self) -> u64 {
        self.period_ms.saturating_mul(1_000_000)
    }

    /// Time for one unit to come back, nanoseconds, rounded up (so the rate granted is
    /// never above the rate written).
    pub(crate) fn emission_ns(&self) -> u64 {
        self.period_ns().div_ceil(u64::from(self.count.max(1)))
    }
}

/// `30/1m`, `3/2s`: the period in its largest whole unit.
impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.period_ms;
        let (n, unit) = if ms.is_multiple_of(86_400_000) {
            (ms / 86_400_000, "d")
        } else if ms.is_multiple_of(3_600_000) {
            (ms / 3_600_000, "h")
        } else if ms.is_multiple_of(60_000) {
            (ms / 60_000, "m")
        } else if ms.is_multiple_of(1000) {
            (ms / 1000, "s")
        } else {
            (ms, "ms")
        };
        write!(f, "{}/{n}{unit}", self.count)
    }
}

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(s: &str) -> Result<Rate, RateError> {
        let syntax = || RateError::Syntax(s.chars().take(64).collect());
        let (count, period) = s.trim().split_once('/').ok_or_else(syntax)?;
        let count: u32 = count.trim().parse().map_err(|_| syntax())?;
        let period = period.trim();
        let digits = period
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(period.len());
        let (number, unit) = period.split_at(digits);
        let number: u64 = if number.is_empty() {
            1
        } else {
            number.parse().map_err(|_| syntax())?
        };
        let unit_ms: u64 = match unit {
            "s" | "sec" | "second" => 1000,
            "m" | "min" | "minute" => 60_000,
            "h" | "hour" => 3_600_000,
            "d" | "day" => 86_400_000,
            _ => return Err(syntax()),
        };
        let period_ms = number.checked_mul(unit_ms).ok_or(RateError::Period)?;
        Rate::new(count, period_ms)
    }
}

impl serde::Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(s: &str) -> Result<Rate, RateError> {
        s.parse()
    }

    #[test]
    fn parses_what_administrators_write() {
        for (text, count, ms, shown) in [
            ("30/1m", 30, 60_000, "30/1m"),
            ("30/m", 30, 60_000, "30/1m"),
            ("30 / minute", 30, 60_000, "30/1m"),
            ("500/1h", 500, 3_600_000, "500/1h"),
            ("3/2s", 3, 2000, "3/2s"),
            ("10/90s", 10, 90_000, "10/90s"),
            ("1/7d", 1, 7 * 86_400_000, "1/7d"),
        ] {
            let r = rate(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((r.count(), r.period_ms()), (count, ms), "{text}");
            assert_eq!(r.to_string(), shown);
        }
    }

    #[test]
    fn refuses_what_would_overflow_or_mean_nothing() {
        assert_eq!(rate("0/1m"), Err(RateError::Count));
        assert_eq!(rate("1000001/1m"), Err(RateError::Count));
        assert_eq!(rate("1/0s"), Err(RateError::Period));
        assert_eq!(rate("1/8d"), Err(RateError::Period));
        assert_eq!(rate("1/99999999999999999d"), Err(RateError::Period));
        for bad in ["", "30", "30/", "x/1m", "30/1w", "-1/1m", "30/1.5m"] {
            assert!(matches!(rate(bad), Err(RateError::Syntax(_))), "{bad}");
        }
    }
}
