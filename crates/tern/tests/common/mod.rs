//! Harness for the scenario tests of the `tern` binary.
//!
//! Every scenario runs the real binary (`CARGO_BIN_EXE_tern`) as a child process with a
//! configuration file written into its own temporary directory (data directory inside it,
//! listeners on free loopback ports), and talks to it over real sockets with real peers
//! (swaks, smtplib, smtp-source, dnslib) or the small raw SMTP client below.
//!
//! Invariants:
//! - No fixed sleep stands in for readiness: [`Tern::start`] polls until every listener
//!   accepts a connection, with a deadline, and fails with the server's log otherwise.
//! - No server outlives its test: [`Tern`]'s `Drop` sends SIGTERM, then SIGKILL after a
//!   deadline, and reaps the child. When the test is failing, the server's log is printed
//!   and the temporary directory is kept for inspection.
//! - Every external command runs under a timeout ([`run`]), so a hung peer fails the test
//!   instead of hanging it.
//! - A missing peer fails the test with a message naming it ([`require_program`],
//!   [`require_python_modules`]); nothing is skipped silently.
//!
//! Port choice races with other processes (a free port can be taken between our probe and
//! the server's bind); a start that fails with "address in use" is retried on new ports.

#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tern_spool::{ListedMessage, QueueState, Spool, StoredMessage};

pub mod admin;
pub mod arc;
pub mod cluster;
pub mod connectors;
pub mod dkim;
pub mod dnssec;
pub mod local;
pub mod mounts;
pub mod mtasts;
pub mod peers;
pub mod screen;
pub mod submission;
pub mod tlsrpt;
pub mod verify;

/// Host name every test server uses (greeting, Received header).
pub const HOSTNAME: &str = "mx.tern.test";
/// How long a server may take to start listening.
pub const START_DEADLINE: Duration = Duration::from_secs(30);
/// Socket timeouts of the raw client: a hung server fails the test instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// Interval of the polling loops (readiness, events, process exit).
pub const POLL: Duration = Duration::from_millis(10);

/// Path of the binary under test.
pub fn tern_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tern")
}

/// A port that was free on `ip` a moment ago (bind port 0, read it, drop the socket).
pub fn free_port(ip: IpAddr) -> u16 {
    let l = TcpListener::bind((ip, 0))
        .unwrap_or_else(|e| panic!("cannot bind a probe socket on {ip}: {e}"));
    l.local_addr().unwrap().port()
}

/// Quotes a string for TOML (basic string).
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One `[[listener]]` of a test server.
#[derive(Clone, Debug)]
pub struct Listener {
    /// Listener name.
    pub name: String,
    /// Address to listen on; the port is chosen free at start.
    pub ip: IpAddr,
    /// More keys for the table, one per line (e.g. `max_message_size = 2048`).
    pub extra: String,
}

impl Listener {
    /// A listener on `ip` with no extra keys.
    pub fn new(name: &str, ip: IpAddr) -> Listener {
        Listener {
            name: name.into(),
            ip,
            extra: String::new(),
        }
    }

    /// Adds keys to the listener's table.
    pub fn with(mut self, lines: &str) -> Listener {
        self.extra.push_str(lines);
        self.extra.push('\n');
        self
    }
}

/// What a test server looks like: everything but the data directory and the ports.
#[derive(Clone, Debug)]
pub struct Setup {
    listeners: Vec<Listener>,
    grace_secs: u64,
    server_extra: String,
    dns: String,
    sections: String,
    /// The `[queue]` section; delivery is off unless a test turns it on, so receive-path
    /// tests can inspect `incoming/`.
    queue: String,
    /// The `[admin]` section: on a free port (0) unless a test replaces it.
    admin: String,
    /// Environment variables for the server process.
    env: Vec<(String, String)>,
    /// `server.data_dir` when a test chooses it (a mount it made); otherwise `data/` in
    /// the test's temporary directory.
    data_dir: Option<PathBuf>,
    /// The server's umask, when a test sets one (else the test runner's).
    umask: Option<u32>,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup::new()
    }
}

