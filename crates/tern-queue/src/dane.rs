//! DANE lookups for the MX walk (RFC 7672): the MX plan with each host's DNSSEC state.
//!
//! Issue 19's DANE work fills this with validated MX, address and TLSA lookups. Until
//! then a route that asks for DANE finds no usable records: `dane` falls back to the
//! next policy and `dane-only` defers (fail closed).

use tern_route::dns::plan::SelfIdentity as Identity;
use tern_route::dns::plan::{self as dns, MxHost, PlanError};

use crate::Context;
use crate::security::DaneState;

/// The MX plan of `domain` and, for each host, its DANE state under the route's `tls`.
pub(crate) async fn mx_plan(
    ctx: &Context,
    domain: &str,
    me: &Identity,
    max: usize,
    tls: tern_route::TlsPolicy,
) -> Result<Vec<(MxHost, DaneState)>, PlanError> {
    let hosts = dns::resolve_mx_plan(&ctx.resolver, domain, me, max).await?;
    let state = if tls.wants_dane() {
        DaneState::NotUsable("DANE lookups are not available in this build".into())
    } else {
        DaneState::NotAsked
    };
    Ok(hosts.into_iter().map(|h| (h, state.clone())).collect())
}
