//! Peers and helpers for the local-delivery scenarios: a real Dovecot (LMTP server and,
//! through `doveadm`, a real Maildir reader), Maildir inspection, and the `[local]`
//! configuration text.
//!
//! Dovecot runs as `dovecot -F -c <conf>` from its own temporary directory (its
//! `base_dir`, log, sockets and config there; nothing of the system's Dovecot is used),
//! with a passwd-file userdb whose users are mapped to the unprivileged `nobody` (Dovecot
//! refuses mail access as uid 0). It is stopped by `Drop` (SIGTERM to the master, which
//! ends its children; SIGKILL after a deadline). Readiness is awaited by polling its
//! LMTP sockets with a deadline; a missing `dovecot` or `doveadm` fails the test.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, require_program, run, terminate, toml_str};

/// Sorted names of the files in `<maildir>/<sub>` (empty when it does not exist).
pub fn maildir_files(maildir: &Path, sub: &str) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(maildir.join(sub)) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Waits until `<maildir>/new` holds at least `n` files; returns their contents.
pub fn wait_for_maildir(maildir: &Path, n: usize, limit: Duration) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + limit;
    loop {
        let names = maildir_files(maildir, "new");
        if names.len() >= n {
            return names
                .iter()
                .map(|f| std::fs::read(maildir.join("new").join(f)).expect("read message"))
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} of {n} messages in new/ after {limit:?}",
            maildir.display(),
            names.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A temporary directory that the unprivileged Dovecot user can enter (mode 0755).
pub fn open_tempdir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("tern-local-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

/// Gives `path` (recursively) to `nobody:nogroup`, the user Dovecot reads and writes
/// mail as in these tests.
pub fn give_to_dovecot_user(path: &Path) {
    let out = run(
        Command::new("chown")
            .arg("-R")
            .arg("nobody:nogroup")
            .arg(path),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "chown: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running Dovecot with LMTP on a Unix socket and on 127.0.0.1.
pub struct Dovecot {
    child: Option<Child>,
    dir: tempfile::TempDir,
    conf: PathBuf,
    /// The LMTP Unix socket.
    pub socket: PathBuf,
    /// The LMTP TCP listener.
    pub inet: SocketAddr,
    /// `mail_location` is `maildir:<mail_root>/%u/Maildir`.
    pub mail_root: PathBuf,
}

impl Dovecot {
    /// Starts Dovecot for `users`, storing (and reading) mail under `mail_root`, which
    /// must be reachable and writable by `nobody`.
    pub fn start(users: &[&str], mail_root: &Path) -> Dovecot {
        let dovecot = require_program("dovecot");
        require_program("doveadm");
        let dir = open_tempdir();
        let base = dir.path();
        let socket = base.join("lmtp.sock");
        let inet = SocketAddr::from(([127, 0, 0, 1], free_port("127.0.0.1".parse().unwrap())));
        let userdb = base.join("users");
        let lines: Vec<String> = users
            .iter()
            .map(|u| format!("{u}:{{PLAIN}}x::::::"))
            .collect();
        std::fs::write(&userdb, lines.join("\n") + "\n").expect("write users");
        let conf = base.join("dovecot.conf");
        let text = format!(
            "protocols = lmtp\n\
             base_dir = {run}\n\
             state_dir = {state}\n\
             instance_name = tern-test-{port}\n\
             log_path = {log}\n\
             ssl = no\n\
             listen = 127.0.0.1\n\
             mail_location = maildir:{mail}/%u/Maildir\n\
             default_internal_user = root\n\
             default_internal_group = root\n\
             default_login_user = root\n\
             first_valid_uid = 1\n\
             passdb {{\n  driver = passwd-file\n  args = {userdb}\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = {userdb}\n  default_fields = uid=nobody gid=nogroup home={mail}/%u\n}}\n\
             service lmtp {{\n  unix_listener {socket} {{\n    mode = 0666\n  }}\n  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n}}\n",
            run = base.join("run").display(),
            state = base.join("state").display(),
            log = base.join("dovecot.log").display(),
            mail = mail_root.display(),
            userdb = userdb.display(),
            socket = socket.display(),
            port = inet.port(),
        );
        std::fs::write(&conf, text).expect("write dovecot.conf");
        let child = Command::new(dovecot)
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(base.join("stderr")).expect("stderr"),
            ))
            .spawn()
            .expect("start dovecot");
        let mut d = Dovecot {
            child: Some(child),
            dir,
            conf,
            socket,
            inet,
            mail_root: mail_root.to_path_buf(),
        };
        d.wait_ready();
        d
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let unix = UnixStream::connect(&self.socket).is_ok();
            let tcp = TcpStream::connect_timeout(&self.inet, Duration::from_millis(200)).is_ok();
            if unix && tcp {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("dovecot exited at start ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "dovecot not ready within 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Dovecot's log and stderr.
    pub fn log(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!("{}{}", read("dovecot.log"), read("stderr"))
    }

    /// `doveadm fetch -u <user> <fields> all`: one string per message, Dovecot's
    /// `field: value` lines.
    pub fn fetch(&self, user: &str, fields: &str) -> Vec<String> {
        let out = run(
            Command::new("doveadm")
                .arg("-c")
                .arg(&self.conf)
                .args(["fetch", "-u", user, fields, "all"]),
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "doveadm fetch -u {user} failed: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout)
            .split('\u{c}')
            .map(|m| m.trim_matches('\n').to_owned())
            .filter(|m| !m.is_empty())
            .collect()
    }

    /// Waits until `doveadm` sees at least `n` messages for `user`.
    pub fn wait_for_messages(&self, user: &str, n: usize, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        loop {
            let found = self.fetch(user, "hdr.subject");
            if found.len() >= n {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "doveadm sees {} of {n} messages for {user} after {limit:?}\n{}",
                found.len(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            terminate(c);
        }
        if std::thread::panicking() {
            eprintln!("--- dovecot log ---\n{}", self.log());
        }
    }
}

/// A `[local]` section with the given domains and map files, plus `extra` keys.
pub fn local_section(
    domains: &[&str],
    mailboxes: Option<&Path>,
    aliases: Option<&Path>,
    extra: &str,
) -> String {
    let list: Vec<String> = domains.iter().map(|d| toml_str(d)).collect();
    let mut t = format!("[local]\ndomains = [{}]\n", list.join(", "));
    if let Some(m) = mailboxes {
        t.push_str(&format!(
            "mailbox_map = {}\n",
            toml_str(&m.display().to_string())
        ));
    }
    if let Some(a) = aliases {
        t.push_str(&format!(
            "alias_map = {}\n",
            toml_str(&a.display().to_string())
        ));
    }
    t.push_str(extra);
    t.push('\n');
    t
}

/// A `[[route]]` delivering `domains` into Maildirs under `root`.
pub fn maildir_route(domains: &[&str], root: &Path) -> String {
    let list: Vec<String> = domains.iter().map(|d| toml_str(d)).collect();
    format!(
        "[[route]]\ndomains = [{}]\ntransport = \"maildir\"\npath = {}\n",
        list.join(", "),
        toml_str(&root.display().to_string())
    )
}

/// A `[[route]]` sending `domains` to the smarthost `addr` (a test SMTP peer).
pub fn smtp_route(domains: &[&str], addr: SocketAddr) -> String {
    let list: Vec<String> = domains.iter().map(|d| toml_str(d)).collect();
    format!(
        "[[route]]\ndomains = [{}]\ntransport = \"smtp\"\nhosts = [\"{addr}\"]\ntls = \"none\"\n",
        list.join(", ")
    )
}

/// The `[queue]` section of the local scenarios: delivery on, retries after 1-2 s.
pub const QUEUE: &str = "[queue]\ndeliver = true\nmin_backoff_secs = 1\nmax_backoff_secs = 2\n";
