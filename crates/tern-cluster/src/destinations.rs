//! Destination state shared by every node (docs/cluster/state.md): down marks,
//! suspensions and resumes made on one node, seen by the others within a second.
//!
//! Keys (`<p>` is `cluster.key_prefix`; one hash tag so the script works on Redis
//! Cluster):
//! - `<p>:{dest}:marks`: a hash, next hop name → JSON `{"s":"down"|"suspended"|"active",
//!   "until":ms,"reason":"..","node":"..","at":ms}`; at most [`MAX_MARKS`] fields;
//!   expires 7 days after the last change;
//! - `<p>:{dest}:ver`: a counter, incremented at each change (same expiry).
//!
//! Operations: a change is one script call (conditional write: the later action wins, by
//! `at`, the acting node's clock); every node polls `ver` every [`POLL`] and reads the
//! whole hash only when it moved (or after a reconnection). A mark past its use (a down
//! mark lapsed a minute ago, an `active` record ten minutes old) is removed by the first
//! node that reads it (compare and delete). Suspensions stay until a resume.
//!
//! Invariants:
//! - Publishing never blocks the caller (the queue's scheduler): changes go through an
//!   unbounded channel to this module's task, which keeps at most one pending change per
//!   name while Redis is unreachable and writes them (conditionally) when it is back.
//! - A node never applies its own changes read back (no echo): entries whose `node` is
//!   this node, made during this run, are skipped (those of a previous run, such as a
//!   suspension set before a restart, are applied at the start).
//! - After each reconnection the node writes again its marks of this run (still
//!   conditionally: a later action elsewhere wins), since Redis may have come back
//!   empty, then reads the whole hash again and applies every other node's mark: nothing
//!   missed while degraded stays missed.
//! - Everything read is bounded and parsed strictly: names up to [`MAX_NAME`] octets,
//!   values up to [`MAX_VALUE`], at most [`MAX_MARKS`] entries; anything else is ignored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::client::Cluster;

/// How often each node looks for changes.
pub const POLL: Duration = Duration::from_millis(200);
/// The most marks kept in Redis (and read back).
pub const MAX_MARKS: usize = 10_000;
/// The longest next hop name accepted.
pub const MAX_NAME: usize = 1024;
/// The longest value accepted.
pub const MAX_VALUE: usize = 2048;
/// The longest reason kept.
const MAX_REASON: usize = 512;
/// Changes waiting while Redis is unreachable (one per name).
const MAX_PENDING: usize = 10_000;
/// How long the keys live after the last change.
const KEY_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

/// A destination's state as shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkState {
    /// Down until `until_ms` (Unix ms), for `reason`.
    Down {
        /// When it lapses.
        until_ms: u64,
        /// Why.
        reason: String,
    },
    /// Suspended until resumed.
    Suspended,
    /// Resumed or retried.
    Active,
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestMark {
    /// The next hop's name.
    pub name: String,
    /// Its new state.
    pub state: MarkState,
    /// When (Unix ms, the acting node's clock).
    pub at_ms: u64,
    /// Which node.
    pub node: String,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    s: String,
    #[serde(default)]
    until: u64,
    #[serde(default)]
    reason: String,
    node: String,
    at: u64,
}

impl DestMark {
    fn to_json(&self) -> String {
        let (s, until, reason) = match &self.state {
            MarkState::Down { until_ms, reason } => ("down", *until_ms, bounded(reason)),
            MarkState::Suspended => ("suspended", 0, String::new()),
            MarkState::Active => ("active", 0, String::new()),
        };
        let w = Wire {
            s: s.into(),
            until,
            reason,
            node: self.node.clone(),
            at: self.at_ms,
        };
        serde_json::to_string(&w).unwrap_or_default()
    }

    /// Parses one hash entry; `None` for anything malformed or oversized.
    fn parse(name: &[u8], value: &[u8]) -> Option<DestMark> {
        if name.is_empty() || name.len() > MAX_NAME || value.len() > MAX_VALUE {
            return None;
        }
        let name = std::str::from_utf8(name).ok()?;
        if !name.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let w: Wire = serde_json::from_slice(value).ok()?;
        if w.node.is_empty() || w.node.len() > 255 {
            return None;
        }
        let state = match w.s.as_str() {
            "down" => MarkState::Down {
                until_ms: w.until,
                reason: bounded(&w.reason),
            },
            "suspended" => MarkState::Suspended,
            "active" => MarkState::Active,
            _ => return None,
        };
        Some(DestMark {
            name: name.to_owned(),
            state,
            at_ms: w.at,
            node: w.node,
        })
    }

