//! This server's own addresses, for the MX self rule (RFC 5321 §5.1) and for relay hosts
//! that are this server.
//!
//! A listener bound to a specific address accepts mail on that address and port only. A
//! listener bound to a wildcard (`0.0.0.0:25`, `[::]:25`, the usual setup) accepts on
//! every address of the machine in its family, on its port: the addresses of every
//! interface (`getifaddrs`), and for IPv4 the whole loopback range 127.0.0.0/8, which
//! Linux answers on although only 127.0.0.1 is configured. Listeners are IPv6-only for
//! `[::]` (Tern's listeners set IPV6_V6ONLY), so the families never mix. Comparing an MX
//! host's addresses with the bound addresses alone (what Tern did before issue 16)
//! matches nothing for a wildcard listener, and mail for a domain whose MX is this
//! machine went round until the hop limit.
//!
//! Invariants: the interface list is read at most once per [`REFRESH`] (lazily, by the
//! first lookup after that time) and again after [`OwnAddresses::refresh`] (called on
//! reload), so an address added to the machine counts within a minute. It is bounded to
//! [`MAX_INTERFACE_ADDRS`]. The mutex guards the cached list only, is never held while
//! reading the interfaces nor across an `.await`. When the interfaces cannot be read the
//! last list read stays in force (none at the first read: loopback still counts).
//!
//! Trust: the interface list comes from the kernel. Addresses are compared in their
//! canonical form (an IPv4-mapped IPv6 address is its IPv4 address).

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::dns::plan::SelfIdentity;

/// How long the interface addresses read are used before they are read again.
pub const REFRESH: Duration = Duration::from_secs(60);

/// Most interface addresses kept (a machine with more is not an MTA's).
pub const MAX_INTERFACE_ADDRS: usize = 65_536;

/// Reads the machine's interface addresses.
type Lookup = dyn Fn() -> io::Result<Vec<IpAddr>> + Send + Sync;

/// The interface addresses read last, and when.
struct Cached {
    at: Instant,
    addrs: Arc<[IpAddr]>,
    /// Set by [`OwnAddresses::refresh`]: read again at the next use.
    stale: bool,
}

/// The addresses where this server's listeners accept mail (see the module header).
pub struct OwnAddresses {
    /// The listeners' bound addresses (port 0 already resolved by the bind).
    listeners: Vec<SocketAddr>,
    cache: Mutex<Option<Cached>>,
    max_age: Duration,
    lookup: Box<Lookup>,
}

impl std::fmt::Debug for OwnAddresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnAddresses")
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

impl OwnAddresses {
    /// The addresses of `listeners` (as bound), with the machine's interfaces read by
    /// `getifaddrs` for the wildcard ones.
    pub fn new(listeners: Vec<SocketAddr>) -> OwnAddresses {
        OwnAddresses::with_lookup(listeners, REFRESH, Box::new(interface_addrs))
    }

    /// As [`OwnAddresses::new`], reading the interfaces with `lookup` and using each
    /// list for `max_age` (tests).
    pub fn with_lookup(
        listeners: Vec<SocketAddr>,
        max_age: Duration,
        lookup: Box<Lookup>,
    ) -> OwnAddresses {
        OwnAddresses {
            listeners,
            cache: Mutex::new(None),
            max_age,
            lookup,
        }
    }

    /// The listeners' bound addresses.
    pub fn listeners(&self) -> &[SocketAddr] {
        &self.listeners
    }

    /// Forgets the interface list: the next lookup reads the interfaces again (on
    /// reload, after an operator added an address).
    pub fn refresh(&self) {
        if let Some(c) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            c.stale = true;
        }
    }

    /// Who we are for mail to `port` (the port of the MX hosts, or of a relay host):
    /// `names` (our host names) and every address where a listener on `port` accepts.
    pub fn identity(&self, names: Vec<String>, port: u16) -> SelfIdentity {
        let mut me = SelfIdentity {
            names,
            ..SelfIdentity::default()
        };
        let on_port = self.listeners.iter().filter(|l| l.port() == port);
        let mut wildcard = (false, false);
        for l in on_port {
            match l.ip() {
                IpAddr::V4(ip) if ip.is_unspecified() => wildcard.0 = true,
                IpAddr::V6(ip) if ip.is_unspecified() => wildcard.1 = true,
                ip => me.addrs.push(ip.to_canonical()),
            }
        }
        if wildcard.0 || wildcard.1 {
            me.all_loopback_v4 = wildcard.0;
            for ip in self.interfaces().iter() {
                let v4 = ip.is_ipv4();
                if (v4 && wildcard.0) || (!v4 && wildcard.1) {
                    me.addrs.push(*ip);
                }
            }
            if wildcard.1 {
                me.addrs.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
            }
        }
        me.addrs.sort_unstable();
        me.addrs.dedup();
        me
    }

    /// The interface addresses, read again when older than `max_age`.
    fn interfaces(&self) -> Arc<[IpAddr]> {
        let now = Instant::now();
        let (fresh, last) = {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            match cache.as_ref() {
                Some(c) => (
                    !c.stale && now.saturating_duration_since(c.at) < self.max_age,
                    Arc::clone(&c.addrs),
                ),
                None => (false, Arc::from(Vec::new())),
            }
        };
        if fresh {
            return last;
        }
        // Read outside the lock; two readers at once both read, and the later one wins.
        let addrs: Arc<[IpAddr]> = match (self.lookup)() {
            Ok(mut list) => {
                for ip in &mut list {
                    *ip = ip.to_canonical();
                }
                list.sort_unstable();
                list.dedup();
                list.truncate(MAX_INTERFACE_ADDRS);
                Arc::from(list)
            }
            Err(_) => last,
        };
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = Some(Cached {
            at: now,
            addrs: Arc::clone(&addrs),
            stale: false,
        });
        addrs
    }
}

