//! Connection places of one listener: the total, the limit per client network, the
//! reserve for relay networks, idle sessions giving way to new clients, and stress mode.
//!
//! [`ConnectionLimiter::acquire`] admits a new connection with a [`ConnectionSlot`] or
//! says which limit refused it:
//!
//! - **Per client**: at most `max_per_client` connections from one client network: the
//!   address itself for IPv4 (or its `/prefix_v4`), the `/prefix_v6` (default /64) for
//!   IPv6, since one IPv6 host usually holds a whole /64. An IPv4-mapped IPv6 address
//!   counts as the IPv4 address.
//! - **Total and reserve**: a client outside the relay networks is admitted while fewer
//!   than `max_total - reserved` places are in use; a relay-network client while fewer
//!   than `max_total`.
//! - **Giving way**: when those places are all taken, the session that has been idle
//!   longest (waiting for its client in the command phase, no transaction open: a new
//!   session is idle from its admission, leaves the line with
//!   [`ConnectionSlot::set_busy`] when a command arrives and comes back with
//!   [`ConnectionSlot::set_idle`]) gives its place to the newcomer: it is marked evicted
//!   and woken ([`ConnectionSlot::evicted`]) to answer `421` and close. An outside
//!   newcomer only displaces outside clients; a relay-network newcomer displaces the
//!   longest idle of either kind. A session that is busy (a command being answered, a
//!   transaction or message transfer open) is never displaced.
//! - **Stress**: the listener is in stress from the moment `stress_enter` places are in
//!   use until fewer than `stress_leave` are (hysteresis, so it does not flap). Sessions
//!   read it ([`ConnectionSlot::in_stress`]) and are woken when it changes
//!   ([`ConnectionLimiter::stress_receiver`]) to shorten their timeouts and limits; the
//!   hook given to [`ConnectionLimiter::on_stress_change`] hears each edge once.
//!
//! Invariants:
//! - Places in use (`in_use`) never exceed `max_total`. An evicted session no longer
//!   counts toward it (the newcomer took its place) but still counts toward its client
//!   network until it has closed, so a client cannot multiply connections by displacing
//!   its own.
//! - Every place is given back by `ConnectionSlot`'s `Drop`, so a session that ends in any
//!   way (QUIT, error, panic in its task, cancellation at shutdown) never leaks one.
//! - Per session the bookkeeping is one small slab entry (client key, a few flags, two
//!   list links) and one `Notify`; the idle sessions form two intrusive lists in order of
//!   becoming idle, so admitting, displacing, and marking idle or busy are O(1).
//!
//! Locking: one `std::sync::Mutex` around the counts and the slab, held only for the few
//!   instructions of an update, never across an `.await`, and never together with any
//!   other lock: the evicted session is woken, the stress flag published and the hook
//!   called after the mutex is released. Two edges that race (enter then leave at once)
//!   may reach the hook in either order; the published flag is always the last state.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, watch};

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// The listener is full and no idle session could give way.
    Total,
    /// Only the places reserved for relay networks are left, and the client is not in
    /// one (and no idle outside session could give way).
    Reserved,
    /// The client's network has `max_per_client` connections already.
    PerClient,
}

/// The limits of one listener, in connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterConfig {
    /// Most connections in all.
    pub max_total: usize,
    /// Most connections from one client network.
    pub max_per_client: usize,
    /// Places only relay-network clients may take (less than `max_total`).
    pub reserved: usize,
    /// Prefix length that makes an IPv4 client network (32: each address).
    pub prefix_v4: u8,
    /// Prefix length that makes an IPv6 client network (64 by default).
    pub prefix_v6: u8,
    /// Stress starts when this many places are in use.
    pub stress_enter: usize,
    /// Stress ends when fewer than this many places are in use.
    pub stress_leave: usize,
}

impl LimiterConfig {
    /// A limiter configuration with only a total and a per-address limit: no reserve,
    /// one address per client, never in stress.
    pub fn simple(max_total: usize, max_per_client: usize) -> LimiterConfig {
        LimiterConfig {
            max_total,
            max_per_client,
            reserved: 0,
            prefix_v4: 32,
            prefix_v6: 128,
            stress_enter: usize::MAX,
            stress_leave: usize::MAX,
        }
    }
}

