//! The destination domain's MTA-STS policy (RFC 8461) for the MX walk.
//!
//! A thin adapter: `tern-mtasts` does the TXT lookup, the HTTPS fetch and the persisted
//! cache ([`tern_mtasts::MtaSts::lookup`]); this turns its answer into the [`StsState`]
//! that `security.rs` decides with. Called only for `mx` routes whose `tls` is `may`,
//! `dane` or `dane-only` (`attempt.rs`). Bounded by the lookup's own bounds (DNS timeout
//! plus `[mta_sts] fetch_timeout_secs`; `budget.rs` counts them).

use std::sync::Arc;

use tern_mtasts::{FailKind, Lookup, policy::Mode};
use tern_reports::tlsrpt::TlsResultType;

use crate::Context;
use crate::security::{StsState, StsView};

/// The MTA-STS state of `domain` for an MX route.
pub(crate) async fn domain_state(ctx: &Context, domain: &str) -> StsState {
    let Some(sts) = &ctx.mta_sts else {
        return StsState::None;
    };
    state_of(sts.lookup(domain).await)
}

/// The decision's view of a lookup's answer.
fn state_of(lookup: Lookup) -> StsState {
    match lookup {
        Lookup::None(_) => StsState::None,
        Lookup::Policy(entry) => StsState::Policy(Arc::new(StsView {
            enforce: entry.policy.mode == Mode::Enforce,
            mx: entry.policy.mx.clone(),
            lines: entry.policy.lines.clone(),
            id: entry.id.clone(),
        })),
        Lookup::Failed { kind, reason } => StsState::Failed {
            result: match kind {
                FailKind::FetchError => TlsResultType::StsPolicyFetchError,
                FailKind::Invalid => TlsResultType::StsPolicyInvalid,
                FailKind::WebpkiInvalid => TlsResultType::StsWebpkiInvalid,
            },
            reason,
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tern_mtasts::cache::Entry;
    use tern_mtasts::policy::parse_policy;

    #[test]
    fn answers_map_to_states() {
        let text = "version: STSv1\nmode: testing\nmx: *.example.com\nmax_age: 86400\n";
        let entry = Arc::new(Entry {
            domain: "example.com".into(),
            id: "7".into(),
            policy: parse_policy(text.as_bytes()).unwrap(),
            text: text.into(),
            fetched_at: 0,
        });
        let StsState::Policy(v) = state_of(Lookup::Policy(entry)) else {
            panic!("not a policy");
        };
        assert_eq!(
            (v.enforce, v.mx.as_slice(), v.id.as_str()),
            (false, ["*.example.com".to_string()].as_slice(), "7")
        );
        assert_eq!(state_of(Lookup::None("x".into())), StsState::None);
        assert!(matches!(
            state_of(Lookup::Failed {
                kind: FailKind::WebpkiInvalid,
                reason: "x".into()
            }),
            StsState::Failed {
                result: TlsResultType::StsWebpkiInvalid,
                ..
            }
        ));
    }
}
