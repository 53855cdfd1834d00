//! Configuration of the SMTP server: listeners, their limits and timeouts, relay policy.
//!
//! These types are deserialised from the `[[listener]]` and `[relay]` tables of Tern's
//! TOML file (the binary composes them). Every field has a default, documented in
//! docs/CONFIG.md; unknown keys are refused by the binary. [`ListenerConfig::problems`]
//! and [`RelayConfig::problems`] report every semantic problem with its key so
//! `tern check-config` can print them all at once.

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;

use tern_proto::BareLinePolicy;

/// One problem in the configuration, with the dotted key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key, e.g. `listener[0].address`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigProblem {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> ConfigProblem {
        ConfigProblem {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// What to do with a bare CR or LF in DATA (see `tern_proto::data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BareLf {
    /// Read the whole message, then refuse it with `550 5.6.11`.
    Reject,
    /// Store bare CR/LF as CRLF. Safe against SMTP smuggling because data still ends
    /// only at a real CRLF.CRLF and a normalised line never starts a dot line.
    Normalize,
}

impl BareLf {
    /// The codec policy.
    pub fn policy(self) -> BareLinePolicy {
        match self {
            BareLf::Reject => BareLinePolicy::Reject,
            BareLf::Normalize => BareLinePolicy::Normalize,
        }
    }
}

/// How a listener uses TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain SMTP; STARTTLS is offered when a certificate is configured.
    #[default]
    Starttls,
    /// TLS from the first byte (RFC 8314, the port-465 style). Needs a certificate.
    Implicit,
    /// Never TLS, even when a certificate is configured.
    None,
}

/// Whether a listener offers SMTP AUTH (docs/SUBMISSION.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No AUTH (an MX listener): `AUTH` gets `502 5.5.1`.
    #[default]
    None,
    /// AUTH offered under TLS; clients may also send without it (as on port 25, where
    /// only what the relay rules allow is accepted from them).
    Optional,
    /// AUTH offered under TLS and needed before MAIL (`530 5.7.0`): a submission
    /// listener (ports 587 and 465).
    Required,
}

/// One listening socket and its limits.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct ListenerConfig {
    /// Name used in events and the Received header's listener note.
    pub name: String,
    /// Address and port; IPv6 as `[::1]:2525`.
    pub address: SocketAddr,
    /// TLS mode.
    pub tls: TlsMode,
    /// PEM certificate chain; enables STARTTLS / implicit TLS.
    pub certificate: Option<PathBuf>,
    /// PEM private key for `certificate`.
    pub private_key: Option<PathBuf>,
    /// Most simultaneous connections on this listener; when full, the session idle
    /// longest gives way, and without one a newcomer gets `421 4.7.0`.
    pub max_connections: usize,
    /// Most simultaneous connections from one client network (an IPv4 address, an IPv6
    /// /64: see `client_prefix_v4` and `client_prefix_v6`).
    pub max_connections_per_client: usize,
    /// Prefix length of an IPv4 client network for `max_connections_per_client`.
    pub client_prefix_v4: u8,
    /// Prefix length of an IPv6 client network for `max_connections_per_client`.
    pub client_prefix_v6: u8,
    /// Percentage of `max_connections` only relay-network clients may use (rounded
    /// down).
    pub relay_reserve_percent: u8,
    /// Most octets in a command line, CRLF included (RFC 5321: 512).
    pub max_command_line: usize,
    /// Most octets in one line of message text, CRLF excluded (RFC 5322 asks for 998).
    pub max_text_line: usize,
    /// Largest message accepted, in octets (advertised with SIZE).
    pub max_message_size: u64,
    /// Most recipients per message; more get `452 4.5.3`.
    pub max_recipients: usize,
    /// Erroneous commands allowed per session before `421` and close.
    pub max_errors: u32,
    /// NOOP, RSET, HELP, VRFY and EXPN commands allowed per session (the count restarts
    /// after each message queued); one more gets `421 4.7.0` and close.
    pub max_junk_commands: u32,
    /// Least rate, in octets per second, at which DATA and BDAT content must keep
    /// arriving (see `Timeouts::data`).
    pub min_data_rate: u64,
    /// What to do with bare CR / LF in DATA.
    pub bare_line_endings: BareLf,
    /// Timeouts in seconds.
    pub timeouts: Timeouts,
    /// Shorter timeouts and tighter limits while the listener is nearly full.
    pub stress: Stress,
    /// SMTP AUTH on this listener: `none`, `optional` or `required` (the credential
    /// source and mechanisms are in `[auth]`).
    pub auth: AuthMode,
    /// Offer AUTH without TLS to loopback clients (127.0.0.0/8, ::1) only, for a local
    /// webmail or test client; everyone else still needs TLS first (`538 5.7.11`).
    pub allow_plaintext_loopback: bool,
    /// Screening before the first command and greylisting on this listener
    /// (docs/SCREENING.md); unset: on when `[screen] enabled`, except on listeners with
    /// `auth = "required"`. Clients in relay networks are never screened.
    pub screen: Option<bool>,
    /// Inbound verification on this listener (`[verify]`, docs/FILTERING.md); unset: on
    /// when `verify.enabled`, except on listeners with `auth = "required"`. Never applied
    /// to relay networks or authenticated clients.
    pub verify: Option<bool>,
}

