//! Shared harness of the integration tests: a scripted DNS server on loopback
//! (`testpeers/dns_server.py`), started per test and killed when the guard drops.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tern_route::dns::{DnsConfig, Resolver};

/// How long any wait in these tests may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// A running `dns_server.py`; killed on drop.
pub struct DnsPeer {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl DnsPeer {
    /// Starts the server with `zone` and waits (bounded) for its ready file.
    pub fn start(zone: &Value) -> DnsPeer {
        let dir = tempfile::tempdir().expect("temp dir");
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testpeers/dns_server.py");
        let ready = dir.path().join("ready");
        let mut peer = DnsPeer {
            child: Command::new("python3")
                .arg(&script)
                .arg("--zone")
                .arg(dir.path().join("zone.json"))
                .arg("--port")
                .arg("0")
                .arg("--ready-file")
                .arg(&ready)
                .arg("--log")
                .arg(dir.path().join("queries.log"))
                .stdin(Stdio::null())
                .spawn()
                .expect("python3 testpeers/dns_server.py"),
            addr: "127.0.0.1:0".parse().expect("addr"),
            dir,
        };
        peer.set_zone(zone);
        let start = Instant::now();
        let port: u16 = loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                break text.trim().parse().expect("port in ready file");
            }
            if let Ok(Some(status)) = peer.child.try_wait() {
                panic!("dns_server.py exited early: {status}");
            }
            assert!(
                start.elapsed() < DEADLINE,
                "dns_server.py not ready in time"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        peer.addr = SocketAddr::from(([127, 0, 0, 1], port));
        peer
    }

    /// Replaces the zone atomically (temp file + rename): the server re-reads it.
    pub fn set_zone(&self, zone: &Value) {
        let tmp = self.dir.path().join("zone.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(zone).expect("json")).expect("write zone");
        std::fs::rename(&tmp, self.dir.path().join("zone.json")).expect("rename zone");
    }

    /// Lines of the query log: `proto name type`.
    pub fn query_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("queries.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// How many queries for `name`/`qtype` arrived (over UDP and TCP).
    pub fn queries(&self, name: &str, qtype: &str) -> usize {
        self.query_lines()
            .iter()
            .filter(|l| {
                let mut f = l.split(' ').skip(1);
                f.next() == Some(name) && f.next() == Some(qtype)
            })
            .count()
    }

    /// A resolver asking only this server, with `tune` applied to the settings.
    pub fn resolver(&self, tune: impl FnOnce(&mut DnsConfig)) -> Resolver {
        let mut cfg = DnsConfig {
            nameservers: vec![self.addr],
            timeout: Duration::from_secs(3),
            ..DnsConfig::default()
        };
        tune(&mut cfg);
        Resolver::new(&cfg).expect("resolver")
    }
}

impl Drop for DnsPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `probe` every 50 ms until it returns `Some`, failing the test after [`DEADLINE`].
pub async fn poll_until<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
