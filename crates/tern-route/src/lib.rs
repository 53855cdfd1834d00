//! Tern's routing: which transport a recipient domain takes, and for MX delivery, which
//! hosts and addresses to try, in which order.
//!
//! # Parts
//!
//! - [`table`]: the routing table built from `[[route]]` entries. [`RoutingTable::route`]
//!   maps a recipient domain to a [`Route`]: the pattern that matched, the [`Transport`]
//!   (`mx`, `smtp` relay, `reject`, `hold`, and the local `maildir` and `lmtp`), and the
//!   [`NextHop`], the key of the queue the recipient joins, named for what it is
//!   (`mx:<domain>`, `smtp:[relay.example]:25`, `lmtp:unix:/run/dovecot/lmtp`,
//!   `maildir:/var/mail`, `drop:<dir>`, `reject:<pattern>`, `hold:<pattern>`: printable
//!   ASCII, bounded, the same across reloads and restarts). [`TlsPolicy`] lives here and
//!   is converted for the SMTP client by the queue crate.
//! - [`dns`]: [`dns::Resolver`], hickory-resolver with Tern's own bounded cache (exact
//!   TTLs clamped to `[min_ttl, max_ttl]`; NXDOMAIN/NODATA for the SOA negative TTL, 60 s
//!   without an SOA, capped at `negative_ttl_max`; temporary failures for `failure_ttl`);
//!   overlapping lookups of one name are coalesced.
//! - [`dns::plan`]: the pure MX planner ([`dns::plan::plan`]: RFC 5321 §5.1 ordering,
//!   shuffling of equal preferences, the self rule, deduplication, address budget) and
//!   its async wrappers [`dns::plan::resolve_mx_plan`] and
//!   [`dns::plan::resolve_relay_hosts`].
//! - [`own`]: [`OwnAddresses`], where this server's listeners accept mail (every
//!   interface address behind a wildcard listener, read with `getifaddrs`), for the self
//!   rule.
//!
//! # Permanent or temporary
//!
//! | outcome | class | enhanced status |
//! | --- | --- | --- |
//! | null MX | permanent | 5.1.10 |
//! | domain NXDOMAIN (MX, or A/AAAA of an implicit MX) | permanent | 5.1.2 |
//! | domain not a valid name | permanent | 5.1.2 |
//! | no MX and no A/AAAA (name exists) | permanent | 5.4.4 |
//! | we are the best MX (not routed locally) | temporary: the mail is kept | 4.4.6 |
//! | DNS failure (SERVFAIL, timeout, refused) | temporary | 4.4.3 |
//! | every MX or relay host without an address | temporary | 4.4.3 |
//!
//! # Invariants
//!
//! - The routing table is immutable after it is built; reloads build a new one that the
//!   caller swaps atomically. Every configuration problem is reported at once, keyed by
//!   its path (`route[2].hosts[0]`).
//! - No lock is held across an `.await`; the resolver's mutexes guard one map operation
//!   each. Every DNS lookup is bounded by `DnsConfig::timeout`; the cache by
//!   `DnsConfig::cache_entries`.
//! - Nothing reachable from a peer (envelope domains, DNS answers) can panic: no
//!   `unwrap`, no unchecked indexing, saturating time arithmetic.
//!
//! # Trust
//!
//! Recipient domains come from remote clients and DNS answers from the network; both are
//! bounded and validated before use. The configuration comes from the operator and is
//! checked completely (a `reject` reply text is sent verbatim, so it must be printable
//! ASCII).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod dns;
mod name;
pub mod own;
pub mod table;

pub use name::parse_address_literal;
pub use own::OwnAddresses;
pub use table::{
    LmtpServer, MAX_NEXT_HOP_NAME, NextHop, RejectReply, RelayHost, Route, RouteConfig,
    RouteProblem, RoutingTable, TlsPolicy, Transport, TransportKind,
};
