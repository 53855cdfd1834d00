//! The connection cache, sans I/O: outbound connections that finished a job and found
//! nothing more for their next hop wait here, idle, for the next job that leads to the
//! same endpoint. They are kept apart from the delivery workers, so an idle connection
//! never holds a delivery slot (the design of Postfix's `scache`: the delivery agent
//! hands its connection over and is free at once).
//!
//! Lookup is by endpoint, never by next hop: in Tern the key is the address and port,
//! the TLS policy, and under `verify` the name the certificate was checked against
//! (`attempt::EndpointKey`), so every domain whose MX leads to the same host and address
//! shares the same connections, as long as the TLS policy allows it.
//!
//! Bounds: at most `capacity` connections in all (parking one more closes the one idle
//! longest, so a cache full of one endpoint's connections makes room for another's), and
//! none is handed out once it has been idle for `idle` (the caller calls
//! [`ConnCache::expire`] at [`ConnCache::next_expiry`] and closes what it returns).
//! `capacity` 0 turns the cache off: every connection offered is refused, to be closed.
//!
//! Invariants (unit tests and a property test against a model check them):
//! - `len() <= capacity` at all times;
//! - every connection parked comes out exactly once: taken, evicted, expired or drained
//!   (a refused one never went in); nothing is dropped here;
//! - [`ConnCache::take`] never returns a connection idle for `idle` or longer as of the
//!   `now` it is given, and returns the one parked last for that endpoint (the warmest);
//!   eviction and expiry take the one parked first (idle longest).
//!
//! No locks, no awaits, no clock of its own: the caller passes `now` (monotonic, as
//! `Instant::now()` is; with a clock going backwards, expiry is merely late).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// One idle connection.
struct Idle<C> {
    /// Parking order, unique; `order` maps it back to the endpoint.
    seq: u64,
    /// When it was parked.
    since: Instant,
    conn: C,
}

/// What [`ConnCache::park`] did with a connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parked<C> {
    /// Kept. `evicted` is the connection idle longest, taken out to make room: close it.
    Kept {
        /// The connection closed to make room, if the cache was full.
        evicted: Option<C>,
    },
    /// Not kept (the cache is off): close it.
    Refused(C),
}

/// The cache. See the module header.
pub(crate) struct ConnCache<E, C> {
    capacity: usize,
    idle: Duration,
    /// Per endpoint, in parking order (oldest at the front); never an empty queue.
    by_endpoint: HashMap<E, VecDeque<Idle<C>>>,
    /// Every connection's `seq` and endpoint, oldest first: `len()` is its length.
    order: BTreeMap<u64, E>,
    next_seq: u64,
}