impl Setup {
    /// One listener `smtp` on 127.0.0.1, default relay policy (localhost; loopback may
    /// relay), reverse DNS off, 5 s shutdown grace.
    pub fn new() -> Setup {
        Setup {
            listeners: vec![Listener::new("smtp", IpAddr::V4(Ipv4Addr::LOCALHOST))],
            grace_secs: 5,
            server_extra: String::new(),
            dns: "[dns]\nreverse_lookups = false\n".into(),
            sections: String::new(),
            queue: "[queue]\ndeliver = false\n".into(),
            admin: "[admin]\nlisten = \"127.0.0.1:0\"\n".into(),
            env: Vec::new(),
            umask: None,
            data_dir: None,
        }
    }

    /// Replaces the listeners.
    pub fn listeners(mut self, listeners: Vec<Listener>) -> Setup {
        self.listeners = listeners;
        self
    }

    /// Adds keys to the first (default) listener.
    pub fn listener_keys(mut self, lines: &str) -> Setup {
        let first = self.listeners.remove(0);
        self.listeners.insert(0, first.with(lines));
        self
    }

    /// `server.shutdown_grace_secs`.
    pub fn grace_secs(mut self, secs: u64) -> Setup {
        self.grace_secs = secs;
        self
    }

    /// More keys for `[server]`.
    pub fn server_keys(mut self, lines: &str) -> Setup {
        self.server_extra.push_str(lines);
        self.server_extra.push('\n');
        self
    }

    /// Replaces the `[dns]` section (whole text, header included).
    pub fn dns(mut self, section: &str) -> Setup {
        self.dns = section.into();
        self
    }

    /// Replaces the `[queue]` section (whole text, header included); the default turns
    /// delivery off.
    pub fn queue(mut self, section: &str) -> Setup {
        self.queue = section.into();
        self
    }

    /// Replaces the `[admin]` section (whole text, header included); the default puts
    /// the admin listener on a free port, which the server writes to `admin.addr`.
    pub fn admin(mut self, section: &str) -> Setup {
        self.admin = section.into();
        self
    }