/// A change of stress state, as the hook hears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StressChange {
    /// True when the listener entered stress, false when it left.
    pub entered: bool,
    /// Places in use at that moment.
    pub in_use: usize,
}

/// The client network `ip` counts toward: the address with only its first `prefix_v4`
/// (IPv4, and IPv4-mapped IPv6) or `prefix_v6` (IPv6) bits kept.
pub fn client_network(ip: IpAddr, prefix_v4: u8, prefix_v6: u8) -> IpAddr {
    let v4 = |a: std::net::Ipv4Addr| {
        let bits = u32::from(a);
        let keep = u32::from(prefix_v4.min(32));
        let mask = u32::MAX.checked_shl(32 - keep).unwrap_or(0);
        IpAddr::from(std::net::Ipv4Addr::from(bits & mask))
    };
    match ip {
        IpAddr::V4(a) => v4(a),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(m) => v4(m),
            None => {
                let bits = u128::from(a);
                let keep = u32::from(prefix_v6.min(128));
                let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
                IpAddr::from(std::net::Ipv6Addr::from(bits & mask))
            }
        },
    }
}

/// No link.
const NONE: u32 = u32::MAX;

/// Where a session's entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Doing something (or not yet waiting for a command): never displaced.
    Busy,
    /// Waiting for a command with no transaction open, in the idle list of its kind.
    /// `since` orders the two lists' heads (smaller: idle longer).
    Idle { prev: u32, next: u32, since: u64 },
    /// Gave its place to a newcomer; must close.
    Evicted,
}

/// One session's bookkeeping.
#[derive(Debug)]
struct Entry {
    /// Its client network (the per-client key).
    network: IpAddr,
    /// A relay-network client.
    trusted: bool,
    place: Place,
    /// Wakes the session when it is evicted.
    wake: Arc<Notify>,
}

/// A doubly linked list threaded through the slab.
#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

