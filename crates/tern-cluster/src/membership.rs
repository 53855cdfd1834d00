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
    let mut pipe = redis::pipe();
    pipe.hset_multiple(
        &me,
        &[
            ("name", c.node().to_string()),
            ("id", c.node_id().to_string()),
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("admin_url", admin_url.to_string()),
            ("started_ms", started.to_string()),
            ("seen_ms", now_ms().to_string()),
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

/// Every node listed, alive or not (a dead one stays listed until a node declares it).
pub async fn nodes(c: &Cluster) -> Result<Vec<NodeInfo>, ClusterError> {
    let names: Vec<String> = c.query(redis::cmd("SMEMBERS").arg(c.key("nodes"))).await?;
    let mut pipe = redis::pipe();
    for n in &names {
        pipe.hgetall(c.key(&format!("node:{n}")));
    }
    let hashes: Vec<BTreeMap<String, String>> = if names.is_empty() {
        Vec::new()
    } else {
        c.pipeline(&pipe).await?
    };
    let mut out: Vec<NodeInfo> = names
        .into_iter()
        .zip(hashes)
        .map(|(name, h)| NodeInfo {
            alive: !h.is_empty(),
            id: h.get("id").and_then(|v| v.parse().ok()).unwrap_or(0),
            version: h.get("version").cloned().unwrap_or_default(),
            admin_url: h.get("admin_url").cloned().unwrap_or_default(),
            started_ms: h
                .get("started_ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            seen_ms: h.get("seen_ms").and_then(|v| v.parse().ok()).unwrap_or(0),
            report: h
                .get("report")
                .and_then(|v| serde_json::from_str(v).ok())
                .unwrap_or(serde_json::Value::Null),
            name,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn now_ms() -> u64 {
    tern_watchdog::clock::unix_ms()
}