/// A new loop mark for this process: `loop-check=` and 16 random hex digits. Tern's
/// SMTP server adds it to its greeting and its SMTP client refuses to deliver to a
/// server greeting with it (the client's `SessionError::LoopsBack`): the check that
/// holds where addresses cannot tell (NAT, a port forward, a proxy). A peer learns
/// nothing from it but that two connections reached one process.
pub fn new_loop_mark() -> String {
    format!("loop-check={:016x}", rand::random::<u64>())
}

/// The machine's interface addresses (IPv4 and IPv6), from `getifaddrs(3)` through the
/// `if-addrs` crate (IPv6 link-local addresses left out: an MX address cannot name one,
/// it has no scope). At most [`MAX_INTERFACE_ADDRS`].
pub fn interface_addrs() -> io::Result<Vec<IpAddr>> {
    Ok(if_addrs::get_if_addrs()?
        .into_iter()
        .map(|i| i.ip())
        .take(MAX_INTERFACE_ADDRS)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn counting(list: Vec<IpAddr>) -> (Box<Lookup>, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        let lookup = Box::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
            Ok(list.clone())
        });
        (lookup, calls)
    }

    #[test]
    fn loop_marks_are_one_word_and_differ() {
        let (a, b) = (new_loop_mark(), new_loop_mark());
        assert_ne!(a, b);
        assert_eq!(a.len(), "loop-check=".len() + 16);
        assert!(a.bytes().all(|c| c.is_ascii_graphic()), "{a}");
    }

    #[test]
    fn the_machine_has_loopback_interfaces() {
        let addrs = interface_addrs().unwrap_or_else(|e| panic!("getifaddrs: {e}"));
        assert!(addrs.contains(&ip("127.0.0.1")), "{addrs:?}");
    }

    /// Issue 16: a listener on `0.0.0.0:25` accepts on every address of the machine;
    /// before, the self rule compared MX addresses with `0.0.0.0` and matched nothing.
    #[test]
    fn a_wildcard_listener_owns_every_interface_address_and_loopback_on_its_port() {
        let (lookup, _) = counting(vec![
            ip("127.0.0.1"),
            ip("192.0.2.10"),
            ip("::1"),
            ip("2001:db8::10"),
        ]);
        let own = OwnAddresses::with_lookup(
            vec![sa("0.0.0.0:25"), sa("[2001:db8::99]:587")],
            REFRESH,
            lookup,
        );
        let me = own.identity(vec!["mx.test".into()], 25);
        assert_eq!(me.addrs, vec![ip("127.0.0.1"), ip("192.0.2.10")]);
        assert!(me.all_loopback_v4);
        assert!(me.owns(ip("127.0.0.53")));
        assert!(me.owns(ip("::ffff:192.0.2.10")), "IPv4-mapped");
        assert!(
            !me.owns(ip("2001:db8::10")),
            "the IPv4 wildcard takes no IPv6"
        );
        assert!(!me.owns(ip("198.51.100.1")));
        // Another port: only the listener bound there, by its own address.
        let submission = own.identity(Vec::new(), 587);
        assert_eq!(submission.addrs, vec![ip("2001:db8::99")]);
        assert!(!submission.all_loopback_v4);
        assert!(!submission.owns(ip("127.0.0.1")));
        // No listener on the port: nothing is ours by address.
        assert!(own.identity(Vec::new(), 2525).addrs.is_empty());
    }

    #[test]
    fn an_ipv6_wildcard_owns_the_ipv6_interfaces_and_a_specific_listener_its_address() {
        let (lookup, _) = counting(vec![ip("192.0.2.10"), ip("2001:db8::10")]);
        let own =
            OwnAddresses::with_lookup(vec![sa("[::]:25"), sa("198.51.100.7:25")], REFRESH, lookup);
        let me = own.identity(Vec::new(), 25);
        assert_eq!(
            me.addrs,
            vec![ip("198.51.100.7"), ip("::1"), ip("2001:db8::10")]
        );
        assert!(!me.all_loopback_v4, "no IPv4 wildcard");
        assert!(!me.owns(ip("127.0.0.1")));
    }

    #[test]
    fn interfaces_are_read_once_per_period_and_again_after_refresh() {
        let (lookup, calls) = counting(vec![ip("192.0.2.10")]);
        let own = OwnAddresses::with_lookup(vec![sa("0.0.0.0:25")], REFRESH, lookup);
        for _ in 0..5 {
            own.identity(Vec::new(), 25);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A specific listener needs no interface list.
        let (lookup, none) = counting(Vec::new());
        let specific = OwnAddresses::with_lookup(vec![sa("192.0.2.1:25")], REFRESH, lookup);
        specific.identity(Vec::new(), 25);
        assert_eq!(none.load(Ordering::SeqCst), 0);
        own.refresh();
        own.identity(Vec::new(), 25);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Stale by age.
        let (lookup, aged) = counting(vec![ip("192.0.2.10")]);
        let quick = OwnAddresses::with_lookup(vec![sa("0.0.0.0:25")], Duration::ZERO, lookup);
        quick.identity(Vec::new(), 25);
        quick.identity(Vec::new(), 25);
        assert_eq!(aged.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_failed_read_keeps_the_last_list() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        let lookup: Box<Lookup> = Box::new(move || {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                Ok(vec![ip("192.0.2.10")])
            } else {
                Err(io::Error::other("no netlink"))
            }
        });
        let own = OwnAddresses::with_lookup(vec![sa("0.0.0.0:25")], Duration::ZERO, lookup);
        assert!(own.identity(Vec::new(), 25).owns(ip("192.0.2.10")));
        assert!(own.identity(Vec::new(), 25).owns(ip("192.0.2.10")));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
