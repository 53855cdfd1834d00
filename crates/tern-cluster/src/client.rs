//! The one connection to Redis a node keeps, its health, and bounded operations on it.
//!
//! Invariants:
//! - No operation waits on Redis longer than `op_timeout_ms`; with no connection up it
//!   fails at once ([`ClusterError::Unavailable`]), so callers fall back to their local
//!   decision instead of queueing behind a dead server.
//! - One supervisor task owns (re)connection: an I/O error or a timeout on any operation
//!   wakes it; it drops the connection and connects again with a backoff of 100 ms
//!   doubling to 2 s, asking the sentinels for the master each time in `sentinel` mode.
//! - The health changes in one place ([`Health`]) and logs one event per transition:
//!   8002 `cluster.degraded` when Redis becomes unreachable, 8003 `cluster.recovered` when
//!   it answers again (8001 `cluster.connected` the first time).
//! - No lock: the connection is an `ArcSwapOption` of a cheaply cloned multiplexed
//!   connection; the health is atomics.
//!
//! Errors that Redis answers (a script error, a wrong type) are returned as
//! [`ClusterError::Reply`] and do not count against the connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, Value};
use serde::Serialize;
use tern_events::{EventLog, catalog, fields};
use tokio::sync::Notify;

use crate::config::{ClusterConfig, RedisMode};

/// Why an operation on the shared state did not give an answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// No connection to Redis is up (degraded mode): decide locally.
    #[error("redis is unreachable")]
    Unavailable,
    /// The operation took longer than `op_timeout_ms`.
    #[error("redis did not answer within {0} ms")]
    Timeout(u64),
    /// The connection failed during the operation.
    #[error("redis connection failed: {0}")]
    Io(String),
    /// Redis answered with an error (script error, wrong type...): a bug or a foreign
    /// key, not an outage.
    #[error("redis answered an error: {0}")]
    Reply(String),
}

/// The state of the shared control plane, as `/readyz` and `tern status` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// Not connected yet since the start (counts as degraded for decisions).
    Connecting,
    /// Redis answers: limits and state are shared.
    Up,
    /// Redis is unreachable: every node decides alone with its local share.
    Degraded,
}

impl HealthState {
    fn from_u8(v: u8) -> HealthState {
        match v {
            1 => HealthState::Up,
            2 => HealthState::Degraded,
            _ => HealthState::Connecting,
        }
    }

    /// The word shown to operators.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Connecting => "connecting",
            HealthState::Up => "up",
            HealthState::Degraded => "degraded",
        }
    }
}

/// A snapshot of the cluster health.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// This node's name.
    pub node: String,
    /// This node's number (the one in its queue ids).
    pub node_id: u16,
    /// `connecting`, `up` or `degraded`.
    pub state: HealthState,
    /// Since when (Unix ms).
    pub since_ms: u64,
    /// How Redis is reached (`standalone`, `cluster`, `sentinel`).
    pub mode: RedisMode,
    /// Operations that failed (I/O or timeout) since the start.
    pub failed_ops: u64,
}

/// The connection: one multiplexed connection (standalone or the sentinels' master) or
/// a Redis Cluster connection; both pipeline every concurrent request on one socket.
#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

struct Inner {
    config: ClusterConfig,
    node: String,
    conn: ArcSwapOption<Conn>,
    state: AtomicU8,
    since_ms: AtomicU64,
    failed_ops: AtomicU64,
    wake: Notify,
    events: EventLog,
    op_timeout: Duration,
    stop: Notify,
    ever_up: std::sync::atomic::AtomicBool,
}

/// A node's handle on the shared control plane. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.inner.node)
            .field("state", &self.state())
            .finish()
    }
}

impl Cluster {
    /// Starts the supervisor task (on the current tokio runtime) and returns at once: the
    /// node starts degraded-until-connected, never waiting for Redis. `config` must have
    /// passed `problems()`.
    pub fn start(config: &ClusterConfig, events: EventLog) -> Cluster {
        let inner = Arc::new(Inner {
            node: config.effective_node_name(),
            op_timeout: Duration::from_millis(config.op_timeout_ms),
            config: config.clone(),
            conn: ArcSwapOption::empty(),
            state: AtomicU8::new(0),
            since_ms: AtomicU64::new(now_ms()),
            failed_ops: AtomicU64::new(0),
            wake: Notify::new(),
            events,
            stop: Notify::new(),
            ever_up: std::sync::atomic::AtomicBool::new(false),
        });
        tokio::spawn(supervise(Arc::clone(&inner)));
        Cluster { inner }
    }

