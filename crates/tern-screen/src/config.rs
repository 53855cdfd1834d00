//! The `[screen]` section: what is checked before the first command, and greylisting.
//!
//! Every key has a default (docs/CONFIG.md, docs/SCREENING.md); the defaults are
//! Postfix's postscreen and postgrey defaults where there is one. [`ScreenConfig::problems`]
//! reports every semantic problem with its dotted key, so `tern check-config` prints them
//! all at once; the list sites are parsed there too ([`crate::sites`]).
//!
//! Durations are written `6s`, `5m`, `1h`, `35d` (or a bare number of seconds) and read
//! into [`Span`].

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sites::Site;

/// What to do when a client fails a check (Postfix's `postscreen_*_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Log the failure and carry on; the client is not remembered as passed, so it is
    /// tested again at its next connection.
    #[default]
    Ignore,
    /// Carry on with the session, but refuse every recipient with a `550` reply that
    /// says why (the client's own logs then show the reason).
    Enforce,
    /// Answer `521` and close the connection.
    Drop,
}

impl Action {
    /// The word used in the configuration and in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Ignore => "ignore",
            Action::Enforce => "enforce",
            Action::Drop => "drop",
        }
    }
}

/// A length of time read from the configuration: `6s`, `5m`, `1h`, `2d`, or a bare
/// number of seconds. Whole seconds only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(u64);

impl Span {
    /// `secs` seconds.
    pub const fn secs(secs: u64) -> Span {
        Span(secs)
    }

    /// The length in seconds.
    pub fn as_secs(self) -> u64 {
        self.0
    }

    /// The length in milliseconds (saturating).
    pub fn as_ms(self) -> u64 {
        self.0.saturating_mul(1000)
    }

    /// As a [`Duration`].
    pub fn duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s != 0 && s.is_multiple_of(86_400) {
            write!(f, "{}d", s / 86_400)
        } else if s != 0 && s.is_multiple_of(3600) {
            write!(f, "{}h", s / 3600)
        } else if s != 0 && s.is_multiple_of(60) {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

impl std::str::FromStr for Span {
    type Err = String;

    fn from_str(text: &str) -> Result<Span, String> {
        let t = text.trim();
        let digits = t.bytes().take_while(u8::is_ascii_digit).count();
        let (number, unit) = t.split_at(digits);
        let n: u64 = number
            .parse()
            .map_err(|_| format!("`{text}`: expected a number and a unit (6s, 5m, 1h, 2d)"))?;
        let scale = match unit.trim() {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            other => return Err(format!("`{text}`: unknown unit `{other}` (s, m, h, d, w)")),
        };
        n.checked_mul(scale)
            .map(Span)
            .ok_or_else(|| format!("`{text}`: too long"))
    }
}

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(n) => Ok(Span(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// `[screen]`: screening before the first command and greylisting (docs/SCREENING.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct ScreenConfig {
    /// Screen clients on the listeners that do not turn it off (a listener's `screen`
    /// key; listeners with `auth = "required"` are off unless they say otherwise).
    pub enabled: bool,
    /// How long a client not in the pass cache waits between the `220-` first line and
    /// the final `220 ` line (Postfix `postscreen_greet_wait`).
    pub greet_wait: Span,
    /// A client that talks before the final greeting line (Postfix
    /// `postscreen_greet_action`): `ignore`, `enforce` (550 5.5.1 at every RCPT) or
    /// `drop` (521 and close).
    pub pregreet: Action,
    /// DNS block and allow lists in Postfix's `postscreen_dnsbl_sites` syntax:
    /// `zone[=filter][*weight]`; a negative weight makes an allow list.
    pub dnsbl: Vec<String>,
    /// A client whose combined score reaches this is listed (Postfix
    /// `postscreen_dnsbl_threshold`).
    pub dnsbl_threshold: i64,
    /// What to do with a listed client (Postfix `postscreen_dnsbl_action`).
    pub dnsbl_action: Action,
    /// How long a client that passed is remembered, so that it pays the wait once
    /// (Postfix `postscreen_greet_ttl`); its list results are asked again at most an
    /// hour later (Postfix `postscreen_dnsbl_max_ttl`), without the wait.
    pub pass_ttl: Span,
    /// Greylist (client network, sender, recipient) triplets at RCPT.
    pub greylist: bool,
    /// How long a new triplet is refused with `451 4.7.1` (postgrey `--delay`).
    pub greylist_delay: Span,
    /// How long after its first attempt a retry still passes a triplet; later, the
    /// triplet starts again (postgrey `--retry-window`).
    pub greylist_window: Span,
    /// How long a passed triplet, and a client network allowed automatically, are
    /// remembered after they were last seen (postgrey `--max-age`).
    pub greylist_expire: Span,
}

impl Default for ScreenConfig {
    fn default() -> ScreenConfig {
        ScreenConfig {
            enabled: false,
            greet_wait: Span::secs(6),
            pregreet: Action::Ignore,
            dnsbl: Vec::new(),
            dnsbl_threshold: 1,
            dnsbl_action: Action::Ignore,
            pass_ttl: Span::secs(86_400),
            greylist: false,
            greylist_delay: Span::secs(300),
            greylist_window: Span::secs(2 * 86_400),
            greylist_expire: Span::secs(35 * 86_400),
        }
    }
}

/// One problem in the section, with the dotted key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `screen.dnsbl[1]`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn problem(key: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        key: key.into(),
        message: message.into(),
    }
}

/// Most list sites (each costs one query per new client).
pub const MAX_SITES: usize = 32;

impl ScreenConfig {
    /// Every semantic problem.
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        if !(1..=60).contains(&self.greet_wait.as_secs()) {
            p.push(problem("screen.greet_wait", "must be 1s to 60s"));
        }
        if self.dnsbl.len() > MAX_SITES {
            p.push(problem(
                "screen.dnsbl",
                format!("at most {MAX_SITES} sites"),
            ));
        }
        for (i, s) in self.dnsbl.iter().enumerate() {
            if let Err(e) = s.parse::<Site>() {
                p.push(problem(format!("screen.dnsbl[{i}]"), e.to_string()));
            }
        }
        if !(1..=1000).contains(&self.dnsbl_threshold) {
            p.push(problem("screen.dnsbl_threshold", "must be 1 to 1000"));
        }
        if !(60..=30 * 86_400).contains(&self.pass_ttl.as_secs()) {
            p.push(problem("screen.pass_ttl", "must be 1m to 30d"));
        }
        if !(1..=86_400).contains(&self.greylist_delay.as_secs()) {
            p.push(problem("screen.greylist_delay", "must be 1s to 1d"));
        }
        if self.greylist_window <= self.greylist_delay
            || self.greylist_window.as_secs() > 30 * 86_400
        {
            p.push(problem(
                "screen.greylist_window",
                "must be longer than screen.greylist_delay and at most 30d",
            ));
        }
        if !(3600..=366 * 86_400).contains(&self.greylist_expire.as_secs()) {
            p.push(problem("screen.greylist_expire", "must be 1h to 366d"));
        }
        p
    }