impl Default for List {
    fn default() -> List {
        List {
            head: NONE,
            tail: NONE,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Places in use (evicted sessions excluded).
    total: usize,
    per_client: HashMap<IpAddr, usize>,
    /// One entry per live session, evicted ones included.
    entries: Vec<Option<Entry>>,
    /// Free indices of `entries`.
    free: Vec<u32>,
    /// Idle sessions in order of becoming idle: `[outside clients, relay networks]`.
    idle: [List; 2],
    /// The next `since` stamp.
    next_since: u64,
    stress: bool,
}

impl State {
    fn entry(&mut self, index: u32) -> Option<&mut Entry> {
        self.entries
            .get_mut(usize::try_from(index).ok()?)
            .and_then(Option::as_mut)
    }

    fn alloc(&mut self, entry: Entry) -> u32 {
        if let Some(i) = self.free.pop()
            && let Some(place) = usize::try_from(i)
                .ok()
                .and_then(|u| self.entries.get_mut(u))
        {
            *place = Some(entry);
            return i;
        }
        self.entries.push(Some(entry));
        u32::try_from(self.entries.len() - 1).unwrap_or(NONE)
    }

    /// Appends `index` to the idle list of its kind.
    fn push_idle(&mut self, index: u32) {
        let since = self.next_since;
        self.next_since += 1;
        let Some(e) = self.entry(index) else { return };
        let kind = usize::from(e.trusted);
        let tail = self.idle[kind].tail;
        if let Some(e) = self.entry(index) {
            e.place = Place::Idle {
                prev: tail,
                next: NONE,
                since,
            };
        }
        match self.entry(tail) {
            Some(Entry {
                place: Place::Idle { next, .. },
                ..
            }) => *next = index,
            _ => self.idle[kind].head = index,
        }
        self.idle[kind].tail = index;
    }

    /// Takes `index` out of its idle list (if it is in one) and gives it `to`.
    fn leave_idle(&mut self, index: u32, to: Place) {
        let Some(e) = self.entry(index) else { return };
        let kind = usize::from(e.trusted);
        let Place::Idle { prev, next, .. } = e.place else {
            return;
        };
        e.place = to;
        match self.entry(prev) {
            Some(Entry {
                place: Place::Idle { next: n, .. },
                ..
            }) => *n = next,
            _ => self.idle[kind].head = next,
        }
        match self.entry(next) {
            Some(Entry {
                place: Place::Idle { prev: p, .. },
                ..
            }) => *p = prev,
            _ => self.idle[kind].tail = prev,
        }
    }

    /// The `since` stamp of the head of an idle list.
    fn head_since(&mut self, kind: usize) -> Option<(u32, u64)> {
        let head = self.idle[kind].head;
        match self.entry(head)?.place {
            Place::Idle { since, .. } => Some((head, since)),
            _ => None,
        }
    }

    /// Evicts the longest idle session a newcomer of this kind may displace; returns
    /// what wakes it.
    fn evict_for(&mut self, trusted: bool) -> Option<Arc<Notify>> {
        let outside = self.head_since(0);
        let relay = if trusted { self.head_since(1) } else { None };
        let (victim, _) = match (outside, relay) {
            (Some(a), Some(b)) => {
                if a.1 <= b.1 {
                    a
                } else {
                    b
                }
            }
            (a, b) => a.or(b)?,
        };
        self.leave_idle(victim, Place::Evicted);
        self.total = self.total.saturating_sub(1);
        self.entry(victim).map(|e| Arc::clone(&e.wake))
    }

    /// Recomputes stress; returns the edge if it changed.
    fn update_stress(&mut self, config: &LimiterConfig) -> Option<StressChange> {
        let stress = if self.stress {
            self.total >= config.stress_leave
        } else {
            self.total >= config.stress_enter
        };
        if stress == self.stress {
            return None;
        }
        self.stress = stress;
        Some(StressChange {
            entered: stress,
            in_use: self.total,
        })
    }
}

type StressHook = Box<dyn Fn(StressChange) + Send + Sync>;

struct Shared {
    config: LimiterConfig,
    state: Mutex<State>,
    /// The stress state, readable without the mutex.
    stress: AtomicBool,
    /// Publishes the stress state to waiting sessions.
    stress_tx: watch::Sender<bool>,
    hook: Option<StressHook>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// After the mutex is released: publishes the current stress state and tells the
    /// hook about `edge`.
    fn publish(&self, edge: Option<StressChange>) {
        let Some(edge) = edge else { return };
        let now = self.stress.load(Ordering::Acquire);
        self.stress_tx.send_if_modified(|v| {
            let changed = *v != now;
            *v = now;
            changed
        });
        if let Some(hook) = &self.hook {
            hook(edge);
        }
    }
}

/// Counts the connections of one listener.
#[derive(Clone)]
pub struct ConnectionLimiter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ConnectionLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionLimiter")
            .field("config", &self.shared.config)
            .field("in_use", &self.in_use())
            .finish()
    }
}

/// An admitted connection.
#[derive(Debug)]
pub struct Admission {
    /// Its place.
    pub slot: ConnectionSlot,
    /// An idle session gave way to it.
    pub displaced_idle: bool,
}

/// One held connection place; released on drop.
pub struct ConnectionSlot {
    shared: Arc<Shared>,
    index: u32,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for ConnectionSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionSlot")
            .field("index", &self.index)
            .finish()
    }
}

/// The session was told to give its place to a new client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evicted;

impl ConnectionLimiter {
    /// A limiter with the given limits and no stress hook.
    pub fn new(config: LimiterConfig) -> ConnectionLimiter {
        ConnectionLimiter::build(config, None)
    }

    /// A limiter whose stress edges are reported to `hook` (called without any lock
    /// held; it must not block).
    pub fn on_stress_change(
        config: LimiterConfig,
        hook: impl Fn(StressChange) + Send + Sync + 'static,
    ) -> ConnectionLimiter {
        ConnectionLimiter::build(config, Some(Box::new(hook)))
    }

    fn build(config: LimiterConfig, hook: Option<StressHook>) -> ConnectionLimiter {
        let (stress_tx, _) = watch::channel(false);
        ConnectionLimiter {
            shared: Arc::new(Shared {
                config,
                state: Mutex::default(),
                stress: AtomicBool::new(false),
                stress_tx,
                hook,
            }),
        }
    }

