//! Tern's rate limits: how many connections, messages or recipients a client network, an
//! authenticated user or a sender domain may spend per time window.
//!
//! The limiter sits behind one interface, [`RateLimiter`], so a backend shared by several
//! Tern nodes (Redis, issue 20) slots in without touching `tern-smtpd`. Today's backend is
//! [`MemoryLimiter`]: one process, a bounded table in memory.
//!
//! # Model
//!
//! A [`Rate`] is "`count` per `period`" (`30/1m`). Each limit is a GCRA bucket (generic
//! cell rate algorithm, `gcra.rs`): a key may spend `count` units at once (the burst),
//! then one unit every `period / count`. Over any interval of length `L` a key is granted
//! at most `count + L·count/period` units, and a key left alone for `period` has its full
//! burst back. A refused request spends nothing.
//!
//! # Cost model of [`RateLimiter::check`]
//!
//! One call carries every [`Charge`] a step of an SMTP session makes (MAIL FROM: the
//! client's message rate, the sender domain's, the user's), so a shared backend needs
//! one round trip per step. The call is all or nothing: either every charge conforms and
//! all are spent, or none is spent and the first charge that does not conform is named.
//! The rate travels with each charge, so a reload changes limits without touching the
//! table, and a shared backend needs no configuration of its own.
//!
//! The future of [`MemoryLimiter`] is ready at its first poll: one short mutex hold,
//! O(log n) in the keys tracked, one small allocation (the boxed future), no I/O. A
//! networked backend must resolve within a short bound of its own (and decide, not
//! wait, when its server is away); callers do not add a timeout.
//!
//! # Keys
//!
//! A [`Key`] is a [`LimitKind`] with its subject, built only by the typed constructors:
//! a client network ([`ClientNet`]: the address masked to a configured prefix, IPv4 /32
//! and IPv6 /64 by default), an authenticated user, or a sender domain (lower-cased).
//!
//! Trust: every input here comes from a peer (addresses, user names, domains). Keys are
//! bounded in size (a user name is cut at [`MAX_SUBJECT_LEN`] octets), and the table of
//! keys is bounded in number (see [`MemoryLimiter`]).

#![forbid(unsafe_code)]

mod gcra;
mod memory;
mod rate;

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use ipnet::IpNet;

pub use memory::MemoryLimiter;
pub use rate::{Rate, RateError};

/// The longest subject (user name or domain) kept in a key, in octets; longer ones are cut
/// at a character boundary (which can only merge two over-long names into one bucket).
pub const MAX_SUBJECT_LEN: usize = 255;

/// Which limit a bucket counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum LimitKind {
    /// Connections from one client network.
    ClientConnections,
    /// Messages (MAIL FROM) from one client network.
    ClientMessages,
    /// Recipients (RCPT TO accepted) from one client network.
    ClientRecipients,
    /// Messages from one authenticated user.
    UserMessages,
    /// Recipients from one authenticated user.
    UserRecipients,
    /// Messages from one sender domain.
    SenderDomainMessages,
    /// Recipients of mail from one sender domain.
    SenderDomainRecipients,
    /// Messages sent to one destination limit (`[[delivery.destination_limits]]`, by its
    /// name), by the delivery workers.
    DestinationMessages,
}

impl LimitKind {
    /// Every kind.
    pub const ALL: [LimitKind; 8] = [
        LimitKind::ClientConnections,
        LimitKind::ClientMessages,
        LimitKind::ClientRecipients,
        LimitKind::UserMessages,
        LimitKind::UserRecipients,
        LimitKind::SenderDomainMessages,
        LimitKind::SenderDomainRecipients,
        LimitKind::DestinationMessages,
    ];

    /// The name used in configuration keys, events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::ClientConnections => "client_connections",
            LimitKind::ClientMessages => "client_messages",
            LimitKind::ClientRecipients => "client_recipients",
            LimitKind::UserMessages => "user_messages",
            LimitKind::UserRecipients => "user_recipients",
            LimitKind::SenderDomainMessages => "sender_domain_messages",
            LimitKind::SenderDomainRecipients => "sender_domain_recipients",
            LimitKind::DestinationMessages => "destination_messages",
        }
    }
}

