//! The `[dkim]` section: signing domains and their keys, the header list, which mail is
//! signed and what a signing failure does (docs/DKIM.md, docs/CONFIG.md).
//!
//! Deserialised by the binary's configuration loader (unknown keys are reported there,
//! with their paths); [`DkimConfig::problems`] checks the values and returns every
//! problem at once, each with its key path. Loading the key files is not part of it
//! (`crate::keys`, `crate::Signing::load`): a reload whose key file is broken keeps the
//! previous key rather than refusing the whole configuration.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Most keys one signing domain may have (dual signatures need two; rotation a third).
pub const MAX_KEYS_PER_DOMAIN: usize = 4;
/// Most header field names in `headers` plus `oversign`.
pub const MAX_HEADERS: usize = 64;

/// Where a message came from, for the signing rules (`origins`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The client authenticated (SMTP AUTH): submitted mail.
    Authenticated,
    /// The client was in `relay.networks`.
    RelayNetwork,
    /// Locally submitted: the pickup directory and `tern sendmail`, and Tern's own
    /// delivery status notifications.
    Local,
}

impl Origin {
    /// The name used in the configuration and in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Authenticated => "authenticated",
            Origin::RelayNetwork => "relay_network",
            Origin::Local => "local",
        }
    }
}

/// A signing algorithm (RFC 6376 §3.3, RFC 8463).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// RSA with SHA-256, keys of at least 2048 bits.
    #[serde(rename = "rsa-sha256")]
    RsaSha256,
    /// Ed25519 with SHA-256 (RFC 8463).
    #[serde(rename = "ed25519-sha256")]
    Ed25519Sha256,
}

impl Algorithm {
    /// The `a=` tag value, also the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }

    /// The `k=` tag of the key's DNS record.
    pub fn key_type(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa",
            Algorithm::Ed25519Sha256 => "ed25519",
        }
    }
}

/// What a delivery does when a message that should be signed cannot be (its key is
/// unusable, the signer failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// The recipients are deferred (4.7.0) and the message is tried again after the
    /// backoff, like Postfix with OpenDKIM's default (milter tempfail).
    #[default]
    Defer,
    /// The message is sent without a signature (an event says so).
    Unsigned,
}

/// One key of a signing domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyConfig {
    /// The selector: the key is published at `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// The key's algorithm.
    pub algorithm: Algorithm,
    /// The private key, PEM: PKCS#8 (`BEGIN PRIVATE KEY`), or PKCS#1 (`BEGIN RSA
    /// PRIVATE KEY`) for RSA. Mode 0600 or stricter, owned by the user Tern runs as.
    pub key_file: PathBuf,
}

/// One signing domain (`d=`) and its keys; every key signs (dual signatures).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainConfig {
    /// The domain, as in the From header (lower case is not required).
    pub name: String,
    /// Also sign mail whose From domain is a subdomain of `name`, with `d=` `name`
    /// (OpenDKIM's `SubDomains`). A more specific domain of its own wins.
    #[serde(default)]
    pub subdomains: bool,
    /// The keys; each signs every message of the domain.
    #[serde(rename = "key")]
    pub keys: Vec<KeyConfig>,
}

/// The `[dkim]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DkimConfig {
    /// Which mail is signed, by where it came from. Mail of no listed origin (mail that
    /// only passes through) is never signed.
    pub origins: Vec<Origin>,
    /// Header fields signed, in this order; `From` is required.
    pub headers: Vec<String>,
    /// Header fields listed once more than they appear, so none can be added after
    /// signing without breaking the signature.
    pub oversign: Vec<String>,
    /// What a signing failure does.
    pub on_failure: OnFailure,
    /// `[[dkim.domain]]`: the signing domains.
    #[serde(rename = "domain")]
    pub domains: Vec<DomainConfig>,
}

/// The default `headers`.
pub const DEFAULT_HEADERS: [&str; 9] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "MIME-Version",
    "Content-Type",
];

impl Default for DkimConfig {
    fn default() -> DkimConfig {
        DkimConfig {
            origins: vec![Origin::Authenticated, Origin::RelayNetwork, Origin::Local],
            headers: DEFAULT_HEADERS.iter().map(|h| (*h).to_string()).collect(),
            oversign: vec!["From".to_string()],
            on_failure: OnFailure::Defer,
            domains: Vec::new(),
        }
    }
}

/// One problem in the section, with the key it concerns (`dkim.domain[0].key[1].selector`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key path.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A DNS name as a signing domain or selector: dot-separated labels of letters, digits,
/// `-` and `_`, none empty or over 63 octets, at most 253 octets in all.
pub fn valid_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A header field name (RFC 5322 §3.6.8: printable ASCII except `:`).
fn valid_field_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

impl DkimConfig {
    /// Whether any domain signs at all.
    pub fn enabled(&self) -> bool {
        !self.domains.is_empty()
    }