    /// Sets an environment variable for the server process.
    pub fn env(mut self, key: &str, value: &str) -> Setup {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Puts the data directory at `dir` (e.g. a filesystem the test mounted) instead of
    /// `data/` inside the test's temporary directory.
    pub fn data_dir(mut self, dir: &Path) -> Setup {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    /// The configuration file text for a server whose data directory is `data_dir`,
    /// with every listener on a port that was free a moment ago: for tests that run
    /// `tern serve` themselves (a start that must fail).
    pub fn config_text_for(&self, data_dir: &Path) -> String {
        let addrs: Vec<SocketAddr> = self
            .listeners
            .iter()
            .map(|l| SocketAddr::new(l.ip, free_port(l.ip)))
            .collect();
        self.render(data_dir, &addrs)
    }

    /// Adds a whole section, e.g. `[relay]` or `[back_pressure]`.
    pub fn section(mut self, text: &str) -> Setup {
        self.sections.push_str(text);
        self.sections.push('\n');
        self
    }

    fn render(&self, data_dir: &Path, addrs: &[SocketAddr]) -> String {
        let mut t = format!(
            "[server]\nhostname = {}\ndata_dir = {}\nlog_level = \"info\"\nlog_stderr = true\nshutdown_grace_secs = {}\n{}\n{}\n{}\n{}\n{}\n",
            toml_str(HOSTNAME),
            toml_str(&data_dir.display().to_string()),
            self.grace_secs,
            self.server_extra,
            self.dns,
            self.queue,
            self.admin,
            self.sections,
        );
        for (l, a) in self.listeners.iter().zip(addrs) {
            t.push_str(&format!(
                "[[listener]]\nname = {}\naddress = {}\n{}\n",
                toml_str(&l.name),
                toml_str(&a.to_string()),
                l.extra
            ));
        }
        t
    }

    /// Starts the server with this umask (e.g. 0o022, the usual default), to check that
    /// the modes of what it creates do not depend on it.
    pub fn umask(mut self, mask: u32) -> Setup {
        self.umask = Some(mask);
        self
    }

    /// Writes the configuration into a new temporary directory and starts the server.
    pub fn start(self) -> Tern {
        Tern::start(self)
    }
}

/// A running (or stopped) `tern serve` child with its own directory.
pub struct Tern {
    root: Option<tempfile::TempDir>,
    /// Root of the test's temporary directory (the server's working directory).
    pub dir: PathBuf,
    /// `--config` file, or `None` for the embedded default.
    pub config_path: Option<PathBuf>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Listener addresses in configuration order.
    pub addrs: Vec<SocketAddr>,
    listener_names: Vec<String>,
    setup: Option<Setup>,
    child: Option<Child>,
    /// The server's stdout and stderr, appended across restarts.
    pub log_path: PathBuf,
}

impl Tern {
    fn start(setup: Setup) -> Tern {
        let root = tempfile::Builder::new()
            .prefix("tern-test-")
            .tempdir()
            .expect("create temporary directory");
        let dir = root.path().to_path_buf();
        let data_dir = setup.data_dir.clone().unwrap_or_else(|| dir.join("data"));
        let config_path = dir.join("tern.toml");
        let mut tern = Tern {
            log_path: dir.join("tern.log"),
            dir,
            config_path: Some(config_path),
            data_dir,
            addrs: Vec::new(),
            listener_names: setup.listeners.iter().map(|l| l.name.clone()).collect(),
            setup: Some(setup),
            child: None,
            root: Some(root),
        };
        for attempt in 1..=5 {
            tern.pick_ports();
            tern.write_config();
            match tern.spawn_and_wait() {
                Ok(()) => return tern,
                Err(StartError::AddrInUse) if attempt < 5 => continue,
                Err(e) => panic!("tern did not start: {e:?}\n--- log ---\n{}", tern.log()),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// Runs `tern serve` with NO `--config` in a fresh temporary working directory, so
    /// the embedded default applies: `addr` must be what that default listens on.
    pub fn start_default_config(addr: SocketAddr) -> Tern {
        let root = tempfile::Builder::new()
            .prefix("tern-test-default-")
            .tempdir()
            .expect("create temporary directory");
        let dir = root.path().to_path_buf();
        let mut tern = Tern {
            log_path: dir.join("tern.log"),
            data_dir: dir.join("tern-data"),
            dir,
            config_path: None,
            addrs: vec![addr],
            listener_names: vec!["smtp".into()],
            setup: None,
            child: None,
            root: Some(root),
        };
        if let Err(e) = tern.spawn_and_wait() {
            panic!(
                "tern serve (embedded default) did not start: {e:?}\n--- log ---\n{}",
                tern.log()
            );
        }
        tern
    }

    fn pick_ports(&mut self) {
        let setup = self.setup.as_ref().expect("configured server");
        self.addrs = setup
            .listeners
            .iter()
            .map(|l| SocketAddr::new(l.ip, free_port(l.ip)))
            .collect();
    }

    fn write_config(&self) {
        let setup = self.setup.as_ref().expect("configured server");
        let text = setup.render(&self.data_dir, &self.addrs);
        std::fs::write(self.config_path.as_ref().unwrap(), text).expect("write config");
    }

    /// Replaces `from` with `to` in the configuration file (it must occur), for the next
    /// start: e.g. delivery off while a test queues mail, then on.
    pub fn replace_in_config(&self, from: &str, to: &str) {
        let path = self.config_path.as_ref().expect("configured server");
        let text = std::fs::read_to_string(path).expect("read config");
        assert!(
            text.contains(from),
            "{from:?} is not in the configuration:\n{text}"
        );
        std::fs::write(path, text.replace(from, to)).expect("write config");
    }

    /// The configuration text in use.
    pub fn config_text(&self) -> String {
        match &self.config_path {
            Some(p) => std::fs::read_to_string(p).unwrap_or_default(),
            None => "(embedded default)".into(),
        }
    }

    /// A `tern` command in the server's working directory, with `--config` after `args`
    /// when the server has a file.
    pub fn tern_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(tern_bin());
        c.current_dir(&self.dir).args(args);
        if let Some(p) = &self.config_path {
            c.arg("--config").arg(p);
        }
        c
    }

    /// `tern serve` on the embedded default, which resolves MX records with the system's
    /// resolver: run it in a private mount namespace whose /etc/resolv.conf names
    /// 127.0.0.1 (where nothing answers DNS), so its delivery attempts stay on loopback
    /// and end in a quick deferral. Same process id as tern itself (every step execs).
    fn isolated_default_command(&self) -> Command {
        let resolv = self.dir.join("resolv.conf");
        std::fs::write(
            &resolv,
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )
        .expect("write resolv.conf");
        let mut c = Command::new("unshare");
        c.current_dir(&self.dir).args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            "mount --bind \"$0\" /etc/resolv.conf && exec \"$1\" serve",
        ]);
        c.arg(&resolv).arg(tern_bin());
        c
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open log");
        let mut marker = log.try_clone().expect("clone log handle");
        let _ = writeln!(marker, "=== test harness: starting tern serve ===");
        let umask = self.setup.as_ref().and_then(|s| s.umask);
        let mut command = match (&self.config_path, umask) {
            (None, _) => self.isolated_default_command(),
            (Some(config), Some(mask)) => {
                // The same process (exec), with the umask set first.
                let mut c = Command::new("sh");
                c.current_dir(&self.dir)
                    .arg("-c")
                    .arg(format!("umask {mask:03o} && exec \"$0\" \"$@\""))
                    .arg(tern_bin())
                    .arg("serve")
                    .arg("--config")
                    .arg(config);
                c
            }
            (Some(_), None) => self.tern_command(&["serve"]),
        };
        if let Some(setup) = &self.setup {
            command.envs(setup.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn tern serve");
        self.child = Some(child);
    }

    fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        let log_len_before = std::fs::metadata(&self.log_path)
            .map(|m| m.len())
            .unwrap_or(0);
        self.spawn();
        let deadline = Instant::now() + START_DEADLINE;
        let mut pending: Vec<SocketAddr> = self.addrs.clone();
        loop {
            pending.retain(|a| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_err());
            if pending.is_empty() {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("try_wait") {
                self.child = None;
                let log = self.log();
                let tail = log
                    .get(usize::try_from(log_len_before).unwrap_or(0).min(log.len())..)
                    .unwrap_or("");
                if tail.contains("Address already in use") || tail.contains("os error 98") {
                    return Err(StartError::AddrInUse);
                }
                return Err(StartError::Exited(status));
            }
            if Instant::now() > deadline {
                self.kill9();
                return Err(StartError::NotListening(pending));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Starts the server again on the same configuration, data directory and ports.
    /// Starts the server again and waits for it to die on its own (a test that makes it
    /// crash at start); returns how it ended.
    pub fn restart_expecting_crash(&mut self, limit: Duration) -> ExitStatus {
        self.spawn();
        self.wait_exit(limit).unwrap_or_else(|| {
            panic!(
                "tern kept running; expected a crash\n--- log ---\n{}",
                self.log()
            )
        })
    }

    /// Removes an environment variable set with [`Setup::env`] for later restarts (a
    /// fault the test injected no longer applies).
    pub fn unset_env(&mut self, key: &str) {
        if let Some(setup) = self.setup.as_mut() {
            setup.env.retain(|(k, _)| k != key);
        }
    }

    pub fn restart(&mut self) {
        if let Err(e) = self.spawn_and_wait() {
            panic!("tern did not restart: {e:?}\n--- log ---\n{}", self.log());
        }
    }

    /// The first listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The address of the listener called `name`.
    pub fn addr_of(&self, name: &str) -> SocketAddr {
        let i = self
            .listener_names
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("no listener {name}"));
        self.addrs[i]
    }

    /// `host:port` of the first listener, as command-line peers want it.
    pub fn server_arg(&self) -> String {
        let a = self.addr();
        format!("{}:{}", a.ip(), a.port())
    }

    /// Process id of the running server.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// Sends a signal to the server.
    pub fn signal(&self, sig: i32) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits pid_t");
        // SAFETY: kill(2) on our own child's pid has no memory-safety requirements.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {sig}) failed: {}",
            io::Error::last_os_error()
        );
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits at most `limit` for the child to exit; `None` when it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            let c = self.child.as_mut()?;
            if let Some(status) = c.try_wait().expect("try_wait") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM and wait for a clean exit (status 0) within `limit`; panics otherwise.
    pub fn stop(&mut self, limit: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        match self.wait_exit(limit) {
            Some(status) => {
                assert!(
                    status.success(),
                    "tern exited with {status} after SIGTERM\n--- log ---\n{}",
                    self.log()
                );
                status
            }
            None => {
                self.kill9();
                panic!(
                    "tern did not exit within {limit:?} of SIGTERM\n--- log ---\n{}",
                    self.log()
                );
            }
        }
    }

    /// The server's stdout/stderr so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Events in `events.jsonl` (a line still being written is skipped).
    pub fn events(&self) -> Vec<Value> {
        let text = std::fs::read(self.data_dir.join("events.jsonl")).unwrap_or_default();
        String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    }

    /// Events with numeric id `id`.
    pub fn events_with_id(&self, id: u64) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["id"].as_u64() == Some(id))
            .collect()
    }

    /// Waits until at least `count` events with id `id` are in the log; panics after
    /// `limit`.
    pub fn wait_for_events(&self, id: u64, count: usize, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let found = self.events_with_id(id);
            if found.len() >= count {
                return found;
            }
            if Instant::now() > deadline {
                panic!(
                    "expected {count} event(s) {id} within {limit:?}, found {}\n--- events ---\n{}",
                    found.len(),
                    std::fs::read_to_string(self.data_dir.join("events.jsonl")).unwrap_or_default()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// `tern queue list --json [extra]`: one JSON object per line.
    pub fn queue_json(&self, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["queue", "list", "--json"];
        args.extend_from_slice(extra);
        let out = run(&mut self.tern_command(&args), Duration::from_secs(30));
        assert!(
            out.status.success(),
            "tern queue list --json failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("queue list prints UTF-8");
        text.lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line: {l:?}: {e}"))
            })
            .collect()
    }

    /// The spool directory.
    pub fn spool_dir(&self) -> PathBuf {
        self.data_dir.join("spool")
    }

    /// A read-only handle on the spool (safe beside a running server).
    pub fn spool(&self) -> Spool {
        Spool::open_read_only(&self.spool_dir()).expect("open spool read-only")
    }

    /// Every readable message in a queued state, with its full content.
    pub fn spooled(&self) -> Vec<(ListedMessage, StoredMessage)> {
        let spool = self.spool();
        spool
            .list(None)
            .expect("list spool")
            .into_iter()
            .filter(|m| m.state.is_queued())
            .map(|m| {
                let stored = spool
                    .read(m.state, m.id)
                    .unwrap_or_else(|e| panic!("read {} {}: {e}", m.state, m.id));
                (m, stored)
            })
            .collect()
    }

    /// Names of the files in one spool directory (`tmp` or a state).
    pub fn spool_files(&self, area: &str) -> Vec<String> {
        let mut names: Vec<String> = match std::fs::read_dir(self.spool_dir().join(area)) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        names
    }

    /// After a start that quarantined `quarantined` entries in all (its recovery event
    /// 3001 being number `starts`): new mail is accepted, and a clean restart quarantines
    /// nothing new and finds `incoming` messages queued (the new one included).
    pub fn assert_mail_flows_and_restart_is_clean(
        &mut self,
        starts: usize,
        quarantined: usize,
        incoming: usize,
    ) {
        send_one(
            self.addr(),
            "s@client.test",
            &["after@localhost"],
            &simple_message("after", "recovered"),
        );
        self.stop(Duration::from_secs(10));
        self.restart();
        let recovered = self.wait_for_events(3001, starts + 1, Duration::from_secs(10));
        let last = recovered.last().expect("a recovery event");
        assert_eq!(last["incoming"], incoming.to_string(), "{last}");
        assert_eq!(last["quarantined"], "0", "{last}");
        assert_eq!(
            self.events_with_id(3003).len(),
            quarantined,
            "no new quarantine on the second start"
        );
    }

    /// Waits until the queue holds `n` messages in `incoming/` (read-only listing).
    pub fn wait_for_incoming(&self, n: usize, limit: Duration) -> Vec<ListedMessage> {
        let deadline = Instant::now() + limit;
        loop {
            let found = self.spool().list(Some(QueueState::Incoming)).expect("list");
            if found.len() >= n || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(POLL);
        }
    }
}

/// Stops a child process: SIGTERM, then SIGKILL if it has not exited within 10 s.
pub fn terminate(mut c: Child) {
    if let Ok(pid) = libc::pid_t::try_from(c.id()) {
        // SAFETY: kill(2) on our own, not yet reaped, child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
            _ => {
                let _ = c.kill();
                let _ = c.wait();
                return;
            }
        }
    }
}

impl Drop for Tern {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            terminate(c);
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: String = log
                .lines()
                .rev()
                .take(60)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            eprintln!(
                "--- tern config ---\n{}\n--- tern log (last 60 lines) ---\n{tail}",
                self.config_text()
            );
            if let Some(root) = self.root.take() {
                eprintln!("--- kept test directory {} ---", root.keep().display());
            }
        }
    }
}

#[derive(Debug)]
enum StartError {
    AddrInUse,
    Exited(ExitStatus),
    NotListening(Vec<SocketAddr>),
}

/// Runs a command to completion with a deadline; kills it and panics on timeout.
pub fn run(cmd: &mut Command, limit: Duration) -> Output {
    try_run(cmd, limit).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs a command to completion with a deadline, draining its output as it goes; on
/// timeout kills it and says why (usable where a panic is not, as in `Drop`).
pub fn try_run(cmd: &mut Command, limit: Duration) -> Result<Output, String> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut v);
            }
            v
        })
    };
    let out_t = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err_t = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() <= deadline => std::thread::sleep(POLL),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                let stdout = out_t.join().unwrap_or_default();
                let stderr = err_t.join().unwrap_or_default();
                return Err(format!(
                    "{shown} did not finish within {limit:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    String::from_utf8_lossy(&stdout),
                    String::from_utf8_lossy(&stderr)
                ));
            }
        }
    };
    Ok(Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    })
}

