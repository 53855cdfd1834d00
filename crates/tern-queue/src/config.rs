//! `[queue]` and `[delivery]`: scheduling, retry and outbound SMTP settings.
//!
//! Defaults follow Postfix where an operator would expect them (backoff 300 s doubling to
//! 4000 s, five days' lifetime, 50 hops, 5 addresses and 2 sessions per attempt, 20
//! connections per destination, idle connections cached for 2 s and reused for at most
//! 300 s) and Exchange for the 4-hour delay notice. Every value is
//! checked by [`QueueConfig::problems`]; the binary reports the problems with their keys.
//!
//! No struct here uses `deny_unknown_fields`: the binary collects unknown keys itself.

use std::time::Duration;

use serde::Deserialize;

/// When delay notices are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DelayNotices {
    /// Only for recipients whose sender asked with `NOTIFY=DELAY` (RFC 3461).
    #[default]
    Requested,
    /// Also for recipients without a NOTIFY parameter (not for NOTIFY without DELAY).
    Always,
    /// Never.
    Never,
}

/// `[queue]`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct QueueConfig {
    /// Deliveries (connections) in progress at once, all destinations together.
    pub max_concurrency: usize,
    /// Deliveries in progress at once to one destination (next hop).
    pub destination_concurrency: usize,
    /// Messages loaded for delivery at once (each keeps its envelope and the start of its
    /// content in memory, at most 128 KiB; the content itself is streamed from disk).
    pub max_active_messages: usize,
    /// First retry delay, seconds (Postfix minimal_backoff_time).
    pub min_backoff_secs: u64,
    /// Longest retry delay, seconds (Postfix maximal_backoff_time).
    pub max_backoff_secs: u64,
    /// A message still undelivered after this many seconds is bounced (Postfix
    /// maximal_queue_lifetime, 5 days).
    pub max_lifetime_secs: u64,
    /// Seconds after arrival when a delay notice is sent (0 = never).
    pub delay_notice_secs: u64,
    /// Which recipients get delay notices.
    pub delay_notices: DelayNotices,
    /// More `Received:` headers than this and the message bounces with 5.4.6.
    pub hop_limit: usize,
    /// Largest original returned in full in a bounce (RET=FULL); larger ones return only
    /// their headers.
    pub bounce_max_full_size: usize,
    /// Crashes counted against a message before it goes to the poison queue (Exchange
    /// PoisonThreshold), 1 to 10. Which message a crash is counted against is decided by
    /// the evidence (docs/RELIABILITY.md, "Poison messages").
    pub poison_threshold: u32,
    /// Seconds a run of Tern must have lasted before it probes the suspects of an earlier
    /// crash (messages that were in process when the process died), 0 to 3600. A burst of
    /// crashes from another cause (a restart loop, kill -9 after kill -9, the OOM killer)
    /// then finds no probe to land on; a message that really crashes Tern is probed, and
    /// crashes it, after this delay.
    pub probe_delay_secs: u64,
    /// Most suspects probed together, 1 to 1000 (1: strictly one at a time). A crash is
    /// counted only against a suspect probed alone; a group in probe at a crash is probed
    /// again in halves, so a message that kills Tern is isolated within about log2 of
    /// this many more crashes, while innocent suspects are cleared this many at a time.
    pub probe_group_size: usize,
}

impl Default for QueueConfig {
    fn default() -> QueueConfig {
        QueueConfig {
            max_concurrency: 100,
            destination_concurrency: 20,
            max_active_messages: 1000,
            min_backoff_secs: 300,
            max_backoff_secs: 4000,
            max_lifetime_secs: 5 * 86_400,
            delay_notice_secs: 4 * 3600,
            delay_notices: DelayNotices::Requested,
            hop_limit: 50,
            bounce_max_full_size: 10 << 20,
            poison_threshold: 2,
            probe_delay_secs: 10,
            probe_group_size: 64,
        }
    }
}