/// A client network: an address with its host bits cleared to a prefix.
///
/// Invariant: built only by [`ClientNet::of`], so host bits are zero and an IPv4-mapped
/// IPv6 address counts as its IPv4 address (one client, one bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientNet(IpNet);

impl ClientNet {
    /// The network of `ip`: its first `prefix_v4` bits (IPv4) or `prefix_v6` bits
    /// (IPv6); prefixes past the address length are clamped.
    pub fn of(ip: IpAddr, prefix_v4: u8, prefix_v6: u8) -> ClientNet {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let prefix = match ip {
            IpAddr::V4(_) => prefix_v4.min(32),
            IpAddr::V6(_) => prefix_v6.min(128),
        };
        // Cannot fail with a clamped prefix; the whole address is the fallback.
        let net = IpNet::new(ip, prefix).map_or(IpNet::from(ip), |n| n.trunc());
        ClientNet(net)
    }

    /// The network.
    pub fn net(&self) -> IpNet {
        self.0
    }
}

impl fmt::Display for ClientNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Whom a bucket counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Subject {
    Client(ClientNet),
    User(Box<str>),
    Domain(Box<str>),
}

/// One bucket: a limit and whom it counts. Built by the typed constructors only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    kind: LimitKind,
    subject: Subject,
}

impl Key {
    /// Connections from a client network.
    pub fn client_connections(net: ClientNet) -> Key {
        Key {
            kind: LimitKind::ClientConnections,
            subject: Subject::Client(net),
        }
    }

    /// Messages from a client network.
    pub fn client_messages(net: ClientNet) -> Key {
        Key {
            kind: LimitKind::ClientMessages,
            subject: Subject::Client(net),
        }
    }

    /// Recipients from a client network.
    pub fn client_recipients(net: ClientNet) -> Key {
        Key {
            kind: LimitKind::ClientRecipients,
            subject: Subject::Client(net),
        }
    }

    /// Messages from an authenticated user (the name as authenticated, case kept).
    pub fn user_messages(user: &str) -> Key {
        Key {
            kind: LimitKind::UserMessages,
            subject: Subject::User(bounded(user)),
        }
    }

    /// Recipients from an authenticated user.
    pub fn user_recipients(user: &str) -> Key {
        Key {
            kind: LimitKind::UserRecipients,
            subject: Subject::User(bounded(user)),
        }
    }

    /// Messages from a sender domain (lower-cased: domains ignore case).
    pub fn sender_domain_messages(domain: &str) -> Key {
        Key {
            kind: LimitKind::SenderDomainMessages,
            subject: Subject::Domain(bounded(&domain.to_lowercase())),
        }
    }

    /// Recipients of mail from a sender domain.
    pub fn sender_domain_recipients(domain: &str) -> Key {
        Key {
            kind: LimitKind::SenderDomainRecipients,
            subject: Subject::Domain(bounded(&domain.to_lowercase())),
        }
    }

    /// Messages delivered under a destination limit (its configured name).
    pub fn destination_messages(limit: &str) -> Key {
        Key {
            kind: LimitKind::DestinationMessages,
            subject: Subject::Domain(bounded(limit)),
        }
    }

    /// The limit this key counts.
    pub fn kind(&self) -> LimitKind {
        self.kind
    }
}

/// The subject as events show it: `192.0.2.1/32`, `user alice`, `domain example.com`.
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.subject {
            Subject::Client(n) => write!(f, "{n}"),
            Subject::User(u) => write!(f, "{u}"),
            Subject::Domain(d) => write!(f, "{d}"),
        }
    }
}

/// `s` cut to at most [`MAX_SUBJECT_LEN`] octets at a character boundary.
fn bounded(s: &str) -> Box<str> {
    let mut end = s.len().min(MAX_SUBJECT_LEN);
    while !s.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    s.get(..end).unwrap_or_default().into()
}

/// What one step spends from one bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// The bucket.
    pub key: Key,
    /// Its limit now (from the configuration in force).
    pub rate: Rate,
    /// Units spent: 1 per connection, message or recipient.
    pub cost: u32,
}

