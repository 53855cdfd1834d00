//! A node that dies loses no mail (docs/cluster/adopt.md): adopting another node's spool
//! through the running server (`POST /api/v1/spool/adopt`, `tern spool adopt PATH`), the
//! fence that keeps the adopted node from starting on mail it no longer owns, and
//! `tern spool unfence`.
//!
//! Invariants:
//! - One adoption at a time per node (`Adopter::running`, an atomic flag; a second one is
//!   refused, never queued).
//! - The adoption runs in a task of its own: a client that gives up waiting does not
//!   stop it halfway (a stop halfway is safe anyway: a rerun completes it).
//! - The Redis fence (`<prefix>:fence:<node>`) is written once the foreign spool's lock
//!   is held and its marker is durable, before any message moves; a live node (lock
//!   held) is never fenced.
//! - A server never starts on a spool with an `adopted` marker; on a cluster node it
//!   also checks its Redis fence before its listeners start, waiting for Redis at most
//!   `FENCE_WAIT` (then event 8044 and the marker alone fences).
//!
//! Trust: the path comes from an administrator holding the admin token; the foreign
//! spool's content is validated by the spool's own recovery and readers. The fence
//! value read from Redis is only shown (bounded), never parsed for decisions: its
//! presence fences.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tern_cluster::Cluster;
use tern_events::{EventLog, catalog, fields};
use tern_queue::QueueHandle;
use tern_spool::adopt::{AdoptOptions, AdoptReport, SpoolNode};
use tern_spool::{QueueState, Spool, SpoolError};

use crate::config::Config;

/// Longest wait for Redis at start before the fence check gives up (event 8044).
const FENCE_WAIT: Duration = Duration::from_secs(3);
/// Longest fence value shown.
const FENCE_SHOWN_MAX: usize = 512;

/// The Redis key of `node`'s fence.
fn fence_key(cluster: &Cluster, node: &str) -> String {
    cluster.key(&format!("fence:{node}"))
}

/// Refuses the start (event 8042) when the spool at `dir` carries an adoption marker.
pub fn check_marker(dir: &Path, node: &str, events: &EventLog) -> anyhow::Result<()> {
    let marker = tern_spool::adopt::read_marker(dir)
        .with_context(|| format!("reading the adoption marker in {}", dir.display()))?;
    let Some(m) = marker else {
        return Ok(());
    };
    let at = crate::queue::rfc3339(m.at_micros);
    events.emit(
        &catalog::CLUSTER_SPOOL_FENCED,
        fields!("node" => node, "path" => dir.display(), "by" => &m.by, "at" => &at, "source" => "marker"),
    );
    events.flush(Duration::from_secs(2));
    anyhow::bail!(
        "the spool {} was adopted by node {} at {at}: this node must not deliver its mail. \
         Check that the mail is there, then run `tern spool unfence` (docs/cluster/adopt.md)",
        dir.display(),
        m.by
    )
}

/// Waits (bounded) for Redis to be up.
async fn wait_up(cluster: &Cluster, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !cluster.is_up() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// On a cluster node, before the listeners: refuses the start (event 8042) when Redis
/// holds a fence for this node; when Redis does not answer within [`FENCE_WAIT`], event
/// 8044 and the start goes on (the marker was checked).
pub async fn check_redis_fence(
    cluster: &Cluster,
    dir: &Path,
    events: &EventLog,
) -> anyhow::Result<()> {
    let node = cluster.node().to_string();
    let found: Result<Option<String>, String> = if wait_up(cluster, FENCE_WAIT).await {
        cluster
            .query(redis::cmd("GET").arg(fence_key(cluster, &node)))
            .await
            .map_err(|e| e.to_string())
    } else {
        Err(format!(
            "Redis not reachable within {} s",
            FENCE_WAIT.as_secs()
        ))
    };
    match found {
        Ok(None) => Ok(()),
        Ok(Some(value)) => {
            let shown: String = value.chars().take(FENCE_SHOWN_MAX).collect();
            let by = serde_json::from_str::<serde_json::Value>(&shown)
                .ok()
                .and_then(|v| v["by"].as_str().map(str::to_string))
                .unwrap_or_else(|| "another node".into());
            events.emit(
                &catalog::CLUSTER_SPOOL_FENCED,
                fields!("node" => &node, "path" => dir.display(), "by" => &by, "at" => &shown, "source" => "redis"),
            );
            events.flush(Duration::from_secs(2));
            anyhow::bail!(
                "node {node} is fenced in the cluster: its spool was adopted by {by} ({shown}). \
                 Check that the mail is there, then run `tern spool unfence` (docs/cluster/adopt.md)"
            )
        }
        Err(error) => {
            events.emit(
                &catalog::CLUSTER_FENCE_UNCHECKED,
                fields!("node" => &node, "error" => error),
            );
            Ok(())
        }
    }
}

/// Records in this node's spool which cluster node runs on it (`spool/node`, 0600).
pub fn write_node_file(config: &Config, dir: &Path) -> anyhow::Result<()> {
    let node = SpoolNode {
        name: config.cluster.effective_node_name(),
        id: config.cluster.node_id,
    };
    tern_spool::adopt::write_node(dir, &node)
        .with_context(|| format!("writing the node file in {}", dir.display()))
}

/// This node's adoptions.
pub struct Adopter {
    /// This node's spool.
    pub spool: Spool,
    /// The queue; `None` when delivery is off (adopted mail then waits for a start).
    pub queue: Option<QueueHandle>,
    /// The cluster, for the Redis fence.
    pub cluster: Option<Cluster>,
    /// The event log.
    pub events: EventLog,
    /// This node's name (the marker's `by`).
    pub by: String,
    /// `queue.poison_threshold` in force.
    pub poison_threshold: Arc<dyn Fn() -> u32 + Send + Sync>,
    /// Set while an adoption runs.
    pub running: AtomicBool,
}

/// Clears the running flag when the adoption's task ends, however it ends.
struct Running(Arc<Adopter>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
    }
}