/// Finds a required peer program on PATH (and the sbin directories, where Postfix puts
/// smtp-source); fails the test with a clear message when it is missing.
pub fn require_program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("required test peer `{name}` is not installed (run scripts/test.sh, which installs it)");
}

/// Python 3 with the given modules importable; fails the test clearly otherwise.
pub fn require_python_modules(modules: &[&str]) -> PathBuf {
    let python = require_program("python3");
    let mut script = String::from("import sys\n");
    for m in modules {
        script.push_str(&format!("import {m}\n"));
    }
    let out = run(
        Command::new(&python).arg("-c").arg(&script),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "required Python test peer(s) {modules:?} missing (run scripts/test.sh, which pip-installs them):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    python
}

/// Runs an inline Python 3 script with arguments, under a deadline.
pub fn python(script: &str, args: &[&str], limit: Duration) -> Output {
    let python = require_program("python3");
    run(Command::new(python).arg("-c").arg(script).args(args), limit)
}

/// Splits stored content into the Received header Tern prepended (with its folded
/// continuation lines) and the rest, which must be the content as the client sent it.
pub fn split_received(stored: &[u8]) -> (String, &[u8]) {
    assert!(
        stored.starts_with(b"Received: "),
        "stored content does not start with a Received header: {:?}",
        String::from_utf8_lossy(stored.get(..stored.len().min(200)).unwrap_or_default())
    );
    let mut pos = 0;
    loop {
        let rest = stored.get(pos..).unwrap_or_default();
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("Received header ends with CRLF");
        pos += end + 2;
        match stored.get(pos) {
            Some(b' ') | Some(b'\t') => continue,
            _ => break,
        }
    }
    let header = String::from_utf8_lossy(stored.get(..pos).unwrap_or_default()).into_owned();
    (header, stored.get(pos..).unwrap_or_default())
}

/// Dot-stuffs CRLF-delimited content and appends the end-of-data marker.
pub fn dot_stuff(content: &[u8]) -> Vec<u8> {
    assert!(
        content.is_empty() || content.ends_with(b"\r\n"),
        "content must end with CRLF"
    );
    let mut out = Vec::with_capacity(content.len() + 64);
    let mut at_line_start = true;
    for &b in content {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// One SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The text of each line, after the code and separator.
    pub lines: Vec<String>,
}

impl Reply {
    /// All lines, joined with newlines, prefixed with the code.
    pub fn text(&self) -> String {
        self.lines
            .iter()
            .map(|l| format!("{} {l}", self.code))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The queue id of a `250 2.0.0 Ok: queued as <id>` reply.
    pub fn queued_id(&self) -> Option<String> {
        if self.code != 250 {
            return None;
        }
        let last = self.lines.last()?;
        let (_, id) = last.rsplit_once("queued as ")?;
        Some(id.trim().to_string())
    }
}

/// A raw SMTP client over TCP: exact bytes out, replies parsed, every I/O bounded.
pub struct SmtpClient {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl SmtpClient {
    /// Connects; does not read the greeting.
    pub fn connect(addr: SocketAddr) -> io::Result<SmtpClient> {
        let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        SmtpClient::from_stream(s)
    }

    /// Connects from `source` (any port), e.g. 127.0.0.2, to look like another client.
    pub fn connect_from(addr: SocketAddr, source: IpAddr) -> io::Result<SmtpClient> {
        let domain = socket2::Domain::for_address(addr);
        let socket =
            socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        socket.bind(&SocketAddr::new(source, 0).into())?;
        socket.connect_timeout(&addr.into(), IO_TIMEOUT)?;
        SmtpClient::from_stream(socket.into())
    }

    /// Wraps a connected stream.
    pub fn from_stream(s: TcpStream) -> io::Result<SmtpClient> {
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        s.set_nodelay(true)?;
        Ok(SmtpClient {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
        })
    }

    /// The underlying stream (for timeouts).
    pub fn stream(&self) -> &TcpStream {
        &self.writer
    }

    /// Reads one (possibly multi-line) reply.
    pub fn read_reply(&mut self) -> io::Result<Reply> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                ));
            }
            let line = line.trim_end_matches(['\r', '\n']);
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad reply line {line:?}"),
                    )
                })?;
            let sep = line.as_bytes().get(3).copied();
            lines.push(line.get(4..).unwrap_or("").to_string());
            match sep {
                Some(b'-') => continue,
                _ => return Ok(Reply { code, lines }),
            }
        }
    }

    /// Reads one line, without its CRLF (e.g. the first line of a multi-line greeting).
    pub fn read_line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }

    /// Writes raw bytes.
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)?;
        self.writer.flush()
    }

    /// Sends one command line (CRLF added) and reads its reply.
    pub fn command(&mut self, line: &str) -> io::Result<Reply> {
        self.write_raw(format!("{line}\r\n").as_bytes())?;
        self.read_reply()
    }

    /// Reads the greeting and says EHLO; panics unless both succeed.
    pub fn hello(&mut self, helo: &str) -> Reply {
        let greeting = self.read_reply().expect("greeting");
        assert_eq!(greeting.code, 220, "greeting: {}", greeting.text());
        let ehlo = self.command(&format!("EHLO {helo}")).expect("EHLO");
        assert_eq!(ehlo.code, 250, "EHLO: {}", ehlo.text());
        ehlo
    }

    /// MAIL, RCPT for each recipient, DATA, the dot-stuffed content; returns the final
    /// reply. An unexpected intermediate reply is returned as `Err` with its text.
    pub fn send_message(
        &mut self,
        from: &str,
        to: &[&str],
        content: &[u8],
    ) -> Result<Reply, String> {
        let r = self
            .command(&format!("MAIL FROM:<{from}>"))
            .map_err(|e| e.to_string())?;
        if r.code != 250 {
            return Err(format!("MAIL: {}", r.text()));
        }
        for t in to {
            let r = self
                .command(&format!("RCPT TO:<{t}>"))
                .map_err(|e| e.to_string())?;
            if r.code != 250 {
                return Err(format!("RCPT {t}: {}", r.text()));
            }
        }
        let r = self.command("DATA").map_err(|e| e.to_string())?;
        if r.code != 354 {
            return Err(format!("DATA: {}", r.text()));
        }
        self.write_raw(&dot_stuff(content))
            .map_err(|e| e.to_string())?;
        self.read_reply().map_err(|e| e.to_string())
    }
}

