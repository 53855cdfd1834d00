//! MX planning: from DNS answers to the ordered list of addresses to try.
//!
//! Purpose: [`plan`] is pure (answers and a random source in, hosts out) so the rules of
//! RFC 5321 §5.1 are tested without a network; [`resolve_mx_plan`] and
//! [`resolve_relay_hosts`] do the lookups and call it.
//!
//! Rules of [`plan`], in order:
//! 1. Null MX -> [`PlanError::NullMx`]. No MX records -> the domain itself is the only
//!    host, preference 0 (implicit MX). An address-literal domain is that address.
//! 2. The same exchange listed twice keeps its lowest preference.
//! 3. Hosts are sorted by preference; hosts of equal preference are shuffled.
//! 4. Self rule: if one of our names or addresses is a host with preference P, every host
//!    with preference >= P is dropped; nothing left -> [`PlanError::MxLoop`] (temporary:
//!    the mail is kept). "Ours" is [`SelfIdentity`]: names, the addresses where a
//!    listener accepts on the MX port (every interface address for a wildcard listener:
//!    [`crate::OwnAddresses`]), and the IPv4 loopback range behind `0.0.0.0`.
//! 5. Each host gets its addresses (an exchange that is IP text is that address: not
//!    valid DNS practice, tolerated); an address already given to an earlier host is
//!    dropped; hosts left without addresses are dropped.
//! 6. The total number of addresses is cut to `max_addresses` (at least 1), keeping
//!    host order and address order.
//!
//! Trust: answers are from the network: up to 65535 records, any names, any preferences.
//! Work is O(n log n) in the number of records; nothing panics.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use rand::Rng;
use rand::seq::SliceRandom;
use tokio::task::JoinSet;

use super::{Checked, DnsError, Dnssec, MxAnswer, Resolver};
use crate::name;
use crate::table::RelayHost;

/// Most distinct MX hosts whose addresses [`resolve_mx_plan`] looks up.
pub const MAX_MX_HOSTS: usize = 100;
/// Most address lookups [`resolve_mx_plan`] runs at once.
pub const LOOKUP_CONCURRENCY: usize = 16;

/// A host to try, with its addresses in the order to try them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    /// The exchange name (lowercase, no trailing dot), or the domain for an implicit MX.
    pub name: String,
    /// MX preference (0 for an implicit MX).
    pub preference: u16,
    /// Addresses; never empty, none shared with another host of the plan.
    pub addrs: Vec<IpAddr>,
}

/// Who we are, for the self rule (RFC 5321 §5.1). Built for one port by
/// [`OwnAddresses::identity`](crate::OwnAddresses::identity).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelfIdentity {
    /// Our host names (compared case-insensitively, trailing dot ignored).
    pub names: Vec<String>,
    /// Our addresses that accept mail on the MX port, canonical (IPv4 as IPv4). With a
    /// wildcard listener, the machine's addresses, not `0.0.0.0`.
    pub addrs: Vec<IpAddr>,
    /// Every address of 127.0.0.0/8 is ours too (a listener on `0.0.0.0` at the port
    /// answers on all of them, though only 127.0.0.1 is configured).
    pub all_loopback_v4: bool,
}

