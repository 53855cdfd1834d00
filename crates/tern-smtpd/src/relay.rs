//! Relay control: which recipients a client may give.
//!
//! Tern never relays by accident. A recipient is accepted when its domain is one Tern
//! receives for, or when the client is inside a configured relay network. Everything else
//! is refused with `554 5.7.1`.
//!
//! Address syntax tricks never turn into relaying:
//! - source routes (`@a,@b:user@c`) were already dropped by the parser, so only `user@c`
//!   is ever judged or stored;
//! - `a@b@c` is a syntax error in the parser;
//! - `user%other@local`, `other!user@local` and `"user@other"@local` are refused with
//!   `554 5.7.1` from clients outside the relay networks, even though `local` is ours,
//!   because other mail software may route on them (Postfix `allow_untrusted_routing`);
//! - the domain is compared after lower-casing and removing one trailing dot.
//!
//! `postmaster` without a domain is always accepted (RFC 5321 §4.5.1) and stored as
//! `postmaster@<first relay domain>`.
//!
//! Local domains (`[local]`, a [`LocalDirectory`] carried by the policy so both are
//! swapped together on reload) are ours too. Their recipients are judged further by the
//! session, which expands them through the directory at RCPT time and refuses unknown
//! ones with `550 5.1.1` (see `session/mod.rs`).

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use tern_local::LocalDirectory;
use tern_proto::{Mailbox, Reply};

use crate::config::RelayConfig;

/// The compiled relay policy; cheap to query, swapped whole on reload.
#[derive(Debug, Clone)]
pub struct RelayPolicy {
    exact: Vec<String>,
    suffixes: Vec<String>,
    networks: Vec<IpNet>,
    postmaster_domain: String,
    local: Arc<LocalDirectory>,
}

impl RelayPolicy {
    /// Compiles the configuration. `hostname` is used for `postmaster` when no domain is
    /// configured.
    pub fn new(config: &RelayConfig, hostname: &str) -> RelayPolicy {
        let mut exact = Vec::new();
        let mut suffixes = Vec::new();
        for d in &config.domains {
            let d = d.to_lowercase();
            let d = d.strip_suffix('.').unwrap_or(&d).to_string();
            if d.starts_with('.') {
                suffixes.push(d);
            } else {
                exact.push(d);
            }
        }
        let postmaster_domain = exact
            .first()
            .cloned()
            .unwrap_or_else(|| hostname.to_lowercase());
        RelayPolicy {
            exact,
            suffixes,
            networks: config.networks.clone(),
            postmaster_domain,
            local: Arc::new(LocalDirectory::empty()),
        }
    }

    /// The same policy with these local domains, mailboxes and aliases.
    pub fn with_local(mut self, local: Arc<LocalDirectory>) -> RelayPolicy {
        self.local = local;
        self
    }

    /// The local directory (empty when no `[local]` domain is configured).
    pub fn local(&self) -> &LocalDirectory {
        &self.local
    }

    /// True when `ip` is inside a relay network.
    pub fn client_may_relay(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.networks.iter().any(|n| n.contains(&ip))
    }

    /// True when Tern receives mail for `domain` (already lower-case): a relay domain or
    /// a local domain.
    pub fn is_our_domain(&self, domain: &str) -> bool {
        self.exact.iter().any(|d| d == domain)
            || self.suffixes.iter().any(|s| domain.ends_with(s.as_str()))
            || self.local.is_local_domain(domain)
    }