/// Connects, greets, sends one message and quits; returns the queue id. Panics on any
/// refusal.
pub fn send_one(addr: SocketAddr, from: &str, to: &[&str], content: &[u8]) -> String {
    let mut c = SmtpClient::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    c.hello("client.test");
    let reply = c
        .send_message(from, to, content)
        .unwrap_or_else(|e| panic!("sending to {addr}: {e}"));
    let id = reply
        .queued_id()
        .unwrap_or_else(|| panic!("message not queued: {}", reply.text()));
    let _ = c.command("QUIT");
    id
}

/// Sends every `(recipient, content)` from `s@client.test` over `sessions` parallel
/// sessions (message `i` goes on session `i % sessions`, in order); returns the queue ids
/// in the order of `messages`. Panics on any refusal.
pub fn send_batch(
    addr: SocketAddr,
    sessions: usize,
    messages: &[(String, Vec<u8>)],
) -> Vec<String> {
    let sessions = sessions.clamp(1, messages.len().max(1));
    let ids: Vec<Vec<(usize, String)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..sessions)
            .map(|k| {
                s.spawn(move || {
                    let mut c =
                        SmtpClient::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
                    c.hello("client.test");
                    let mut out = Vec::new();
                    for (i, (rcpt, content)) in
                        messages.iter().enumerate().skip(k).step_by(sessions)
                    {
                        let reply = c
                            .send_message("s@client.test", &[rcpt.as_str()], content)
                            .unwrap_or_else(|e| panic!("message {i} to {rcpt}: {e}"));
                        let id = reply
                            .queued_id()
                            .unwrap_or_else(|| panic!("message {i} not queued: {}", reply.text()));
                        out.push((i, id));
                    }
                    let _ = c.command("QUIT");
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all: Vec<(usize, String)> = ids.into_iter().flatten().collect();
    all.sort();
    assert_eq!(all.len(), messages.len());
    all.into_iter().map(|(_, id)| id).collect()
}

/// The value of the first header field `name` (case-insensitive) in the header section of
/// `content`, unfolded and trimmed.
pub fn header_value(content: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(content);
    let mut found: Option<String> = None;
    for line in text.split("\r\n") {
        if line.is_empty() {
            break;
        }
        if let Some(v) = found.as_mut() {
            if line.starts_with([' ', '\t']) {
                v.push(' ');
                v.push_str(line.trim());
                continue;
            }
            break;
        }
        if let Some((field, value)) = line.split_once(':')
            && field.eq_ignore_ascii_case(name)
        {
            found = Some(value.trim().to_string());
        }
    }
    found
}

/// A small message with CRLF line endings.
pub fn simple_message(subject: &str, body: &str) -> Vec<u8> {
    let mut m = format!("From: <sender@client.test>\r\nSubject: {subject}\r\n\r\n");
    for line in body.lines() {
        m.push_str(line);
        m.push_str("\r\n");
    }
    m.into_bytes()
}

/// Deterministic pseudo-random numbers (xorshift64*), so a failing run can be replayed
/// from the seed it prints.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// From `TERN_TEST_SEED` when set, else from the clock. Returns the seed too.
    pub fn from_env_or_clock() -> (Rng, u64) {
        let seed = std::env::var("TERN_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        (Rng::new(seed), seed)
    }

    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng((seed ^ 0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..hi` (hi exclusive, hi > lo).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }
}

/// Holds an exclusive `flock` on a file in the temp directory, serialising tests across
/// processes that use one fixed resource (port 2525). Released on drop.
pub struct MachineLock {
    _file: File,
}

impl MachineLock {
    /// Takes the lock named `name`, waiting at most `limit`.
    pub fn acquire(name: &str, limit: Duration) -> MachineLock {
        let path = std::env::temp_dir().join(format!("tern-test-{name}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .expect("open lock file");
        let deadline = Instant::now() + limit;
        loop {
            use std::os::fd::AsRawFd;
            // SAFETY: flock(2) on a descriptor we own.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return MachineLock { _file: file };
            }
            assert!(
                Instant::now() < deadline,
                "could not take {} within {limit:?}: another test run holds it",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Writes a self-signed certificate for `localhost` / `mx.tern.test` (rcgen) as PEM files
/// into `dir`; returns (certificate, private key) paths.
pub fn write_test_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), HOSTNAME.to_string()])
            .expect("generate certificate");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).expect("write certificate");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    (cert, key)
}

/// Makes message `id`'s file at `path` what a version before 2026-12 left: the
/// version-1 part only, its delivery-record frames cut off (found without the spool key:
/// the last end where a version-1 file of this id decodes). Panics when the file had no
/// frame.
pub fn strip_record_frames(path: &Path, id: tern_spool::QueueId) {
    use tern_spool::format::{self, TRAILER_LEN, TRAILER_MAGIC};
    let file = std::fs::read(path).expect("read the message file");
    let base = (TRAILER_LEN..=file.len())
        .rev()
        .find(|&end| {
            file[end - TRAILER_LEN..].starts_with(&TRAILER_MAGIC)
                && format::decode(&file[..end], Some(id)).is_ok()
        })
        .expect("a version-1 part");
    assert!(
        base < file.len(),
        "no record frame was appended to the file"
    );
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(base as u64))
        .expect("cut the frames off");
}

/// Writes `record` where a version before 2026-12 kept it: `spool/records/<id>`, mode
/// 0600.
pub fn write_legacy_record(spool: &Path, record: &tern_spool::DeliveryRecord) {
    use std::os::unix::fs::OpenOptionsExt;
    let path = spool.join("records").join(record.id.to_string());
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .expect("create the legacy record");
    f.write_all(&tern_spool::record::encode(record))
        .expect("write the legacy record");
}