/// Stress mode (like Postfix's): while many of the listener's places are in use, every
/// session works under shorter timeouts and tighter limits, so the places turn over.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct Stress {
    /// Stress starts when this percentage of `max_connections` is in use (rounded up).
    pub enter_percent: u8,
    /// Stress ends when fewer than this percentage are in use (rounded up); below
    /// `enter_percent` so the mode does not flap.
    pub leave_percent: u8,
    /// `timeouts.command` in stress, in seconds (the smaller of the two applies).
    pub command_timeout: u64,
    /// `timeouts.data` in stress, in seconds (the smaller of the two applies); also
    /// bounds a TLS handshake.
    pub data_timeout: u64,
    /// `max_errors` in stress (the smaller of the two applies).
    pub max_errors: u32,
    /// `max_junk_commands` in stress (the smaller of the two applies).
    pub max_junk_commands: u32,
}

impl Default for Stress {
    fn default() -> Stress {
        Stress {
            enter_percent: 80,
            leave_percent: 60,
            command_timeout: 10,
            data_timeout: 10,
            max_errors: 3,
            max_junk_commands: 10,
        }
    }
}

/// Per-stage timeouts in seconds (RFC 5321 §4.5.3.2 gives the server side at least five
/// minutes for commands).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct Timeouts {
    /// A whole command line must arrive within this time from when the server began
    /// waiting for it (bytes arriving do not restart it).
    pub command: u64,
    /// DATA and BDAT content: the most time without progress. The budget starts at this
    /// value; waiting spends it, every octet received adds `1 / min_data_rate` seconds,
    /// and it never exceeds this value.
    pub data: u64,
    /// The most a session may last (Exchange's ConnectionTimeout); a message still
    /// arriving then gets `data` more to finish.
    pub session: u64,
    /// Completing a TLS handshake.
    pub tls_handshake: u64,
    /// Writing a reply (a client that does not read).
    pub write: u64,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            command: 300,
            data: 180,
            session: 600,
            tls_handshake: 30,
            write: 120,
        }
    }
}

impl Default for ListenerConfig {
    fn default() -> ListenerConfig {
        ListenerConfig {
            name: "smtp".into(),
            address: SocketAddr::from(([127, 0, 0, 1], 2525)),
            tls: TlsMode::Starttls,
            certificate: None,
            private_key: None,
            max_connections: 1000,
            max_connections_per_client: 50,
            client_prefix_v4: 32,
            client_prefix_v6: 64,
            relay_reserve_percent: 10,
            max_command_line: 512,
            max_text_line: 8192,
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 1000,
            max_errors: 20,
            max_junk_commands: 100,
            min_data_rate: 500,
            bare_line_endings: BareLf::Normalize,
            timeouts: Timeouts::default(),
            stress: Stress::default(),
            auth: AuthMode::None,
            allow_plaintext_loopback: false,
            screen: None,
            verify: None,
        }
    }
}

