//! `[dmarc_reports]`: DMARC aggregate reports (docs/REPORTS.md; every key in
//! docs/CONFIG.md).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `[dmarc_reports]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct DmarcReportsConfig {
    /// Keep observations and send reports (default false).
    pub enabled: bool,
    /// `org_name` of the reports; empty means the server's host name.
    pub org_name: String,
    /// The reports' `From:`, envelope sender and `email`; empty means
    /// `postmaster@<host name>`.
    pub email: String,
    /// `extra_contact_info` of the reports (a URI or text); empty leaves it out.
    pub extra_contact_info: String,
    /// Length of a report period: `"24h"` (the default) or a divisor of a day down to
    /// `"1h"`; periods are aligned to UTC days.
    pub interval: String,
    /// Policy domains kept per period; observations for more are dropped (counted).
    pub max_domains: usize,
    /// Rows (distinct source and results) per period over all domains; observations
    /// needing more are dropped, counted, and stated in the report's `<error>`.
    pub max_rows: usize,
    /// `mailto:` addresses used per domain (RFC 7489 §6.2 asks for at least two).
    pub max_rua: usize,
    /// Observations waiting for the writer; past it they are dropped (counted).
    pub max_pending: usize,
    /// How often new data is written and synced to the journal, in seconds: what a
    /// crash may lose.
    pub flush_secs: u64,
    /// Time for the DNS check of one external report address, in seconds.
    pub dns_timeout_secs: u64,
}

impl Default for DmarcReportsConfig {
    fn default() -> Self {
        DmarcReportsConfig {
            enabled: false,
            org_name: String::new(),
            email: String::new(),
            extra_contact_info: String::new(),
            interval: "24h".into(),
            max_domains: 10_000,
            max_rows: 100_000,
            max_rua: 2,
            max_pending: 65_536,
            flush_secs: 5,
            dns_timeout_secs: 10,
        }
    }
}

/// A problem with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `dmarc_reports.<key>`
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn problem(key: &str, message: &str) -> Problem {
    Problem {
        key: format!("dmarc_reports.{key}"),
        message: message.to_owned(),
    }
}

/// Seconds of a duration written `N`, `Ns`, `Nm`, `Nh` or `Nd`.
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// True for an address Tern can use as a sender: `local@domain`, printable ASCII, no
/// space, angle bracket or comma, at most 254 octets.
pub fn plausible_address(a: &str) -> bool {
    let Some((local, domain)) = a.rsplit_once('@') else {
        return false;
    };
    a.len() <= 254
        && !local.is_empty()
        && !local.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && a.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b',' | b'"' | b'\\'))
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Whether `interval` is not a divisor of a day from one hour to 24 (periods must
/// align to UTC days).
pub fn bad_interval(interval: &str) -> bool {
    !matches!(parse_duration(interval), Some(s) if (3600..=86_400).contains(&s) && 86_400 % s == 0)
}

/// Whether a free text of a report (`org_name`, contact) is too long or holds control
/// characters.
pub fn bad_text(s: &str) -> bool {
    s.len() > 255 || s.chars().any(char::is_control)
}

impl DmarcReportsConfig {
    /// The period length.
    pub fn interval_secs(&self) -> u64 {
        parse_duration(&self.interval).unwrap_or(86_400)
    }

    /// The flush interval.
    pub fn flush_every(&self) -> Duration {
        Duration::from_secs(self.flush_secs.max(1))
    }

    /// The reports' sender for host `hostname`.
    pub fn email_for(&self, hostname: &str) -> String {
        if self.email.is_empty() {
            format!("postmaster@{hostname}")
        } else {
            self.email.clone()
        }
    }

    /// The reports' `org_name` for host `hostname`.
    pub fn org_for(&self, hostname: &str) -> String {
        if self.org_name.is_empty() {
            hostname.to_owned()
        } else {
            self.org_name.clone()
        }
    }

    /// Every problem, each with its key.
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        if bad_interval(&self.interval) {
            p.push(problem(
                "interval",
                "a divisor of a day from \"1h\" to \"24h\" (\"24h\", \"12h\", \"6h\", \"1h\", ...), so periods align to UTC days",
            ));
        }
        if !self.email.is_empty() && !plausible_address(&self.email) {
            p.push(problem("email", "not a usable address (local@domain)"));
        }
        if bad_text(&self.org_name) {
            p.push(problem(
                "org_name",
                "at most 255 octets, no control characters",
            ));
        }
        if bad_text(&self.extra_contact_info) {
            p.push(problem(
                "extra_contact_info",
                "at most 255 octets, no control characters",
            ));
        }
        if !(1..=1_000_000).contains(&self.max_domains) {
            p.push(problem("max_domains", "from 1 to 1000000"));
        }
        if !(1..=10_000_000).contains(&self.max_rows) {
            p.push(problem("max_rows", "from 1 to 10000000"));
        }
        if !(1..=8).contains(&self.max_rua) {
            p.push(problem("max_rua", "from 1 to 8"));
        }
        if !(1..=10_000_000).contains(&self.max_pending) {
            p.push(problem("max_pending", "from 1 to 10000000"));
        }
        if !(1..=300).contains(&self.flush_secs) {
            p.push(problem("flush_secs", "from 1 to 300"));
        }
        if !(1..=120).contains(&self.dns_timeout_secs) {
            p.push(problem("dns_timeout_secs", "from 1 to 120"));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_daily() {
        let c = DmarcReportsConfig::default();
        assert!(c.problems().is_empty());
        assert_eq!(c.interval_secs(), 86_400);
        assert_eq!(c.email_for("mx.example"), "postmaster@mx.example");
        assert_eq!(c.org_for("mx.example"), "mx.example");
    }

    #[test]
    fn every_bad_value_is_named() {
        let c = DmarcReportsConfig {
            interval: "7h".into(),
            email: "no at sign".into(),
            max_domains: 0,
            max_rows: 0,
            max_rua: 9,
            max_pending: 0,
            flush_secs: 0,
            dns_timeout_secs: 0,
            org_name: "a\nb".into(),
            ..Default::default()
        };
        let keys: Vec<String> = c.problems().into_iter().map(|p| p.key).collect();
        for k in [
            "interval",
            "email",
            "org_name",
            "max_domains",
            "max_rows",
            "max_rua",
            "max_pending",
            "flush_secs",
            "dns_timeout_secs",
        ] {
            assert!(
                keys.contains(&format!("dmarc_reports.{k}")),
                "{k}: {keys:?}"
            );
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Some(86_400));
        assert_eq!(parse_duration("90m"), Some(5400));
        assert_eq!(parse_duration("3600"), Some(3600));
        assert_eq!(parse_duration("1d"), Some(86_400));
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration("5w"), None);
        for ok in ["1h", "2h", "6h", "12h", "24h"] {
            let c = DmarcReportsConfig {
                interval: ok.into(),
                ..Default::default()
            };
            assert!(c.problems().is_empty(), "{ok}");
        }
    }
}