/// Why there is no host to try.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The domain publishes a null MX (RFC 7505): it accepts no mail. Permanent, `5.1.10`.
    #[error("the domain accepts no mail (null MX)")]
    NullMx,
    /// The domain does not exist (NXDOMAIN on the MX query, or on the address query of an
    /// implicit MX). Permanent, `5.1.2`.
    #[error("the domain does not exist")]
    NxDomain,
    /// Implicit MX: the domain exists but has neither MX nor A/AAAA records. Permanent,
    /// `5.4.4` (unable to route: the routing information says there is no mail host).
    #[error("the domain has no MX and no address records")]
    NoAddresses,
    /// We are the best MX for the domain but it is not routed to us locally. Temporary,
    /// `4.4.6` (routing loop): a configuration error on this side (a missing local route)
    /// or in DNS, which the operator fixes; the mail waits meanwhile instead of
    /// bouncing (Postfix bounces it with 5.4.6), and bounces only when it expires.
    #[error("mail for the domain loops back to this server (we are its best MX)")]
    MxLoop,
    /// The domain is not a name DNS can be asked about. Permanent, `5.1.2`.
    #[error("the domain is not a valid domain name")]
    InvalidDomain,
    /// The MX lookup (or the address lookup of an implicit MX) failed for now. Temporary,
    /// `4.4.3`.
    #[error("temporary DNS failure: {reason}")]
    Temporary {
        /// What failed.
        reason: String,
    },
    /// No MX host (or relay host) had an address: their lookups failed, gave no
    /// addresses, or said the host does not exist. Temporary, `4.4.3`: the domain's own
    /// records exist, so this is treated as a broken or changing setup worth retrying.
    #[error("no mail host could be resolved: {reason}")]
    AllHostsUnresolvable {
        /// What happened to the hosts.
        reason: String,
    },
}

impl PlanError {
    /// Whether the recipients should bounce now rather than be retried.
    pub fn is_permanent(&self) -> bool {
        !matches!(
            self,
            PlanError::Temporary { .. }
                | PlanError::AllHostsUnresolvable { .. }
                | PlanError::MxLoop
        )
    }

    /// The RFC 3463 enhanced status code for the DSN.
    pub fn enhanced_status(&self) -> &'static str {
        match self {
            PlanError::NullMx => "5.1.10",
            PlanError::NxDomain | PlanError::InvalidDomain => "5.1.2",
            PlanError::NoAddresses => "5.4.4",
            PlanError::MxLoop => "4.4.6",
            PlanError::Temporary { .. } | PlanError::AllHostsUnresolvable { .. } => "4.4.3",
        }
    }

    /// A sentence for logs and DSNs.
    pub fn describe(&self) -> String {
        match self {
            PlanError::NullMx => {
                "the recipient domain publishes a null MX record and accepts no mail".to_owned()
            }
            PlanError::NxDomain => "the recipient domain does not exist in DNS".to_owned(),
            PlanError::NoAddresses => {
                "the recipient domain has no MX record and no address record".to_owned()
            }
            PlanError::MxLoop => "mail for the domain loops back to this server: it is the \
                 best MX host for the domain, which is not routed to a local transport here; \
                 the mail is kept (route the domain here, or correct its MX records)"
                .to_owned(),
            PlanError::InvalidDomain => "the recipient domain is not a valid name".to_owned(),
            PlanError::Temporary { reason } => format!("DNS lookup failed: {reason}"),
            PlanError::AllHostsUnresolvable { reason } => {
                format!("no mail host of the domain could be resolved: {reason}")
            }
        }
    }
}

fn bare(host: &str) -> &str {
    host.strip_suffix('.').unwrap_or(host)
}

impl SelfIdentity {
    /// Whether a connection to `ip` (at the port this identity is for) reaches us.
    pub fn owns(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.addrs.contains(&ip) || (self.all_loopback_v4 && ip.is_ipv4() && ip.is_loopback())
    }

    fn is_me(&self, host: &str, addrs: &[IpAddr]) -> bool {
        let host = bare(host);
        self.names
            .iter()
            .any(|n| bare(n).eq_ignore_ascii_case(host))
            || addrs.iter().any(|a| self.owns(*a))
    }
}

/// An exchange written as an address: IP text (`192.0.2.1`) or a literal (`[192.0.2.1]`).
fn literal_addr(host: &str) -> Option<IpAddr> {
    host.parse()
        .ok()
        .or_else(|| name::parse_address_literal(host))
}

/// The addresses of one host, or why it has none (`None`: it was not looked up).
type HostAddrs<'a> = Result<Vec<IpAddr>, Option<&'a DnsError>>;

