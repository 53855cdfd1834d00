//! Greylisting: the triplet state machine (sans I/O, time a parameter), the store behind
//! a trait, and the in-process store.
//!
//! A triplet is (client network, sender, recipient): the network is the client's /24
//! (IPv4) or /64 (IPv6), since a large sender retries from another address of its pool;
//! sender and recipient are compared without case. Only a 128-bit BLAKE3 digest of the
//! triplet is kept (in memory and on disk): a fixed size per entry, and no addresses in
//! the file.
//!
//! The rules (postgrey's):
//! - A triplet never seen is refused (`451 4.7.1`) and remembered from then (`first`).
//! - A retry before `first + delay` is refused again; `first` does not move.
//! - A retry from `first + delay` up to `first + window` passes the triplet, and its
//!   client network is allowed automatically.
//! - A retry after `first + window` is treated as a new triplet.
//! - A passed triplet passes while it is seen again within `expire` of its last pass.
//! - An allowed network passes every triplet while it comes back within `expire` of
//!   its last pass (each pass pushes the date back).
//!
//! Expiry of each kind of entry: a triplet not yet passed is forgotten `window` after its
//! first attempt; a passed triplet and an allowed network `expire` after they last
//! passed mail. Both tables are bounded ([`MAX_TRIPLETS`], [`MAX_NETWORKS`]); when full,
//! the entries nearest to their expiry go first (`table.rs`), which favours the passed
//! triplets and allowed networks over the fresh attempts a flood would add.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, PoisonError};

use crate::Pending;
use crate::table::ExpiringMap;

/// Most triplets kept.
pub const MAX_TRIPLETS: usize = 500_000;
/// Most automatically allowed networks kept.
pub const MAX_NETWORKS: usize = 100_000;

/// The times of the rules (module header), in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// `greylist_delay`.
    pub delay_ms: u64,
    /// `greylist_window`.
    pub window_ms: u64,
    /// `greylist_expire`.
    pub expire_ms: u64,
}

/// A triplet's digest.
pub type TripletKey = [u8; 16];

/// The digest of (network of `client`, `sender`, `recipient`).
pub fn triplet(client: IpAddr, sender: &str, recipient: &str) -> TripletKey {
    let mut h = blake3::Hasher::new();
    h.update(b"tern-greylist-1\0");
    h.update(network(client).to_string().as_bytes());
    h.update(b"\0");
    h.update(sender.to_lowercase().as_bytes());
    h.update(b"\0");
    h.update(recipient.to_lowercase().as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&h.finalize().as_bytes()[..16]);
    key
}

/// The client network of `client`: the base address of its /24 or /64 (an
/// IPv4-mapped IPv6 address counts as the IPv4 address).
pub fn network(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(v4) => v4_network(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4_network(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        },
    }
}

fn v4_network(v4: Ipv4Addr) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(v4) & 0xffff_ff00))
}

/// `192.0.2.0/24`, `2001:db8::/64`: a network for events.
pub fn network_text(client: IpAddr) -> String {
    match network(client) {
        n @ IpAddr::V4(_) => format!("{n}/24"),
        n @ IpAddr::V6(_) => format!("{n}/64"),
    }
}

/// What is known of one triplet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Its first attempt (of this round), Unix ms.
    pub first: u64,
    /// Its last pass, or its first attempt while not passed, Unix ms.
    pub last: u64,
    /// Whether it passed.
    pub passed: bool,
}

impl Entry {
    /// When the entry is forgotten under `policy`.
    pub fn expires(&self, policy: &Policy) -> u64 {
        if self.passed {
            self.last.saturating_add(policy.expire_ms)
        } else {
            self.first.saturating_add(policy.window_ms)
        }
    }
}

/// The decision for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Refused for now: `retry_in_ms` until a retry can pass; `new` when this attempt
    /// started the triplet (a first attempt, or one after the window).
    Greylisted {
        /// Milliseconds until a retry passes.
        retry_in_ms: u64,
        /// This attempt started the triplet.
        new: bool,
    },
    /// The triplet passed now, after its delay: its network is allowed from now.
    Passed {
        /// How long the client took to retry, ms.
        after_ms: u64,
    },
    /// The triplet passed before.
    Known,
    /// The client network is allowed automatically.
    NetworkAllowed,
}

impl Verdict {
    /// Whether the recipient may be accepted.
    pub fn accepts(&self) -> bool {
        !matches!(self, Verdict::Greylisted { .. })
    }
}

