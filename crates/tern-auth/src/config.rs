//! The `[auth]` section of Tern's configuration (docs/CONFIG.md): where credentials come
//! from, which mechanisms are offered, brute-force limits, the sender-login check and
//! what the Received header says about authenticated submissions.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::guard::{GuardPolicy, Threshold};
use crate::sasl::Mechanism;

/// Which sender addresses an authenticated user may use (a sender-login map decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SenderCheck {
    /// No check.
    #[default]
    Off,
    /// The envelope sender (MAIL FROM) must be the user's.
    Envelope,
    /// The envelope sender and every From header address must be the user's.
    EnvelopeAndHeader,
}

/// `[auth]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct AuthConfig {
    /// A Dovecot passwd-file (`user:{SCHEME}hash`), reloaded with the configuration.
    pub passwd_file: Option<PathBuf>,
    /// Dovecot's auth socket (`auth-client`, or a listener set up for Tern).
    pub dovecot_socket: Option<PathBuf>,
    /// Mechanisms offered, in the order advertised.
    pub mechanisms: Vec<Mechanism>,
    /// Password checks running at once (0: one per CPU).
    pub max_concurrent_hashes: usize,
    /// Seconds allowed for each read or write on Dovecot's socket.
    pub dovecot_timeout_secs: u64,
    /// Failed authentications from one client network (IPv4 address, IPv6 /64) within
    /// `failure_window_secs` that lock it out.
    pub max_failures_per_client: u32,
    /// Failed authentications for one user name within the window that lock it out.
    pub max_failures_per_user: u32,
    /// How long failures are remembered, seconds.
    pub failure_window_secs: u64,
    /// How long a lockout lasts, seconds.
    pub lockout_secs: u64,
    /// Delay before the first failure reply, milliseconds; doubles with each failure.
    pub failure_delay_ms: u64,
    /// Longest delay before a failure reply, milliseconds.
    pub max_failure_delay_ms: u64,
    /// The sender-login map (`address-or-@domain  login[,login]`).
    pub sender_login_map: Option<PathBuf>,
    /// What the sender-login map is checked against.
    pub sender_check: SenderCheck,
    /// Write the authenticated user in the Received header (Postfix's
    /// `smtpd_sasl_authenticated_header`).
    pub received_show_user: bool,
    /// Leave the client's HELO name, host name and address out of the Received header
    /// of authenticated submissions.
    pub received_hide_client: bool,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            passwd_file: None,
            dovecot_socket: None,
            mechanisms: vec![Mechanism::Plain, Mechanism::Login],
            max_concurrent_hashes: 0,
            dovecot_timeout_secs: 30,
            max_failures_per_client: 10,
            max_failures_per_user: 20,
            failure_window_secs: 900,
            lockout_secs: 900,
            failure_delay_ms: 1000,
            max_failure_delay_ms: 10_000,
            sender_login_map: None,
            sender_check: SenderCheck::Off,
            received_show_user: false,
            received_hide_client: false,
        }
    }
}

/// A problem in `[auth]`: the key (under `auth.`) and what is wrong.
pub type Problem = (String, String);

impl AuthConfig {
    /// True when a credential source is configured.
    pub fn has_backend(&self) -> bool {
        self.passwd_file.is_some() || self.dovecot_socket.is_some()
    }

    /// Every semantic problem (files are checked when loaded).
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        let mut need = |ok: bool, key: &str, msg: &str| {
            if !ok {
                p.push((format!("auth.{key}"), msg.to_string()));
            }
        };
        need(
            !(self.passwd_file.is_some() && self.dovecot_socket.is_some()),
            "dovecot_socket",
            "set passwd_file or dovecot_socket, not both",
        );
        need(
            !self.mechanisms.is_empty(),
            "mechanisms",
            "list at least one mechanism",
        );
        let mut seen = std::collections::HashSet::new();
        need(
            self.mechanisms.iter().all(|m| seen.insert(*m)),
            "mechanisms",
            "a mechanism is listed twice",
        );
        need(
            self.max_concurrent_hashes <= 1024,
            "max_concurrent_hashes",
            "must be 0 to 1024",
        );
        need(
            (1..=300).contains(&self.dovecot_timeout_secs),
            "dovecot_timeout_secs",
            "must be 1 to 300",
        );
        need(
            self.max_failures_per_client >= 1,
            "max_failures_per_client",
            "must be at least 1",
        );
        need(
            self.max_failures_per_user >= 1,
            "max_failures_per_user",
            "must be at least 1",
        );
        need(
            (1..=86_400).contains(&self.failure_window_secs),
            "failure_window_secs",
            "must be 1 to 86400",
        );
        need(
            (1..=86_400).contains(&self.lockout_secs),
            "lockout_secs",
            "must be 1 to 86400",
        );
        need(
            self.failure_delay_ms <= 60_000,
            "failure_delay_ms",
            "must be 0 to 60000",
        );
        need(
            self.max_failure_delay_ms >= self.failure_delay_ms
                && self.max_failure_delay_ms <= 60_000,
            "max_failure_delay_ms",
            "must be at least failure_delay_ms and at most 60000",
        );
        need(
            self.sender_check == SenderCheck::Off || self.sender_login_map.is_some(),
            "sender_check",
            "needs auth.sender_login_map",
        );
        p
    }

    /// The brute-force policy.
    pub fn guard_policy(&self) -> GuardPolicy {
        let window = Duration::from_secs(self.failure_window_secs);
        let lockout = Duration::from_secs(self.lockout_secs);
        GuardPolicy {
            client: Threshold {
                max_failures: self.max_failures_per_client,
                window,
                lockout,
            },
            user: Threshold {
                max_failures: self.max_failures_per_user,
                window,
                lockout,
            },
            base_delay: Duration::from_millis(self.failure_delay_ms),
            max_delay: Duration::from_millis(self.max_failure_delay_ms),
        }
    }

    /// Password checks allowed at once.
    pub fn hash_permits(&self) -> usize {
        match self.max_concurrent_hashes {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_sound_and_mistakes_are_named() {
        assert!(AuthConfig::default().problems().is_empty());
        let bad = AuthConfig {
            passwd_file: Some("a".into()),
            dovecot_socket: Some("b".into()),
            mechanisms: vec![Mechanism::Plain, Mechanism::Plain],
            sender_check: SenderCheck::Envelope,
            max_failure_delay_ms: 1,
            ..AuthConfig::default()
        };
        let keys: Vec<String> = bad.problems().into_iter().map(|(k, _)| k).collect();
        for k in [
            "auth.dovecot_socket",
            "auth.mechanisms",
            "auth.sender_check",
            "auth.max_failure_delay_ms",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k}: {keys:?}");
        }
    }
}