/// Orders the hosts for `domain` given its MX `answer` and the address lookups of the
/// hosts (keyed by exchange name as in the answer, or by `domain` for an implicit MX).
/// See the module header for the rules.
pub fn plan(
    answer: &MxAnswer,
    domain: &str,
    resolved: &HashMap<String, Result<Vec<IpAddr>, DnsError>>,
    me: &SelfIdentity,
    max_addresses: usize,
    rng: &mut impl Rng,
) -> Result<Vec<MxHost>, PlanError> {
    let max_addresses = max_addresses.max(1);
    let implicit = !matches!(answer, MxAnswer::Records(r) if !r.is_empty());
    // (name, preference), deduplicated by name keeping the lowest preference.
    let mut hosts: Vec<(&str, u16)> = match answer {
        MxAnswer::NullMx => return Err(PlanError::NullMx),
        MxAnswer::Records(records) if !records.is_empty() => {
            let mut best: HashMap<&str, u16> = HashMap::with_capacity(records.len());
            let mut order = Vec::with_capacity(records.len());
            for r in records {
                let host = bare(&r.exchange);
                match best.get_mut(host) {
                    Some(p) => *p = (*p).min(r.preference),
                    None => {
                        best.insert(host, r.preference);
                        order.push(host);
                    }
                }
            }
            order
                .into_iter()
                .map(|h| (h, best.get(h).copied().unwrap_or(u16::MAX)))
                .collect()
        }
        MxAnswer::Records(_) | MxAnswer::NoMx => vec![(domain, 0)],
    };
    hosts.sort_by_key(|&(_, pref)| pref);
    for group in hosts.chunk_by_mut(|a, b| a.1 == b.1) {
        group.shuffle(rng);
    }

    // The addresses of each host, or the reason there are none.
    let lookup = |host: &str| -> HostAddrs<'_> {
        if let Some(ip) = literal_addr(host) {
            return Ok(vec![ip]);
        }
        match resolved.get(host) {
            Some(Ok(addrs)) => Ok(addrs.clone()),
            Some(Err(e)) => Err(Some(e)),
            None => Err(None),
        }
    };
    let looked: Vec<(&str, u16, HostAddrs<'_>)> =
        hosts.into_iter().map(|(h, p)| (h, p, lookup(h))).collect();

    // Self rule.
    let self_pref = looked
        .iter()
        .filter(|(h, _, addrs)| me.is_me(h, addrs.as_deref().unwrap_or_default()))
        .map(|&(_, p, _)| p)
        .min();
    let kept = looked
        .iter()
        .filter(|&&(_, p, _)| self_pref.is_none_or(|sp| p < sp));
    if self_pref.is_some() && kept.clone().next().is_none() {
        return Err(PlanError::MxLoop);
    }

    let mut seen: HashSet<IpAddr> = HashSet::new();
    let mut budget = max_addresses;
    let mut out = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for (host, pref, addrs) in kept {
        let addrs = match addrs {
            Ok(a) => a,
            Err(why) => {
                if failures.len() < 3 {
                    failures.push(match why {
                        Some(e) => e.to_string(),
                        None => format!("{host}: not looked up"),
                    });
                }
                continue;
            }
        };
        if budget == 0 {
            continue;
        }
        let mut mine = Vec::new();
        for &ip in addrs {
            if budget == 0 {
                break;
            }
            if seen.insert(ip) {
                mine.push(ip);
                budget -= 1;
            }
        }
        if mine.is_empty() {
            if addrs.is_empty() && failures.len() < 3 {
                failures.push(format!("{host}: no address records"));
            }
            continue;
        }
        out.push(MxHost {
            name: (*host).to_owned(),
            preference: *pref,
            addrs: mine,
        });
    }
    if !out.is_empty() {
        return Ok(out);
    }
    if implicit {
        return Err(match resolved.get(bare(domain)) {
            Some(Err(DnsError::NxDomain { .. })) => PlanError::NxDomain,
            Some(Err(DnsError::InvalidName { .. })) => PlanError::InvalidDomain,
            Some(Err(e)) => PlanError::Temporary {
                reason: e.to_string(),
            },
            Some(Ok(_)) => PlanError::NoAddresses,
            None => PlanError::Temporary {
                reason: format!("{domain}: addresses not looked up"),
            },
        });
    }
    Err(PlanError::AllHostsUnresolvable {
        reason: if failures.is_empty() {
            "no host had an address".to_owned()
        } else {
            failures.join("; ")
        },
    })
}

