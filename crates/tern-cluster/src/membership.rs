//! Membership: each node's heartbeat in Redis, the list of nodes, and the notice of a
//! dead one.
//!
//! Keys (`<p>` is `cluster.key_prefix`):
//! - `<p>:node:<name>`: a hash (`name`, `id`, `version`, `admin_url`, `started_ms`,
//!   `seen_ms`, `report`: the JSON the binary's reporter gives, e.g. queue counts),
//!   expiring `dead_after_ms` after the last heartbeat;
//! - `<p>:nodes`: the set of names ever registered and not yet declared dead;
//! - `<p>:node-id:<n>`: which name holds number `n` (expires with the heartbeat), so two
//!   nodes configured with one number are noticed (event 8005);
//! - `<p>:dead:<name>`: set with NX by the one node that declares `name` dead (event
//!   8004), removed by `name`'s next heartbeat.
//! - `<p>:last:<name>`: the node's last heartbeat as JSON (the hash's fields), written
//!   with each heartbeat and never expiring, so a dead node's last record outlives its
//!   hash;
//! - `<p>:gone`: a hash of the nodes declared dead, name → the time it was declared
//!   (Unix ms). A dead node stays listed (`alive: false`, `dead_since_ms`) until its next
//!   heartbeat or until an operator forgets it ([`forget`], `tern cluster forget NAME`).
//!
//! One heartbeat is one pipelined round trip; the dead-node check is a second one, made
//! by every node at every beat, cheap (one EXISTS per node). Heartbeats stop at
//! [`Membership::stop`]; a node that stops cleanly removes its entry so it is not
//! declared dead.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tern_events::{catalog, fields};
use tokio::sync::Notify;

use crate::client::{Cluster, ClusterError};

/// What the binary adds to each heartbeat (queue counts, say): any JSON.
pub type Reporter = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// One node as its heartbeat describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's name.
    pub name: String,
    /// Its number (in its queue ids).
    pub id: u16,
    /// Tern's version there.
    pub version: String,
    /// Its admin API.
    pub admin_url: String,
    /// When it started (Unix ms).
    pub started_ms: u64,
    /// Its last heartbeat (Unix ms).
    pub seen_ms: u64,
    /// Whether its heartbeat is alive (false: listed but expired, dead).
    pub alive: bool,
    /// What it reported (queue counts...).
    pub report: serde_json::Value,
    /// When it was declared dead (Unix ms), while it is listed as dead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_since_ms: Option<u64>,
}

/// Most nodes read from Redis (the node number is 1..=1023); more names are ignored.
pub const MAX_NODES: usize = 1023;
/// Longest field read back from a heartbeat (a version, an admin URL), octets.
const MAX_FIELD: usize = 512;
/// Longest `report` JSON read back, octets.
const MAX_REPORT: usize = 16 * 1024;
/// Longest `<p>:last:<name>` record read back, octets.
const MAX_LAST: usize = MAX_REPORT + 4 * MAX_FIELD;

