//! The policy decision, sans I/O: from the results, the client's standing and the
//! configuration to what happens to the message, with the reason.
//!
//! Order (the first that applies wins):
//! 1. DMARC `fail` with `reject` applied: refused `550 5.7.1` (or quarantined or marked
//!    per `dmarc_reject`), unless the client is a trusted forwarder or the domain an
//!    exception (then marked).
//! 2. A temporary error that decides the outcome (DMARC `temperror`; SPF `temperror` when
//!    `spf_fail = "reject"` and DMARC did not pass): `451 4.7.5` / `451 4.7.24` when
//!    `temperror = "defer"`, else accepted.
//! 3. SPF `fail` with `spf_fail = "reject"` and DMARC not passing: `550 5.7.23`
//!    (RFC 7372), unless trusted forwarder or exception.
//! 4. DMARC `fail` with `quarantine` applied: quarantined per `dmarc_quarantine`
//!    (unless trusted forwarder or exception: marked).
//! 5. Otherwise accepted (the header says the rest).
//!
//! Invariant: this module never refuses permanently for a reason of Tern's own (a
//! message over `max_size` is judged on SPF alone and its DMARC result is never `fail`,
//! see `verifier.rs`).

use tern_reports::Policy;

use crate::config::{
    DmarcRejectAction, QuarantineMode, SpfFailAction, TempErrorAction, VerifyConfig,
};
use crate::results::{AuthResult, Verdicts};

/// What happens to the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Queued as usual (with the header).
    Accept,
    /// Queued, quarantined as the mode says.
    Quarantine(QuarantineMode),
    /// Refused permanently at the end of DATA; nothing committed.
    Reject {
        /// The reply code (550).
        code: u16,
        /// The enhanced status code.
        status: &'static str,
        /// The reply text.
        text: String,
    },
    /// Refused temporarily at the end of DATA; nothing committed.
    Defer {
        /// The reply code (451).
        code: u16,
        /// The enhanced status code.
        status: &'static str,
        /// The reply text.
        text: String,
    },
}

impl Action {
    /// A short lowercase name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Accept => "accept",
            Action::Quarantine(_) => "quarantine",
            Action::Reject { .. } => "reject",
            Action::Defer { .. } => "defer",
        }
    }
}

/// The decision and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What happens.
    pub action: Action,
    /// Why, in a few words (`dmarc reject example.com`, `trusted forwarder`, ...).
    pub reason: String,
    /// Why the policy applied differs from the published one (DMARC report override
    /// types: `trusted_forwarder`, `local_policy`, `sampled_out`).
    pub overrides: Vec<String>,
}

/// The client's standing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Standing {
    /// The client is a trusted forwarder (its mail is only marked).
    pub trusted_forwarder: bool,
    /// The From or policy domain is an exception (only marked).
    pub exception: bool,
    /// `pct` sampling lowered the DMARC policy.
    pub sampled_out: bool,
}