/// The addresses of each host, with the DNSSEC state of the answer.
type Resolved = HashMap<String, Checked<Result<Vec<IpAddr>, DnsError>>>;

/// Looks up the hosts of `names` concurrently (at most [`LOOKUP_CONCURRENCY`] at a time).
async fn resolve_all(resolver: &Resolver, names: Vec<String>) -> Resolved {
    let mut out = HashMap::with_capacity(names.len());
    let mut pending = names.into_iter();
    let mut tasks = JoinSet::new();
    loop {
        while tasks.len() < LOOKUP_CONCURRENCY {
            let Some(host) = pending.next() else { break };
            let resolver = resolver.clone();
            tasks.spawn(async move {
                let got = resolver.addrs_checked(&host).await;
                let result = Checked {
                    answer: got.answer.map(|a| a.as_ref().clone()),
                    dnssec: got.dnssec,
                };
                (host, result)
            });
        }
        match tasks.join_next().await {
            Some(Ok((host, result))) => {
                out.insert(host, result);
            }
            // A panicked lookup task: its host simply stays unresolved.
            Some(Err(_)) => {}
            None => break,
        }
    }
    out
}

fn answers_only(resolved: &Resolved) -> HashMap<String, Result<Vec<IpAddr>, DnsError>> {
    resolved
        .iter()
        .map(|(h, c)| (h.clone(), c.answer.clone()))
        .collect()
}

/// Looks up the MX records of `domain` and the addresses of its hosts (at most
/// [`MAX_MX_HOSTS`] hosts, the most preferred), then [`plan`]s with a fresh random
/// source. An address-literal domain skips DNS.
pub async fn resolve_mx_plan(
    resolver: &Resolver,
    domain: &str,
    me: &SelfIdentity,
    max_addresses: usize,
) -> Result<Vec<MxHost>, PlanError> {
    resolve_mx_plan_checked(resolver, domain, me, max_addresses)
        .await
        .answer
        .map(|hosts| hosts.into_iter().map(|(h, _)| h).collect())
}

/// [`resolve_mx_plan`] with DNSSEC states, for DANE (RFC 7672 §2.2): the state of the MX
/// answer (of its denial for an implicit MX) in [`Checked::dnssec`], and each planned
/// host with the state of its address answer. The plan is built by [`plan`] from the
/// very answers whose states are returned (one lookup each, from `resolver`'s cache or
/// the network), so a host's state is the state of the addresses it will be tried at.
/// States mean something only when `resolver` validates ([`Resolver::validating`]).
pub async fn resolve_mx_plan_checked(
    resolver: &Resolver,
    domain: &str,
    me: &SelfIdentity,
    max_addresses: usize,
) -> Checked<Result<Vec<(MxHost, Dnssec)>, PlanError>> {
    let domain = name::normalize(domain).into_owned();
    if domain.starts_with('[') {
        if name::parse_address_literal(&domain).is_none() {
            return Checked::unasked(Err(PlanError::InvalidDomain));
        }
        let planned = plan(
            &MxAnswer::NoMx,
            &domain,
            &HashMap::new(),
            me,
            max_addresses,
            &mut rand::rng(),
        );
        return Checked::unasked(planned.map(|hosts| {
            hosts
                .into_iter()
                .map(|h| (h, Dnssec::Indeterminate("address literal".to_owned())))
                .collect()
        }));
    }
    let Checked {
        answer,
        dnssec: mx_state,
    } = resolver.mx_checked(&domain).await;
    let fail = |e: PlanError| Checked {
        answer: Err(e),
        dnssec: mx_state.clone(),
    };
    let answer = match answer {
        Ok(a) => a,
        Err(DnsError::NxDomain { .. }) => return fail(PlanError::NxDomain),
        Err(DnsError::InvalidName { .. }) => return fail(PlanError::InvalidDomain),
        Err(e) => {
            return fail(PlanError::Temporary {
                reason: e.to_string(),
            });
        }
    };
    let names: Vec<String> = match answer.as_ref() {
        MxAnswer::NullMx => return fail(PlanError::NullMx),
        MxAnswer::NoMx => vec![domain.clone()],
        MxAnswer::Records(records) => {
            let mut by_pref: Vec<(u16, &str)> = records
                .iter()
                .map(|r| (r.preference, bare(&r.exchange)))
                .collect();
            by_pref.sort_by_key(|&(p, _)| p);
            let mut seen = HashSet::new();
            by_pref
                .into_iter()
                .filter(|&(_, h)| literal_addr(h).is_none() && seen.insert(h))
                .take(MAX_MX_HOSTS)
                .map(|(_, h)| h.to_owned())
                .collect()
        }
    };
    let resolved = resolve_all(resolver, names).await;
    let planned = plan(
        &answer,
        &domain,
        &answers_only(&resolved),
        me,
        max_addresses,
        &mut rand::rng(),
    );
    let state_of = |host: &str| {
        resolved.get(host).map_or_else(
            || Dnssec::Indeterminate("address literal".to_owned()),
            |c| c.dnssec.clone(),
        )
    };
    Checked {
        answer: planned.map(|hosts| {
            hosts
                .into_iter()
                .map(|h| {
                    let state = state_of(&h.name);
                    (h, state)
                })
                .collect()
        }),
        dnssec: mx_state,
    }
}