    /// Judges one recipient. `address` is as the parser returned it. Returns the canonical
    /// address to store, or the refusal.
    pub fn check_recipient(
        &self,
        address: &str,
        client_may_relay: bool,
        smtputf8: bool,
    ) -> Result<String, Reply> {
        if address.eq_ignore_ascii_case("postmaster") {
            return Ok(format!("postmaster@{}", self.postmaster_domain));
        }
        let mailbox = Mailbox::parse(address).map_err(|e| address_reply(&e))?;
        if mailbox.is_international() && !smtputf8 {
            return Err(Reply::new(553, "5.6.7", "Non-ASCII address needs SMTPUTF8"));
        }
        if client_may_relay {
            return Ok(mailbox.to_string());
        }
        if !self.is_our_domain(&mailbox.domain) {
            return Err(Reply::new(
                554,
                "5.7.1",
                format!("<{mailbox}>: Relay access denied"),
            ));
        }
        if mailbox.routing_trick().is_some() {
            return Err(Reply::new(
                554,
                "5.7.1",
                format!("<{mailbox}>: Relay access denied (routing syntax in local part)"),
            ));
        }
        Ok(mailbox.to_string())
    }
}

/// Checks a reverse path. The null sender is valid.
pub fn check_sender(address: &str, smtputf8: bool) -> Result<String, Reply> {
    if address.is_empty() {
        return Ok(String::new());
    }
    let mailbox = Mailbox::parse(address)
        .map_err(|_| Reply::new(501, "5.1.7", "Bad sender address syntax"))?;
    if mailbox.is_international() && !smtputf8 {
        return Err(Reply::new(553, "5.6.7", "Non-ASCII address needs SMTPUTF8"));
    }
    Ok(mailbox.to_string())
}

fn address_reply(e: &tern_proto::AddressError) -> Reply {
    use tern_proto::AddressError as E;
    match e {
        E::BadDomain(_) => Reply::new(501, "5.1.2", "Bad destination domain syntax"),
        E::NeedsSmtpUtf8 => Reply::new(553, "5.6.7", "Non-ASCII address needs SMTPUTF8"),
        _ => Reply::new(501, "5.1.3", "Bad recipient address syntax"),
    }
}

/// IPv4-mapped IPv6 addresses are judged as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RelayPolicy {
        RelayPolicy::new(
            &RelayConfig {
                domains: vec!["local.test".into(), ".sub.test".into()],
                networks: vec!["10.0.0.0/8".parse().unwrap()],
            },
            "mx.local.test",
        )
    }

    #[test]
    fn our_domains_from_anyone() {
        let p = policy();
        assert_eq!(
            p.check_recipient("User@LOCAL.test.", false, false),
            Ok("User@local.test".into())
        );
        assert!(p.check_recipient("a@x.sub.test", false, false).is_ok());
        assert_eq!(
            p.check_recipient("a@sub.test", false, false)
                .unwrap_err()
                .code,
            554
        );
    }

    #[test]
    fn other_domains_only_from_relay_networks() {
        let p = policy();
        assert_eq!(
            p.check_recipient("a@elsewhere.org", false, false)
                .unwrap_err()
                .code,
            554
        );
        assert!(p.check_recipient("a@elsewhere.org", true, false).is_ok());
        assert!(p.client_may_relay("10.1.2.3".parse().unwrap()));
        assert!(p.client_may_relay("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!p.client_may_relay("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn routing_tricks_refused_from_outside() {
        let p = policy();
        for a in [
            "user%elsewhere.org@local.test",
            "elsewhere.org!user@local.test",
            "user@elsewhere.org@local.test",
        ] {
            let r = p.check_recipient(a, false, false).unwrap_err();
            assert_eq!((r.code, r.status.as_deref()), (554, Some("5.7.1")), "{a}");
        }
    }

    #[test]
    fn postmaster_always_accepted() {
        assert_eq!(
            policy().check_recipient("postmaster", false, false),
            Ok("postmaster@local.test".into())
        );
    }

    #[test]
    fn international_needs_smtputf8() {
        let p = policy();
        assert_eq!(
            p.check_recipient("jörg@local.test", false, false)
                .unwrap_err()
                .code,
            553
        );
        assert!(p.check_recipient("jörg@local.test", false, true).is_ok());
        assert_eq!(check_sender("jörg@x.org", false).unwrap_err().code, 553);
        assert_eq!(check_sender("", false), Ok(String::new()));
    }
}
