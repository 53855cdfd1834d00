//! MTA-STS scenario helpers: a test CA (rcgen) for the policy hosts and the MX hosts, the
//! HTTPS policy server (`testpeers/mtasts_policy_server.py`, Python's http.server over
//! ssl) on `<ip>:443`, and the DNS records a policy needs (`_mta-sts` TXT, the A of
//! `mta-sts.<domain>`).
//!
//! Each scenario uses its own loopback address for its policy server (port 443 is fixed
//! by RFC 8461): 127.0.1.51 and up. The server is stopped when dropped.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::peers::DnsServer;
use super::{require_python_modules, terminate, toml_str};

/// A CA whose certificate Tern is told to trust (`[delivery] ca_file` for the MX hosts,
/// `[mta_sts] ca_file` for the policy hosts).
pub struct TestCa {
    dir: tempfile::TempDir,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate (PEM file).
    pub ca_file: PathBuf,
    count: std::cell::Cell<u32>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Tern MTA-STS test CA");
        let ca = params.self_signed(&key).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        TestCa {
            dir,
            issuer: rcgen::Issuer::new(params, key),
            ca_file,
            count: std::cell::Cell::new(0),
        }
    }

    /// A leaf certificate for `names` (expired a long time ago when asked), as PEM files:
    /// `(cert, key)`.
    pub fn leaf(&self, names: &[&str], expired: bool) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        if expired {
            params.not_before = time::OffsetDateTime::from_unix_timestamp(1_500_000_000).unwrap();
            params.not_after = time::OffsetDateTime::from_unix_timestamp(1_600_000_000).unwrap();
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let n = self.count.get() + 1;
        self.count.set(n);
        let c = self.dir.path().join(format!("leaf{n}.pem"));
        let k = self.dir.path().join(format!("leaf{n}.key"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c.display().to_string(), k.display().to_string())
    }

    /// The `ca_file` line for `[delivery]`.
    pub fn delivery_keys(&self) -> String {
        format!(
            "ca_file = {}\n",
            toml_str(&self.ca_file.display().to_string())
        )
    }

    /// The `[mta_sts]` section trusting this CA, with a short fetch bound, allowing the
    /// policy servers' loopback addresses (refused by default).
    pub fn mta_sts_section(&self, fetch_timeout_secs: u64) -> String {
        format!(
            "[mta_sts]\nca_file = {}\nfetch_timeout_secs = {fetch_timeout_secs}\nallow_private_addresses = true\n",
            toml_str(&self.ca_file.display().to_string())
        )
    }
}

/// A policy file's text.
pub fn policy(mode: &str, mx: &[&str], max_age: u64) -> String {
    let mut t = format!("version: STSv1\r\nmode: {mode}\r\n");
    for m in mx {
        t.push_str(&format!("mx: {m}\r\n"));
    }
    t.push_str(&format!("max_age: {max_age}\r\n"));
    t
}

/// Publishes `_mta-sts.<domain>` TXT with `id` and `mta-sts.<domain>` A → `ip`.
pub fn publish(dns: &mut DnsServer, domain: &str, id: &str, ip: IpAddr) {
    dns.set_txt(
        &format!("_mta-sts.{domain}"),
        &[format!("v=STSv1; id={id};")],
        1,
    );
    dns.set_a(&format!("mta-sts.{domain}"), ip, 1);
}

/// The HTTPS policy server for one domain.
pub struct PolicyServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    ip: IpAddr,
    cert: (String, String),
}

impl PolicyServer {
    /// Serves `policy` for `domains` on `ip:443` with a certificate naming
    /// `mta-sts.<domain>` for each.
    pub fn start(ip: &str, ca: &TestCa, domains: &[&str], policy: &str) -> PolicyServer {
        let names: Vec<String> = domains.iter().map(|d| format!("mta-sts.{d}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.txt"), policy).unwrap();
        let mut s = PolicyServer {
            child: None,
            dir,
            ip: ip.parse().unwrap(),
            cert: ca.leaf(&names, false),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let python = require_python_modules(&["ssl", "http.server"]);
        let ready = self.dir.path().join("ready");
        let _ = std::fs::remove_file(&ready);
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testpeers/mtasts_policy_server.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg("--listen")
            .arg(format!("{}:443", self.ip))
            .arg("--cert")
            .arg(&self.cert.0)
            .arg("--key")
            .arg(&self.cert.1)
            .arg("--policy-file")
            .arg(self.dir.path().join("policy.txt"))
            .arg("--ready-file")
            .arg(&ready)
            .arg("--log")
            .arg(self.dir.path().join("requests.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(self.dir.path().join("stderr")).unwrap(),
            ))
            .spawn()
            .expect("start mtasts_policy_server.py");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "policy server exited: {status}: {}",
                    std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "policy server not ready within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// Serves `text` from now on.
    pub fn set_policy(&self, text: &str) {
        let tmp = self.dir.path().join("policy.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("policy.txt")).unwrap();
    }

    /// Accepts requests and never answers them from now on.
    pub fn hang(&self) {
        self.set_policy("HANG");
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("requests.log"))
            .unwrap_or_default()
            .lines()
            .count()
    }

    /// Stops the server (port 443 of its address then refuses connections).
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            terminate(c);
        }
    }
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `tls` block of destination `name` (`mx:<domain>`) in `tern dest list --json`, once
/// it has one; panics after `limit`.
pub fn dest_tls(tern: &super::Tern, name: &str, limit: Duration) -> serde_json::Value {
    super::admin::Admin::of(tern);
    let deadline = Instant::now() + limit;
    loop {
        let out = super::run(
            &mut tern.tern_command(&["dest", "list", "--json"]),
            Duration::from_secs(30),
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "tern dest list --json: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        let found = v["destinations"]
            .as_array()
            .and_then(|l| l.iter().find(|d| d["name"] == name))
            .map(|d| d["tls"].clone())
            .filter(|t| !t.is_null());
        if let Some(tls) = found {
            return tls;
        }
        assert!(
            Instant::now() < deadline,
            "no TLS decision shown for {name} within {limit:?}: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The tracking records of queue id `id` for event `event` (`delivery.tls.policy`), once
/// there is at least one (`tern track --json`); panics after `limit`.
pub fn tracked(
    tern: &super::Tern,
    id: &str,
    event: &str,
    limit: Duration,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + limit;
    loop {
        let out = super::run(
            &mut tern.tern_command(&["track", "--json", id]),
            Duration::from_secs(30),
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let found: Vec<serde_json::Value> = serde_json::from_str::<serde_json::Value>(text.trim())
            .ok()
            .and_then(|v| v["records"].as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r["event"] == event)
            .collect();
        if !found.is_empty() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no {event} tracked for {id} within {limit:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