impl ListenerConfig {
    /// Every semantic problem, keyed under `prefix` (e.g. `listener[0]`).
    pub fn problems(&self, prefix: &str) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let mut need = |ok: bool, key: &str, msg: &str| {
            if !ok {
                p.push(ConfigProblem::new(format!("{prefix}.{key}"), msg));
            }
        };
        need(!self.name.is_empty(), "name", "must not be empty");
        need(
            self.max_connections > 0,
            "max_connections",
            "must be at least 1",
        );
        need(
            self.max_connections_per_client > 0,
            "max_connections_per_client",
            "must be at least 1",
        );
        need(
            (64..=65536).contains(&self.max_command_line),
            "max_command_line",
            "must be between 64 and 65536 (RFC 5321 needs 512)",
        );
        need(
            (78..=1_048_576).contains(&self.max_text_line),
            "max_text_line",
            "must be between 78 and 1048576",
        );
        need(
            self.max_message_size >= 1024,
            "max_message_size",
            "must be at least 1024",
        );
        need(
            self.max_recipients > 0,
            "max_recipients",
            "must be at least 1",
        );
        need(self.max_errors > 0, "max_errors", "must be at least 1");
        need(
            self.max_junk_commands > 0,
            "max_junk_commands",
            "must be at least 1",
        );
        need(
            self.min_data_rate > 0,
            "min_data_rate",
            "must be at least 1 octet per second",
        );
        need(
            (8..=32).contains(&self.client_prefix_v4),
            "client_prefix_v4",
            "must be between 8 and 32",
        );
        need(
            (16..=128).contains(&self.client_prefix_v6),
            "client_prefix_v6",
            "must be between 16 and 128",
        );
        need(
            self.relay_reserve_percent <= 90,
            "relay_reserve_percent",
            "must be between 0 and 90",
        );
        for (k, v) in [
            ("timeouts.command", self.timeouts.command),
            ("timeouts.data", self.timeouts.data),
            ("timeouts.session", self.timeouts.session),
            ("timeouts.tls_handshake", self.timeouts.tls_handshake),
            ("timeouts.write", self.timeouts.write),
            ("stress.command_timeout", self.stress.command_timeout),
            ("stress.data_timeout", self.stress.data_timeout),
        ] {
            need(v > 0, k, "must be at least 1 second");
        }
        need(
            (1..=100).contains(&self.stress.enter_percent),
            "stress.enter_percent",
            "must be between 1 and 100",
        );
        need(
            (1..self.stress.enter_percent.max(1)).contains(&self.stress.leave_percent),
            "stress.leave_percent",
            "must be at least 1 and below stress.enter_percent",
        );
        need(
            self.stress.max_errors > 0,
            "stress.max_errors",
            "must be at least 1",
        );
        need(
            self.stress.max_junk_commands > 0,
            "stress.max_junk_commands",
            "must be at least 1",
        );
        match (&self.certificate, &self.private_key) {
            (Some(_), None) => need(false, "private_key", "needed when certificate is set"),
            (None, Some(_)) => need(false, "certificate", "needed when private_key is set"),
            _ => {}
        }
        if self.tls == TlsMode::Implicit && self.certificate.is_none() {
            need(
                false,
                "certificate",
                "tls = \"implicit\" needs a certificate",
            );
        }
        if self.auth != AuthMode::None
            && (self.certificate.is_none() || self.tls == TlsMode::None)
            && !self.allow_plaintext_loopback
        {
            need(
                false,
                "auth",
                "AUTH is offered only under TLS: configure a certificate (or allow_plaintext_loopback for loopback clients only)",
            );
        }
        for (key, path) in [
            ("certificate", &self.certificate),
            ("private_key", &self.private_key),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                need(false, key, &format!("file {} not found", path.display()));
            }
        }
        p
    }
}

impl ListenerConfig {
    /// Whether inbound verification applies on this listener when `[verify] enabled` is
    /// `enabled`.
    pub fn verifies(&self, enabled: bool) -> bool {
        enabled && self.verify.unwrap_or(self.auth != AuthMode::Required)
    }

    /// The connection limits of this listener, in connections.
    pub fn limiter_config(&self) -> crate::limits::LimiterConfig {
        let max = self.max_connections;
        let percent = |p: u8, round_up: bool| {
            let scaled = max.saturating_mul(usize::from(p));
            if round_up {
                scaled.div_ceil(100)
            } else {
                scaled / 100
            }
        };
        crate::limits::LimiterConfig {
            max_total: max,
            max_per_client: self.max_connections_per_client,
            // At least one place stays open to outside clients.
            reserved: percent(self.relay_reserve_percent, false).min(max.saturating_sub(1)),
            prefix_v4: self.client_prefix_v4,
            prefix_v6: self.client_prefix_v6,
            stress_enter: percent(self.stress.enter_percent, true).max(1),
            stress_leave: percent(self.stress.leave_percent, true),
        }
    }
}