    /// Admits a connection from `ip` (`trusted`: a relay-network client), displacing
    /// the longest idle session if the listener is full, or says which limit refused it.
    pub fn acquire(&self, ip: IpAddr, trusted: bool) -> Result<Admission, LimitHit> {
        let c = &self.shared.config;
        let network = client_network(ip, c.prefix_v4, c.prefix_v6);
        let wake = Arc::new(Notify::new());
        let (index, victim, edge) = {
            let mut s = self.shared.lock();
            let from_client = s.per_client.get(&network).copied().unwrap_or(0);
            if from_client >= c.max_per_client {
                return Err(LimitHit::PerClient);
            }
            let limit = if trusted {
                c.max_total
            } else {
                c.max_total.saturating_sub(c.reserved)
            };
            let mut victim = None;
            if s.total >= limit {
                victim = s.evict_for(trusted);
                if victim.is_none() {
                    return Err(if trusted || s.total >= c.max_total {
                        LimitHit::Total
                    } else {
                        LimitHit::Reserved
                    });
                }
            }
            *s.per_client.entry(network).or_insert(0) += 1;
            s.total += 1;
            let index = s.alloc(Entry {
                network,
                trusted,
                place: Place::Busy,
                wake: Arc::clone(&wake),
            });
            // Until its client sends something, a new session is waiting for it: idle,
            // in line after every session admitted before it.
            s.push_idle(index);
            let edge = s.update_stress(c);
            self.shared.stress.store(s.stress, Ordering::Release);
            (index, victim, edge)
        };
        let displaced_idle = victim.is_some();
        if let Some(v) = victim {
            v.notify_one();
        }
        self.shared.publish(edge);
        Ok(Admission {
            slot: ConnectionSlot {
                shared: Arc::clone(&self.shared),
                index,
                wake,
            },
            displaced_idle,
        })
    }

    /// Places currently in use.
    pub fn in_use(&self) -> usize {
        self.shared.lock().total
    }

    /// True while the listener is in stress.
    pub fn in_stress(&self) -> bool {
        self.shared.stress.load(Ordering::Acquire)
    }

    /// Follows the stress state (for sessions: `changed()` wakes them at each edge).
    pub fn stress_receiver(&self) -> watch::Receiver<bool> {
        self.shared.stress_tx.subscribe()
    }
}

impl ConnectionSlot {
    /// The session waits for a command with no transaction open: from now on it may give
    /// way to a new client. Keeps its place in line if it was idle already.
    pub fn set_idle(&self) {
        let mut s = self.shared.lock();
        if matches!(s.entry(self.index).map(|e| e.place), Some(Place::Busy)) {
            s.push_idle(self.index);
        }
    }

