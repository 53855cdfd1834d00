//! DANE lookups for the MX walk (RFC 7672 §2): the MX plan with each host's DANE state.
//!
//! For a route with `tls = "dane"` or `"dane-only"` the plan is built from the answers of
//! the DNSSEC-validating resolver ([`Dane::resolver`], `[dane]`), by the same planner as
//! every MX plan (`tern_route::dns::plan::resolve_mx_plan_checked`: preference order,
//! shuffle, self rule, address limits), which returns the DNSSEC state of the MX answer
//! and of each planned host's addresses. Then, per RFC 7672:
//! - MX answer (or, without MX records, the denial of MX records) **insecure**: DANE does
//!   not apply; every host of that plan is `NotUsable("MX insecure")` (§2.2.1).
//! - MX answer **bogus or indeterminate** (a validated lookup that failed: SERVFAIL,
//!   timeout): the host list is taken from the plain resolver (so the refusal names the
//!   hosts), and every host is `Bogus`: none is tried, the mail is deferred (§2.1.1).
//! - MX **secure**, per host: address records insecure → `NotUsable`; bogus or
//!   indeterminate → `Bogus`. Secure → TLSA at `_<port>._tcp.<host>` (`port`: the
//!   route's): secure with records → the usable ones (DANE-TA/DANE-EE, selector 0/1,
//!   matching 0/1/2, a digest of the right length; PKIX-TA/PKIX-EE dropped, §3.1.3) →
//!   `Usable`, or `NotUsable` when none is usable; secure NXDOMAIN/NODATA → `NotUsable("no
//!   TLSA records")`; insecure → `NotUsable`; bogus or failed → `Bogus`.
//!
//! Simplification (documented in docs/TLS.md, "DANE"): TLSA records are looked up at the MX
//! host name as published, never at a CNAME target of it (RFC 7672 §2.2.3 allows the
//! original name; following the chain first is not done). DANE-TA reference names are
//! the MX host name and, as §3.2.2 also allows, the destination domain.
//!
//! Events: 4141 (a bogus or failed validated answer, rate-limited per domain by the event
//! log) and 4142 (DANE in force for a host for the first time, or with other records:
//! once per change, a bounded memory of the last records per host).
//!
//! Trust: everything here comes from DNS; the record lists are bounded by the message
//! size and nothing panics on them.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use tern_deliver::dane::usable;
use tern_deliver::{DaneTlsa, Tlsa};
use tern_events::{catalog, fields};
use tern_route::dns::plan::SelfIdentity as Identity;
use tern_route::dns::plan::{self as dns, MxHost, PlanError};
use tern_route::dns::{Checked, DnsError, Dnssec, Resolver, TlsaRecord};

use crate::Context;
use crate::security::DaneState;

/// Hosts whose last TLSA records are remembered for event 4142.
const SEEN_HOSTS: usize = 10_000;

/// The DANE side of the queue: the validating resolver and what event 4142 remembers.
pub struct Dane {
    /// DNSSEC-validating resolver (the `[dane]` trust anchor, the `[dns]` servers).
    pub resolver: Resolver,
    /// Host → hash of the records last in force (bounded by [`SEEN_HOSTS`]: cleared when
    /// full, which only repeats an info event). One lock, one map operation.
    seen: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for Dane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dane")
            .field("resolver", &self.resolver)
            .finish_non_exhaustive()
    }
}

