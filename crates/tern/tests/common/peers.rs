//! Real peers for delivery scenarios: the scripted DNS server (`testpeers/dns_server.py`,
//! dnslib) and scriptable SMTP receivers (`testpeers/smtp_peer.py`, aiosmtpd), each a
//! child process on a loopback address, stopped by `Drop`. Waits are on the ready file
//! the peer writes once it listens, with a deadline; never a fixed sleep.

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Setup, require_python_modules, terminate};

/// A server that delivers: DNS from `dns`, retries after 1-2 s, MX hosts on `mx_port`,
/// plus `routes` (`[[route]]` tables) before the default `*` MX route.
pub fn delivering(dns: &DnsServer, mx_port: u16, routes: &str) -> Setup {
    delivering_with(dns, mx_port, "", routes)
}

/// [`delivering`] with more `[delivery]` keys.
pub fn delivering_with(dns: &DnsServer, mx_port: u16, delivery: &str, routes: &str) -> Setup {
    Setup::new()
        .dns(&dns.dns_section())
        .queue("[queue]\ndeliver = true\nmin_backoff_secs = 1\nmax_backoff_secs = 2\n")
        .section(&format!(
            "[delivery]\nconnect_timeout_secs = 2\ngreeting_timeout_secs = 3\ncommand_timeout_secs = 5\n{delivery}\n{routes}\n[[route]]\ndomains = [\"*\"]\ntransport = \"mx\"\nport = {mx_port}\n"
        ))
}

fn testpeer(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testpeers")
        .join(name)
}

fn wait_ready(file: &Path, child: &mut Child, what: &str) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(file)
            && let Ok(port) = text.trim().parse::<u16>()
        {
            return port;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before it was ready: {status}");
        }
        assert!(Instant::now() < deadline, "{what} not ready within 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The scripted DNS server with a zone the test can change.
pub struct DnsServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// `127.0.0.1:port` (UDP and TCP).
    pub addr: SocketAddr,
    zone: Value,
}

impl DnsServer {
    /// Starts with an empty zone.
    pub fn start() -> DnsServer {
        let python = require_python_modules(&["dnslib"]);
        let dir = tempfile::tempdir().expect("tempdir");
        let zone = json!({"negative_ttl": 60, "names": {}});
        let zone_path = dir.path().join("zone.json");
        std::fs::write(&zone_path, zone.to_string()).expect("zone");
        let ready = dir.path().join("ready");
        let mut child = Command::new(python)
            .arg(testpeer("dns_server.py"))
            .arg("--zone")
            .arg(&zone_path)
            .args(["--port", "0", "--ready-file"])
            .arg(&ready)
            .arg("--log")
            .arg(dir.path().join("queries.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("stderr")).expect("stderr"),
            ))
            .spawn()
            .expect("start dns_server.py");
        let port = wait_ready(&ready, &mut child, "dns_server.py");
        DnsServer {
            child: Some(child),
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            zone,
        }
    }

    /// The `[dns]` section that points Tern at this server.
    pub fn dns_section(&self) -> String {
        format!(
            "[dns]\nreverse_lookups = false\nnameservers = [\"{}\"]\ntimeout_ms = 2000\nfailure_ttl_secs = 1\n",
            self.addr
        )
    }

    /// Sets (replaces) one name's entry, e.g. `json!({"MX": [...]})`, atomically.
    pub fn set(&mut self, name: &str, entry: Value) {
        self.zone["names"][name] = entry;
        self.write_zone();
    }

    /// Removes a name (it becomes NXDOMAIN).
    pub fn remove(&mut self, name: &str) {
        if let Some(names) = self.zone["names"].as_object_mut() {
            names.remove(name);
        }
        self.write_zone();
    }

    /// An MX set: `(preference, exchange)` with a TTL.
    pub fn set_mx(&mut self, domain: &str, mx: &[(u16, &str)], ttl: u32) {
        let records: Vec<Value> = mx
            .iter()
            .map(|(p, e)| json!({"pref": p, "exchange": e, "ttl": ttl}))
            .collect();
        self.set(domain, json!({"MX": records}));
    }

    /// An A record.
    pub fn set_a(&mut self, host: &str, addr: IpAddr, ttl: u32) {
        self.set(host, json!({"A": [{"addr": addr.to_string(), "ttl": ttl}]}));
    }

    /// A TXT record made of these character-strings (each at most 255 octets).
    pub fn set_txt(&mut self, name: &str, strings: &[String], ttl: u32) {
        self.set(name, json!({"TXT": [{"strings": strings, "ttl": ttl}]}));
    }

    fn write_zone(&self) {
        let tmp = self.dir.path().join("zone.json.tmp");
        std::fs::write(&tmp, self.zone.to_string()).expect("write zone");
        std::fs::rename(&tmp, self.dir.path().join("zone.json")).expect("rename zone");
    }