/// A refused check: which charge did not conform, and when it would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// Index of the first charge that did not conform, in the slice given.
    pub charge: usize,
    /// Milliseconds until that charge would conform (rounded up); `None` when it never
    /// can (a cost above the rate's count).
    pub retry_after_ms: Option<u64>,
    /// True for the first refusal of this key in its window (one `period` from that
    /// refusal): the caller logs the limit once per key and window, not per command.
    pub first_in_window: bool,
}

/// The answer of [`RateLimiter::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Every charge conformed and was spent.
    Allowed,
    /// Nothing was spent.
    Refused(Refusal),
}

/// A pending decision (see the crate's cost model).
pub type PendingDecision<'a> = Pin<Box<dyn Future<Output = Decision> + Send + 'a>>;

/// A pending decision with the units set aside ([`RateLimiter::check_ahead`]).
pub type PendingAhead<'a> = Pin<Box<dyn Future<Output = (Decision, Vec<u32>)> + Send + 'a>>;

/// The limiter's one interface, for every backend.
///
/// Contract: `check` spends all of `charges` or none (see the crate header); `now_ms` is
/// the caller's wall clock in Unix milliseconds (wall time, so that nodes sharing a
/// backend agree); time going backwards is treated as no time passing. An empty slice is
/// allowed. The future must resolve within a short bound of the backend's own.
pub trait RateLimiter: Send + Sync {
    /// Checks and spends `charges` at `now_ms`.
    fn check<'a>(&'a self, charges: &'a [Charge], now_ms: u64) -> PendingDecision<'a>;

    /// [`check`](RateLimiter::check), and when it allows, sets aside for the caller up to
    /// `ahead[i].cost` units of bucket `ahead[i]`: only units that conform now, never
    /// refusing the check for them. Answers the decision and the units set aside per
    /// entry of `ahead` (all 0 when refused). The caller spends them itself (they are
    /// spent already, as far as the backend knows) and gives back, with
    /// [`give_back`](RateLimiter::give_back), those it does not spend.
    ///
    /// For a backend whose every check is a round trip: a session that knows what it
    /// will ask next (the RCPT commands a client pipelined after MAIL FROM) asks once.
    /// The default sets nothing aside: right for a backend whose checks cost nothing.
    fn check_ahead<'a>(
        &'a self,
        charges: &'a [Charge],
        ahead: &'a [Charge],
        now_ms: u64,
    ) -> PendingAhead<'a> {
        Box::pin(async move { (self.check(charges, now_ms).await, vec![0; ahead.len()]) })
    }

    /// Gives back units set aside by [`check_ahead`](RateLimiter::check_ahead) and not
    /// spent: `cost` units of each charge's bucket. Never waits (a networked backend
    /// sends it in the background); lost, the bucket admits that many fewer for a while.
    fn give_back(&self, unspent: &[Charge]) {
        let _ = unspent;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_nets_mask_and_unmap() {
        let v4: IpAddr = "192.0.2.77".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert_eq!(ClientNet::of(v4, 32, 64).to_string(), "192.0.2.77/32");
        assert_eq!(ClientNet::of(v4, 24, 64).to_string(), "192.0.2.0/24");
        let mapped: IpAddr = "::ffff:192.0.2.77".parse().unwrap_or(v4);
        assert_eq!(ClientNet::of(mapped, 32, 64), ClientNet::of(v4, 32, 64));
        let v6: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap_or(v4);
        assert_eq!(ClientNet::of(v6, 32, 64).to_string(), "2001:db8:1:2::/64");
        assert_eq!(
            ClientNet::of(v6, 32, 200).to_string(),
            "2001:db8:1:2:3:4:5:6/128"
        );
    }

    #[test]
    fn keys_are_typed_and_bounded() {
        assert_ne!(Key::user_messages("a"), Key::user_recipients("a"));
        assert_ne!(Key::user_messages("a"), Key::sender_domain_messages("a"));
        assert_eq!(
            Key::sender_domain_messages("Example.COM"),
            Key::sender_domain_messages("example.com")
        );
        let long = "é".repeat(400);
        let k = Key::user_messages(&long);
        assert!(k.to_string().len() <= MAX_SUBJECT_LEN);
        assert!(k.to_string().chars().all(|c| c == 'é'));
    }
}