/// `[delivery]`: the outbound SMTP client.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct DeliveryConfig {
    /// Name given in EHLO; empty = the server's host name.
    pub helo_name: String,
    /// Addresses tried per delivery attempt, over all MX hosts (Postfix
    /// smtp_mx_address_limit).
    pub max_addresses: usize,
    /// Sessions (greeted connections) per delivery attempt (Postfix smtp_mx_session_limit).
    pub max_sessions: usize,
    /// Messages (transactions) sent over one connection before it is closed.
    pub max_messages_per_connection: u32,
    /// Seconds after it was opened when a connection is no longer reused (Postfix
    /// smtp_connection_reuse_time_limit).
    pub max_connection_age_secs: u64,
    /// Idle connections kept in the connection cache, all endpoints together; when it is
    /// full, the one idle longest is closed to make room. 0 turns the cache off.
    pub connection_cache_size: usize,
    /// Seconds an idle connection waits in the cache for a job to its endpoint before it
    /// is closed (Postfix smtp_connection_cache_time_limit).
    pub connection_cache_idle_secs: u64,
    /// Extra CA certificates (PEM file) trusted for `tls = "verify"` routes, besides the
    /// built-in web PKI roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// Seconds to wait for a TCP connection.
    pub connect_timeout_secs: u64,
    /// Seconds to wait for the greeting (RFC 5321: 5 minutes).
    pub greeting_timeout_secs: u64,
    /// Seconds for EHLO, STARTTLS, MAIL, RCPT, RSET replies.
    pub command_timeout_secs: u64,
    /// Seconds for the reply to DATA (RFC 5321: 2 minutes).
    pub data_start_timeout_secs: u64,
    /// Seconds for each block of data to be written (RFC 5321: 3 minutes).
    pub data_block_timeout_secs: u64,
    /// Seconds for the reply after the final dot (RFC 5321: 10 minutes).
    pub data_end_timeout_secs: u64,
    /// Connection and message limits per destination or group of MX hosts
    /// (`[[delivery.destination_limits]]`, `destlimits.rs`); across the cluster when
    /// `[cluster] enabled`. Restart to change.
    pub destination_limits: Vec<crate::destlimits::DestinationLimitConfig>,
    /// Longest a delivery waits in memory for a destination limit's connection lease or
    /// message allowance before its recipients are deferred (4.4.5).
    pub destination_limit_wait_secs: u64,
}

impl Default for DeliveryConfig {
    fn default() -> DeliveryConfig {
        DeliveryConfig {
            helo_name: String::new(),
            max_addresses: 5,
            max_sessions: 2,
            max_messages_per_connection: 100,
            max_connection_age_secs: 300,
            connection_cache_size: 100,
            connection_cache_idle_secs: 2,
            ca_file: None,
            connect_timeout_secs: 30,
            greeting_timeout_secs: 300,
            command_timeout_secs: 300,
            data_start_timeout_secs: 120,
            data_block_timeout_secs: 180,
            data_end_timeout_secs: 600,
            destination_limits: Vec::new(),
            destination_limit_wait_secs: 300,
        }
    }
}

/// One problem in the queue or delivery section, with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Full key (`queue.max_concurrency`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn at_least(p: &mut Vec<Problem>, key: &str, value: u64, min: u64) {
    if value < min {
        p.push(Problem {
            key: key.into(),
            message: format!("must be at least {min}"),
        });
    }
}