/// Decides.
pub fn decide(v: &Verdicts, standing: Standing, cfg: &VerifyConfig) -> Decision {
    let dmarc = v.dmarc.as_ref();
    let dmarc_result = dmarc.map_or(AuthResult::None, |d| d.result);
    let dmarc_pass = dmarc_result == AuthResult::Pass;
    let spf_result = v.spf.as_ref().map_or(AuthResult::None, |s| s.result);
    let domain = dmarc.map_or("", |d| d.policy_domain.as_str());
    let spared = standing.trusted_forwarder || standing.exception;
    let spared_override = || {
        let mut o = Vec::new();
        if standing.trusted_forwarder {
            o.push("trusted_forwarder".to_string());
        }
        if standing.exception {
            o.push("local_policy".to_string());
        }
        o
    };
    let mut overrides = Vec::new();
    if standing.sampled_out {
        overrides.push("sampled_out".to_string());
    }
    let accept = |reason: String, overrides: Vec<String>| Decision {
        action: Action::Accept,
        reason,
        overrides,
    };
    let applied = dmarc.map(|d| d.applied);

    // 1. DMARC reject.
    if dmarc_result == AuthResult::Fail && applied == Some(Policy::Reject) {
        if spared {
            return accept(
                format!(
                    "dmarc reject {domain} not applied: {}",
                    spared_reason(standing)
                ),
                spared_override(),
            );
        }
        return match cfg.dmarc_reject {
            DmarcRejectAction::Reject => Decision {
                action: Action::Reject {
                    code: 550,
                    status: "5.7.1",
                    text: format!(
                        "Message refused: it fails the DMARC policy of {}",
                        if domain.is_empty() {
                            "its From domain"
                        } else {
                            domain
                        }
                    ),
                },
                reason: format!("dmarc reject {domain}"),
                overrides,
            },
            DmarcRejectAction::Quarantine => Decision {
                action: Action::Quarantine(cfg.dmarc_quarantine),
                reason: format!("dmarc reject {domain} (quarantined by dmarc_reject)"),
                overrides: vec!["local_policy".into()],
            },
            DmarcRejectAction::Mark => accept(
                format!("dmarc reject {domain} (marked by dmarc_reject)"),
                vec!["local_policy".into()],
            ),
        };
    }

    // 2. Temporary errors that decide.
    let spf_decides = cfg.spf_fail == SpfFailAction::Reject && !dmarc_pass;
    let dmarc_temp = dmarc_result == AuthResult::TempError;
    let spf_temp = spf_decides && spf_result == AuthResult::TempError;
    if (dmarc_temp || spf_temp) && cfg.temperror == TempErrorAction::Defer && !spared {
        let (status, what) = if dmarc_temp {
            ("4.7.5", format!("DMARC of {domain}"))
        } else {
            ("4.7.24", "SPF".to_string())
        };
        return Decision {
            action: Action::Defer {
                code: 451,
                status,
                text: format!("Temporary DNS error checking {what}, try again later"),
            },
            reason: format!("temperror ({what})"),
            overrides,
        };
    }

    // 3. SPF fail on its own.
    if spf_decides && spf_result == AuthResult::Fail {
        let spf_domain = v.spf.as_ref().map_or("", |s| s.domain.as_str());
        if spared {
            return accept(
                format!(
                    "spf fail {spf_domain} not applied: {}",
                    spared_reason(standing)
                ),
                overrides,
            );
        }
        return Decision {
            action: Action::Reject {
                code: 550,
                status: "5.7.23",
                text: format!("Message refused: SPF of {spf_domain} does not allow this client"),
            },
            reason: format!("spf fail {spf_domain}"),
            overrides,
        };
    }

    // 4. DMARC quarantine.
    if dmarc_result == AuthResult::Fail && applied == Some(Policy::Quarantine) {
        if spared {
            return accept(
                format!(
                    "dmarc quarantine {domain} not applied: {}",
                    spared_reason(standing)
                ),
                spared_override(),
            );
        }
        return Decision {
            action: Action::Quarantine(cfg.dmarc_quarantine),
            reason: format!("dmarc quarantine {domain}"),
            overrides,
        };
    }

    accept(
        if dmarc_temp || spf_temp {
            "temperror accepted".into()
        } else {
            "accepted".into()
        },
        overrides,
    )
}

