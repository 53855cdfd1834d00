//! `[tls_reports]`: SMTP TLS reporting (RFC 8460; docs/TLS.md "TLS reporting"; every key
//! in docs/CONFIG.md).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Problem, bad_interval, bad_text, parse_duration, plausible_address};

/// The `[tls_reports]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct TlsReportsConfig {
    /// Record sessions and send reports (default false: sending is opt-in).
    pub enabled: bool,
    /// Record sessions (and keep them in the data directory) without sending reports,
    /// to look at them first (`tern tls-reports send` refuses while `enabled` is false).
    pub record: bool,
    /// `organization-name`; empty means the server's host name.
    pub org_name: String,
    /// `contact-info` (an address or URI); empty means the `from` address.
    pub contact: String,
    /// The report messages' `From:` and envelope sender; empty means
    /// `postmaster@<host name>`.
    pub from: String,
    /// Length of a report period: `"24h"` (RFC 8460 §4.1's daily report, the default)
    /// or a divisor of a day down to `"1h"`; periods are aligned to UTC days.
    pub interval: String,
    /// Policy domains kept per period; sessions for more are dropped (counted).
    pub max_domains: usize,
    /// Rows (a policy's successes, or one failure-details row) per period over all
    /// domains; sessions needing more are dropped (counted).
    pub max_rows: usize,
    /// `rua` URIs used per domain.
    pub max_rua: usize,
    /// Observations waiting for the writer; past it they are dropped (counted).
    pub max_pending: usize,
    /// How often new data is written and synced, in seconds: what a crash may lose.
    pub flush_secs: u64,
    /// Time for the `_smtp._tls` lookup of one domain, in seconds.
    pub dns_timeout_secs: u64,
    /// Time for one HTTPS POST (connection, request and answer), in seconds.
    pub https_timeout_secs: u64,
    /// Extra trust anchors (PEM) for `https:` report addresses, added to the web's
    /// roots (a private PKI, or tests); none by default.
    pub https_ca_file: Option<std::path::PathBuf>,
    /// Also POST to `https:` addresses whose host resolves to loopback, private,
    /// link-local and other non-public ranges (tern-https's list); off by default, so a
    /// domain's record cannot aim Tern's POSTs at hosts inside its network.
    pub https_allow_private_addresses: bool,
    /// Inbound: an event for each client whose STARTTLS handshake fails, and for each
    /// that sends mail without TLS on a listener offering it (rate-limited per network).
    pub inbound_events: bool,
}

impl Default for TlsReportsConfig {
    fn default() -> Self {
        TlsReportsConfig {
            enabled: false,
            record: false,
            org_name: String::new(),
            contact: String::new(),
            from: String::new(),
            interval: "24h".into(),
            max_domains: 10_000,
            max_rows: 100_000,
            max_rua: 4,
            max_pending: 65_536,
            flush_secs: 5,
            dns_timeout_secs: 10,
            https_timeout_secs: 30,
            https_ca_file: None,
            https_allow_private_addresses: false,
            inbound_events: false,
        }
    }
}

fn problem(key: &str, message: &str) -> Problem {
    Problem {
        key: format!("tls_reports.{key}"),
        message: message.to_owned(),
    }
}

impl TlsReportsConfig {
    /// Whether outbound sessions are recorded.
    pub fn records(&self) -> bool {
        self.enabled || self.record
    }

    /// The period length.
    pub fn interval_secs(&self) -> u64 {
        parse_duration(&self.interval).unwrap_or(86_400)
    }

    /// The flush interval.
    pub fn flush_every(&self) -> Duration {
        Duration::from_secs(self.flush_secs.max(1))
    }

    /// The reports' sender for host `hostname`.
    pub fn from_for(&self, hostname: &str) -> String {
        if self.from.is_empty() {
            format!("postmaster@{hostname}")
        } else {
            self.from.clone()
        }
    }

    /// `organization-name` for host `hostname`.
    pub fn org_for(&self, hostname: &str) -> String {
        if self.org_name.is_empty() {
            hostname.to_owned()
        } else {
            self.org_name.clone()
        }
    }

    /// `contact-info` for host `hostname`.
    pub fn contact_for(&self, hostname: &str) -> String {
        if self.contact.is_empty() {
            self.from_for(hostname)
        } else {
            self.contact.clone()
        }
    }

    /// Every problem, each with its key.
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        if bad_interval(&self.interval) {
            p.push(problem(
                "interval",
                "a divisor of a day from \"1h\" to \"24h\", so periods align to UTC days",
            ));
        }
        if !self.from.is_empty() && !plausible_address(&self.from) {
            p.push(problem("from", "not a usable address (local@domain)"));
        }
        if bad_text(&self.org_name) {
            p.push(problem(
                "org_name",
                "at most 255 octets, no control characters",
            ));
        }
        if bad_text(&self.contact) {
            p.push(problem(
                "contact",
                "at most 255 octets, no control characters",
            ));
        }
        let ranges: [(&str, usize, usize, usize); 4] = [
            ("max_domains", self.max_domains, 1, 1_000_000),
            ("max_rows", self.max_rows, 1, 10_000_000),
            ("max_rua", self.max_rua, 1, 8),
            ("max_pending", self.max_pending, 1, 10_000_000),
        ];
        for (key, v, lo, hi) in ranges {
            if !(lo..=hi).contains(&v) {
                p.push(problem(key, &format!("from {lo} to {hi}")));
            }
        }
        let secs: [(&str, u64, u64); 3] = [
            ("flush_secs", self.flush_secs, 300),
            ("dns_timeout_secs", self.dns_timeout_secs, 120),
            ("https_timeout_secs", self.https_timeout_secs, 300),
        ];
        for (key, v, hi) in secs {
            if !(1..=hi).contains(&v) {
                p.push(problem(key, &format!("from 1 to {hi}")));
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_daily_and_off() {
        let c = TlsReportsConfig::default();
        assert!(c.problems().is_empty());
        assert!(!c.records() && !c.inbound_events);
        assert_eq!(c.interval_secs(), 86_400);
        assert_eq!(c.contact_for("mx.example"), "postmaster@mx.example");
    }

    #[test]
    fn every_bad_value_is_named() {
        let c = TlsReportsConfig {
            interval: "5h".into(),
            from: "nobody".into(),
            org_name: "a\nb".into(),
            contact: "x".repeat(300),
            max_domains: 0,
            max_rows: 0,
            max_rua: 9,
            max_pending: 0,
            flush_secs: 0,
            dns_timeout_secs: 0,
            https_timeout_secs: 0,
            ..Default::default()
        };
        let keys: Vec<String> = c.problems().into_iter().map(|p| p.key).collect();
        assert_eq!(keys.len(), 11, "{keys:?}");
        assert!(keys.iter().all(|k| k.starts_with("tls_reports.")));
    }
}