    /// The session has work (a command to answer): it may no longer be displaced. Fails
    /// if it was displaced already; it must then close.
    pub fn set_busy(&self) -> Result<(), Evicted> {
        let mut s = self.shared.lock();
        match s.entry(self.index).map(|e| e.place) {
            Some(Place::Evicted) => Err(Evicted),
            Some(Place::Idle { .. }) => {
                s.leave_idle(self.index, Place::Busy);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// True once the session was displaced.
    pub fn is_evicted(&self) -> bool {
        matches!(
            self.shared.lock().entry(self.index).map(|e| e.place),
            Some(Place::Evicted)
        )
    }

    /// Resolves when the session has been displaced by a new client.
    pub async fn evicted(&self) {
        loop {
            self.wake.notified().await;
            if self.is_evicted() {
                return;
            }
        }
    }

    /// True while the listener is in stress.
    pub fn in_stress(&self) -> bool {
        self.shared.stress.load(Ordering::Acquire)
    }

    /// Follows the listener's stress state.
    pub fn stress_receiver(&self) -> watch::Receiver<bool> {
        self.shared.stress_tx.subscribe()
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let edge = {
            let mut s = self.shared.lock();
            s.leave_idle(self.index, Place::Busy);
            let taken = usize::try_from(self.index)
                .ok()
                .and_then(|i| s.entries.get_mut(i))
                .and_then(Option::take);
            if let Some(entry) = taken {
                if entry.place != Place::Evicted {
                    s.total = s.total.saturating_sub(1);
                }
                if let Some(n) = s.per_client.get_mut(&entry.network) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        s.per_client.remove(&entry.network);
                    }
                }
                s.free.push(self.index);
            }
            let edge = s.update_stress(&self.shared.config);
            self.shared.stress.store(s.stress, Ordering::Release);
            edge
        };
        self.shared.publish(edge);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Admits a connection and makes its session busy (as after its first command).
    fn take(l: &ConnectionLimiter, a: &str, trusted: bool) -> Result<Admission, LimitHit> {
        let admitted = l.acquire(ip(a), trusted)?;
        admitted.slot.set_busy().unwrap();
        Ok(admitted)
    }

    #[test]
    fn new_sessions_are_idle_in_order_of_admission() {
        let l = ConnectionLimiter::new(LimiterConfig::simple(2, 10));
        let a = l.acquire(ip("192.0.2.1"), false).unwrap().slot;
        let b = l.acquire(ip("192.0.2.2"), false).unwrap().slot;
        let c = l.acquire(ip("192.0.2.3"), false).unwrap();
        assert!(c.displaced_idle);
        assert!(a.is_evicted() && !b.is_evicted());
        let _d = l.acquire(ip("192.0.2.4"), false).unwrap();
        assert!(b.is_evicted() && !c.slot.is_evicted());
    }

    #[test]
    fn limits_and_release_on_drop() {
        let l = ConnectionLimiter::new(LimiterConfig::simple(3, 2));
        let s1 = take(&l, "192.0.2.1", false).unwrap();
        let _s2 = take(&l, "192.0.2.1", false).unwrap();
        assert_eq!(
            take(&l, "192.0.2.1", false).unwrap_err(),
            LimitHit::PerClient
        );
        let _s3 = take(&l, "192.0.2.2", false).unwrap();
        assert_eq!(take(&l, "192.0.2.2", false).unwrap_err(), LimitHit::Total);
        drop(s1);
        let _s4 = take(&l, "192.0.2.1", false).unwrap();
        assert_eq!(l.in_use(), 3);
    }

    #[test]
    fn slot_released_when_task_panics() {
        let l = ConnectionLimiter::new(LimiterConfig::simple(1, 1));
        let slot = take(&l, "192.0.2.9", false).unwrap();
        let r = std::thread::spawn(move || {
            let _held = slot;
            panic!("session task panics while holding its slot");
        })
        .join();
        assert!(r.is_err());
        assert_eq!(l.in_use(), 0);
        assert!(take(&l, "192.0.2.9", false).is_ok());
    }

    #[test]
    fn client_networks() {
        assert_eq!(client_network(ip("192.0.2.77"), 32, 64), ip("192.0.2.77"));
        assert_eq!(client_network(ip("192.0.2.77"), 24, 64), ip("192.0.2.0"));
        assert_eq!(client_network(ip("192.0.2.77"), 0, 64), ip("0.0.0.0"));
        assert_eq!(
            client_network(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), 32, 64),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            client_network(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), 32, 48),
            ip("2001:db8:1::")
        );
        assert_eq!(
            client_network(ip("2001:db8::1"), 32, 128),
            ip("2001:db8::1")
        );
        // IPv4-mapped IPv6 is the IPv4 address.
        assert_eq!(
            client_network(ip("::ffff:192.0.2.77"), 32, 64),
            ip("192.0.2.77")
        );
    }

    #[test]
    fn one_ipv6_64_is_one_client() {
        let config = LimiterConfig {
            prefix_v6: 64,
            ..LimiterConfig::simple(100, 2)
        };
        let l = ConnectionLimiter::new(config);
        let _a = take(&l, "2001:db8:0:1::1", false).unwrap();
        let _b = take(&l, "2001:db8:0:1::2", false).unwrap();
        // A third address of the same /64: refused, whatever its interface id.
        assert_eq!(
            take(&l, "2001:db8:0:1:ffff:ffff:ffff:ffff", false).unwrap_err(),
            LimitHit::PerClient
        );
        // The next /64 is another client.
        let _c = take(&l, "2001:db8:0:2::1", false).unwrap();
        // IPv4 stays per address.
        let _d = take(&l, "192.0.2.1", false).unwrap();
        let _e = take(&l, "192.0.2.1", false).unwrap();
        let _f = take(&l, "192.0.2.2", false).unwrap();
        assert_eq!(
            take(&l, "192.0.2.1", false).unwrap_err(),
            LimitHit::PerClient
        );
    }

