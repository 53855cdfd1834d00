//! Connection slots: a total and a per-client-address limit per listener.
//!
//! [`ConnectionLimiter::acquire`] hands out a [`ConnectionSlot`] or says which limit was
//! reached. The slot gives its place back in `Drop`, so a session that ends in any way
//! (QUIT, error, panic in its task, cancellation at shutdown) never leaks a slot.
//!
//! Locking: one `std::sync::Mutex` around a small map, held only for the few instructions
//! of an increment or decrement, never across an `.await`, and never together with any
//! other lock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// The listener's total.
    Total,
    /// The per-client-address limit.
    PerClient,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Counts connections of one listener.
#[derive(Debug, Clone)]
pub struct ConnectionLimiter {
    counts: Arc<Mutex<Counts>>,
    max_total: usize,
    max_per_client: usize,
}

/// One held connection place; released on drop.
#[derive(Debug)]
pub struct ConnectionSlot {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

impl ConnectionLimiter {
    /// A limiter with the given limits.
    pub fn new(max_total: usize, max_per_client: usize) -> ConnectionLimiter {
        ConnectionLimiter {
            counts: Arc::default(),
            max_total,
            max_per_client,
        }
    }

    /// Takes a slot for `ip`, or says which limit is reached.
    pub fn acquire(&self, ip: IpAddr) -> Result<ConnectionSlot, LimitHit> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= self.max_total {
            return Err(LimitHit::Total);
        }
        let n = c.per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_client {
            return Err(LimitHit::PerClient);
        }
        *n += 1;
        c.total += 1;
        Ok(ConnectionSlot {
            counts: Arc::clone(&self.counts),
            ip,
        })
    }

    /// Connections currently held.
    pub fn in_use(&self) -> usize {
        self.counts.lock().map(|c| c.total).unwrap_or(0)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_release_on_drop() {
        let l = ConnectionLimiter::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = l.acquire(a).unwrap();
        let _s2 = l.acquire(a).unwrap();
        assert_eq!(l.acquire(a).unwrap_err(), LimitHit::PerClient);
        let _s3 = l.acquire(b).unwrap();
        assert_eq!(l.acquire(b).unwrap_err(), LimitHit::Total);
        drop(s1);
        let _s4 = l.acquire(a).unwrap();
        assert_eq!(l.in_use(), 3);
    }

    #[test]
    fn slot_released_when_task_panics() {
        let l = ConnectionLimiter::new(1, 1);
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let slot = l.acquire(ip).unwrap();
        let r = std::thread::spawn(move || {
            let _held = slot;
            panic!("session task panics while holding its slot");
        })
        .join();
        assert!(r.is_err());
        assert_eq!(l.in_use(), 0);
        assert!(l.acquire(ip).is_ok());
    }
}
