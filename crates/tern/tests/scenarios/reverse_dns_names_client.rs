//! Tern names each SMTP client by forward-confirmed reverse DNS, asked of a real DNS
//! server (dnslib's zoneresolver): a PTR whose name resolves back to the client gives
//! `(client.example.test [192.0.2.2])` in the Received header and `client_name` in the
//! session-ended event; a PTR whose forward lookup does not match gives `unknown`. A name
//! server that never answers delays neither the greeting nor the message beyond the lookup
//! timeout.
//!
//! Loopback clients are always `localhost` without a query, so a real lookup needs a
//! client on a non-loopback address. Each test therefore creates its own network namespace
//! (`ip netns`; the test must run as root) and puts TEST-NET-1 addresses (192.0.2.2,
//! 192.0.2.3) on that namespace's loopback. The name server, `tern serve`, the readiness
//! probes and the SMTP clients all run inside it through `ip netns exec`, so nothing
//! reaches the host's network, let alone leaves the machine. The namespace is deleted, and
//! whatever still runs in it killed, when the test ends, pass or fail.

#![allow(clippy::unwrap_used)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tern_spool::{ListedMessage, Spool, StoredMessage};

use crate::common::{
    HOSTNAME, POLL, START_DEADLINE, require_python_modules, run, split_received, tern_bin, toml_str,
};

/// The client whose PTR name resolves back to it.
const CLIENT: &str = "192.0.2.2";
/// The client whose PTR name resolves to another address.
const LIAR: &str = "192.0.2.3";
/// Where the name server listens inside the namespace.
const DNS_PORT: u16 = 53;
/// Where Tern listens inside the namespace (every port is free in a fresh namespace).
const SMTP_PORT: u16 = 25;
/// Limit for each `ip` command.
const IP_LIMIT: Duration = Duration::from_secs(10);
/// Prefix of the namespaces this test creates: `tern-rdns-<pid>-<n>`.
const NS_PREFIX: &str = "tern-rdns-";

const ZONE: &str = "\
$TTL 60
2.2.0.192.in-addr.arpa. IN PTR client.example.test.
client.example.test. IN A 192.0.2.2
3.2.0.192.in-addr.arpa. IN PTR liar.example.test.
liar.example.test. IN A 192.0.2.99
";

/// Readiness probe, run inside the namespace: `tcp HOST PORT SECS` waits until a TCP
/// connection is accepted; `dns HOST PORT SECS NAME` until an A query for NAME is answered
/// over UDP and TCP connections are accepted. Exits 0 when ready, non-zero at the deadline.
const PROBE: &str = r#"
import socket, sys, time
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
deadline = time.monotonic() + float(sys.argv[4])
def tcp():
    socket.create_connection((host, port), timeout=0.2).close()
def dns():
    from dnslib import DNSRecord
    answer = DNSRecord.parse(DNSRecord.question(sys.argv[5], "A").send(host, port, timeout=0.2))
    assert answer.rr, answer
    tcp()
while True:
    try:
        (tcp if mode == "tcp" else dns)()
        sys.exit(0)
    except OSError as e:
        if time.monotonic() > deadline:
            sys.exit(f"{mode} {host}:{port} not ready: {e!r}")
        time.sleep(0.01)
"#;

/// A "name server" that receives queries on UDP and never answers. Writes `bound` to the
/// log file once its socket is bound, then one line of hex per datagram received.
const SILENT: &str = r#"
import socket, sys
host, port, log = sys.argv[1], int(sys.argv[2]), open(sys.argv[3], "w")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((host, port))
print("bound", file=log, flush=True)
while True:
    data, _ = s.recvfrom(65535)
    print(data.hex(), file=log, flush=True)
"#;