fn spared_reason(s: Standing) -> &'static str {
    if s.trusted_forwarder {
        "trusted forwarder"
    } else {
        "exception"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{DmarcCheck, SpfCheck};

    fn v(spf: AuthResult, dmarc: AuthResult, applied: Policy) -> Verdicts {
        Verdicts {
            spf: Some(SpfCheck {
                result: spf,
                domain: "example.com".into(),
                helo: false,
                comment: None,
            }),
            dmarc: Some(DmarcCheck {
                result: dmarc,
                from: "example.com".into(),
                published: Some(applied),
                applied,
                policy_domain: "example.com".into(),
                comment: None,
            }),
            ..Verdicts::default()
        }
    }

    fn cfg() -> VerifyConfig {
        VerifyConfig::default()
    }

    #[test]
    fn dmarc_reject_refuses_with_550_5_7_1_naming_the_domain() {
        let d = decide(
            &v(AuthResult::Fail, AuthResult::Fail, Policy::Reject),
            Standing::default(),
            &cfg(),
        );
        match d.action {
            Action::Reject { code, status, text } => {
                assert_eq!((code, status), (550, "5.7.1"));
                assert!(
                    text.contains("DMARC") && text.contains("example.com"),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dmarc_reject_configurable_and_spared_for_forwarders_and_exceptions() {
        let fail = v(AuthResult::Fail, AuthResult::Fail, Policy::Reject);
        let c = VerifyConfig {
            dmarc_reject: DmarcRejectAction::Quarantine,
            dmarc_quarantine: QuarantineMode::Hold,
            ..cfg()
        };
        assert_eq!(
            decide(&fail, Standing::default(), &c).action,
            Action::Quarantine(QuarantineMode::Hold)
        );
        let c = VerifyConfig {
            dmarc_reject: DmarcRejectAction::Mark,
            ..cfg()
        };
        assert_eq!(
            decide(&fail, Standing::default(), &c).action,
            Action::Accept
        );
        let fwd = Standing {
            trusted_forwarder: true,
            ..Standing::default()
        };
        let d = decide(&fail, fwd, &cfg());
        assert_eq!(
            (d.action, d.overrides),
            (Action::Accept, vec!["trusted_forwarder".to_string()])
        );
        let exc = Standing {
            exception: true,
            ..Standing::default()
        };
        assert_eq!(decide(&fail, exc, &cfg()).action, Action::Accept);
    }

    #[test]
    fn quarantine_goes_where_configured() {
        let q = v(AuthResult::Pass, AuthResult::Fail, Policy::Quarantine);
        for mode in [
            QuarantineMode::Header,
            QuarantineMode::Hold,
            QuarantineMode::Route,
        ] {
            let c = VerifyConfig {
                dmarc_quarantine: mode,
                ..cfg()
            };
            assert_eq!(
                decide(&q, Standing::default(), &c).action,
                Action::Quarantine(mode)
            );
        }
        // p=none and pass are accepted.
        let none = v(AuthResult::Fail, AuthResult::Fail, Policy::None);
        assert_eq!(
            decide(&none, Standing::default(), &cfg()).action,
            Action::Accept
        );
        let pass = v(AuthResult::Fail, AuthResult::Pass, Policy::None);
        assert_eq!(
            decide(&pass, Standing::default(), &cfg()).action,
            Action::Accept
        );
    }

    #[test]
    fn spf_fail_is_marked_by_default_and_refused_when_configured() {
        let mut nodmarc = v(AuthResult::Fail, AuthResult::None, Policy::None);
        nodmarc.dmarc = None;
        assert_eq!(
            decide(&nodmarc, Standing::default(), &cfg()).action,
            Action::Accept
        );
        let c = VerifyConfig {
            spf_fail: SpfFailAction::Reject,
            ..cfg()
        };
        match decide(&nodmarc, Standing::default(), &c).action {
            Action::Reject { status, .. } => assert_eq!(status, "5.7.23"),
            other => panic!("{other:?}"),
        }
        // DMARC passing through DKIM rescues a forwarded message.
        let fwd = v(AuthResult::Fail, AuthResult::Pass, Policy::None);
        assert_eq!(decide(&fwd, Standing::default(), &c).action, Action::Accept);
        // Softfail is never refused.
        let soft = v(AuthResult::SoftFail, AuthResult::None, Policy::None);
        assert_eq!(
            decide(&soft, Standing::default(), &c).action,
            Action::Accept
        );
    }

    #[test]
    fn temperror_defers_or_accepts_per_config() {
        let t = v(AuthResult::Pass, AuthResult::TempError, Policy::None);
        assert_eq!(
            decide(&t, Standing::default(), &cfg()).action,
            Action::Accept
        );
        let c = VerifyConfig {
            temperror: TempErrorAction::Defer,
            ..cfg()
        };
        match decide(&t, Standing::default(), &c).action {
            Action::Defer { code, status, .. } => assert_eq!((code, status), (451, "4.7.5")),
            other => panic!("{other:?}"),
        }
        let c2 = VerifyConfig {
            spf_fail: SpfFailAction::Reject,
            ..c
        };
        let mut spf_temp = v(AuthResult::TempError, AuthResult::None, Policy::None);
        spf_temp.dmarc = None;
        match decide(&spf_temp, Standing::default(), &c2).action {
            Action::Defer { status, .. } => assert_eq!(status, "4.7.24"),
            other => panic!("{other:?}"),
        }
    }
}