impl Adopter {
    /// Adopts the spool at `path` (module header); `auto` for the automatic adoption.
    pub async fn adopt(
        self: &Arc<Self>,
        path: PathBuf,
        auto: bool,
    ) -> Result<tern_admin::AdoptRun, tern_admin::ControlError> {
        if self
            .running
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(tern_admin::ControlError::Conflict(
                "another adoption is running on this node".into(),
            ));
        }
        let guard = Running(Arc::clone(self));
        let task = tokio::spawn(async move {
            let me = Arc::clone(&guard.0);
            let r = me.run(path, auto).await;
            drop(guard);
            r
        });
        task.await.unwrap_or_else(|e| {
            Err(tern_admin::ControlError::Unavailable(format!(
                "the adoption task failed: {e}"
            )))
        })
    }

    async fn run(
        self: Arc<Self>,
        path: PathBuf,
        auto: bool,
    ) -> Result<tern_admin::AdoptRun, tern_admin::ControlError> {
        let started = Instant::now();
        let fenced = Arc::new(AtomicBool::new(false));
        let mut opts = AdoptOptions {
            by: self.by.clone(),
            poison_threshold: (self.poison_threshold)(),
            ..AdoptOptions::default()
        };
        if let Some(c) = self.cluster.clone() {
            let rt = tokio::runtime::Handle::current();
            let fenced = Arc::clone(&fenced);
            let by = self.by.clone();
            let shown = path.display().to_string();
            opts.fenced = Some(Arc::new(move |node: Option<&SpoolNode>| {
                let Some(node) = node else {
                    return;
                };
                let value = serde_json::json!({
                    "by": by,
                    "at_ms": tern_watchdog::clock::unix_ms(),
                    "path": shown,
                })
                .to_string();
                let key = fence_key(&c, &node.name);
                let set = rt.block_on(async {
                    c.query::<()>(redis::cmd("SET").arg(&key).arg(&value)).await
                });
                fenced.store(set.is_ok(), Ordering::Release);
            }));
        }
        #[cfg(feature = "fault-injection")]
        freeze_after(&mut opts);
        let spool = self.spool.clone();
        let events = self.events.clone();
        let target = path.clone();
        let done = tokio::task::spawn_blocking(move || spool.adopt(&target, &opts, events))
            .await
            .unwrap_or_else(|e| Err(SpoolError::BlockingTask(e.to_string())));
        let report = match done {
            Ok(r) => r,
            Err(e) => {
                self.events.emit(
                    &catalog::CLUSTER_SPOOL_ADOPT_FAILED,
                    fields!("path" => path.display(), "by" => &self.by, "auto" => auto, "error" => &e),
                );
                return Err(match e {
                    SpoolError::NotASpool(_) => tern_admin::ControlError::Conflict(e.to_string()),
                    SpoolError::Locked => tern_admin::ControlError::Conflict(format!(
                        "{} is locked by a running process: its node is alive",
                        path.display()
                    )),
                    e => tern_admin::ControlError::Unavailable(format!(
                        "the adoption stopped: {e}; run it again to complete it"
                    )),
                });
            }
        };
        self.schedule(&report);
        let node = report.node.as_ref().map(|n| n.name.clone());
        let run = tern_admin::AdoptRun {
            path: report.from.display().to_string(),
            node: node.clone(),
            incoming: report.count(QueueState::Incoming),
            active: report.count(QueueState::Active),
            deferred: report.count(QueueState::Deferred),
            hold: report.count(QueueState::Hold),
            poison: report.count(QueueState::Poison),
            poisoned: report.poisoned,
            already_here: report.already_here,
            corrupt_moved: report.corrupt_moved,
            corrupt_left: report.corrupt_left,
            fenced_in_redis: fenced.load(Ordering::Acquire),
            secs: started.elapsed().as_secs_f64(),
        };
        self.events.emit(
            &catalog::CLUSTER_SPOOL_ADOPTED,
            fields!(
                "path" => &run.path,
                "node" => node.as_deref().unwrap_or(""),
                "by" => &self.by,
                "auto" => auto,
                "incoming" => run.incoming,
                "active" => run.active,
                "deferred" => run.deferred,
                "hold" => run.hold,
                "poison" => run.poison,
                "poisoned" => run.poisoned,
                "already_here" => run.already_here,
                "corrupt_moved" => run.corrupt_moved,
                "corrupt_left" => run.corrupt_left,
                "fenced_in_redis" => run.fenced_in_redis,
                "secs" => format!("{:.3}", run.secs),
            ),
        );
        Ok(run)
    }

    /// Hands the adopted messages to the queue, with a tracked event each.
    fn schedule(&self, report: &AdoptReport) {
        let node = report
            .node
            .as_ref()
            .map(|n| n.name.clone())
            .unwrap_or_default();
        let now = Instant::now();
        let now_micros = tern_watchdog::clock::unix_micros();
        let mut due = Vec::with_capacity(report.adopted.len());
        for m in &report.adopted {
            if !m.again {
                self.events.emit(
                    &catalog::CLUSTER_MESSAGE_ADOPTED,
                    fields!("queue_id" => m.id, "node" => &node, "from_state" => m.from, "state" => m.state),
                );
            }
            let wait = m
                .next_attempt_micros
                .map(|t| t.saturating_sub(now_micros).max(0))
                .and_then(|us| u64::try_from(us).ok())
                .map(Duration::from_micros)
                .unwrap_or_default();
            due.push((m.id, m.state, now.checked_add(wait).unwrap_or(now)));
        }
        if let Some(q) = &self.queue {
            q.adopted(due);
        }
    }
}

