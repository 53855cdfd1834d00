//! Screening before the first command (Postfix's postscreen) and greylisting
//! (postgrey), for the SMTP server (docs/SCREENING.md).
//!
//! What is here, all but [`dnsbl::DnsLists`] sans I/O with time as a parameter:
//! - `[screen]` ([`config`]);
//! - DNS list sites in `postscreen_dnsbl_sites` syntax, the names asked, the score
//!   ([`sites`]), and the lists' client with its answer cache ([`dnsbl`]);
//! - the pass cache ([`pass`]) and the judgement of a new client ([`judge`]);
//! - the greylist state machine and store ([`greylist`]) and its file ([`persist`]);
//! - [`EventGate`]: refusals are logged once per kind, client network and window.
//!
//! The session of `tern-smtpd` drives these through [`Screen`]. Each store (pass cache,
//! list answers, greylist) is behind a small trait whose calls answer through a future
//! ([`Pending`]), so that a store shared by several nodes (issue 20: Redis) slots in; the
//! in-process implementations do their work when called and answer at once.
//!
//! Invariants: every table is bounded (`table.rs`); no lock is held across an
//! `.await` and none of them is held together with another; nothing here panics on
//! what the network or a file holds.

#![forbid(unsafe_code)]

pub mod config;
pub mod dnsbl;
pub mod greylist;
pub mod pass;
pub mod persist;
pub mod sites;
mod table;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

pub use config::{Action, ScreenConfig, Span};
pub use dnsbl::{DnsLists, ListCache, MemoryListCache};
pub use greylist::{GreylistStore, MemoryGreylist, Policy, Verdict};
pub use pass::{MemoryPassCache, PassCache, Passed};
pub use sites::{Score, Site};

/// A store's answer: a boxed future, so the traits stay object-safe.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Longest a list pass stands (postscreen's `postscreen_dnsbl_max_ttl`), ms.
pub const LISTS_PASS_MAX_MS: u64 = 3_600_000;

/// The configuration in force with its sites parsed.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `[screen]`.
    pub config: ScreenConfig,
    /// Its `dnsbl` sites.
    pub sites: Vec<Site>,
}

impl Settings {
    /// The settings of `config`.
    pub fn of(config: &ScreenConfig) -> Settings {
        Settings {
            sites: config.sites(),
            config: config.clone(),
        }
    }

    /// The greylist's times.
    pub fn policy(&self) -> Policy {
        Policy {
            delay_ms: self.config.greylist_delay.as_ms(),
            window_ms: self.config.greylist_window.as_ms(),
            expire_ms: self.config.greylist_expire.as_ms(),
        }
    }
}

/// What a client did before its greeting, and what follows (see [`judge`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// It talked before the final greeting line: the `pregreet` action.
    pub pregreet: Option<Action>,
    /// Its list score reached the threshold: the `dnsbl_action`.
    pub listed: Option<Action>,
    /// Its score is below zero (an allow list): it skips greylisting.
    pub allow_listed: bool,
    /// What the pass cache records (`None`: nothing, the client failed a test).
    pub remember: Option<Passed>,
}

impl Judgement {
    /// The session must end now (`drop`).
    pub fn drops(&self) -> bool {
        self.pregreet == Some(Action::Drop) || self.listed == Some(Action::Drop)
    }
}

/// The judgement of a client: `before` is what the pass cache held, `greet_tested`
/// whether it waited for the greeting this time (and `talked` whether it spoke too
/// early), `score` its lists' score when they were asked (`None`: their pass stood).
/// A test failed in any mode is not remembered as passed, so the client is tested again
/// at its next connection (postscreen does the same for `ignore`); nor are the lists
/// when one of them did not answer.
pub fn judge(
    settings: &Settings,
    before: Passed,
    greet_tested: bool,
    talked: bool,
    score: Option<&Score>,
    now_ms: u64,
) -> Judgement {
    let c = &settings.config;
    let pregreet = (greet_tested && talked).then_some(c.pregreet);
    let listed = score
        .filter(|s| s.total >= c.dnsbl_threshold)
        .map(|_| c.dnsbl_action);
    let allow_listed = score.is_some_and(|s| s.total < 0);
    let ttl = c.pass_ttl.as_ms();
    let remember = (pregreet.is_none() && listed.is_none()).then(|| Passed {
        greet_until: if greet_tested {
            now_ms.saturating_add(ttl)
        } else {
            before.greet_until
        },
        // A list that did not answer gets asked again at the next connection.
        lists_until: match score {
            Some(s) if s.unanswered.is_empty() => now_ms.saturating_add(ttl.min(LISTS_PASS_MAX_MS)),
            _ => before.lists_until,
        },
    });
    Judgement {
        pregreet,
        listed,
        allow_listed,
        remember,
    }
}

/// The kinds of refusal whose events are rate-limited by [`EventGate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Listed by the DNS lists.
    Listed,
    /// Talked before the greeting.
    Pregreet,
    /// Greylisted.
    Greylisted,
    /// A list did not answer (keyed by the list, not the client).
    Unanswered,
    /// Listed by an allow list (not a refusal, logged alike).
    AllowListed,
}

/// Logs each kind of refusal once per client network (or list) and window.
pub struct EventGate {
    seen: Mutex<table::ExpiringMap<(Refusal, String), ()>>,
    window_ms: u64,
}

impl EventGate {
    /// A gate with this window, remembering at most `capacity` keys.
    pub fn new(window_ms: u64, capacity: usize) -> EventGate {
        EventGate {
            seen: Mutex::new(table::ExpiringMap::new(capacity)),
            window_ms,
        }
    }

