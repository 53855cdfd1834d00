//! DANE lookups for the MX walk (RFC 7672 §2): the MX plan with each host's DANE state.
//!
//! For a route with `tls = "dane"` or `"dane-only"` the plan is built from the answers of
//! the DNSSEC-validating resolver ([`Dane::resolver`], `[dane]`), by the same planner as
//! every MX plan (`tern_route::dns::plan::resolve_mx_plan_checked`: preference order,
//! shuffle, self rule, address limits), which returns the DNSSEC state of the MX answer
//! and of each planned host's addresses. Then, per RFC 7672:
//! - MX answer (or, without MX records, the denial of MX and the domain's own addresses)
//!   **insecure**: DANE does not apply; every host is `NotUsable("MX insecure")` (§2.2.1).
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
//! Simplification (documented in docs/tls/dane.md): TLSA records are looked up at the MX
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
            // RFC 7672 §2.2.1: DANE does not apply; the plain plan, as without DANE.
            let hosts = dns::resolve_mx_plan(&ctx.resolver, domain, me, max).await?;
            let why = DaneState::NotUsable("MX records are not DNSSEC-signed (insecure)".into());
            return Ok(hosts.into_iter().map(|h| (h, why.clone())).collect());
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

/// One host of a secure MX plan.
fn host_state(
    ctx: &Context,
    domain: &str,
    host: &str,
    addrs: &Dnssec,
    tlsa: Option<TlsaAnswer>,
    port: u16,
) -> DaneState {
    match addrs {
        Dnssec::Secure => {}
        Dnssec::Insecure => {
            return DaneState::NotUsable(format!("address records of {host} are insecure"));
        }
        Dnssec::Bogus(why) | Dnssec::Indeterminate(why) => {
            let reason = format!("address lookup of {host}: {why}");
            bogus_event(ctx, domain, host, "address", &reason);
            return DaneState::Bogus(reason);
        }
    }
    let tlsa = tlsa.unwrap_or_else(|| Checked {
        answer: Err(DnsError::Temporary {
            name: host.to_owned(),
            reason: "the TLSA lookup did not finish".to_owned(),
        }),
        dnssec: Dnssec::Indeterminate("the TLSA lookup did not finish".to_owned()),
    });
    let records = match (tlsa.dnssec, tlsa.answer) {
        (Dnssec::Secure, Ok(records)) => records,
        (Dnssec::Insecure, _) => {
            return DaneState::NotUsable(format!("TLSA records of {host} are insecure"));
        }
        (Dnssec::Bogus(why) | Dnssec::Indeterminate(why), _) => {
            let reason = format!("TLSA lookup of _{port}._tcp.{host}: {why}");
            bogus_event(ctx, domain, host, "tlsa", &reason);
            return DaneState::Bogus(reason);
        }
        (Dnssec::Secure, Err(e)) => {
            // A secure state with a failed answer does not happen; treat it as failed.
            let reason = format!("TLSA lookup of _{port}._tcp.{host}: {e}");
            bogus_event(ctx, domain, host, "tlsa", &reason);
            return DaneState::Bogus(reason);
        }
    };
    if records.is_empty() {
        return DaneState::NotUsable(format!("no TLSA records for {host}"));
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
        return DaneState::NotUsable(format!(
            "none of the {total} TLSA record(s) of {host} is usable (PKIX usages or unknown parameters)"
        ));
    }
    let mut names = vec![host.to_ascii_lowercase()];
    let domain_name = domain.to_ascii_lowercase();
    if domain_name != names[0] {
        names.push(domain_name);
    }
    let tlsa = Arc::new(DaneTlsa {
        records: usable,
        names,
    });
    if ctx.dane.changed(host, &tlsa) {
        ctx.events.emit(
            &catalog::DANE_IN_FORCE,
            fields!("domain" => domain, "host" => host, "records" => tlsa.records.len(), "published" => total),
        );
    }
    DaneState::Usable(tlsa)
}

/// Event 4141.
fn bogus_event(ctx: &Context, domain: &str, host: &str, what: &str, reason: &str) {
    ctx.events.emit(
        &catalog::DANE_DNSSEC_BOGUS,
        fields!("domain" => domain, "host" => host, "lookup" => what, "reason" => reason),
    );
}
