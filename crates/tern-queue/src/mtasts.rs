//! The destination domain's MTA-STS policy (RFC 8461) for the MX walk.
//!
//! Issue 19's MTA-STS work fills this with the `_mta-sts` TXT lookup, the HTTPS fetch and
//! the persisted cache. Until then no domain has a policy.

use crate::Context;
use crate::security::StsState;

/// The MTA-STS state of `domain` for an MX route.
pub(crate) async fn domain_state(_ctx: &Context, _domain: &str) -> StsState {
    StsState::None
}
