//! Inbound TLS failures made visible (`[tls_reports] inbound_events`, docs/TLS.md "TLS
//! reporting"): the receiving side's counterpart of the TLS reports Tern sends. Two
//! events, each with the client, the listener and the reason:
//! - 4174: a client's STARTTLS handshake with a listener failed (a version or cipher it
//!   cannot use, a certificate it refused, a time out);
//! - 4175: a client sent mail in the clear on a listener that offers STARTTLS.
//!
//! Rate limit: one event of each kind per client network (IPv4 /24, IPv6 /64) per
//! [`WINDOW`], so one misconfigured sender (or a flood) cannot fill the log. The table
//! of networks seen is bounded ([`MAX_NETWORKS`]): when full, the entries older than
//! the window go, and if none did, the whole table is cleared (at worst one event more
//! per network and window). The lock is held for one map operation, never across an
//! await. The decision is sans-I/O ([`Limiter::allow`] takes the time).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tern_events::{EventLog, catalog, fields};

use crate::limits::client_network;

/// One event per kind and client network within this time.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Client networks remembered.
pub const MAX_NETWORKS: usize = 4096;

/// Which event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Handshake,
    Cleartext,
}

/// The per-network rate limit (sans-I/O: time is a parameter).
#[derive(Debug, Default)]
pub struct Limiter {
    seen: HashMap<(Kind, IpAddr), Instant>,
}

impl Limiter {
    fn allow(&mut self, kind: Kind, ip: IpAddr, now: Instant) -> bool {
        let key = (kind, client_network(ip, 24, 64));
        if let Some(at) = self.seen.get(&key)
            && now.saturating_duration_since(*at) < WINDOW
        {
            return false;
        }
        if self.seen.len() >= MAX_NETWORKS && !self.seen.contains_key(&key) {
            self.seen
                .retain(|_, at| now.saturating_duration_since(*at) < WINDOW);
            if self.seen.len() >= MAX_NETWORKS {
                self.seen.clear();
            }
        }
        self.seen.insert(key, now);
        true
    }
}

/// The inbound TLS events of the listeners (shared by every session).
#[derive(Debug, Default)]
pub struct InboundTlsEvents {
    limiter: Mutex<Limiter>,
}

impl InboundTlsEvents {
    /// A new, empty limiter.
    pub fn new() -> InboundTlsEvents {
        InboundTlsEvents::default()
    }

    fn allow(&self, kind: Kind, ip: IpAddr) -> bool {
        let mut l = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        l.allow(kind, ip, Instant::now())
    }

    /// A STARTTLS handshake failed (event 4174, rate-limited).
    pub fn handshake_failed(
        &self,
        events: &EventLog,
        client: SocketAddr,
        listener: &str,
        reason: &str,
    ) {
        if self.allow(Kind::Handshake, client.ip()) {
            events.emit(
                &catalog::TLS_INBOUND_HANDSHAKE_FAILED,
                fields!("client" => client, "listener" => listener, "reason" => reason),
            );
        }
    }

    /// Mail was accepted in the clear on a listener offering STARTTLS (event 4175,
    /// rate-limited).
    pub fn cleartext(&self, events: &EventLog, client: SocketAddr, listener: &str) {
        if self.allow(Kind::Cleartext, client.ip()) {
            events.emit(
                &catalog::TLS_INBOUND_CLEARTEXT,
                fields!("client" => client, "listener" => listener, "reason" => "STARTTLS not used"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_network_and_kind_per_window() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let same_net: IpAddr = "192.0.2.200".parse().unwrap();
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        assert!(l.allow(Kind::Handshake, a, t0));
        assert!(!l.allow(Kind::Handshake, same_net, t0 + Duration::from_secs(5)));
        assert!(
            l.allow(Kind::Cleartext, a, t0),
            "the other kind is counted apart"
        );
        assert!(l.allow(Kind::Handshake, other, t0));
        assert!(l.allow(Kind::Handshake, a, t0 + WINDOW));
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::ffff:1".parse().unwrap();
        assert!(l.allow(Kind::Cleartext, v6a, t0));
        assert!(!l.allow(Kind::Cleartext, v6b, t0), "the same /64");
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        for i in 0..(MAX_NETWORKS as u32 + 100) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(i << 8));
            assert!(l.allow(Kind::Handshake, ip, t0));
            assert!(l.seen.len() <= MAX_NETWORKS);
        }
    }
}