    /// True the first time `(kind, key)` is seen in a window.
    pub fn first(&self, kind: Refusal, key: &str, now_ms: u64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let k = (kind, key.to_owned());
        if seen.get(&k, now_ms).is_some() {
            return false;
        }
        seen.insert(k, (), now_ms.saturating_add(self.window_ms), now_ms);
        true
    }
}

/// Window of the [`EventGate`] of a [`Screen`]: 10 minutes.
pub const EVENT_WINDOW_MS: u64 = 600_000;

/// Everything the SMTP server needs to screen: the settings in force (swapped on
/// reload) and the stores.
pub struct Screen {
    settings: ArcSwap<Settings>,
    lists: Option<DnsLists>,
    pass: Arc<dyn PassCache>,
    greylist: Arc<dyn GreylistStore>,
    gate: EventGate,
}

impl Screen {
    /// Screening with `config`, asking the lists through `lists` (`None`: no resolver;
    /// every list then counts as unanswered).
    pub fn new(
        config: &ScreenConfig,
        lists: Option<DnsLists>,
        pass: Arc<dyn PassCache>,
        greylist: Arc<dyn GreylistStore>,
    ) -> Screen {
        Screen {
            settings: ArcSwap::from_pointee(Settings::of(config)),
            lists,
            pass,
            greylist,
            gate: EventGate::new(EVENT_WINDOW_MS, 100_000),
        }
    }

    /// Puts `config` in force; the stores keep what they hold.
    pub fn reload(&self, config: &ScreenConfig) {
        self.settings.store(Arc::new(Settings::of(config)));
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    /// The pass cache.
    pub fn pass_cache(&self) -> &dyn PassCache {
        self.pass.as_ref()
    }

    /// The greylist.
    pub fn greylist(&self) -> &dyn GreylistStore {
        self.greylist.as_ref()
    }

    /// The event gate.
    pub fn gate(&self) -> &EventGate {
        &self.gate
    }

    /// The lists' score for `client` (each list bounded in time).
    pub async fn score(&self, sites: &[Site], client: IpAddr) -> Score {
        match &self.lists {
            Some(lists) => lists.score(sites, client).await,
            None => Score {
                unanswered: sites.iter().map(|s| s.zone.clone()).collect(),
                ..Score::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(f: impl FnOnce(&mut ScreenConfig)) -> Settings {
        let mut c = ScreenConfig {
            enabled: true,
            ..ScreenConfig::default()
        };
        f(&mut c);
        Settings::of(&c)
    }

    fn score(total: i64) -> Score {
        Score {
            total,
            ..Score::default()
        }
    }

    #[test]
    fn a_clean_client_is_remembered_for_each_test() {
        let s = settings(|_| {});
        let j = judge(&s, Passed::default(), true, false, Some(&score(0)), 1000);
        assert_eq!(j.pregreet, None);
        assert_eq!(j.listed, None);
        assert_eq!(
            j.remember,
            Some(Passed {
                greet_until: 1000 + 86_400_000,
                lists_until: 1000 + LISTS_PASS_MAX_MS,
            })
        );
        // Lists asked again later, without the wait: the greeting pass stands.
        let before = j.remember.unwrap();
        let j = judge(&s, before, false, false, Some(&score(0)), 5_000_000);
        assert_eq!(j.remember.unwrap().greet_until, before.greet_until);
        assert_eq!(
            j.remember.unwrap().lists_until,
            5_000_000 + LISTS_PASS_MAX_MS
        );
    }

    #[test]
    fn failures_follow_their_action_and_are_never_remembered() {
        let s = settings(|c| {
            c.pregreet = Action::Drop;
            c.dnsbl_action = Action::Enforce;
            c.dnsbl_threshold = 2;
        });
        let j = judge(&s, Passed::default(), true, true, Some(&score(0)), 0);
        assert_eq!((j.pregreet, j.remember), (Some(Action::Drop), None));
        assert!(j.drops());
        // Talking early is only a violation when the client was made to wait.
        let j = judge(&s, Passed::default(), false, true, Some(&score(0)), 0);
        assert_eq!(j.pregreet, None);
        // The threshold decides, not a single listing.
        let j = judge(&s, Passed::default(), true, false, Some(&score(1)), 0);
        assert_eq!(j.listed, None);
        let j = judge(&s, Passed::default(), true, false, Some(&score(2)), 0);
        assert_eq!((j.listed, j.remember), (Some(Action::Enforce), None));
        assert!(!j.drops());
        // Ignore still means "test again next time".
        let s = settings(|c| c.pregreet = Action::Ignore);
        let j = judge(&s, Passed::default(), true, true, None, 0);
        assert_eq!((j.pregreet, j.remember), (Some(Action::Ignore), None));
        // An unanswered list: the greeting pass is kept, the lists are asked again.
        let unanswered = Score {
            unanswered: vec!["slow.example".into()],
            ..score(0)
        };
        let j = judge(&s, Passed::default(), true, false, Some(&unanswered), 0);
        assert_eq!(j.remember.map(|p| p.lists_until), Some(0));
        assert!(j.remember.is_some_and(|p| p.greet_until > 0));
        // A negative score is an allow listing.
        let j = judge(&s, Passed::default(), true, false, Some(&score(-4)), 0);
        assert!(j.allow_listed && j.remember.is_some());
    }

    #[test]
    fn the_gate_opens_once_per_key_and_window() {
        let g = EventGate::new(1000, 10);
        assert!(g.first(Refusal::Listed, "192.0.2.0/24", 0));
        assert!(!g.first(Refusal::Listed, "192.0.2.0/24", 999));
        assert!(g.first(Refusal::Pregreet, "192.0.2.0/24", 999));
        assert!(g.first(Refusal::Listed, "198.51.100.0/24", 999));
        assert!(g.first(Refusal::Listed, "192.0.2.0/24", 1000));
    }
}