/// The state machine: the verdict for an attempt at `now` on a triplet in state
/// `entry` (`None`: unknown or forgotten), and the triplet's new state.
/// `network_allowed`: whether its network is allowed automatically now.
pub fn decide(
    entry: Option<Entry>,
    network_allowed: bool,
    now: u64,
    policy: &Policy,
) -> (Verdict, Option<Entry>) {
    let fresh = |now| {
        (
            Verdict::Greylisted {
                retry_in_ms: policy.delay_ms,
                new: true,
            },
            Some(Entry {
                first: now,
                last: now,
                passed: false,
            }),
        )
    };
    if network_allowed {
        // The triplet is refreshed if known, never created (a network allowed sends to
        // many recipients: no entry per triplet).
        let updated = entry.filter(|e| e.expires(policy) > now).map(|e| Entry {
            last: now,
            passed: true,
            ..e
        });
        return (Verdict::NetworkAllowed, updated);
    }
    let Some(e) = entry.filter(|e| e.expires(policy) > now) else {
        return fresh(now);
    };
    if e.passed {
        return (Verdict::Known, Some(Entry { last: now, ..e }));
    }
    let waited = now.saturating_sub(e.first);
    if waited < policy.delay_ms {
        return (
            Verdict::Greylisted {
                retry_in_ms: policy.delay_ms - waited,
                new: false,
            },
            Some(e),
        );
    }
    if waited > policy.window_ms {
        return fresh(now);
    }
    (
        Verdict::Passed { after_ms: waited },
        Some(Entry {
            first: e.first,
            last: now,
            passed: true,
        }),
    )
}

/// The greylist store: one call per recipient, the whole decision made by the store (so
/// a shared store can make it atomically, e.g. in one Redis script).
pub trait GreylistStore: Send + Sync {
    /// Decides for the triplet (`client`'s network, `sender`, `recipient`) at `now_ms`
    /// and records the outcome.
    fn check<'a>(
        &'a self,
        client: IpAddr,
        sender: &'a str,
        recipient: &'a str,
        policy: Policy,
        now_ms: u64,
    ) -> Pending<'a, Verdict>;
}

/// The tables of the in-process store.
#[derive(Debug)]
pub(crate) struct Tables {
    pub(crate) triplets: ExpiringMap<TripletKey, Entry>,
    /// Allowed networks: the value is the last pass.
    pub(crate) networks: ExpiringMap<IpAddr, u64>,
    /// Changed since last saved.
    pub(crate) dirty: bool,
}

/// The in-process greylist: one mutex over both tables, held for one decision (a few
/// map operations), never across an `.await`. Saved to and loaded from a file by
/// `persist.rs`.
pub struct MemoryGreylist {
    pub(crate) tables: Mutex<Tables>,
}

impl Default for MemoryGreylist {
    fn default() -> MemoryGreylist {
        MemoryGreylist::with_capacity(MAX_TRIPLETS, MAX_NETWORKS)
    }
}

impl MemoryGreylist {
    /// An empty greylist bounded to these numbers of triplets and networks.
    pub fn with_capacity(triplets: usize, networks: usize) -> MemoryGreylist {
        MemoryGreylist {
            tables: Mutex::new(Tables {
                triplets: ExpiringMap::new(triplets),
                networks: ExpiringMap::new(networks),
                dirty: false,
            }),
        }
    }

    /// The decision (see [`GreylistStore::check`]), made at once.
    pub fn decide_now(
        &self,
        client: IpAddr,
        sender: &str,
        recipient: &str,
        policy: &Policy,
        now: u64,
    ) -> Verdict {
        let key = triplet(client, sender, recipient);
        let net = network(client);
        let mut t = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        let allowed = t.networks.get(&net, now).is_some();
        let entry = t.triplets.get(&key, now).copied();
        let (verdict, updated) = decide(entry, allowed, now, policy);
        if let Some(e) = updated {
            t.triplets.insert(key, e, e.expires(policy), now);
        }
        if matches!(
            verdict,
            Verdict::Passed { .. } | Verdict::NetworkAllowed | Verdict::Known
        ) {
            t.networks
                .insert(net, now, now.saturating_add(policy.expire_ms), now);
        }
        t.dirty = true;
        verdict
    }

    /// (triplets, networks) held now.
    pub fn sizes(&self) -> (usize, usize) {
        let t = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        (t.triplets.len(), t.networks.len())
    }
}