    /// Every problem of the section's values.
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        let names = self.headers.len().saturating_add(self.oversign.len());
        if names > MAX_HEADERS {
            p.push(Problem::new(
                "dkim.headers",
                format!("at most {MAX_HEADERS} names with dkim.oversign"),
            ));
        }
        for (i, h) in self.headers.iter().enumerate() {
            if !valid_field_name(h) {
                p.push(Problem::new(
                    format!("dkim.headers[{i}]"),
                    format!("{h:?} is not a header field name"),
                ));
            } else if h.eq_ignore_ascii_case("DKIM-Signature") {
                p.push(Problem::new(
                    format!("dkim.headers[{i}]"),
                    "DKIM-Signature cannot be signed by DKIM",
                ));
            }
        }
        if !self.headers.iter().any(|h| h.eq_ignore_ascii_case("From")) {
            p.push(Problem::new(
                "dkim.headers",
                "must list From (RFC 6376 §5.4 requires it signed)",
            ));
        }
        for (i, h) in self.oversign.iter().enumerate() {
            if !self.headers.iter().any(|x| x.eq_ignore_ascii_case(h)) {
                p.push(Problem::new(
                    format!("dkim.oversign[{i}]"),
                    format!("{h:?} is not in dkim.headers"),
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, d) in self.domains.iter().enumerate() {
            let at = format!("dkim.domain[{i}]");
            let name = d.name.to_ascii_lowercase();
            if !valid_dns_name(&name) {
                p.push(Problem::new(
                    format!("{at}.name"),
                    format!("{:?} is not a domain name", d.name),
                ));
            } else if !seen.insert(name.clone()) {
                p.push(Problem::new(
                    format!("{at}.name"),
                    format!("{name} is configured twice"),
                ));
            }
            if d.keys.is_empty() {
                p.push(Problem::new(
                    format!("{at}.key"),
                    "no key: add at least one",
                ));
            }
            if d.keys.len() > MAX_KEYS_PER_DOMAIN {
                p.push(Problem::new(
                    format!("{at}.key"),
                    format!("at most {MAX_KEYS_PER_DOMAIN} keys per domain"),
                ));
            }
            let mut selectors = std::collections::HashSet::new();
            for (j, k) in d.keys.iter().enumerate() {
                let kat = format!("{at}.key[{j}]");
                if !valid_dns_name(&k.selector) {
                    p.push(Problem::new(
                        format!("{kat}.selector"),
                        format!("{:?} is not a selector (DNS labels)", k.selector),
                    ));
                } else if !selectors.insert(k.selector.to_ascii_lowercase()) {
                    p.push(Problem::new(
                        format!("{kat}.selector"),
                        format!("selector {} is used twice for {name}", k.selector),
                    ));
                }
                if k.key_file.as_os_str().is_empty() {
                    p.push(Problem::new(format!("{kat}.key_file"), "missing"));
                }
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(selector: &str) -> KeyConfig {
        KeyConfig {
            selector: selector.into(),
            algorithm: Algorithm::Ed25519Sha256,
            key_file: "/k.pem".into(),
        }
    }

    #[test]
    fn defaults_sign_the_usual_fields_and_oversign_from() {
        let c = DkimConfig::default();
        assert!(c.problems().is_empty());
        assert!(!c.enabled());
        assert_eq!(c.on_failure, OnFailure::Defer);
        assert_eq!(c.oversign, ["From"]);
        for h in ["From", "To", "Subject", "Date", "Message-ID"] {
            assert!(c.headers.iter().any(|x| x == h), "{h}");
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let c = DkimConfig {
            headers: vec!["To".into(), "Bad:Name".into(), "DKIM-Signature".into()],
            oversign: vec!["Subject".into()],
            domains: vec![
                DomainConfig {
                    name: "example.com".into(),
                    subdomains: false,
                    keys: vec![key("s1"), key("S1"), key("bad selector")],
                },
                DomainConfig {
                    name: "Example.COM".into(),
                    subdomains: false,
                    keys: vec![],
                },
                DomainConfig {
                    name: "-x.test".into(),
                    subdomains: false,
                    keys: (0..5).map(|i| key(&format!("k{i}"))).collect(),
                },
            ],
            ..DkimConfig::default()
        };
        let keys: Vec<String> = c.problems().into_iter().map(|p| p.key).collect();
        for k in [
            "dkim.headers[1]",
            "dkim.headers[2]",
            "dkim.headers",
            "dkim.oversign[0]",
            "dkim.domain[0].key[1].selector",
            "dkim.domain[0].key[2].selector",
            "dkim.domain[1].name",
            "dkim.domain[1].key",
            "dkim.domain[2].name",
            "dkim.domain[2].key",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn dns_names() {
        assert!(valid_dns_name("s2025._x.example.com"));
        assert!(valid_dns_name("a"));
        assert!(!valid_dns_name(""));
        assert!(!valid_dns_name("a..b"));
        assert!(!valid_dns_name("a b"));
        assert!(!valid_dns_name(&"a".repeat(64)));
        assert!(!valid_dns_name("-a"));
    }
}