/// Which mail Tern accepts: for which domains, and from whom for any domain.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct RelayConfig {
    /// Domains Tern receives mail for, from anyone. An entry starting with a dot
    /// (`.example.com`) matches every subdomain.
    pub domains: Vec<String>,
    /// Client networks that may send to any domain (relay).
    pub networks: Vec<IpNet>,
}

impl Default for RelayConfig {
    fn default() -> RelayConfig {
        RelayConfig {
            domains: vec!["localhost".into()],
            networks: vec![
                "127.0.0.0/8"
                    .parse()
                    .unwrap_or(IpNet::V4(Default::default())),
                "::1/128".parse().unwrap_or(IpNet::V6(Default::default())),
            ],
        }
    }
}

impl RelayConfig {
    /// Every semantic problem, keyed under `relay`.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        for (i, d) in self.domains.iter().enumerate() {
            let bare = d.strip_prefix('.').unwrap_or(d);
            if !tern_proto::address::valid_domain(&bare.to_lowercase()) {
                p.push(ConfigProblem::new(
                    format!("relay.domains[{i}]"),
                    format!("{d:?} is not a valid domain"),
                ));
            }
        }
        for (i, n) in self.networks.iter().enumerate() {
            if n.prefix_len() == 0 {
                p.push(ConfigProblem::new(
                    format!("relay.networks[{i}]"),
                    format!("{n} would make Tern an open relay; list real client networks"),
                ));
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_have_no_problems() {
        assert_eq!(ListenerConfig::default().problems("l"), vec![]);
    }

    #[test]
    fn limiter_config_from_percentages() {
        let c = ListenerConfig::default().limiter_config();
        assert_eq!(
            (c.max_total, c.reserved, c.stress_enter, c.stress_leave),
            (1000, 100, 800, 600)
        );
        assert_eq!((c.prefix_v4, c.prefix_v6, c.max_per_client), (32, 64, 50));
        let small = ListenerConfig {
            max_connections: 7,
            ..ListenerConfig::default()
        }
        .limiter_config();
        // Reserve rounded down, thresholds up.
        assert_eq!(
            (small.reserved, small.stress_enter, small.stress_leave),
            (0, 6, 5)
        );
        let all_reserved = ListenerConfig {
            max_connections: 2,
            relay_reserve_percent: 90,
            ..ListenerConfig::default()
        }
        .limiter_config();
        assert_eq!(all_reserved.reserved, 1);
    }

    #[test]
    fn auth_needs_tls_unless_plaintext_loopback() {
        let auth = ListenerConfig {
            auth: AuthMode::Required,
            ..ListenerConfig::default()
        };
        let keys: Vec<String> = auth.problems("l").into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["l.auth"]);
        let loopback = ListenerConfig {
            allow_plaintext_loopback: true,
            ..auth
        };
        assert!(loopback.problems("l").is_empty());
    }

    #[test]
    fn new_keys_are_checked() {
        let bad = ListenerConfig {
            max_junk_commands: 0,
            min_data_rate: 0,
            client_prefix_v4: 33,
            client_prefix_v6: 8,
            relay_reserve_percent: 91,
            timeouts: Timeouts {
                session: 0,
                ..Timeouts::default()
            },
            stress: Stress {
                enter_percent: 50,
                leave_percent: 50,
                command_timeout: 0,
                data_timeout: 0,
                max_errors: 0,
                max_junk_commands: 0,
            },
            ..ListenerConfig::default()
        };
        let keys: Vec<String> = bad.problems("l").into_iter().map(|p| p.key).collect();
        for k in [
            "l.max_junk_commands",
            "l.min_data_rate",
            "l.client_prefix_v4",
            "l.client_prefix_v6",
            "l.relay_reserve_percent",
            "l.timeouts.session",
            "l.stress.leave_percent",
            "l.stress.command_timeout",
            "l.stress.data_timeout",
            "l.stress.max_errors",
            "l.stress.max_junk_commands",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} not reported: {keys:?}");
        }
    }
}
