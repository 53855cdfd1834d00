//! The node's part in a cluster (`[cluster]`, docs/CLUSTER.md): the connection to Redis,
//! the heartbeat with this node's queue counts, and the health line of `tern status`.
//!
//! Started before the spool opens only for the node number (queue ids carry it from the
//! first message); the connection itself never delays the start: the node begins
//! `connecting` and decides alone until Redis answers.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tern_cluster::Cluster;
use tern_cluster::membership::Membership;
use tern_events::EventLog;
use tern_spool::{QueueState, Spool};
use tern_watchdog::Watchdog;

use crate::config::Config;

/// A running cluster node's parts.
pub struct Node {
    /// The handle every shared part uses.
    pub cluster: Cluster,
    membership: Option<Membership>,
    reporter: tern_cluster::membership::Reporter,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Writes the node number into queue ids: call before the spool makes any.
pub fn set_node_id(config: &Config) {
    if config.cluster.enabled {
        tern_spool::id::set_node_id(config.cluster.node_id);
    }
}

/// The admin URL other nodes use for this one: `cluster.admin_url`, or the admin
/// listener's bound address (`bound`, which knows the port of a `:0` listen).
pub fn admin_url(config: &Config, bound: Option<std::net::SocketAddr>) -> String {
    if !config.cluster.admin_url.is_empty() {
        return config.cluster.admin_url.trim_end_matches('/').to_string();
    }
    bound
        .or(config.admin.listen)
        .map(|a| format!("http://{a}"))
        .unwrap_or_default()
}

/// Starts the node's cluster parts when `[cluster] enabled`.
pub fn start(
    config: &Config,
    events: &EventLog,
    spool: &Spool,
    watchdog: Option<&Watchdog>,
) -> Option<Node> {
    if !config.cluster.enabled {
        return None;
    }
    let cluster = Cluster::start(&config.cluster, events.clone());
    // Queue counts read from the spool's directories every 10 s on the blocking pool,
    // never on a heartbeat's path.
    let counts = Arc::new(ArcSwap::from_pointee(serde_json::Value::Null));
    let mut tasks = Vec::new();
    {
        let counts = Arc::clone(&counts);
        let spool = spool.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let s = spool.clone();
                if let Ok(v) = tokio::task::spawn_blocking(move || queue_counts(&s)).await {
                    counts.store(Arc::new(v));
                }
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }));
    }
    if let Some(w) = watchdog {
        let w = w.clone();
        let c = cluster.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let h = c.health();
                w.set_note(
                    "cluster",
                    &format!(
                        "{} since {} (node {}, id {}, redis {:?}, {} failed operations)",
                        h.state.as_str(),
                        crate::queue::rfc3339(
                            i64::try_from(h.since_ms.saturating_mul(1000)).unwrap_or(i64::MAX)
                        ),
                        h.node,
                        h.node_id,
                        h.mode,
                        h.failed_ops
                    ),
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
    }
    let reporter: tern_cluster::membership::Reporter = Arc::new(move || (**counts.load()).clone());
    Some(Node {
        cluster,
        membership: None,
        reporter,
        tasks,
    })
}

impl Node {
    /// Starts the heartbeat, once the admin listener is bound (its address is in it).
    /// `on_dead`: the automatic adoption of the nodes this one declares dead.
    pub fn announce(
        &mut self,
        config: &Config,
        admin_bound: Option<std::net::SocketAddr>,
        on_dead: Option<tern_cluster::membership::OnDead>,
    ) {
        if self.membership.is_none() {
            self.membership = Some(Membership::start_with(
                self.cluster.clone(),
                admin_url(config, admin_bound),
                Arc::clone(&self.reporter),
                on_dead,
            ));
        }
    }

    /// Stops the heartbeat (removing this node's entry: a clean stop is not a death) and
    /// the connection.
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(m) = self.membership {
            m.stop().await;
        }
        self.cluster.stop();
    }
}

/// Shares this node's destination marks (down, suspended, resumed) with the other nodes
/// and applies theirs through the queue's command channel (docs/cluster/state.md).
pub fn share_destinations(cluster: &Cluster, queue: &tern_queue::QueueHandle) {
    let q = queue.clone();
    let apply: tern_cluster::destinations::Apply = Arc::new(move |m| q.apply_shared(to_queue(m)));
    let share = tern_cluster::destinations::DestinationShare::start(cluster.clone(), apply);
    queue.share_destinations(Arc::new(DestSync(share)));
}

/// The queue's hook, written to Redis by `tern_cluster::destinations`.
struct DestSync(tern_cluster::destinations::DestinationShare);

impl tern_queue::DestinationSync for DestSync {
    fn node(&self) -> &str {
        self.0.node()
    }

    fn publish(&self, mark: tern_queue::SharedMark) {
        use tern_cluster::destinations::{DestMark, MarkState};
        let state = match mark.state {
            tern_queue::SharedState::Down {
                until_unix_ms,
                reason,
            } => MarkState::Down {
                until_ms: until_unix_ms,
                reason,
            },
            tern_queue::SharedState::Suspended => MarkState::Suspended,
            tern_queue::SharedState::Active => MarkState::Active,
        };
        self.0.publish(DestMark {
            name: mark.name,
            state,
            at_ms: mark.at_unix_ms,
            node: mark.node,
        });
    }
}

fn to_queue(m: tern_cluster::destinations::DestMark) -> tern_queue::SharedMark {
    use tern_cluster::destinations::MarkState;
    tern_queue::SharedMark {
        name: m.name,
        state: match m.state {
            MarkState::Down { until_ms, reason } => tern_queue::SharedState::Down {
                until_unix_ms: until_ms,
                reason,
            },
            MarkState::Suspended => tern_queue::SharedState::Suspended,
            MarkState::Active => tern_queue::SharedState::Active,
        },
        at_unix_ms: m.at_ms,
        node: m.node,
    }
}

fn queue_counts(spool: &Spool) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for s in QueueState::ALL {
        if let Ok(n) = spool.count(s) {
            m.insert(s.to_string(), serde_json::Value::from(n));
        }
    }
    serde_json::Value::Object(m)
}