    #[test]
    fn configurable_prefixes() {
        let config = LimiterConfig {
            prefix_v4: 24,
            prefix_v6: 48,
            ..LimiterConfig::simple(100, 1)
        };
        let l = ConnectionLimiter::new(config);
        let _a = take(&l, "198.51.100.1", false).unwrap();
        assert_eq!(
            take(&l, "198.51.100.200", false).unwrap_err(),
            LimitHit::PerClient
        );
        let _b = take(&l, "198.51.101.1", false).unwrap();
        let _c = take(&l, "2001:db8:7::1", false).unwrap();
        assert_eq!(
            take(&l, "2001:db8:7:ffff::1", false).unwrap_err(),
            LimitHit::PerClient
        );
    }

    #[test]
    fn reserve_is_for_relay_networks() {
        let config = LimiterConfig {
            reserved: 2,
            ..LimiterConfig::simple(4, 10)
        };
        let l = ConnectionLimiter::new(config);
        let _a = take(&l, "192.0.2.1", false).unwrap();
        let _b = take(&l, "192.0.2.2", false).unwrap();
        assert_eq!(
            take(&l, "192.0.2.3", false).unwrap_err(),
            LimitHit::Reserved
        );
        let _t1 = take(&l, "10.0.0.1", true).unwrap();
        let _t2 = take(&l, "10.0.0.1", true).unwrap();
        assert_eq!(take(&l, "10.0.0.2", true).unwrap_err(), LimitHit::Total);
        assert_eq!(take(&l, "192.0.2.3", false).unwrap_err(), LimitHit::Total);
        assert_eq!(l.in_use(), 4);
    }

    #[test]
    fn longest_idle_gives_way_and_busy_sessions_never_do() {
        let l = ConnectionLimiter::new(LimiterConfig::simple(3, 10));
        let a = take(&l, "192.0.2.1", false).unwrap().slot;
        let b = take(&l, "192.0.2.2", false).unwrap().slot;
        let c = take(&l, "192.0.2.3", false).unwrap().slot;
        // Nobody idle: refused.
        assert_eq!(take(&l, "192.0.2.9", false).unwrap_err(), LimitHit::Total);
        b.set_idle();
        a.set_idle();
        c.set_idle();
        // Marking an idle session idle again keeps its place in line.
        b.set_idle();
        // b has been idle longest; then a. c becomes busy again.
        c.set_busy().unwrap();
        let d = take(&l, "192.0.2.4", false).unwrap();
        assert!(d.displaced_idle);
        assert!(b.is_evicted() && !a.is_evicted());
        assert_eq!(b.set_busy(), Err(Evicted));
        assert_eq!(l.in_use(), 3);
        let _e = take(&l, "192.0.2.5", false).unwrap();
        assert!(a.is_evicted());
        // Only busy sessions are left.
        assert_eq!(take(&l, "192.0.2.6", false).unwrap_err(), LimitHit::Total);
        assert!(!c.is_evicted());
        // The evicted sessions closing does not free places twice.
        drop(a);
        drop(b);
        assert_eq!(l.in_use(), 3);
        assert_eq!(take(&l, "192.0.2.6", false).unwrap_err(), LimitHit::Total);
        drop(c);
        assert_eq!(l.in_use(), 2);
    }

    #[test]
    fn evicted_sessions_count_for_their_client_until_closed() {
        let l = ConnectionLimiter::new(LimiterConfig::simple(1, 1));
        let a = take(&l, "192.0.2.1", false).unwrap().slot;
        a.set_idle();
        // The same client cannot displace its own idle session to get a second one.
        assert_eq!(
            take(&l, "192.0.2.1", false).unwrap_err(),
            LimitHit::PerClient
        );
        let _b = take(&l, "192.0.2.2", false).unwrap();
        assert!(a.is_evicted());
        assert_eq!(
            take(&l, "192.0.2.1", false).unwrap_err(),
            LimitHit::PerClient
        );
        drop(a);
        // Now full with b (busy), so refused for the total instead.
        assert_eq!(take(&l, "192.0.2.1", false).unwrap_err(), LimitHit::Total);
    }