/// Test builds only: with `TERN_FAULT_ADOPT_FREEZE_AFTER=N`, the adoption stops for
/// ever once its N-th message is written here and not yet removed there (the lock still
/// held), for a test to kill the process at that point.
#[cfg(feature = "fault-injection")]
fn freeze_after(opts: &mut AdoptOptions) {
    let Some(n) = std::env::var("TERN_FAULT_ADOPT_FREEZE_AFTER")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return;
    };
    let placed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    opts.fault = Some(Arc::new(move |step| {
        if step == "placed" && placed.fetch_add(1, Ordering::SeqCst) + 1 == n {
            loop {
                std::thread::park();
            }
        }
        Ok(())
    }));
}

/// How long the automatic adoption's Redis lock lives at most (a node that dies while
/// adopting leaves it for that long).
const AUTO_LOCK_MS: u64 = 3_600_000;

/// The automatic adoption (`cluster.adopt_path`), for the membership's dead-node notice;
/// `None` when it is off.
pub fn on_dead(
    adopter: &Arc<Adopter>,
    cluster: &Cluster,
    pattern: &str,
) -> Option<tern_cluster::membership::OnDead> {
    if pattern.is_empty() {
        return None;
    }
    let (adopter, cluster, pattern) = (Arc::clone(adopter), cluster.clone(), pattern.to_string());
    Some(Arc::new(move |name: String| {
        let (adopter, cluster, pattern) = (Arc::clone(&adopter), cluster.clone(), pattern.clone());
        tokio::spawn(async move { auto_adopt(adopter, cluster, &pattern, name).await });
    }))
}