/// The `host:port` of an admin URL `http://host:port` (a trailing `/` allowed), when it
/// has that form: an IPv4 or bracketed IPv6 literal or a DNS name, and a port. Anything
/// else (another scheme, a path, user info, a query) is `None`: the fan-out and the
/// proxy only speak plain HTTP to a node's admin listener (docs/cluster/view.md).
pub fn admin_endpoint(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.len() > 300 {
        return None;
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (ip, port) = v6.split_once("]:")?;
        ip.parse::<std::net::Ipv6Addr>().ok()?;
        (rest.get(..ip.len() + 2)?, port)
    } else {
        let (host, port) = rest.rsplit_once(':')?;
        let ok_host = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !ok_host {
            return None;
        }
        (host, port)
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u16 = port.parse().ok()?;
    if port == 0 {
        return None;
    }
    Some(format!("{host}:{port}"))
}

/// Called with a dead node's name by the node that declares it dead (event 8004): the
/// binary's automatic adoption. Must not block (spawn a task).
pub type OnDead = Arc<dyn Fn(String) + Send + Sync>;

/// The heartbeat task's handle.
pub struct Membership {
    stop: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
    cluster: Cluster,
}

impl Membership {
    /// Starts heartbeats every `heartbeat_ms`: `admin_url` is how others reach this
    /// node, `reporter` fills the `report` field.
    pub fn start(cluster: Cluster, admin_url: String, reporter: Reporter) -> Membership {
        Membership::start_with(cluster, admin_url, reporter, None)
    }

    /// [`Membership::start`], with `on_dead` called for each node this one declares dead.
    pub fn start_with(
        cluster: Cluster,
        admin_url: String,
        reporter: Reporter,
        on_dead: Option<OnDead>,
    ) -> Membership {
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn(beat_loop(
            cluster.clone(),
            admin_url,
            reporter,
            Arc::clone(&stop),
            on_dead,
        ));
        Membership {
            stop,
            task,
            cluster,
        }
    }

    /// Stops the heartbeats and removes this node's entry (bounded by the operation
    /// timeout): a clean stop is not a death.
    pub async fn stop(self) {
        self.stop.notify_one();
        let _ = self.task.await;
        let c = &self.cluster;
        let mut pipe = redis::pipe();
        pipe.del(c.key(&format!("node:{}", c.node())))
            .del(c.key(&format!("last:{}", c.node())))
            .srem(c.key("nodes"), c.node())
            .ignore();
        let _: Result<(), _> = c.pipeline(&pipe).await;
    }
}

async fn beat_loop(
    cluster: Cluster,
    admin_url: String,
    reporter: Reporter,
    stop: Arc<Notify>,
    on_dead: Option<OnDead>,
) {
    let every = Duration::from_millis(cluster.config().heartbeat_ms);
    let started = now_ms();
    let mut conflict_told = false;
    loop {
        if let Ok(holder) = beat(&cluster, &admin_url, &reporter, started).await {
            if holder != cluster.node() && !conflict_told {
                conflict_told = true;
                cluster.events().emit(
                    &catalog::CLUSTER_NODE_ID_CONFLICT,
                    fields!("node" => cluster.node(), "node_id" => cluster.node_id(), "holder" => holder),
                );
            }
            let _ = declare_dead(&cluster, on_dead.as_ref()).await;
        }
        tokio::select! {
            _ = stop.notified() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// One heartbeat: returns the name holding this node's number.
async fn beat(
    c: &Cluster,
    admin_url: &str,
    reporter: &Reporter,
    started: u64,
) -> Result<String, ClusterError> {
    let ttl = c.config().dead_after_ms;
    let me = c.key(&format!("node:{}", c.node()));
    let id_key = c.key(&format!("node-id:{}", c.node_id()));
    let report = reporter().to_string();
    let seen = now_ms();
    let last = serde_json::json!({
        "name": c.node(),
        "id": c.node_id(),
        "version": env!("CARGO_PKG_VERSION"),
        "admin_url": admin_url,
        "started_ms": started,
        "seen_ms": seen,
        "report": serde_json::from_str::<serde_json::Value>(&report).unwrap_or_default(),
    })
    .to_string();
    let mut pipe = redis::pipe();
    pipe.hset_multiple(
        &me,
        &[
            ("name", c.node().to_string()),
            ("id", c.node_id().to_string()),
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("admin_url", admin_url.to_string()),
            ("started_ms", started.to_string()),
            ("seen_ms", seen.to_string()),
            ("report", report),
        ],
    )
    .ignore()
    .pexpire(&me, ttl as i64)
    .ignore()
    .sadd(c.key("nodes"), c.node())
    .ignore()
    .del(c.key(&format!("dead:{}", c.node())))
    .ignore()
    .set(c.key(&format!("last:{}", c.node())), last)
    .ignore()
    .hdel(c.key("gone"), c.node())
    .ignore()
    .cmd("SET")
    .arg(&id_key)
    .arg(c.node())
    .arg("NX")
    .arg("PX")
    .arg(ttl)
    .ignore()
    .get(&id_key);
    let (holder,): (Option<String>,) = c.pipeline(&pipe).await?;
    let holder = holder.unwrap_or_default();
    if holder == c.node() {
        let _: Result<(), _> = c.query(redis::cmd("PEXPIRE").arg(&id_key).arg(ttl)).await;
    }
    Ok(holder)
}

/// Declares dead every listed node whose heartbeat expired: one node wins the NX and
/// logs event 8004; the name leaves the set.
async fn declare_dead(c: &Cluster, on_dead: Option<&OnDead>) -> Result<(), ClusterError> {
    let names: Vec<String> = c.query(redis::cmd("SMEMBERS").arg(c.key("nodes"))).await?;
    let others: Vec<&String> = names.iter().filter(|n| *n != c.node()).collect();
    if others.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for n in &others {
        pipe.exists(c.key(&format!("node:{n}")));
    }
    let alive: Vec<bool> = c.pipeline(&pipe).await?;
    for (name, alive) in others.into_iter().zip(alive) {
        if alive {
            continue;
        }
        let won: Option<String> = c
            .query(
                redis::cmd("SET")
                    .arg(c.key(&format!("dead:{name}")))
                    .arg(c.node())
                    .arg("NX")
                    .arg("PX")
                    .arg(86_400_000u64),
            )
            .await?;
        // Listed as dead (for `tern cluster status`) before it leaves the live set.
        let _: i64 = c
            .query(
                redis::cmd("HSETNX")
                    .arg(c.key("gone"))
                    .arg(name)
                    .arg(now_ms()),
            )
            .await?;
        let _: i64 = c
            .query(redis::cmd("SREM").arg(c.key("nodes")).arg(name))
            .await?;
        if won.is_some() {
            c.events().emit(
                &catalog::CLUSTER_NODE_DEAD,
                fields!("node" => name, "noticed_by" => c.node(), "dead_after_ms" => c.config().dead_after_ms),
            );
            if let Some(f) = on_dead {
                f(name.clone());
            }
        }
    }
    Ok(())
}

/// Every node listed: the live set (a node whose heartbeat expired stays there until a
/// node declares it dead) and the nodes declared dead and not yet forgotten
/// (`dead_since_ms`). Names that are not valid node names, fields past their bounds and
/// numbers that do not parse are ignored (whoever writes to Redis is a peer).
pub async fn nodes(c: &Cluster) -> Result<Vec<NodeInfo>, ClusterError> {
    let mut pipe = redis::pipe();
    pipe.cmd("SMEMBERS")
        .arg(c.key("nodes"))
        .cmd("HGETALL")
        .arg(c.key("gone"));
    let (live, gone): (Vec<String>, BTreeMap<String, String>) = c.pipeline(&pipe).await?;
    let mut names: BTreeMap<String, Option<u64>> = BTreeMap::new();
    for n in live {
        if names.len() < MAX_NODES && crate::config::valid_node_name(&n) {
            names.insert(n, None);
        }
    }
    for (n, at) in gone {
        if names.len() >= MAX_NODES || !crate::config::valid_node_name(&n) {
            continue;
        }
        let at = parse_u64(&at).unwrap_or(0);
        names.entry(n).or_insert(Some(at));
    }
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for n in names.keys() {
        pipe.hgetall(c.key(&format!("node:{n}")))
            .get(c.key(&format!("last:{n}")));
    }
    let answers: Vec<redis::Value> = c.pipeline(&pipe).await?;
    let mut answers = answers.into_iter();
    let mut out = Vec::with_capacity(names.len());
    for (name, dead_since) in names {
        let hash: BTreeMap<String, String> = answers
            .next()
            .and_then(|v| redis::from_redis_value(v).ok())
            .unwrap_or_default();
        let last: Option<String> = answers
            .next()
            .and_then(|v| redis::from_redis_value(v).ok())
            .flatten();
        out.push(node_info(name, &hash, last.as_deref(), dead_since));
    }
    Ok(out)
}

/// One node from its heartbeat hash, or else its last record; validated and bounded.
fn node_info(
    name: String,
    hash: &BTreeMap<String, String>,
    last: Option<&str>,
    dead_since_ms: Option<u64>,
) -> NodeInfo {
    let alive = !hash.is_empty();
    let last: BTreeMap<String, serde_json::Value> = match last {
        Some(l) if !alive && l.len() <= MAX_LAST => serde_json::from_str(l).unwrap_or_default(),
        _ => BTreeMap::new(),
    };
    // A field of the hash, else of the last record, as text within bounds.
    let field = |k: &str| -> Option<String> {
        let v = match hash.get(k) {
            Some(v) => v.clone(),
            None => match last.get(k)? {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => return None,
            },
        };
        (v.len() <= MAX_FIELD && !v.chars().any(char::is_control)).then_some(v)
    };
    let report = match hash.get("report") {
        Some(r) if r.len() <= MAX_REPORT => serde_json::from_str(r).unwrap_or_default(),
        Some(_) => serde_json::Value::Null,
        None => last
            .get("report")
            .filter(|r| r.is_object())
            .cloned()
            .unwrap_or_default(),
    };
    NodeInfo {
        alive,
        id: field("id")
            .and_then(|v| v.parse().ok())
            .filter(|n| (1..=1023).contains(n))
            .unwrap_or(0),
        version: field("version").unwrap_or_default(),
        admin_url: field("admin_url").unwrap_or_default(),
        started_ms: field("started_ms").and_then(|v| parse_u64(&v)).unwrap_or(0),
        seen_ms: field("seen_ms").and_then(|v| parse_u64(&v)).unwrap_or(0),
        report: if report.is_object() {
            report
        } else {
            serde_json::Value::Null
        },
        dead_since_ms: if alive { None } else { dead_since_ms },
        name,
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Why [`forget`] did not remove a node.
#[derive(Debug, thiserror::Error)]
pub enum ForgetError {
    /// Its heartbeat is alive: a live node cannot be forgotten.
    #[error("node {0} is alive (its heartbeat is current)")]
    Alive(String),
    /// No node of that name is listed.
    #[error("no node {0} is listed")]
    Unknown(String),
    /// Redis did not answer.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// Removes a dead node from the list (`tern cluster forget NAME`): its entry in the dead
/// list, its last record and its name in the live set. A node whose heartbeat is alive is
/// refused. A node that comes back registers again with its next heartbeat.
pub async fn forget(c: &Cluster, name: &str) -> Result<(), ForgetError> {
    if !crate::config::valid_node_name(name) {
        return Err(ForgetError::Unknown(name.to_string()));
    }
    let alive: bool = c
        .query(redis::cmd("EXISTS").arg(c.key(&format!("node:{name}"))))
        .await?;
    if alive {
        return Err(ForgetError::Alive(name.to_string()));
    }
    let mut pipe = redis::pipe();
    pipe.hdel(c.key("gone"), name)
        .del(c.key(&format!("last:{name}")))
        .srem(c.key("nodes"), name);
    let (gone, last, live): (i64, i64, i64) = c.pipeline(&pipe).await?;
    if gone + last + live == 0 {
        return Err(ForgetError::Unknown(name.to_string()));
    }
    Ok(())
}

fn now_ms() -> u64 {
    tern_watchdog::clock::unix_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_endpoints_are_plain_http_host_and_port() {
        assert_eq!(
            admin_endpoint("http://127.0.2.1:8025").as_deref(),
            Some("127.0.2.1:8025")
        );
        assert_eq!(
            admin_endpoint("http://[::1]:8025/").as_deref(),
            Some("[::1]:8025")
        );
        assert_eq!(
            admin_endpoint("http://mx-1.example:80").as_deref(),
            Some("mx-1.example:80")
        );
        for bad in [
            "",
            "https://127.0.0.1:8025",
            "http://127.0.0.1",
            "http://127.0.0.1:0",
            "http://127.0.0.1:99999",
            "http://user@host:80",
            "http://host:80/path",
            "http://host:80?q",
            "http://[nonsense]:80",
            "http://a b:80",
        ] {
            assert_eq!(admin_endpoint(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_node_is_read_from_its_hash_or_its_last_record_and_garbage_is_dropped() {
        let mut h = BTreeMap::new();
        h.insert("id".to_string(), "3".to_string());
        h.insert("version".to_string(), "x\u{7}y".to_string());
        h.insert("admin_url".to_string(), "a".repeat(MAX_FIELD + 1));
        h.insert("seen_ms".to_string(), "-5".to_string());
        h.insert("report".to_string(), "{\"hold\":2}".to_string());
        let n = node_info("n3".into(), &h, None, Some(7));
        assert!(n.alive);
        assert_eq!(n.id, 3);
        assert_eq!(n.version, "", "control characters are refused");
        assert_eq!(n.admin_url, "", "over-long fields are refused");
        assert_eq!(n.seen_ms, 0);
        assert_eq!(n.report["hold"], 2);
        assert_eq!(n.dead_since_ms, None, "alive: not dead");

        let last = r#"{"name":"n4","id":4,"version":"1.0","admin_url":"http://127.0.0.1:1","seen_ms":99,"report":{"deferred":1}}"#;
        let n = node_info("n4".into(), &BTreeMap::new(), Some(last), Some(1234));
        assert!(!n.alive);
        assert_eq!((n.id, n.seen_ms), (4, 99));
        assert_eq!(n.admin_url, "http://127.0.0.1:1");
        assert_eq!(n.report["deferred"], 1);
        assert_eq!(n.dead_since_ms, Some(1234));

        let n = node_info("n5".into(), &BTreeMap::new(), Some("not json"), None);
        assert_eq!((n.id, n.report.is_null()), (0, true));
    }
}