    #[test]
    fn outside_clients_displace_only_outside_clients() {
        let config = LimiterConfig {
            reserved: 1,
            ..LimiterConfig::simple(3, 10)
        };
        let l = ConnectionLimiter::new(config);
        let relay = take(&l, "10.0.0.1", true).unwrap().slot;
        let out = take(&l, "192.0.2.1", false).unwrap().slot;
        relay.set_idle();
        out.set_idle();
        // Two in use, the third place is reserved: an outside newcomer displaces the
        // outside idle session, not the relay client idle longer.
        let n1 = take(&l, "192.0.2.2", false).unwrap().slot;
        assert!(out.is_evicted() && !relay.is_evicted());
        n1.set_idle();
        // A relay client takes the reserved place without displacing anyone...
        let r2 = take(&l, "10.0.0.2", true).unwrap();
        assert!(!r2.displaced_idle);
        // ...and when full displaces the longest idle of either kind.
        let r3 = take(&l, "10.0.0.3", true).unwrap();
        assert!(r3.displaced_idle);
        assert!(relay.is_evicted() && !n1.is_evicted());
    }

    #[test]
    fn entries_are_reused_and_lists_stay_consistent() {
        let l = ConnectionLimiter::new(LimiterConfig::simple(50, 100));
        for round in 0..20 {
            let slots: Vec<ConnectionSlot> = (0..50)
                .map(|i| take(&l, &format!("192.0.2.{i}"), false).unwrap().slot)
                .collect();
            // Idle in a scrambled order; busy again for some.
            for (k, s) in slots.iter().enumerate() {
                if (k * 7 + round) % 3 != 0 {
                    s.set_idle();
                }
            }
            for (k, s) in slots.iter().enumerate() {
                if k % 5 == 0 {
                    let _ = s.set_busy();
                }
            }
            let idle: Vec<usize> = (0..50)
                .filter(|k| (k * 7 + round) % 3 != 0 && k % 5 != 0)
                .collect();
            // Each newcomer displaces one idle session, oldest first; then refusal.
            let mut newcomers = Vec::new();
            for _ in 0..idle.len() {
                newcomers.push(take(&l, "198.51.100.1", false).unwrap());
            }
            assert_eq!(
                take(&l, "198.51.100.1", false).unwrap_err(),
                LimitHit::Total
            );
            for (k, s) in slots.iter().enumerate() {
                assert_eq!(s.is_evicted(), idle.contains(&k), "round {round} slot {k}");
            }
            drop(newcomers);
            drop(slots);
            assert_eq!(l.in_use(), 0);
        }
    }

    #[test]
    fn stress_has_hysteresis_and_reports_each_edge_once() {
        let edges = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&edges);
        let config = LimiterConfig {
            stress_enter: 3,
            stress_leave: 2,
            ..LimiterConfig::simple(10, 10)
        };
        let l = ConnectionLimiter::on_stress_change(config, move |c| {
            seen.lock().unwrap().push(c);
        });
        let mut rx = l.stress_receiver();
        let a = take(&l, "192.0.2.1", false).unwrap();
        let b = take(&l, "192.0.2.2", false).unwrap();
        assert!(!l.in_stress());
        let c = take(&l, "192.0.2.3", false).unwrap();
        assert!(l.in_stress() && c.slot.in_stress());
        assert!(rx.has_changed().unwrap());
        assert!(*rx.borrow_and_update());
        let d = take(&l, "192.0.2.4", false).unwrap();
        drop(d);
        // Three in use: still in stress; two: still (leave below 2); one: out.
        drop(c);
        assert!(l.in_stress());
        drop(b);
        assert!(!l.in_stress());
        assert!(!*rx.borrow_and_update());
        drop(a);
        assert_eq!(
            *edges.lock().unwrap(),
            vec![
                StressChange {
                    entered: true,
                    in_use: 3
                },
                StressChange {
                    entered: false,
                    in_use: 1
                }
            ]
        );
    }

    #[tokio::test]
    async fn evicted_session_is_woken() {
        let l = ConnectionLimiter::new(LimiterConfig::simple(1, 1));
        let a = take(&l, "192.0.2.1", false).unwrap().slot;
        a.set_idle();
        let waiter = tokio::spawn(async move {
            a.evicted().await;
            a
        });
        let _b = take(&l, "192.0.2.2", false).unwrap();
        let a = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken within the deadline")
            .unwrap();
        assert!(a.is_evicted());
    }
}
