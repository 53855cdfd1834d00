//! The harness of tern-cluster's tests against a real `redis-server` (installed by
//! scripts/test.sh): a server child on a loopback address and free port, stopped when
//! dropped; a node's `[cluster]` section for it; a bounded wait for a condition.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tern_cluster::ClusterConfig;

/// A `redis-server` child without persistence.
pub struct Redis {
    child: Child,
}

impl Redis {
    /// Starts one on 127.0.0.1:`port` and waits (bounded) until it accepts connections.
    pub fn start(dir: &Path, port: u16) -> Redis {
        Redis::start_on("127.0.0.1", dir, port)
    }

    /// Starts one on `ip`:`port`.
    pub fn start_on(ip: &str, dir: &Path, port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--bind", ip, "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        let r = Redis { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((ip, port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    free_port_on("127.0.0.1")
}

/// A port free on `ip` a moment ago.
pub fn free_port_on(ip: &str) -> u16 {
    let l = TcpListener::bind((ip, 0)).expect("bind");
    l.local_addr().expect("addr").port()
}

/// Node `name` numbered `id` against 127.0.0.1:`port`: heartbeats every 100 ms, dead
/// after 600 ms.
pub fn config(port: u16, name: &str, id: u16) -> ClusterConfig {
    ClusterConfig {
        enabled: true,
        node_name: name.into(),
        node_id: id,
        redis: vec![format!("redis://127.0.0.1:{port}")],
        heartbeat_ms: 100,
        dead_after_ms: 600,
        ..ClusterConfig::default()
    }
}

/// Polls `f` every 20 ms until it holds, failing the test after 15 s.
pub async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