impl Dane {
    /// DANE over `resolver`, which must validate (`Resolver::validating`).
    pub fn new(resolver: Resolver) -> Dane {
        Dane {
            resolver,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `records` are new for `host` (and remembers them).
    fn changed(&self, host: &str, records: &DaneTlsa) -> bool {
        let mut h = DefaultHasher::new();
        records.records.hash(&mut h);
        let digest = h.finish();
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.len() >= SEEN_HOSTS && !seen.contains_key(host) {
            seen.clear();
        }
        seen.insert(host.to_owned(), digest) != Some(digest)
    }
}

/// The MX plan of `domain` and, for each host, its DANE state under the route's `tls`
/// (`port`: the route's, for the TLSA name).
pub(crate) async fn mx_plan(
    ctx: &Context,
    domain: &str,
    me: &Identity,
    max: usize,
    tls: tern_route::TlsPolicy,
    port: u16,
) -> Result<Vec<(MxHost, DaneState)>, PlanError> {
    if !tls.wants_dane() {
        let hosts = dns::resolve_mx_plan(&ctx.resolver, domain, me, max).await?;
        return Ok(hosts
            .into_iter()
            .map(|h| (h, DaneState::NotAsked))
            .collect());
    }
    let checked = dns::resolve_mx_plan_checked(&ctx.dane.resolver, domain, me, max).await;
    match checked.dnssec {
        Dnssec::Secure => {}
        Dnssec::Insecure => {
            // RFC 7672 §2.2.1: DANE does not apply. The plan is the one just made (the
            // same answers the plain resolver would give), without asking again.
            let why = DaneState::NotUsable("MX records are not DNSSEC-signed (insecure)".into());
            return Ok(checked
                .answer?
                .into_iter()
                .map(|(h, _)| (h, why.clone()))
                .collect());
        }
        Dnssec::Bogus(why) | Dnssec::Indeterminate(why) => {
            // Permanent answers stand whatever their state (a null MX, NXDOMAIN proven or
            // not, are not worse for being unsigned): only temporary ones become bogus.
            if let Err(e) = &checked.answer
                && e.is_permanent()
            {
                return Err(e.clone());
            }
            let reason = format!("MX lookup: {why}");
            bogus_event(ctx, domain, domain, "mx", &reason);
            let hosts = dns::resolve_mx_plan(&ctx.resolver, domain, me, max).await?;
            let state = DaneState::Bogus(reason);
            return Ok(hosts.into_iter().map(|h| (h, state.clone())).collect());
        }
    }
    let hosts = checked.answer?;
    // The TLSA lookups of the hosts with secure addresses, together (a plan has at most
    // `max_addresses` hosts; each lookup is bounded by the `[dns]` timeout).
    let mut lookups = tokio::task::JoinSet::new();
    for (h, state) in &hosts {
        if state.is_secure() {
            let (resolver, name) = (ctx.dane.resolver.clone(), h.name.clone());
            lookups.spawn(async move {
                let answer = resolver.tlsa(&name, port).await;
                (name, answer)
            });
        }
    }
    let mut tlsa = HashMap::new();
    while let Some(done) = lookups.join_next().await {
        // A panicked lookup leaves its host without an answer: treated as failed.
        if let Ok((name, answer)) = done {
            tlsa.insert(name, answer);
        }
    }
    Ok(hosts
        .into_iter()
        .map(|(h, addrs)| {
            let state = host_state(ctx, domain, &h.name, &addrs, tlsa.remove(&h.name), port);
            (h, state)
        })
        .collect())
}

type TlsaAnswer = Checked<Result<Arc<Vec<TlsaRecord>>, DnsError>>;

/// What the RFC 7672 rules say about one host of a secure MX plan (pure: `judge`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Usable records, and how many were published.
    Usable(Arc<DaneTlsa>, usize),
    /// DANE does not apply to the host (why).
    NotUsable(String),
    /// A validated lookup failed: `lookup` is `address` or `tlsa`.
    Bogus {
        lookup: &'static str,
        reason: String,
    },
}

/// The rules for `host` (an MX host of `domain`, TLSA at `port`) given the state of its
/// address answer and its TLSA answer (`None`: the lookup did not finish).
fn judge(domain: &str, host: &str, addrs: &Dnssec, tlsa: Option<TlsaAnswer>, port: u16) -> Verdict {
    match addrs {
        Dnssec::Secure => {}
        Dnssec::Insecure => {
            return Verdict::NotUsable(format!("address records of {host} are insecure"));
        }
        Dnssec::Bogus(why) | Dnssec::Indeterminate(why) => {
            return Verdict::Bogus {
                lookup: "address",
                reason: format!("address lookup of {host}: {why}"),
            };
        }
    }
    let failed = |why: String| Verdict::Bogus {
        lookup: "tlsa",
        reason: format!("TLSA lookup of _{port}._tcp.{host}: {why}"),
    };
    let Some(tlsa) = tlsa else {
        return failed("the lookup did not finish".to_owned());
    };
    let records = match (tlsa.dnssec, tlsa.answer) {
        (Dnssec::Secure, Ok(records)) => records,
        (Dnssec::Insecure, _) => {
            return Verdict::NotUsable(format!("TLSA records of {host} are insecure"));
        }
        (Dnssec::Bogus(why) | Dnssec::Indeterminate(why), _) => return failed(why),
        // A secure state with a failed answer does not happen; treated as failed.
        (Dnssec::Secure, Err(e)) => return failed(e.to_string()),
    };
    if records.is_empty() {
        return Verdict::NotUsable(format!("no TLSA records for {host}"));
    }
    let total = records.len();
    let usable: Vec<Tlsa> = records
        .iter()
        .map(|r| Tlsa {
            usage: r.usage,
            selector: r.selector,
            matching: r.matching,
            data: r.data.clone(),
        })
        .filter(usable)
        .collect();
    if usable.is_empty() {
        return Verdict::NotUsable(format!(
            "none of the {total} TLSA record(s) of {host} is usable (PKIX usages or unknown parameters)"
        ));
    }
    let host_name = host.to_ascii_lowercase();
    let domain_name = domain.to_ascii_lowercase();
    let mut names = vec![host_name.clone()];
    if domain_name != host_name {
        names.push(domain_name);
    }
    Verdict::Usable(
        Arc::new(DaneTlsa {
            records: usable,
            names,
        }),
        total,
    )
}

/// One host of a secure MX plan: [`judge`], and its events.
fn host_state(
    ctx: &Context,
    domain: &str,
    host: &str,
    addrs: &Dnssec,
    tlsa: Option<TlsaAnswer>,
    port: u16,
) -> DaneState {
    match judge(domain, host, addrs, tlsa, port) {
        Verdict::Usable(tlsa, total) => {
            if ctx.dane.changed(host, &tlsa) {
                ctx.events.emit(
                    &catalog::DANE_IN_FORCE,
                    fields!("domain" => domain, "host" => host, "records" => tlsa.records.len(), "published" => total),
                );
            }
            DaneState::Usable(tlsa)
        }
        Verdict::NotUsable(why) => DaneState::NotUsable(why),
        Verdict::Bogus { lookup, reason } => {
            bogus_event(ctx, domain, host, lookup, &reason);
            DaneState::Bogus(reason)
        }
    }
}

/// Event 4141.
fn bogus_event(ctx: &Context, domain: &str, host: &str, what: &str, reason: &str) {
    ctx.events.emit(
        &catalog::DANE_DNSSEC_BOGUS,
        fields!("domain" => domain, "host" => host, "lookup" => what, "reason" => reason),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(usage: u8, selector: u8, matching: u8, len: usize) -> TlsaRecord {
        TlsaRecord {
            usage,
            selector,
            matching,
            data: vec![7; len],
        }
    }

    fn answer(dnssec: Dnssec, records: Vec<TlsaRecord>) -> Option<TlsaAnswer> {
        Some(Checked {
            answer: Ok(Arc::new(records)),
            dnssec,
        })
    }

    fn judged(addrs: Dnssec, tlsa: Option<TlsaAnswer>) -> Verdict {
        judge("example.com", "mx.example.com", &addrs, tlsa, 25)
    }

    #[test]
    fn secure_usable_records_are_kept_and_pkix_dropped() {
        let v = judged(
            Dnssec::Secure,
            answer(
                Dnssec::Secure,
                vec![
                    rec(3, 1, 1, 32),
                    rec(1, 1, 1, 32),
                    rec(2, 0, 2, 64),
                    rec(3, 1, 9, 32),
                ],
            ),
        );
        let Verdict::Usable(tlsa, published) = v else {
            panic!("{v:?}")
        };
        assert_eq!(published, 4);
        let kept: Vec<u8> = tlsa.records.iter().map(|r| r.usage).collect();
        assert_eq!(kept, vec![3, 2]);
        assert_eq!(tlsa.names, vec!["mx.example.com", "example.com"]);
    }

    #[test]
    fn no_usable_record_or_none_at_all_is_not_usable() {
        for records in [
            vec![],
            vec![rec(0, 0, 1, 32), rec(1, 1, 1, 32)],
            vec![rec(3, 1, 1, 20)],
        ] {
            assert!(matches!(
                judged(Dnssec::Secure, answer(Dnssec::Secure, records)),
                Verdict::NotUsable(_)
            ));
        }
    }

    #[test]
    fn insecure_answers_mean_no_dane_and_failed_ones_mean_bogus() {
        assert!(matches!(
            judged(
                Dnssec::Insecure,
                answer(Dnssec::Secure, vec![rec(3, 1, 1, 32)])
            ),
            Verdict::NotUsable(_)
        ));
        assert!(matches!(
            judged(
                Dnssec::Secure,
                answer(Dnssec::Insecure, vec![rec(3, 1, 1, 32)])
            ),
            Verdict::NotUsable(_)
        ));
        assert!(matches!(
            judged(Dnssec::Bogus("sig".into()), answer(Dnssec::Secure, vec![])),
            Verdict::Bogus {
                lookup: "address",
                ..
            }
        ));
        assert!(matches!(
            judged(Dnssec::Indeterminate("timeout".into()), None),
            Verdict::Bogus {
                lookup: "address",
                ..
            }
        ));
        for state in [
            Dnssec::Bogus("sig".into()),
            Dnssec::Indeterminate("SERVFAIL".into()),
        ] {
            assert!(matches!(
                judged(Dnssec::Secure, answer(state, vec![rec(3, 1, 1, 32)])),
                Verdict::Bogus { lookup: "tlsa", .. }
            ));
        }
        assert!(matches!(
            judged(Dnssec::Secure, None),
            Verdict::Bogus { lookup: "tlsa", .. }
        ));
    }

    #[test]
    fn a_domain_that_is_its_own_mx_names_itself_once() {
        let v = judge(
            "Example.com",
            "example.com",
            &Dnssec::Secure,
            answer(Dnssec::Secure, vec![rec(2, 1, 1, 32)]),
            25,
        );
        let Verdict::Usable(tlsa, _) = v else {
            panic!("{v:?}")
        };
        assert_eq!(tlsa.names, vec!["example.com"]);
    }
}