    /// The list sites, in configuration order (those that do not parse are left out:
    /// [`ScreenConfig::problems`] reported them).
    pub fn sites(&self) -> Vec<Site> {
        self.dnsbl.iter().filter_map(|s| s.parse().ok()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_and_print_in_units() {
        for (text, secs) in [
            ("6s", 6),
            ("5m", 300),
            ("1h", 3600),
            ("35d", 3_024_000),
            ("90", 90),
        ] {
            assert_eq!(text.parse::<Span>(), Ok(Span::secs(secs)), "{text}");
        }
        assert!("6 parsecs".parse::<Span>().is_err());
        assert!("s".parse::<Span>().is_err());
        assert!("99999999999999999999d".parse::<Span>().is_err());
        assert_eq!(Span::secs(300).to_string(), "5m");
        assert_eq!(Span::secs(90).to_string(), "90s");
        assert_eq!(Span::secs(2 * 86_400).to_string(), "2d");
    }

    #[test]
    fn defaults_are_postscreens_and_postgreys_and_valid() {
        let d = ScreenConfig::default();
        assert!(!d.enabled && !d.greylist);
        assert_eq!(d.greet_wait, Span::secs(6));
        assert_eq!(
            (d.pregreet, d.dnsbl_action),
            (Action::Ignore, Action::Ignore)
        );
        assert_eq!(d.dnsbl_threshold, 1);
        assert_eq!(d.greylist_delay, Span::secs(300));
        assert!(d.problems().is_empty(), "{:?}", d.problems());
    }

    #[test]
    fn problems_name_their_keys() {
        let bad = ScreenConfig {
            greet_wait: Span::secs(0),
            dnsbl: vec!["zen.example*2".into(), "bad..zone".into()],
            dnsbl_threshold: 0,
            greylist_window: Span::secs(10),
            ..ScreenConfig::default()
        };
        let keys: Vec<String> = bad.problems().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "screen.greet_wait",
                "screen.dnsbl[1]",
                "screen.dnsbl_threshold",
                "screen.greylist_window"
            ]
        );
    }
}