/// A relay host of the `smtp` transport with its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRelay {
    /// The configured host.
    pub host: RelayHost,
    /// Its addresses, in order; never empty, no (address, port) shared with an earlier
    /// relay.
    pub addrs: Vec<IpAddr>,
}

/// Resolves the relay hosts of an `smtp` route, in the configured order (no shuffling, no
/// self rule: relaying to ourselves is the operator's explicit choice). Hosts without an
/// address are skipped; the total of addresses is cut to `max_addresses` (at least 1).
/// When no host has an address the error is always temporary
/// ([`PlanError::AllHostsUnresolvable`]): a broken relay setting must not bounce mail.
pub async fn resolve_relay_hosts(
    resolver: &Resolver,
    hosts: &[RelayHost],
    max_addresses: usize,
) -> Result<Vec<ResolvedRelay>, PlanError> {
    let names: Vec<String> = {
        let mut seen = HashSet::new();
        hosts
            .iter()
            .filter(|h| h.ip().is_none() && seen.insert(h.host.as_str()))
            .map(|h| h.host.clone())
            .collect()
    };
    let resolved = resolve_all(resolver, names).await;
    let mut budget = max_addresses.max(1);
    let mut seen: HashSet<(IpAddr, u16)> = HashSet::new();
    let mut out = Vec::new();
    let mut failures = Vec::new();
    for host in hosts {
        let addrs = match host.ip() {
            Some(ip) => vec![ip],
            None => match resolved.get(&host.host).map(|c| &c.answer) {
                Some(Ok(a)) => a.clone(),
                Some(Err(e)) => {
                    failures.push(e.to_string());
                    continue;
                }
                None => {
                    failures.push(format!("{}: not looked up", host.host));
                    continue;
                }
            },
        };
        if addrs.is_empty() {
            failures.push(format!("{}: no address records", host.host));
        }
        let mut mine = Vec::new();
        for ip in addrs {
            if budget == 0 {
                break;
            }
            if seen.insert((ip, host.port)) {
                mine.push(ip);
                budget -= 1;
            }
        }
        if !mine.is_empty() {
            out.push(ResolvedRelay {
                host: host.clone(),
                addrs: mine,
            });
        }
    }
    if out.is_empty() {
        return Err(PlanError::AllHostsUnresolvable {
            reason: if failures.is_empty() {
                "no relay host is configured".to_owned()
            } else {
                failures.join("; ")
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