    /// How many queries for `name` (any type) reached the server.
    pub fn queries_for(&self, name: &str) -> usize {
        std::fs::read_to_string(self.dir.path().join("queries.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some(name))
            .count()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            terminate(c);
        }
    }
}

/// One message received by an [`SmtpPeer`].
#[derive(Debug, Clone)]
pub struct Received {
    /// The envelope line the peer wrote.
    pub meta: Value,
    /// The message bytes as received (dot-unstuffed).
    pub content: Vec<u8>,
}

impl Received {
    /// Recipients of this transaction.
    pub fn rcpts(&self) -> Vec<String> {
        self.meta["rcpt_tos"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The envelope sender.
    pub fn mail_from(&self) -> String {
        self.meta["mail_from"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// A scriptable SMTP receiver on a loopback address.
pub struct SmtpPeer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Where it listens.
    pub addr: SocketAddr,
    ip: IpAddr,
    port: u16,
    behaviours: Vec<String>,
    tls: Option<(String, String)>,
}

impl SmtpPeer {
    /// Starts a peer on `ip`, port chosen by the kernel, with these behaviours.
    pub fn start(ip: &str, behaviours: &[&str]) -> SmtpPeer {
        SmtpPeer::start_on(ip, 0, behaviours)
    }

    /// Starts a peer on `ip:port` (`0` = any free port).
    pub fn start_on(ip: &str, port: u16, behaviours: &[&str]) -> SmtpPeer {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("mail")).expect("maildir");
        let ip: IpAddr = ip.parse().expect("ip");
        let mut peer = SmtpPeer {
            child: None,
            dir,
            addr: SocketAddr::new(ip, port),
            ip,
            port,
            behaviours: behaviours.iter().map(|b| b.to_string()).collect(),
            tls: None,
        };
        peer.spawn();
        peer
    }

    /// Starts a peer that offers STARTTLS with this certificate and key.
    pub fn start_on_with_tls(ip: &str, port: u16, cert: &str, key: &str) -> SmtpPeer {
        SmtpPeer::start_on_with_tls_and(ip, port, cert, key, &[])
    }

    /// [`SmtpPeer::start_on_with_tls`] with more behaviours (`tempfail-rcpt=...`).
    pub fn start_on_with_tls_and(
        ip: &str,
        port: u16,
        cert: &str,
        key: &str,
        behaviours: &[&str],
    ) -> SmtpPeer {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("mail")).expect("maildir");
        let ip: IpAddr = ip.parse().expect("ip");
        let mut peer = SmtpPeer {
            child: None,
            dir,
            addr: SocketAddr::new(ip, port),
            ip,
            port,
            behaviours: std::iter::once("starttls")
                .chain(behaviours.iter().copied())
                .map(str::to_string)
                .collect(),
            tls: None,
        };
        peer.tls = Some((cert.to_string(), key.to_string()));
        peer.spawn();
        peer
    }

    fn spawn(&mut self) {
        let python = require_python_modules(&["aiosmtpd"]);
        let ready = self.dir.path().join("ready");
        let _ = std::fs::remove_file(&ready);
        let mut cmd = Command::new(python);
        cmd.arg(testpeer("smtp_peer.py"))
            .arg("--listen")
            .arg(SocketAddr::new(self.ip, self.port).to_string())
            .arg("--maildir")
            .arg(self.dir.path().join("mail"))
            .arg("--ready-file")
            .arg(&ready)
            .arg("--log")
            .arg(self.dir.path().join("peer.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(self.dir.path().join("stderr")).expect("stderr"),
            ));
        for b in &self.behaviours {
            cmd.arg("--behaviour").arg(b);
        }
        if let Some((cert, key)) = &self.tls {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        let mut child = cmd.spawn().expect("start smtp_peer.py");
        let port = wait_ready(&ready, &mut child, "smtp_peer.py");
        self.port = port;
        self.addr = SocketAddr::new(self.ip, port);
        self.child = Some(child);
    }

    /// Waits until the peer's log contains `text`.
    pub fn wait_for_log(&self, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "peer {} did not log {text:?} within {limit:?}; its log:\n{}",
                self.addr,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the peer (its address then refuses connections).
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            terminate(c);
        }
    }

    /// Restarts it on the same address and port with new behaviours.
    pub fn restart(&mut self, behaviours: &[&str]) {
        self.stop();
        self.behaviours = behaviours.iter().map(|b| b.to_string()).collect();
        self.spawn();
    }

    /// Every message received so far.
    pub fn received(&self) -> Vec<Received> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.dir.path().join("mail")) else {
            return out;
        };
        let mut names: Vec<_> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !n.starts_with('.'))
            })
            .collect();
        names.sort();
        for p in names {
            let Ok(bytes) = std::fs::read(&p) else {
                continue;
            };
            let Some(nl) = bytes.iter().position(|b| *b == b'\n') else {
                continue;
            };
            let Ok(meta) = serde_json::from_slice(&bytes[..nl]) else {
                continue;
            };
            out.push(Received {
                meta,
                content: bytes[nl + 1..].to_vec(),
            });
        }
        out
    }

    /// Its protocol log so far (aiosmtpd's debug log: every command line received).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("peer.log")).unwrap_or_default()
    }

    /// How many messages arrived, counted from the file names alone (cheap enough to poll
    /// while thousands arrive).
    pub fn count(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("mail")).map_or(0, |rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
    }

    /// Recipients delivered here, over all messages.
    pub fn delivered_rcpts(&self) -> usize {
        self.received().iter().map(|r| r.rcpts().len()).sum()
    }

    /// Waits until `n` messages arrived.
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "peer {} got {} of {n} messages within {limit:?}; its log:\n{}",
                self.addr,
                got.len(),
                std::fs::read_to_string(self.dir.path().join("peer.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for SmtpPeer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends one message with full MAIL and RCPT command lines (for ESMTP parameters);
/// returns the queue id.
pub fn send_with(addr: SocketAddr, mail: &str, rcpts: &[&str], content: &[u8]) -> String {
    let mut c = super::SmtpClient::connect(addr).expect("connect");
    c.hello("client.test");
    let r = c.command(mail).expect("MAIL");
    assert_eq!(r.code, 250, "{mail}: {}", r.text());
    for line in rcpts {
        let r = c.command(line).expect("RCPT");
        assert_eq!(r.code, 250, "{line}: {}", r.text());
    }
    let r = c.command("DATA").expect("DATA");
    assert_eq!(r.code, 354, "{}", r.text());
    c.write_raw(&super::dot_stuff(content)).expect("data");
    let r = c.read_reply().expect("reply");
    let _ = c.command("QUIT");
    r.queued_id()
        .unwrap_or_else(|| panic!("not queued: {}", r.text()))
}

/// Parses a DSN with Python's `email` package (policy default) and returns, as JSON:
/// `content_type`, `report_type`, `to`, `from`, `subject`, `parts` (content types),
/// `text` (the first text/plain part), `per_message` (dict) and `recipients` (list of
/// dicts) from the message/delivery-status part, and `returned` (the third part as text).
pub fn parse_dsn_with_python(dsn: &[u8]) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dsn.eml");
    std::fs::write(&path, dsn).expect("write dsn");
    let script = r#"
import email, email.policy, json, sys
m = email.message_from_bytes(open(sys.argv[1], 'rb').read(), policy=email.policy.default)
parts = m.get_payload()
out = {
  "content_type": m.get_content_type(),
  "report_type": m.get_param("report-type"),
  "to": str(m["To"]), "from": str(m["From"]), "subject": str(m["Subject"]),
  "auto_submitted": str(m["Auto-Submitted"]),
  "parts": [p.get_content_type() for p in parts],
}
out["text"] = parts[0].get_content()
status = parts[1].get_payload()
out["per_message"] = {k: str(v) for k, v in status[0].items()}
out["recipients"] = [{k: str(v) for k, v in b.items()} for b in status[1:]]
third = parts[2]
if third.get_content_type() == "message/rfc822":
    out["returned"] = third.get_payload()[0].as_bytes().decode("utf-8", "replace")
else:
    out["returned"] = third.get_payload(decode=True).decode("utf-8", "replace")
print(json.dumps(out))
"#;
    let out = super::python(
        script,
        &[path.to_str().expect("path")],
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "python could not parse the DSN: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(dsn)
    );
    serde_json::from_slice(&out.stdout).expect("json from python")
}

impl SmtpPeer {
    /// Connections open now (closed ones are counted when the peer sees them close).
    pub fn open_connections(&self) -> u64 {
        let v: Value = std::fs::read(self.dir.path().join("connections.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        v["open"].as_u64().unwrap_or(0)
    }

    /// `(most connections open at once, connections accepted)` so far.
    pub fn connections(&self) -> (u64, u64) {
        let v: Value = std::fs::read(self.dir.path().join("connections.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        (
            v["max"].as_u64().unwrap_or(0),
            v["total"].as_u64().unwrap_or(0),
        )
    }
}

/// Starts Postfix's smtp-source: `messages` messages of 1 KiB over 20 sessions from
/// `source@client.test` to `to`, against `server` (`host:port`). Finish with
/// [`finish_smtp_source`].
pub fn spawn_smtp_source(server: &str, messages: usize, to: &str) -> Child {
    let smtp_source = super::require_program("smtp-source");
    Command::new(&smtp_source)
        .args(["-s", "20", "-m", &messages.to_string(), "-l", "1024"])
        .args(["-M", "client.test", "-f", "source@client.test", "-t", to])
        .arg(server)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("smtp-source")
}

/// Waits for smtp-source to end; fails the test unless it succeeded with nothing on
/// stderr (every message got its 250).
pub fn finish_smtp_source(mut source: Child) {
    use std::io::Read;
    let status = source.wait().expect("smtp-source");
    let mut err = String::new();
    if let Some(mut e) = source.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(
        status.success() && err.trim().is_empty(),
        "smtp-source: {status} {err}"
    );
}