impl QueueConfig {
    /// Every problem in `[queue]`.
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        at_least(
            &mut p,
            "queue.max_concurrency",
            self.max_concurrency as u64,
            1,
        );
        at_least(
            &mut p,
            "queue.destination_concurrency",
            self.destination_concurrency as u64,
            1,
        );
        at_least(
            &mut p,
            "queue.max_active_messages",
            self.max_active_messages as u64,
            1,
        );
        at_least(&mut p, "queue.min_backoff_secs", self.min_backoff_secs, 1);
        if self.max_backoff_secs < self.min_backoff_secs {
            p.push(Problem {
                key: "queue.max_backoff_secs".into(),
                message: "must be at least queue.min_backoff_secs".into(),
            });
        }
        at_least(&mut p, "queue.max_lifetime_secs", self.max_lifetime_secs, 1);
        at_least(&mut p, "queue.hop_limit", self.hop_limit as u64, 1);
        if !(1..=10).contains(&self.poison_threshold) {
            p.push(Problem {
                key: "queue.poison_threshold".into(),
                message: "must be from 1 to 10".into(),
            });
        }
        if !(1..=tern_spool::crash::MAX_PROBE_GROUP).contains(&self.probe_group_size) {
            p.push(Problem {
                key: "queue.probe_group_size".into(),
                message: format!("must be from 1 to {}", tern_spool::crash::MAX_PROBE_GROUP),
            });
        }
        if self.probe_delay_secs > 3600 {
            p.push(Problem {
                key: "queue.probe_delay_secs".into(),
                message: "must be from 0 to 3600".into(),
            });
        }
        p
    }

    /// The delay before retry number `attempt` (1-based): `min_backoff` doubled per
    /// attempt, capped at `max_backoff`, with up to ±10 % jitter so retries of messages
    /// deferred together spread out.
    pub fn backoff(&self, attempts: u32, rng: &mut impl rand::Rng) -> Duration {
        let exp = attempts.saturating_sub(1).min(30);
        let base = self
            .min_backoff_secs
            .saturating_mul(1u64 << exp)
            .min(self.max_backoff_secs)
            .max(1);
        let ms = base.saturating_mul(1000);
        let spread = ms / 10;
        let jittered = if spread == 0 {
            ms
        } else {
            ms - spread + rng.random_range(0..=2 * spread)
        };
        Duration::from_millis(jittered)
    }
}

impl DeliveryConfig {
    /// Every problem in `[delivery]`.
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        at_least(
            &mut p,
            "delivery.max_addresses",
            self.max_addresses as u64,
            1,
        );
        at_least(&mut p, "delivery.max_sessions", self.max_sessions as u64, 1);
        at_least(
            &mut p,
            "delivery.destination_limit_wait_secs",
            self.destination_limit_wait_secs,
            1,
        );
        for (key, message) in crate::destlimits::problems(&self.destination_limits) {
            p.push(Problem { key, message });
        }
        at_least(
            &mut p,
            "delivery.max_messages_per_connection",
            u64::from(self.max_messages_per_connection),
            1,
        );
        for (key, v) in [
            (
                "delivery.max_connection_age_secs",
                self.max_connection_age_secs,
            ),
            (
                "delivery.connection_cache_idle_secs",
                self.connection_cache_idle_secs,
            ),
            ("delivery.connect_timeout_secs", self.connect_timeout_secs),
            ("delivery.greeting_timeout_secs", self.greeting_timeout_secs),
            ("delivery.command_timeout_secs", self.command_timeout_secs),
            (
                "delivery.data_start_timeout_secs",
                self.data_start_timeout_secs,
            ),
            (
                "delivery.data_block_timeout_secs",
                self.data_block_timeout_secs,
            ),
            ("delivery.data_end_timeout_secs", self.data_end_timeout_secs),
        ] {
            at_least(&mut p, key, v, 1);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let c = QueueConfig::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (attempt, base) in [
            (1, 300),
            (2, 600),
            (3, 1200),
            (4, 2400),
            (5, 4000),
            (40, 4000),
        ] {
            for _ in 0..50 {
                let d = c.backoff(attempt, &mut rng).as_secs_f64();
                let b = base as f64;
                assert!(d >= b * 0.9 && d <= b * 1.1, "attempt {attempt}: {d}");
            }
        }
    }

    #[test]
    fn defaults_are_valid_and_problems_name_keys() {
        assert!(QueueConfig::default().problems().is_empty());
        assert!(DeliveryConfig::default().problems().is_empty());
        let bad = QueueConfig {
            max_concurrency: 0,
            probe_delay_secs: 3601,
            min_backoff_secs: 10,
            max_backoff_secs: 5,
            ..QueueConfig::default()
        };
        let keys: Vec<_> = bad.problems().into_iter().map(|p| p.key).collect();
        assert!(keys.contains(&"queue.max_concurrency".to_string()));
        assert!(keys.contains(&"queue.max_backoff_secs".to_string()));
        assert!(keys.contains(&"queue.probe_delay_secs".to_string()));
    }
}
