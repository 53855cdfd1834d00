//! The `[verify]` section (docs/CONFIG.md, docs/FILTERING.md).
//!
//! Every key has a default; [`VerifyConfig::problems`] reports every semantic problem
//! with its key so `tern check-config` prints them all at once.

use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// What SPF `fail` does on its own (when DMARC did not pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpfFailAction {
    /// Only the header says it.
    #[default]
    Mark,
    /// `550 5.7.23` at the end of DATA.
    Reject,
}

/// What a temporary DNS error that decides the outcome does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TempErrorAction {
    /// Accept with `temperror` in the header.
    #[default]
    Accept,
    /// `451` at the end of DATA: the client retries later.
    Defer,
}

/// What DMARC `p=reject` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DmarcRejectAction {
    /// `550 5.7.1` at the end of DATA.
    #[default]
    Reject,
    /// As `p=quarantine`.
    Quarantine,
    /// Only the header says it.
    Mark,
}

/// Where DMARC `p=quarantine` mail goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QuarantineMode {
    /// Delivered with the header and an `X-Tern-Quarantine` field.
    #[default]
    Header,
    /// Queued in the hold queue (`tern queue release` sends it on).
    Hold,
    /// Every recipient routed by the `[[route]]` entry of the domain key
    /// `dmarc_quarantine_route`.
    Route,
}

/// The `[verify]` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct VerifyConfig {
    /// Check inbound mail at all.
    pub enabled: bool,
    /// The authserv-id of Tern's Authentication-Results (default: the host name).
    pub authserv_id: Option<String>,
    /// SPF checks.
    pub spf: bool,
    /// DKIM verification.
    pub dkim: bool,
    /// DMARC.
    pub dmarc: bool,
    /// ARC chain verification.
    pub arc: bool,
    /// Most DKIM signatures verified per message (the first ones).
    pub max_signatures: usize,
    /// Messages larger than this (octets, as received) are not DKIM/ARC-verified.
    pub max_size: u64,
    /// All sessions together keep at most this many octets of content in memory for
    /// verification; past it, messages are handled as over `max_size`.
    pub memory_budget: u64,
    /// The overall DNS time for one message, in seconds (SPF from MAIL FROM, the rest from
    /// the end of the data).
    pub timeout: u64,
    /// SPF `fail` on its own.
    pub spf_fail: SpfFailAction,
    /// A temporary DNS error that decides the outcome.
    pub temperror: TempErrorAction,
    /// DMARC `p=reject`.
    pub dmarc_reject: DmarcRejectAction,
    /// DMARC `p=quarantine`.
    pub dmarc_quarantine: QuarantineMode,
    /// With `dmarc_quarantine = "route"`: a domain key (e.g. `quarantine.invalid`) whose
    /// `[[route]]` entry takes every recipient of quarantined mail.
    pub dmarc_quarantine_route: Option<String>,
    /// Networks (CIDR) or host names (verified reverse DNS, exact or `.parent`) whose
    /// mail is never refused by DMARC or SPF, only marked.
    pub trusted_forwarders: Vec<String>,
    /// From domains or DMARC policy domains whose mail is never refused or quarantined,
    /// only marked (exact, or `.parent` for every subdomain).
    pub exceptions: Vec<String>,
    /// A Public Suffix List file replacing the one compiled in.
    pub public_suffix_list: Option<PathBuf>,
    /// DNS answers cached (TXT, A, AAAA, MX, PTR each), by their TTL.
    pub cache_entries: usize,
}

impl Default for VerifyConfig {
    fn default() -> VerifyConfig {
        VerifyConfig {
            enabled: false,
            authserv_id: None,
            spf: true,
            dkim: true,
            dmarc: true,
            arc: true,
            max_signatures: 5,
            max_size: 10 * 1024 * 1024,
            memory_budget: 256 * 1024 * 1024,
            timeout: 10,
            spf_fail: SpfFailAction::Mark,
            temperror: TempErrorAction::Accept,
            dmarc_reject: DmarcRejectAction::Reject,
            dmarc_quarantine: QuarantineMode::Header,
            dmarc_quarantine_route: None,
            trusted_forwarders: Vec::new(),
            exceptions: Vec::new(),
            public_suffix_list: None,
            cache_entries: 10_000,
        }
    }
}