/// Adopts dead node `name`'s spool at `pattern` when it is there, under one Redis lock
/// (`<prefix>:adopting:<name>`) so that one node only adopts it.
async fn auto_adopt(adopter: Arc<Adopter>, cluster: Cluster, pattern: &str, name: String) {
    let skipped = |path: &str, reason: &str| {
        adopter.events.emit(
            &catalog::CLUSTER_AUTO_ADOPT_SKIPPED,
            fields!("node" => &name, "path" => path, "reason" => reason),
        );
    };
    // The name comes from Redis, a peer: only a valid node name goes into a path.
    if !tern_cluster::config::valid_node_name(&name) {
        skipped("", "not a valid node name");
        return;
    }
    let path = PathBuf::from(pattern.replace("{node}", &name));
    let shown = path.display().to_string();
    let is_dir = tokio::task::spawn_blocking({
        let p = path.clone();
        move || std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir())
    })
    .await
    .unwrap_or(false);
    if !is_dir {
        skipped(&shown, "no directory there");
        return;
    }
    let key = cluster.key(&format!("adopting:{name}"));
    let locked: Result<Option<String>, _> = cluster
        .query(
            redis::cmd("SET")
                .arg(&key)
                .arg(cluster.node())
                .arg("NX")
                .arg("PX")
                .arg(AUTO_LOCK_MS),
        )
        .await;
    match locked {
        Ok(Some(_)) => {}
        Ok(None) => {
            skipped(&shown, "another node adopts it");
            return;
        }
        Err(e) => {
            skipped(
                &shown,
                &format!("the adoption lock could not be taken: {e}"),
            );
            return;
        }
    }
    // Its events (8041, or 8043 on a failure) say how it went.
    let _ = adopter.adopt(path, true).await;
    let _: Result<i64, _> = cluster.query(redis::cmd("DEL").arg(&key)).await;
}

/// `tern spool adopt PATH`: asks the running server to adopt.
pub fn cli_adopt(config: &Config, path: &Path, json: bool) -> anyhow::Result<()> {
    let path = std::path::absolute(path).with_context(|| format!("{}", path.display()))?;
    let client = crate::client::Client::from_config(config)?;
    let run: tern_admin::AdoptRun = client.post(
        "/api/v1/spool/adopt",
        &serde_json::json!({ "path": path.display().to_string() }),
    )?;
    if json {
        crate::term::outln!("{}", serde_json::to_string(&run).unwrap_or_default());
    } else {
        crate::term::outln!(
            "adopted {} (node {}): incoming {}, active {} ({} poisoned), deferred {}, hold {}, poison {}; {} already here; corrupt moved {}, left {}; fenced in Redis: {}; {:.3} s",
            run.path,
            run.node.as_deref().unwrap_or("unknown"),
            run.incoming,
            run.active,
            run.poisoned,
            run.deferred,
            run.hold,
            run.poison,
            run.already_here,
            run.corrupt_moved,
            run.corrupt_left,
            if run.fenced_in_redis { "yes" } else { "no" },
            run.secs
        );
    }
    Ok(())
}

/// `tern spool unfence`: removes this node's spool marker and its Redis fence.
pub fn cli_unfence(config: &Config) -> anyhow::Result<()> {
    let dir = config.spool_dir();
    let removed = match tern_spool::adopt::remove_marker(&dir) {
        Ok(r) => r,
        Err(SpoolError::Locked) => {
            anyhow::bail!("a server runs on {}: stop it first", dir.display())
        }
        Err(e) => return Err(e).context("removing the adoption marker"),
    };
    crate::term::outln!(
        "{}: {}",
        dir.display(),
        if removed {
            "adoption marker removed"
        } else {
            "no adoption marker"
        }
    );
    if !config.cluster.enabled {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    let node = config.cluster.effective_node_name();
    rt.block_on(async {
        let cluster = Cluster::start(&config.cluster, EventLog::discard());
        let done = if wait_up(&cluster, FENCE_WAIT).await {
            let key = fence_key(&cluster, &node);
            cluster
                .query::<i64>(redis::cmd("DEL").arg(&key))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
        } else {
            Err(anyhow::anyhow!("Redis not reachable"))
        };
        cluster.stop();
        match done {
            Ok(n) => {
                crate::term::outln!(
                    "node {node}: {}",
                    if n > 0 {
                        "cluster fence removed"
                    } else {
                        "no cluster fence"
                    }
                );
                Ok(())
            }
            Err(e) => Err(e.context(format!(
                "removing the cluster fence of node {node} (run `tern spool unfence` again when Redis answers)"
            ))),
        }
    })
}