impl GreylistStore for MemoryGreylist {
    fn check<'a>(
        &'a self,
        client: IpAddr,
        sender: &'a str,
        recipient: &'a str,
        policy: Policy,
        now_ms: u64,
    ) -> Pending<'a, Verdict> {
        let v = self.decide_now(client, sender, recipient, &policy, now_ms);
        Box::pin(std::future::ready(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;
    const P: Policy = Policy {
        delay_ms: 5 * MIN,
        window_ms: 2 * 24 * 60 * MIN,
        expire_ms: 35 * 24 * 60 * MIN,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn first_attempt_early_retry_retry_after_the_delay() {
        let (v, e) = decide(None, false, 1000, &P);
        assert_eq!(
            v,
            Verdict::Greylisted {
                retry_in_ms: 5 * MIN,
                new: true
            }
        );
        let (v, e2) = decide(e, false, 1000 + MIN, &P);
        assert_eq!(
            v,
            Verdict::Greylisted {
                retry_in_ms: 4 * MIN,
                new: false
            }
        );
        assert_eq!(e2, e, "an early retry does not move the first attempt");
        let (v, e3) = decide(e2, false, 1000 + 5 * MIN, &P);
        assert_eq!(v, Verdict::Passed { after_ms: 5 * MIN });
        let e3 = e3.unwrap();
        assert!(e3.passed);
        // Known from then, each pass pushing the expiry back.
        let (v, e4) = decide(Some(e3), false, 1000 + 30 * 24 * 60 * MIN, &P);
        assert_eq!(v, Verdict::Known);
        let (v, _) = decide(e4, false, 1000 + 60 * 24 * 60 * MIN, &P);
        assert_eq!(v, Verdict::Known, "within 35 days of the last pass");
    }

    #[test]
    fn a_retry_after_the_window_and_an_expired_pass_start_again() {
        let (_, e) = decide(None, false, 0, &P);
        let late = P.window_ms + 1;
        let (v, e2) = decide(e, false, late, &P);
        assert_eq!(
            v,
            Verdict::Greylisted {
                retry_in_ms: P.delay_ms,
                new: true
            }
        );
        assert_eq!(e2.unwrap().first, late);
        let passed = Entry {
            first: 0,
            last: 10,
            passed: true,
        };
        let (v, _) = decide(Some(passed), false, 10 + P.expire_ms, &P);
        assert!(matches!(v, Verdict::Greylisted { new: true, .. }));
    }

    #[test]
    fn an_allowed_network_passes_without_new_entries() {
        let (v, e) = decide(None, true, 0, &P);
        assert_eq!((v, e), (Verdict::NetworkAllowed, None));
        assert!(v.accepts());
    }

    #[test]
    fn the_store_allows_the_network_after_a_pass() {
        let g = MemoryGreylist::default();
        let a = ip("192.0.2.10");
        let v = g.decide_now(a, "s@x.example", "R@y.example", &P, 0);
        assert!(!v.accepts());
        // Another address of the /24 retries: same triplet, case aside.
        let v = g.decide_now(
            ip("192.0.2.200"),
            "S@X.example",
            "r@y.example",
            &P,
            P.delay_ms,
        );
        assert_eq!(
            v,
            Verdict::Passed {
                after_ms: P.delay_ms
            }
        );
        // Any triplet from the network now passes; another network does not.
        let v = g.decide_now(a, "other@z.example", "r2@y.example", &P, P.delay_ms + 1);
        assert_eq!(v, Verdict::NetworkAllowed);
        let v = g.decide_now(
            ip("192.0.3.1"),
            "other@z.example",
            "r2@y.example",
            &P,
            P.delay_ms + 1,
        );
        assert!(!v.accepts());
        // The allowance lapses `expire` after the last pass.
        let v = g.decide_now(
            a,
            "third@z.example",
            "r3@y.example",
            &P,
            P.delay_ms + 2 + P.expire_ms,
        );
        assert!(!v.accepts());
    }

    #[test]
    fn networks_are_24_and_64() {
        assert_eq!(network(ip("192.0.2.77")), ip("192.0.2.0"));
        assert_eq!(network(ip("::ffff:192.0.2.77")), ip("192.0.2.0"));
        assert_eq!(network(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(
            network_text(ip("2001:db8:1:2:3:4:5:6")),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            triplet(ip("192.0.2.1"), "a@b", "c@d"),
            triplet(ip("192.0.2.254"), "A@B", "c@D")
        );
        assert_ne!(
            triplet(ip("192.0.2.1"), "a@b", "c@d"),
            triplet(ip("192.0.2.1"), "a@bc", "@d")
        );
    }

    #[test]
    fn the_store_is_bounded() {
        let g = MemoryGreylist::with_capacity(64, 8);
        for i in 0..10_000u32 {
            let client = IpAddr::V4(Ipv4Addr::from(i << 8));
            g.decide_now(client, "s", &format!("r{i}"), &P, u64::from(i));
        }
        let (t, n) = g.sizes();
        assert!(t <= 64 && n <= 8, "{t} {n}");
    }
}