/// Sends one message with smtplib from SOURCE (bound before connecting), timing the
/// greeting and the final reply to DATA from the start of the connection; prints JSON.
const SEND_FROM: &str = r#"
import json, smtplib, sys, time
host, port, source, rcpt = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = smtplib.SMTP(local_hostname="helo.client.test", timeout=30, source_address=(source, 0))
start = time.monotonic()
code, msg = s.connect(host, port)
greeting = time.monotonic() - start
assert code == 220, (code, msg)
code, msg = s.ehlo()
assert code == 250, (code, msg)
code, msg = s.mail("s@client.test")
assert code == 250, (code, msg)
code, msg = s.rcpt(rcpt)
assert code == 250, (code, msg)
code, msg = s.data(b"Subject: rdns\r\n\r\nfrom " + source.encode() + b"\r\n")
queued = time.monotonic() - start
assert code == 250, (code, msg)
s.quit()
print(json.dumps({"greeting_secs": greeting, "queued_secs": queued, "reply": msg.decode()}))
"#;

/// iproute2's `ip`; fails the test clearly when it is missing.
fn ip_program() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join("ip"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "this test needs iproute2's `ip` (not on PATH, /usr/sbin or /sbin): install the \
                 `iproute2` package; the test creates its own network namespace, as root"
            )
        })
}

/// Kills every process inside namespace `name`, then deletes it. Never panics.
fn kill_all_and_delete(ip: &Path, name: &str) -> Result<(), String> {
    let pids = crate::common::try_run(Command::new(ip).args(["netns", "pids", name]), IP_LIMIT)?;
    for pid in String::from_utf8_lossy(&pids.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<libc::pid_t>().ok())
    {
        // SAFETY: kill(2) has no memory-safety requirements; the pid was listed as inside
        // this test's namespace.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let del = crate::common::try_run(Command::new(ip).args(["netns", "del", name]), IP_LIMIT)?;
    if del.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip netns del {name}: {}",
            String::from_utf8_lossy(&del.stderr).trim()
        ))
    }
}

/// Deletes namespaces left by earlier runs of this test whose process is gone (killed
/// before its guards ran).
fn remove_stale_namespaces(ip: &Path) {
    let Ok(list) = crate::common::try_run(Command::new(ip).args(["netns", "list"]), IP_LIMIT)
    else {
        return;
    };
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(NS_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = kill_all_and_delete(ip, name);
        }
    }
}

/// A network namespace of this test, loopback up. On drop, every process still inside is
/// killed and the namespace deleted.
struct Netns {
    ip: PathBuf,
    name: String,
}