    /// Stops reconnecting (at shutdown). Operations fail with `Unavailable` afterwards.
    pub fn stop(&self) {
        self.inner.stop.notify_one();
        self.inner.conn.store(None);
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// This node's number.
    pub fn node_id(&self) -> u16 {
        self.inner.config.node_id
    }

    /// The section in force at the start.
    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    /// The event log.
    pub fn events(&self) -> &EventLog {
        &self.inner.events
    }

    /// A key under this cluster's prefix: `<prefix>:<rest>`.
    pub fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.inner.config.key_prefix)
    }

    /// The current state.
    pub fn state(&self) -> HealthState {
        HealthState::from_u8(self.inner.state.load(Ordering::Acquire))
    }

    /// True when Redis answers; otherwise decide locally (with `local_share`).
    pub fn is_up(&self) -> bool {
        self.state() == HealthState::Up
    }

    /// The share of a cluster-wide limit this node keeps while degraded.
    pub fn local_share(&self) -> f64 {
        self.inner.config.local_share
    }

    /// A snapshot for `/readyz` and `tern status`.
    pub fn health(&self) -> Health {
        Health {
            node: self.inner.node.clone(),
            node_id: self.inner.config.node_id,
            state: self.state(),
            since_ms: self.inner.since_ms.load(Ordering::Acquire),
            mode: self.inner.config.mode,
            failed_ops: self.inner.failed_ops.load(Ordering::Relaxed),
        }
    }

    /// The operation bound.
    pub fn op_timeout(&self) -> Duration {
        self.inner.op_timeout
    }

    /// Runs one command within the operation bound.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, ClusterError> {
        let mut conn = self.conn()?;
        let out = self.bounded(cmd.query_async::<T>(&mut conn)).await;
        self.judge(out)
    }

    /// Runs a pipeline (one round trip) within the operation bound.
    pub async fn pipeline<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, ClusterError> {
        let mut conn = self.conn()?;
        let out = self.bounded(pipe.query_async::<T>(&mut conn)).await;
        self.judge(out)
    }

    /// Runs a Lua script (EVALSHA, loading it on NOSCRIPT) within the operation bound.
    pub async fn script<T: FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, ClusterError> {
        let mut conn = self.conn()?;
        let out = self.bounded(invocation.invoke_async::<T>(&mut conn)).await;
        self.judge(out)
    }

    fn conn(&self) -> Result<Conn, ClusterError> {
        match self.inner.conn.load_full() {
            Some(c) => Ok(Conn::clone(&c)),
            None => Err(ClusterError::Unavailable),
        }
    }

    async fn bounded<T>(
        &self,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<redis::RedisResult<T>, ClusterError> {
        tokio::time::timeout(self.inner.op_timeout, fut)
            .await
            .map_err(|_| ClusterError::Timeout(self.inner.config.op_timeout_ms))
    }

    fn judge<T>(
        &self,
        out: Result<redis::RedisResult<T>, ClusterError>,
    ) -> Result<T, ClusterError> {
        let err = match out {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if is_reply_error(&e) => return Err(ClusterError::Reply(e.to_string())),
            Ok(Err(e)) => ClusterError::Io(e.to_string()),
            Err(timeout) => timeout,
        };
        self.inner.failed_ops.fetch_add(1, Ordering::Relaxed);
        degrade(&self.inner, &err.to_string());
        self.inner.conn.store(None);
        self.inner.wake.notify_one();
        Err(err)
    }
}

/// An error Redis itself answered (the connection is fine).
fn is_reply_error(e: &redis::RedisError) -> bool {
    !(e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || e.is_cluster_error())
}

fn now_ms() -> u64 {
    tern_watchdog::clock::unix_ms()
}

fn degrade(inner: &Inner, why: &str) {
    let before = inner.state.swap(2, Ordering::AcqRel);
    if before != 2 {
        inner.since_ms.store(now_ms(), Ordering::Release);
        inner.events.emit(
            &catalog::CLUSTER_DEGRADED,
            fields!("node" => inner.node, "error" => why, "local_share" => inner.config.local_share),
        );
    }
}

fn mark_up(inner: &Inner) {
    let before = inner.state.swap(1, Ordering::AcqRel);
    if before != 1 {
        inner.since_ms.store(now_ms(), Ordering::Release);
        let first = !inner.ever_up.swap(true, Ordering::AcqRel);
        if first && before == 0 {
            inner.events.emit(
                &catalog::CLUSTER_CONNECTED,
                fields!("node" => inner.node, "node_id" => inner.config.node_id, "mode" => format!("{:?}", inner.config.mode).to_lowercase()),
            );
        } else {
            inner
                .events
                .emit(&catalog::CLUSTER_RECOVERED, fields!("node" => inner.node));
        }
    }
}

async fn supervise(inner: Arc<Inner>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if inner.conn.load().is_none() {
            let bound = inner.op_timeout.max(Duration::from_secs(1));
            let attempt = tokio::time::timeout(bound, connect(&inner.config)).await;
            match attempt {
                Ok(Ok(conn)) => {
                    inner.conn.store(Some(Arc::new(conn)));
                    mark_up(&inner);
                    backoff = Duration::from_millis(100);
                }
                Ok(Err(e)) => degrade(&inner, &e.to_string()),
                Err(_) => degrade(&inner, "connection timed out"),
            }
        }
        let wait = if inner.conn.load().is_some() {
            // Connected: sleep until an operation fails.
            Duration::from_secs(3600)
        } else {
            let w = backoff;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            w
        };
        tokio::select! {
            _ = inner.stop.notified() => return,
            _ = inner.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn connect(config: &ClusterConfig) -> redis::RedisResult<Conn> {
    let timeouts = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(config.op_timeout_ms.max(500))))
        .set_response_timeout(Some(Duration::from_millis(config.op_timeout_ms)));
    let conn = match config.mode {
        RedisMode::Standalone => {
            let url = config.redis.first().map(String::as_str).unwrap_or_default();
            let client = redis::Client::open(url)?;
            Conn::Single(
                client
                    .get_multiplexed_async_connection_with_config(&timeouts)
                    .await?,
            )
        }
        RedisMode::Sentinel => {
            let mut sentinel = redis::sentinel::SentinelClient::build(
                config.redis.clone(),
                config.sentinel_master.clone(),
                None,
                redis::sentinel::SentinelServerType::Master,
            )?;
            Conn::Single(sentinel.get_async_connection_with_config(&timeouts).await?)
        }
        RedisMode::Cluster => {
            let client = redis::cluster::ClusterClientBuilder::new(config.redis.clone())
                .connection_timeout(Duration::from_millis(config.op_timeout_ms.max(500)))
                .response_timeout(Duration::from_millis(config.op_timeout_ms))
                .build()?;
            Conn::Cluster(client.get_async_connection().await?)
        }
    };
    let mut probe = conn.clone();
    let _: String = redis::cmd("PING").query_async(&mut probe).await?;
    Ok(conn)
}