impl<E, C> ConnCache<E, C>
where
    E: Hash + Eq + Clone,
{
    /// An empty cache holding at most `capacity` connections, each for at most `idle`.
    pub(crate) fn new(capacity: usize, idle: Duration) -> Self {
        ConnCache {
            capacity,
            idle,
            by_endpoint: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Connections waiting, all endpoints together.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether `since` is too old to be handed out at `now`.
    fn expired(&self, since: Instant, now: Instant) -> bool {
        now.saturating_duration_since(since) >= self.idle
    }

    /// Keeps `conn` for `endpoint`, parked at `now`; when full, the connection idle
    /// longest makes room.
    pub(crate) fn park(&mut self, endpoint: E, conn: C, now: Instant) -> Parked<C> {
        if self.capacity == 0 {
            return Parked::Refused(conn);
        }
        let evicted = if self.order.len() >= self.capacity {
            self.pop_oldest().map(|(_, c)| c)
        } else {
            None
        };
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.order.insert(seq, endpoint.clone());
        self.by_endpoint
            .entry(endpoint)
            .or_default()
            .push_back(Idle {
                seq,
                since: now,
                conn,
            });
        Parked::Kept { evicted }
    }

    /// The connection parked last for `endpoint`, unless it has been idle for the idle
    /// time already (then every other one of that endpoint has too; [`Self::expire`]
    /// collects them).
    pub(crate) fn take(&mut self, endpoint: &E, now: Instant) -> Option<C> {
        let queue = self.by_endpoint.get_mut(endpoint)?;
        let since = queue.back()?.since;
        if now.saturating_duration_since(since) >= self.idle {
            return None;
        }
        let idle = queue.pop_back()?;
        if queue.is_empty() {
            self.by_endpoint.remove(endpoint);
        }
        self.order.remove(&idle.seq);
        Some(idle.conn)
    }

    /// Takes out every connection idle for the idle time at `now`, oldest first, with
    /// its endpoint: close them.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(E, C)> {
        let mut out = Vec::new();
        while let Some(since) = self.oldest_since() {
            if !self.expired(since, now) {
                break;
            }
            match self.pop_oldest() {
                Some(found) => out.push(found),
                None => break,
            }
        }
        out
    }

    /// When the connection idle longest reaches the idle time (`None`: the cache is
    /// empty).
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.oldest_since().and_then(|s| s.checked_add(self.idle))
    }

    /// Takes out every connection (the queue is stopping): close them.
    pub(crate) fn drain(&mut self) -> Vec<C> {
        self.order.clear();
        self.by_endpoint
            .drain()
            .flat_map(|(_, q)| q.into_iter().map(|i| i.conn))
            .collect()
    }

    fn oldest_since(&self) -> Option<Instant> {
        let (_, endpoint) = self.order.first_key_value()?;
        self.by_endpoint.get(endpoint)?.front().map(|i| i.since)
    }

    /// Removes the connection parked first.
    fn pop_oldest(&mut self) -> Option<(E, C)> {
        let (seq, endpoint) = self.order.pop_first()?;
        let queue = self.by_endpoint.get_mut(&endpoint)?;
        // The oldest of all is the oldest of its endpoint (each queue is in parking order).
        debug_assert_eq!(queue.front().map(|i| i.seq), Some(seq));
        let idle = queue.pop_front()?;
        if queue.is_empty() {
            self.by_endpoint.remove(&endpoint);
        }
        Some((endpoint, idle.conn))
    }

    /// Connections waiting for `endpoint`.
    #[cfg(test)]
    pub(crate) fn len_of(&self, endpoint: &E) -> usize {
        self.by_endpoint.get(endpoint).map_or(0, VecDeque::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const IDLE: Duration = Duration::from_secs(2);

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn a_parked_connection_is_taken_by_its_endpoint_only() {
        let t = Instant::now();
        let mut c: ConnCache<&str, u32> = ConnCache::new(4, IDLE);
        assert_eq!(c.park("mx1:25", 1, t), Parked::Kept { evicted: None });
        assert_eq!(c.take(&"mx2:25", t), None, "another endpoint");
        assert_eq!(c.take(&"mx1:25", at(t, 10)), Some(1));
        assert_eq!(c.take(&"mx1:25", at(t, 10)), None, "taken once");
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn the_last_parked_is_taken_first_and_the_oldest_evicted_when_full() {
        let t = Instant::now();
        let mut c: ConnCache<&str, u32> = ConnCache::new(3, IDLE);
        c.park("a", 1, at(t, 0));
        c.park("b", 2, at(t, 1));
        c.park("a", 3, at(t, 2));
        assert_eq!(c.len(), 3);
        // Full: the connection idle longest (1, of "a") makes room for one of "c".
        assert_eq!(c.park("c", 4, at(t, 3)), Parked::Kept { evicted: Some(1) });
        assert_eq!(c.len(), 3);
        assert_eq!((c.len_of(&"a"), c.len_of(&"b"), c.len_of(&"c")), (1, 1, 1));
        c.park("a", 5, at(t, 4));
        assert_eq!(c.len_of(&"b"), 0, "2 was the oldest then");
        assert_eq!(c.take(&"a", at(t, 5)), Some(5), "warmest first");
        assert_eq!(c.take(&"a", at(t, 5)), Some(3));
    }

    #[test]
    fn idle_connections_expire_and_are_never_handed_out_after() {
        let t = Instant::now();
        let mut c: ConnCache<&str, u32> = ConnCache::new(10, IDLE);
        c.park("a", 1, at(t, 0));
        c.park("b", 2, at(t, 500));
        assert_eq!(c.next_expiry(), Some(at(t, 2000)));
        assert!(c.expire(at(t, 1999)).is_empty());
        assert_eq!(c.take(&"a", at(t, 2000)), None, "idle for the idle time");
        assert_eq!(c.expire(at(t, 2000)), vec![("a", 1)]);
        assert_eq!(c.next_expiry(), Some(at(t, 2500)));
        assert_eq!(c.expire(at(t, 9000)), vec![("b", 2)]);
        assert_eq!(c.next_expiry(), None);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn capacity_zero_keeps_nothing_and_drain_empties() {
        let t = Instant::now();
        let mut off: ConnCache<&str, u32> = ConnCache::new(0, IDLE);
        assert_eq!(off.park("a", 1, t), Parked::Refused(1));
        assert_eq!(off.len(), 0);
        let mut c: ConnCache<&str, u32> = ConnCache::new(5, IDLE);
        c.park("a", 1, t);
        c.park("b", 2, t);
        let mut all = c.drain();
        all.sort_unstable();
        assert_eq!(all, vec![1, 2]);
        assert_eq!(c.len(), 0);
        assert_eq!(c.next_expiry(), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Park(u8),
        Take(u8),
        Expire,
        Wait(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..4).prop_map(Op::Park),
            4 => (0u8..4).prop_map(Op::Take),
            1 => Just(Op::Expire),
            2 => (0u16..1500).prop_map(Op::Wait),
        ]
    }

    proptest! {
        /// Random parks, takes, expiries and waits against a model (a list in parking
        /// order): the same connections come out, the bound holds, nothing expired is
        /// handed out, and every connection parked comes out exactly once.
        #[test]
        fn the_cache_behaves_like_its_model(
            ops in proptest::collection::vec(op(), 0..200),
            capacity in 0usize..6,
        ) {
            let base = Instant::now();
            let mut now = base;
            let mut cache: ConnCache<u8, u32> = ConnCache::new(capacity, IDLE);
            // (endpoint, conn, parked at), oldest first.
            let mut model: Vec<(u8, u32, Instant)> = Vec::new();
            let mut parked = 0u32;
            let mut out: Vec<u32> = Vec::new();
            for op in ops {
                match op {
                    Op::Park(e) => {
                        let conn = parked;
                        parked += 1;
                        let got = cache.park(e, conn, now);
                        if capacity == 0 {
                            prop_assert_eq!(got, Parked::Refused(conn));
                            out.push(conn);
                            continue;
                        }
                        let expect = (model.len() >= capacity).then(|| model.remove(0).1);
                        prop_assert_eq!(got, Parked::Kept { evicted: expect });
                        out.extend(expect);
                        model.push((e, conn, now));
                    }
                    Op::Take(e) => {
                        let got = cache.take(&e, now);
                        let last = model.iter().rposition(|(me, _, _)| *me == e);
                        let expect = last
                            .filter(|i| now.saturating_duration_since(model[*i].2) < IDLE)
                            .map(|i| model.remove(i).1);
                        prop_assert_eq!(got, expect);
                        out.extend(got);
                    }
                    Op::Expire => {
                        let got: Vec<u32> = cache.expire(now).into_iter().map(|(_, c)| c).collect();
                        let mut expect = Vec::new();
                        while model.first().is_some_and(|m| now.saturating_duration_since(m.2) >= IDLE) {
                            expect.push(model.remove(0).1);
                        }
                        prop_assert_eq!(&got, &expect);
                        out.extend(got);
                    }
                    Op::Wait(ms) => now += Duration::from_millis(u64::from(ms)),
                }
                prop_assert!(cache.len() <= capacity);
                prop_assert_eq!(cache.len(), model.len());
                prop_assert_eq!(cache.next_expiry(), model.first().map(|m| m.2 + IDLE));
            }
            out.extend(cache.drain());
            out.sort_unstable();
            prop_assert_eq!(out, (0..parked).collect::<Vec<_>>(), "each exactly once");
        }
    }
}
