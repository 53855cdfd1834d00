//! Several Tern nodes sharing one real `redis-server` on loopback (issue 20,
//! docs/CLUSTER.md).
//!
//! - [`RedisServer`]: a `redis-server` child on a free port of 127.0.0.1, without
//!   persistence; it can be killed (SIGKILL) and restarted on the same port, and is
//!   stopped when dropped.
//! - [`start_nodes`]: `n` nodes, node `i` (from 0) named `node<i+1>` with number `i+1`,
//!   its SMTP and admin listeners on 127.0.2.`i+1` (a host of its own), all sharing one
//!   admin token (one token per cluster, docs/CLUSTER.md) and the `[cluster]` section of
//!   [`cluster_section`] with short heartbeats.
//! - [`wait_for_members`]: polls every node's `/api/v1/cluster` until each sees every
//!   node alive.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::admin::Admin;
use super::{Listener, Setup, Tern, free_port, require_program};

/// The admin token every test cluster shares.
pub const CLUSTER_TOKEN: &str = "cluster-test-token-0123456789abcdef";

/// A `redis-server` child on loopback.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one on a free port and waits (bounded) until it answers PING.
    pub fn start() -> RedisServer {
        require_program("redis-server");
        require_program("redis-cli");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let mut r = RedisServer {
            child: None,
            port,
            dir,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if self.cli(&["PING"]).trim() == "PONG" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli -p <port> args...` (bounded) and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = super::try_run(
            Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(args),
            Duration::from_secs(10),
        );
        match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
            Err(_) => String::new(),
        }
    }

    /// Kills it with SIGKILL (its data is lost: no persistence).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (after [`RedisServer::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `[cluster]` section of node `name` numbered `id`: heartbeats every 200 ms, dead
/// after 2 s, plus `extra` keys.
pub fn cluster_section(redis: &RedisServer, name: &str, id: u16, extra: &str) -> String {
    format!(
        "[cluster]\nenabled = true\nnode_name = \"{name}\"\nnode_id = {id}\nredis = [\"{}\"]\nheartbeat_ms = 200\ndead_after_ms = 2000\n{extra}\n",
        redis.url()
    )
}

/// The loopback address of node `i` (from 0): 127.0.2.`i+1`.
pub fn node_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 2, u8::try_from(i + 1).unwrap_or(250)))
}

/// Starts `n` nodes: node `i` from `setup(i)` with its listener `smtp` and its admin
/// listener moved to [`node_ip`]`(i)`, the shared token, and [`cluster_section`] with
/// `extra` cluster keys.
pub fn start_nodes(
    redis: &RedisServer,
    n: usize,
    extra: &str,
    setup: impl Fn(usize) -> Setup,
) -> Vec<Tern> {
    (0..n)
        .map(|i| {
            let ip = node_ip(i);
            let id = u16::try_from(i + 1).unwrap_or(1);
            setup(i)
                .listeners(vec![Listener::new("smtp", ip)])
                .admin(&format!(
                    "[admin]\nlisten = \"{ip}:0\"\ntoken = \"{CLUSTER_TOKEN}\"\n"
                ))
                .section(&cluster_section(
                    redis,
                    &format!("node{}", i + 1),
                    id,
                    extra,
                ))
                .start()
        })
        .collect()
}

/// Waits until every node's `/api/v1/cluster` lists `n` nodes alive.
pub fn wait_for_members(nodes: &[Tern], n: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    for t in nodes {
        let admin = Admin::of(t);
        loop {
            let a = admin.get("/api/v1/cluster");
            let alive = a.json()["nodes"]
                .as_array()
                .map(|v| v.iter().filter(|x| x["alive"] == true).count())
                .unwrap_or(0);
            if a.status == 200 && alive == n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} does not see {n} nodes alive: {} {}",
                t.addr(),
                a.status,
                a.body
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The SMTP address of every node.
pub fn smtp_addrs(nodes: &[Tern]) -> Vec<SocketAddr> {
    nodes.iter().map(Tern::addr).collect()
}
