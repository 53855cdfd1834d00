//! The `[arc]` section: whether Tern seals the mail it forwards, the sealing domain,
//! selector and key, the header fields the ARC-Message-Signature covers, the largest
//! message sealed and the time a chain validation at delivery may take (docs/DKIM.md,
//! "ARC sealing"; docs/CONFIG.md).
//!
//! Deserialised by the binary's configuration loader (unknown keys are reported there);
//! [`ArcConfig::problems`] checks the values and returns every problem at once, each with
//! its key path. The key file is read by `crate::arc::Sealing::load` with the checks of
//! `crate::keys` (owner, mode, no link, safe directory).
//!
//! Algorithm: only `rsa-sha256`. RFC 8617 §4.1.3 (through RFC 6376) names the DKIM
//! algorithms, but the receivers that act on ARC (Gmail, Microsoft 365, Yahoo, and the
//! OpenARC and dkimpy verifiers in their default builds) validate `rsa-sha256` seals
//! only; an Ed25519 seal would read as a broken chain at exactly the hops ARC is for.
//! `ed25519-sha256` is therefore refused with that explanation rather than accepted.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::{Algorithm, MAX_HEADERS, Problem, valid_dns_name};

/// The default `headers`: what a forwarder's ARC-Message-Signature usually covers
/// (the DKIM list, the threading fields and any DKIM-Signature the message carries).
pub const DEFAULT_HEADERS: [&str; 13] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "DKIM-Signature",
];

/// The default `max_size`: 25 MiB.
pub const DEFAULT_MAX_SIZE: u64 = 25 * 1024 * 1024;
/// The largest `max_size` accepted (the message is held in memory while it is sealed).
pub const MAX_MAX_SIZE: u64 = 256 * 1024 * 1024;
/// The default `timeout_secs`.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;

/// The `[arc]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ArcConfig {
    /// Seal the mail Tern forwards (mail from outside leaving by SMTP).
    pub seal: bool,
    /// The sealing domain (`d=` of the ARC-Seal and ARC-Message-Signature).
    pub domain: String,
    /// The selector: the public key is published at `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// The algorithm; only `rsa-sha256` (see the module header).
    pub algorithm: Algorithm,
    /// The private key, PEM (PKCS#8 or PKCS#1), mode 0600 or stricter, owned by the user
    /// Tern runs as; checked like a DKIM key.
    pub key_file: PathBuf,
    /// Header fields the ARC-Message-Signature covers; `From` is required, and no
    /// `ARC-*` field may be listed (RFC 8617 §4.1.2).
    pub headers: Vec<String>,
    /// Messages larger than this (octets, as sent) are not sealed: they are sent
    /// unsealed with event 4114 (`reason` = too_large).
    pub max_size: u64,
    /// Most seconds the DNS lookups of a chain validation at delivery may take (only
    /// when the message carries no Authentication-Results from Tern's verifier); past it
    /// the message is sent unsealed (event 4114, `reason` = temperror).
    pub timeout_secs: u64,
}

impl Default for ArcConfig {
    fn default() -> ArcConfig {
        ArcConfig {
            seal: false,
            domain: String::new(),
            selector: String::new(),
            algorithm: Algorithm::RsaSha256,
            key_file: PathBuf::new(),
            headers: DEFAULT_HEADERS.iter().map(|h| (*h).to_string()).collect(),
            max_size: DEFAULT_MAX_SIZE,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
        }
    }
}

fn valid_field_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

impl ArcConfig {
    /// Every problem of the section's values. With `seal = false` only the values given
    /// are checked (an unused key file may be missing).
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        if self.algorithm != Algorithm::RsaSha256 {
            p.push(Problem::new(
                "arc.algorithm",
                "only \"rsa-sha256\": the receivers that act on ARC do not validate Ed25519 seals (docs/DKIM.md, ARC sealing)",
            ));
        }
        if (self.seal || !self.domain.is_empty())
            && !valid_dns_name(&self.domain.to_ascii_lowercase())
        {
            p.push(Problem::new(
                "arc.domain",
                format!("{:?} is not a domain name", self.domain),
            ));
        }
        if (self.seal || !self.selector.is_empty()) && !valid_dns_name(&self.selector) {
            p.push(Problem::new(
                "arc.selector",
                format!("{:?} is not a selector (DNS labels)", self.selector),
            ));
        }
        if self.seal && self.key_file.as_os_str().is_empty() {
            p.push(Problem::new("arc.key_file", "missing (arc.seal = true)"));
        }
        if self.headers.len() > MAX_HEADERS {
            p.push(Problem::new(
                "arc.headers",
                format!("at most {MAX_HEADERS} names"),
            ));
        }
        for (i, h) in self.headers.iter().enumerate() {
            if !valid_field_name(h) {
                p.push(Problem::new(
                    format!("arc.headers[{i}]"),
                    format!("{h:?} is not a header field name"),
                ));
            } else if h.len() >= 4 && h.get(..4).is_some_and(|s| s.eq_ignore_ascii_case("arc-")) {
                p.push(Problem::new(
                    format!("arc.headers[{i}]"),
                    format!("{h} cannot be covered by the ARC-Message-Signature (RFC 8617 §4.1.2)"),
                ));
            }
        }
        if !self.headers.iter().any(|h| h.eq_ignore_ascii_case("From")) {
            p.push(Problem::new(
                "arc.headers",
                "must list From (RFC 8617 §4.1.2, as DKIM's RFC 6376 §5.4)",
            ));
        }
        if self.max_size == 0 || self.max_size > MAX_MAX_SIZE {
            p.push(Problem::new(
                "arc.max_size",
                format!("between 1 and {MAX_MAX_SIZE} octets"),
            ));
        }
        if self.timeout_secs == 0 || self.timeout_secs > 300 {
            p.push(Problem::new("arc.timeout_secs", "between 1 and 300"));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_are_off_and_valid() {
        let c = ArcConfig::default();
        assert!(!c.seal);
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(c.max_size, 25 * 1024 * 1024);
        assert!(c.headers.iter().any(|h| h == "DKIM-Signature"));
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let c = ArcConfig {
            seal: true,
            domain: "not a domain".into(),
            selector: String::new(),
            algorithm: Algorithm::Ed25519Sha256,
            key_file: PathBuf::new(),
            headers: vec!["To".into(), "ARC-Seal".into(), "Bad:Name".into()],
            max_size: 0,
            timeout_secs: 0,
        };
        let keys: Vec<String> = c.problems().into_iter().map(|p| p.key).collect();
        for k in [
            "arc.algorithm",
            "arc.domain",
            "arc.selector",
            "arc.key_file",
            "arc.headers[1]",
            "arc.headers[2]",
            "arc.headers",
            "arc.max_size",
            "arc.timeout_secs",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn a_complete_section_is_accepted() {
        let c = ArcConfig {
            seal: true,
            domain: "Forward.Example".into(),
            selector: "arc2026".into(),
            key_file: "/etc/tern/arc.pem".into(),
            ..ArcConfig::default()
        };
        assert!(c.problems().is_empty(), "{:?}", c.problems());
    }
}
