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
    /// Most simultaneous connections on this listener; more get `421 4.7.0`.
    pub max_connections: usize,
    /// Most simultaneous connections from one client IP address.
    pub max_connections_per_client: usize,
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
    /// What to do with bare CR / LF in DATA.
    pub bare_line_endings: BareLf,
    /// Timeouts in seconds.
    pub timeouts: Timeouts,
}

/// Per-stage timeouts in seconds (RFC 5321 §4.5.3.2 gives the server side at least five
/// minutes for commands).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct Timeouts {
    /// Waiting for the next command.
    pub command: u64,
    /// Waiting for the next block of DATA or BDAT content.
    pub data: u64,
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
            max_command_line: 512,
            max_text_line: 8192,
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 1000,
            max_errors: 20,
            bare_line_endings: BareLf::Normalize,
            timeouts: Timeouts::default(),
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
        for (k, v) in [
            ("command", self.timeouts.command),
            ("data", self.timeouts.data),
            ("tls_handshake", self.timeouts.tls_handshake),
            ("write", self.timeouts.write),
        ] {
            need(v > 0, &format!("timeouts.{k}"), "must be at least 1 second");
        }
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