    /// Whether the entry is past its use at `now_ms` (removed from Redis).
    fn stale(&self, now_ms: u64) -> bool {
        match &self.state {
            MarkState::Down { until_ms, .. } => until_ms.saturating_add(60_000) < now_ms,
            MarkState::Active => self.at_ms.saturating_add(600_000) < now_ms,
            MarkState::Suspended => false,
        }
    }
}

fn bounded(s: &str) -> String {
    let mut end = s.len().min(MAX_REASON);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_owned()
}

/// Writes a change unless a later one is there: 1 written, 0 older (ignored), -1 full.
const PUBLISH: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local ok, d = pcall(cjson.decode, cur)
  if ok and type(d) == 'table' and tonumber(d.at) and tonumber(d.at) > tonumber(ARGV[3]) then
    return 0
  end
elseif redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then
  return -1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
";

/// Removes an entry if it is still the one read.
const PRUNE: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
";

/// What other nodes' changes are handed to.
pub type Apply = Arc<dyn Fn(DestMark) + Send + Sync>;

/// The sharing task's handle: [`DestinationShare::publish`] this node's changes.
#[derive(Clone)]
pub struct DestinationShare {
    tx: mpsc::UnboundedSender<DestMark>,
    node: String,
}

impl std::fmt::Debug for DestinationShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DestinationShare")
            .field("node", &self.node)
            .finish()
    }
}

impl DestinationShare {
    /// Starts the task: other nodes' changes go to `apply`. Ends when every handle is
    /// dropped.
    pub fn start(cluster: Cluster, apply: Apply) -> DestinationShare {
        let (tx, rx) = mpsc::unbounded_channel();
        let node = cluster.node().to_owned();
        tokio::spawn(run(cluster, rx, apply));
        DestinationShare { tx, node }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Shares a change made on this node. Never blocks.
    pub fn publish(&self, mark: DestMark) {
        let _ = self.tx.send(mark);
    }
}

struct Keys {
    marks: String,
    ver: String,
}

async fn run(cluster: Cluster, mut rx: mpsc::UnboundedReceiver<DestMark>, apply: Apply) {
    let keys = Keys {
        marks: cluster.key("{dest}:marks"),
        ver: cluster.key("{dest}:ver"),
    };
    let publish = Script::new(PUBLISH);
    let prune = Script::new(PRUNE);
    let me = cluster.node().to_owned();
    // This node's entries older than this run are a previous run's (a suspension set
    // before a restart): applied like another node's. Newer ones are this run's: skipped.
    let started_ms = now_ms();
    // Changes not written yet (Redis unreachable), the latest per name.
    let mut pending: HashMap<String, DestMark> = HashMap::new();
    // The entries read last, to apply only what changed.
    let mut seen: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut last_ver: Option<i64> = None;
    // This run's changes as written, the latest per name: written again (conditionally)
    // after each reconnection, since Redis may have come back empty.
    let mut own: HashMap<String, DestMark> = HashMap::new();
    let mut was_up = false;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => {
                    if pending.len() < MAX_PENDING || pending.contains_key(&m.name) {
                        pending.insert(m.name.clone(), m);
                    }
                }
                None => return,
            },
            _ = tick.tick() => {}
        }
        if !cluster.is_up() {
            // Read everything again once Redis is back.
            last_ver = None;
            was_up = false;
            continue;
        }
        if !was_up {
            was_up = true;
            for (name, m) in own.drain() {
                pending.entry(name).or_insert(m);
            }
        }
        // This node's changes first (after a reconnection: those made while degraded;
        // a later change from another node wins in the script).
        let now = now_ms();
        own.retain(|_, m| !m.stale(now));
        let names: Vec<String> = pending.keys().cloned().collect();
        for name in names {
            let Some(m) = pending.get(&name) else {
                continue;
            };
            if m.stale(now) {
                pending.remove(&name);
                continue;
            }
            let json = m.to_json();
            let mut inv = publish.prepare_invoke();
            inv.key(&keys.marks)
                .key(&keys.ver)
                .arg(&name)
                .arg(&json)
                .arg(m.at_ms)
                .arg(MAX_MARKS)
                .arg(KEY_TTL_MS);
            match cluster.script::<i64>(&inv).await {
                Ok(_) => {
                    if let Some(m) = pending.remove(&name)
                        && (own.len() < MAX_PENDING || own.contains_key(&name))
                    {
                        own.insert(name, m);
                    }
                }
                Err(crate::ClusterError::Reply(_)) => {
                    pending.remove(&name);
                }
                Err(_) => break,
            }
        }
        if !cluster.is_up() {
            continue;
        }
        let ver: Option<i64> = match cluster.query(redis::cmd("GET").arg(&keys.ver)).await {
            Ok(v) => v,
            Err(_) => {
                last_ver = None;
                continue;
            }
        };
        let ver = ver.unwrap_or(0);
        if last_ver == Some(ver) {
            continue;
        }
        let full = last_ver.is_none();
        let len: usize = match cluster.query(redis::cmd("HLEN").arg(&keys.marks)).await {
            Ok(n) => n,
            Err(_) => continue,
        };
        if len > MAX_MARKS {
            // Not written by Tern (the script caps it): read nothing rather than much.
            last_ver = Some(ver);
            continue;
        }
        let all: Vec<(Vec<u8>, Vec<u8>)> =
            match cluster.query(redis::cmd("HGETALL").arg(&keys.marks)).await {
                Ok(v) => v,
                Err(_) => continue,
            };
        last_ver = Some(ver);
        if full {
            seen.clear();
        }
        let now = now_ms();
        let mut next_seen = HashMap::with_capacity(all.len().min(MAX_MARKS));
        for (name, value) in all.into_iter().take(MAX_MARKS) {
            let changed = seen.get(&name) != Some(&value);
            if let Some(m) = DestMark::parse(&name, &value) {
                if m.stale(now) {
                    let mut inv = prune.prepare_invoke();
                    inv.key(&keys.marks).arg(&name).arg(&value);
                    let _ = cluster.script::<i64>(&inv).await;
                } else if changed && (m.node != me || m.at_ms < started_ms) {
                    apply(m);
                }
            }
            next_seen.insert(name, value);
        }
        seen = next_seen;
    }
}