/// A configuration problem: the key (under `verify.`) and what is wrong.
pub type Problem = (String, String);

/// A trusted forwarder entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forwarder {
    /// A client network.
    Network(IpNet),
    /// A verified client name: exact, or any subdomain when it starts with a dot.
    Name(String),
}

/// Parses a `trusted_forwarders` entry.
pub fn forwarder(entry: &str) -> Option<Forwarder> {
    if let Ok(net) = entry.parse::<IpNet>() {
        return Some(Forwarder::Network(net));
    }
    if let Ok(ip) = entry.parse::<std::net::IpAddr>() {
        return Some(Forwarder::Network(IpNet::from(ip)));
    }
    let name = entry.trim_end_matches('.').to_ascii_lowercase();
    let bare = name.strip_prefix('.').unwrap_or(&name);
    let valid = !bare.is_empty()
        && bare.len() <= 253
        && bare.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    valid.then_some(Forwarder::Name(name))
}

impl VerifyConfig {
    /// Every semantic problem.
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        let mut need = |ok: bool, key: &str, msg: &str| {
            if !ok {
                p.push((format!("verify.{key}"), msg.to_string()));
            }
        };
        need(
            (1..=50).contains(&self.max_signatures),
            "max_signatures",
            "must be between 1 and 50",
        );
        need(
            self.max_size >= 64 * 1024,
            "max_size",
            "must be at least 65536",
        );
        need(
            self.memory_budget >= self.max_size,
            "memory_budget",
            "must be at least max_size",
        );
        need(
            (1..=120).contains(&self.timeout),
            "timeout",
            "must be between 1 and 120 seconds",
        );
        need(
            self.cache_entries > 0,
            "cache_entries",
            "must be at least 1",
        );
        if let Some(id) = &self.authserv_id {
            need(
                !id.is_empty()
                    && id
                        .chars()
                        .all(|c| c.is_ascii_graphic() && !"();\\\"".contains(c)),
                "authserv_id",
                "must be a non-empty token (a host name)",
            );
        }
        need(
            self.dmarc_quarantine != QuarantineMode::Route
                || self.dmarc_quarantine_route.as_deref().is_some_and(
                    |r| matches!(forwarder(r), Some(Forwarder::Name(n)) if !n.starts_with('.')),
                ),
            "dmarc_quarantine_route",
            "needed when dmarc_quarantine = \"route\": a domain key of a [[route]] entry",
        );
        for (i, f) in self.trusted_forwarders.iter().enumerate() {
            if forwarder(f).is_none() {
                p.push((
                    format!("verify.trusted_forwarders[{i}]"),
                    format!("{f:?} is neither a network nor a host name"),
                ));
            }
        }
        for (i, e) in self.exceptions.iter().enumerate() {
            if forwarder(e).is_none_or(|f| matches!(f, Forwarder::Network(_))) {
                p.push((
                    format!("verify.exceptions[{i}]"),
                    format!("{e:?} is not a domain"),
                ));
            }
        }
        if let Some(path) = &self.public_suffix_list
            && let Err(e) = crate::psl::SuffixList::load(path)
        {
            p.push(("verify.public_suffix_list".into(), e.to_string()));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_sound_and_bad_values_reported() {
        assert!(VerifyConfig::default().problems().is_empty());
        let bad = VerifyConfig {
            max_signatures: 0,
            timeout: 0,
            dmarc_quarantine: QuarantineMode::Route,
            trusted_forwarders: vec![
                "10.0.0.0/8".into(),
                "mx.example.org".into(),
                "bad name!".into(),
            ],
            exceptions: vec!["10.0.0.1".into()],
            ..VerifyConfig::default()
        };
        let keys: Vec<String> = bad.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "verify.max_signatures",
                "verify.timeout",
                "verify.dmarc_quarantine_route",
                "verify.trusted_forwarders[2]",
                "verify.exceptions[0]"
            ]
        );
    }
}