impl Netns {
    fn create() -> Netns {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let ip = ip_program();
        remove_stale_namespaces(&ip);
        let name = format!(
            "{NS_PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        match crate::common::try_run(Command::new(&ip).args(["netns", "add", &name]), IP_LIMIT) {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "cannot create network namespace {name} ({}): {}\nthis test creates its own \
                 network namespace and must run as root (CAP_SYS_ADMIN)",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => panic!("cannot create network namespace {name}: {e}"),
        }
        let ns = Netns { ip, name };
        ns.ip_inside(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip netns exec NAME program`.
    fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new(&self.ip);
        c.args(["netns", "exec"]).arg(&self.name).arg(program);
        c
    }

    /// Runs `ip ARGS` inside the namespace; panics unless it succeeds.
    fn ip_inside(&self, args: &[&str]) {
        let out = run(self.command(&self.ip).args(args), IP_LIMIT);
        assert!(
            out.status.success(),
            "ip netns exec {} ip {}: {}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Adds `ip`/32 to the namespace's loopback.
    fn add_address(&self, ip: &str) {
        self.ip_inside(&["addr", "add", &format!("{ip}/32"), "dev", "lo"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = kill_all_and_delete(&self.ip, &self.name) {
            eprintln!("warning: network namespace {} not removed: {e}", self.name);
        }
    }
}

/// A process started inside the namespace, its output in `log`. Stopped on drop (SIGTERM,
/// SIGKILL after 10 s) and reaped.
struct Proc {
    what: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(what: &'static str, cmd: &mut Command, log: PathBuf) -> Proc {
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Proc {
            what,
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the process's output when it has exited.
    fn assert_running(&mut self) {
        let status = self.child.as_mut().unwrap().try_wait().unwrap();
        if let Some(status) = status {
            self.child = None;
            panic!("{} exited ({status}):\n{}", self.what, self.log());
        }
    }

    fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            crate::common::terminate(c);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What one SMTP client saw.
struct Sent {
    greeting: Duration,
    queued: Duration,
    id: String,
}

/// One test's world: a namespace, a directory, a peer (name server) and Tern. On failure
/// the logs are printed and the directory kept.
struct Scene {
    ns: Netns,
    dir: Option<tempfile::TempDir>,
    python: PathBuf,
    peer: Option<Proc>,
    tern: Option<Proc>,
}

impl Scene {
    /// A fresh namespace with `addresses` on its loopback.
    fn new(addresses: &[&str]) -> Scene {
        let ns = Netns::create();
        for a in addresses {
            ns.add_address(a);
        }
        Scene {
            ns,
            dir: Some(
                tempfile::Builder::new()
                    .prefix("tern-rdns-")
                    .tempdir()
                    .unwrap(),
            ),
            python: require_python_modules(&["dnslib"]),
            peer: None,
            tern: None,
        }
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    fn peer_log(&self) -> String {
        self.peer.as_ref().map(Proc::log).unwrap_or_default()
    }

    /// Runs the probe inside the namespace until it succeeds, failing when `proc` exits
    /// or after [`START_DEADLINE`].
    fn wait_ready(ns: &Netns, python: &Path, proc: &mut Proc, probe: &[&str]) {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            proc.assert_running();
            let out = run(
                ns.command(python).arg("-c").arg(PROBE).args(probe),
                Duration::from_secs(20),
            );
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready within {START_DEADLINE:?}: {}\n--- its output ---\n{}",
                proc.what,
                String::from_utf8_lossy(&out.stderr),
                proc.log()
            );
        }
    }

    /// dnslib's zone resolver serving [`ZONE`] on 127.0.0.1:53, UDP and TCP.
    fn start_zone_server(&mut self) {
        let zone = self.dir().join("test.zone");
        std::fs::write(&zone, ZONE).unwrap();
        let mut dns = Proc::spawn(
            "dnslib.zoneresolver",
            self.ns
                .command(&self.python)
                .args(["-u", "-m", "dnslib.zoneresolver", "--zone"])
                .arg(&zone)
                .args(["--address", "127.0.0.1", "--port", &DNS_PORT.to_string()])
                .arg("--tcp"),
            self.dir().join("dnslib.log"),
        );
        let port = DNS_PORT.to_string();
        Scene::wait_ready(
            &self.ns,
            &self.python,
            &mut dns,
            &["dns", "127.0.0.1", &port, "1", "client.example.test"],
        );
        self.peer = Some(dns);
    }

    /// The [`SILENT`] name server on UDP 127.0.0.1:53; returns the file it logs queries
    /// to.
    fn start_silent_server(&mut self) -> PathBuf {
        let queries = self.dir().join("queries.hex");
        let mut silent = Proc::spawn(
            "silent name server",
            self.ns
                .command(&self.python)
                .arg("-c")
                .arg(SILENT)
                .args(["127.0.0.1", &DNS_PORT.to_string()])
                .arg(&queries),
            self.dir().join("silent.log"),
        );
        let deadline = Instant::now() + START_DEADLINE;
        while !std::fs::read_to_string(&queries)
            .unwrap_or_default()
            .starts_with("bound\n")
        {
            silent.assert_running();
            assert!(
                Instant::now() < deadline,
                "the silent name server did not bind within {START_DEADLINE:?}"
            );
            std::thread::sleep(POLL);
        }
        self.peer = Some(silent);
        queries
    }

    /// `tern serve` inside the namespace, asking 127.0.0.1:53 for client names.
    fn start_tern(&mut self, lookup_timeout_ms: u64) {
        let config = format!(
            "[server]\nhostname = {}\ndata_dir = {}\nlog_level = \"info\"\nlog_stderr = true\n\
             shutdown_grace_secs = 5\n\n\
             [dns]\nnameservers = [\"127.0.0.1:{DNS_PORT}\"]\nreverse_lookups = true\n\
             client_lookup_timeout_ms = {lookup_timeout_ms}\n\n\
             [queue]\ndeliver = false\n\n\
             [[listener]]\nname = \"smtp\"\naddress = \"127.0.0.1:{SMTP_PORT}\"\n",
            toml_str(HOSTNAME),
            toml_str(&self.data_dir().display().to_string()),
        );
        let config_path = self.dir().join("tern.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut tern = Proc::spawn(
            "tern serve",
            self.ns
                .command(tern_bin())
                .current_dir(self.dir())
                .arg("serve")
                .arg("--config")
                .arg(&config_path),
            self.dir().join("tern.log"),
        );
        let port = SMTP_PORT.to_string();
        Scene::wait_ready(
            &self.ns,
            &self.python,
            &mut tern,
            &["tcp", "127.0.0.1", &port, "1"],
        );
        self.tern = Some(tern);
    }

    /// One message from `source` to Tern, with smtplib inside the namespace.
    fn send_from(&self, source: &str, rcpt: &str) -> Sent {
        let out = run(
            self.ns
                .command(&self.python)
                .arg("-c")
                .arg(SEND_FROM)
                .args(["127.0.0.1", &SMTP_PORT.to_string(), source, rcpt]),
            Duration::from_secs(60),
        );
        assert!(
            out.status.success(),
            "smtplib from {source} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "smtplib printed {:?}: {e}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        let secs = |k: &str| Duration::from_secs_f64(report[k].as_f64().unwrap());
        let reply = report["reply"].as_str().unwrap();
        let id = reply
            .rsplit_once("queued as ")
            .unwrap_or_else(|| panic!("not queued: {reply}"))
            .1
            .trim()
            .to_string();
        Sent {
            greeting: secs("greeting_secs"),
            queued: secs("queued_secs"),
            id,
        }
    }

    /// The queued message `id` with its content.
    fn spooled(&self, id: &str) -> (ListedMessage, StoredMessage) {
        let spool = Spool::open_read_only(&self.data_dir().join("spool")).unwrap();
        let m = spool
            .list(None)
            .unwrap()
            .into_iter()
            .find(|m| m.state.is_queued() && m.id.to_string() == id)
            .unwrap_or_else(|| panic!("{id} is not in the queue"));
        let stored = spool.read(m.state, m.id).unwrap();
        (m, stored)
    }

    /// The session-ended event (2002) of the session from `client_ip`, waited for.
    fn session_ended(&self, client_ip: &str) -> Value {
        let path = self.data_dir().join("events.jsonl");
        let prefix = format!("{client_ip}:");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let found = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|e| {
                    e["id"].as_u64() == Some(2002)
                        && e["client"].as_str().is_some_and(|c| c.starts_with(&prefix))
                });
            if let Some(e) = found {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no session-ended event (2002) for {client_ip} within 10 s\n--- events ---\n{text}"
            );
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        // Stop Tern and the peer first so their logs are complete; the namespace guard
        // then kills anything left inside and deletes the namespace.
        drop(self.tern.take());
        drop(self.peer.take());
        if std::thread::panicking() {
            let read = |name: &str| std::fs::read_to_string(self.dir().join(name));
            eprintln!(
                "--- namespace {} ---\n--- tern config ---\n{}\n--- tern log ---\n{}",
                self.ns.name,
                read("tern.toml").unwrap_or_default(),
                read("tern.log").unwrap_or_default()
            );
            for peer in ["dnslib.log", "silent.log", "queries.hex"] {
                if let Ok(text) = read(peer) {
                    eprintln!("--- {peer} ---\n{text}");
                }
            }
            if let Some(dir) = self.dir.take() {
                eprintln!("--- kept test directory {} ---", dir.keep().display());
            }
        }
    }
}

/// Decodes one line of hex.
fn unhex(line: &str) -> Option<Vec<u8>> {
    let digits = line.trim().as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

/// The first question of a DNS query: (lower-case name without the final dot, type).
fn question(msg: &[u8]) -> Option<(String, u16)> {
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*msg.get(pos)?);
        pos += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None; // no compression in a question
        }
        labels.push(String::from_utf8_lossy(msg.get(pos..pos + len)?).to_lowercase());
        pos += len;
    }
    let qtype = u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]);
    Some((labels.join("."), qtype))
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn forward_confirmed_ptr_names_the_client_and_a_mismatch_is_unknown() {
    let mut scene = Scene::new(&[CLIENT, LIAR]);
    scene.start_zone_server();
    scene.start_tern(5000);

    let confirmed = scene.send_from(CLIENT, "two@localhost");
    let mismatched = scene.send_from(LIAR, "three@localhost");

    let (m2, s2) = scene.spooled(&confirmed.id);
    let (received, _) = split_received(&s2.body);
    assert!(
        received.starts_with("Received: from helo.client.test (client.example.test [192.0.2.2])"),
        "{received}\n--- dnslib ---\n{}",
        scene.peer_log()
    );
    let env2 = m2.envelope.as_ref().unwrap();
    assert_eq!(
        env2.client.verified_name.as_deref(),
        Some("client.example.test")
    );
    assert!(
        env2.client.address.starts_with("192.0.2.2:"),
        "{}",
        env2.client.address
    );
    let ended = scene.session_ended(CLIENT);
    assert_eq!(ended["client_name"], "client.example.test", "{ended}");

    let (m3, s3) = scene.spooled(&mismatched.id);
    let (received, _) = split_received(&s3.body);
    assert!(
        received.starts_with("Received: from helo.client.test (unknown [192.0.2.3])"),
        "a PTR whose name does not resolve back is not trusted: {received}\n--- dnslib ---\n{}",
        scene.peer_log()
    );
    let env3 = m3.envelope.as_ref().unwrap();
    assert_eq!(env3.client.verified_name, None);
    assert!(
        env3.client.address.starts_with("192.0.2.3:"),
        "{}",
        env3.client.address
    );
    let ended = scene.session_ended(LIAR);
    assert_eq!(ended["client_name"], "unknown", "{ended}");

    // Both answers came from the name server: it was asked for both PTR records.
    let log = scene.peer_log();
    for ptr in ["2.2.0.192.in-addr.arpa", "3.2.0.192.in-addr.arpa"] {
        assert!(
            log.to_lowercase().contains(&format!("'{ptr}.' (ptr)")),
            "dnslib logged no PTR query for {ptr}:\n{log}"
        );
    }
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn silent_nameserver_delays_neither_greeting_nor_message_beyond_the_timeout() {
    const TIMEOUT_MS: u64 = 1500;
    const MARGIN_MS: u64 = 1500;
    let mut scene = Scene::new(&[CLIENT]);
    let queries = scene.start_silent_server();
    scene.start_tern(TIMEOUT_MS);

    // From the client a working name server would name client.example.test.
    let sent = scene.send_from(CLIENT, "you@localhost");
    assert!(
        sent.greeting < Duration::from_millis(1000),
        "the greeting waited for DNS: {:?}",
        sent.greeting
    );
    let limit = Duration::from_millis(TIMEOUT_MS + MARGIN_MS);
    assert!(
        sent.queued < limit,
        "queued {:?} after connecting, more than the lookup timeout plus margin ({limit:?})",
        sent.queued
    );

    let (m, stored) = scene.spooled(&sent.id);
    let (received, _) = split_received(&stored.body);
    assert!(
        received.starts_with("Received: from helo.client.test (unknown [192.0.2.2])"),
        "{received}"
    );
    assert_eq!(m.envelope.as_ref().unwrap().client.verified_name, None);
    let ended = scene.session_ended(CLIENT);
    assert_eq!(ended["client_name"], "unknown", "{ended}");

    // The scenario only means something if Tern really asked the silent server for this
    // client's name (and then gave up at its timeout).
    let wanted = ("2.2.0.192.in-addr.arpa".to_string(), 12); // type 12 = PTR
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&queries).unwrap_or_default();
        let seen: Vec<(String, u16)> = text
            .lines()
            .skip(1)
            .filter_map(|l| question(&unhex(l)?))
            .collect();
        if seen.contains(&wanted) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no PTR query for {} reached the silent name server 127.0.0.1:{DNS_PORT} (it saw \
             {seen:?}); the client was named without asking it, so the timeout was never \
             exercised",
            wanted.0
        );
        std::thread::sleep(POLL);
    }
    eprintln!(
        "silent name server: greeting after {:?}, queued after {:?} (lookup timeout {TIMEOUT_MS} ms)",
        sent.greeting, sent.queued
    );
}