fn now_ms() -> u64 {
    tern_watchdog::clock::unix_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_and_garbage_is_ignored() {
        let m = DestMark {
            name: "mx:example.com".into(),
            state: MarkState::Down {
                until_ms: 5000,
                reason: "refused".into(),
            },
            at_ms: 1000,
            node: "n1".into(),
        };
        let json = m.to_json();
        assert_eq!(DestMark::parse(b"mx:example.com", json.as_bytes()), Some(m));
        assert_eq!(DestMark::parse(b"mx:a", b"not json"), None);
        assert_eq!(
            DestMark::parse(b"mx:a", br#"{"s":"odd","node":"n","at":1}"#),
            None
        );
        assert_eq!(
            DestMark::parse(b"mx:a", br#"{"s":"down","node":"","at":1}"#),
            None
        );
        assert_eq!(
            DestMark::parse(b"bad name", br#"{"s":"active","node":"n","at":1}"#),
            None
        );
        let long = vec![b'a'; MAX_NAME + 1];
        assert_eq!(
            DestMark::parse(&long, br#"{"s":"active","node":"n","at":1}"#),
            None
        );
        assert_eq!(
            DestMark::parse(b"mx:a", br#"{"s":"suspended","node":"n","at":"x"}"#),
            None
        );
    }

    #[test]
    fn stale_marks_are_recognised() {
        let down = DestMark {
            name: "a".into(),
            state: MarkState::Down {
                until_ms: 1000,
                reason: String::new(),
            },
            at_ms: 0,
            node: "n".into(),
        };
        assert!(!down.stale(1000));
        assert!(down.stale(62_000));
        let sus = DestMark {
            state: MarkState::Suspended,
            ..down.clone()
        };
        assert!(!sus.stale(u64::MAX));
        let bounded_reason = bounded(&"é".repeat(400));
        assert!(bounded_reason.len() <= MAX_REASON);
    }
}
