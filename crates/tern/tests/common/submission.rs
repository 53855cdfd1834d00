//! Helpers for the submission (SMTP AUTH) scenarios: passwd-files made with the real
//! `doveadm pw`, swaks with AUTH, the `[auth]` section and a submission listener's keys,
//! and a real Dovecot auth service on a Unix socket.
//!
//! Dovecot runs as `dovecot -F -c <conf>` in its own temporary directory (base_dir,
//! log, socket there; nothing of the system's Dovecot is used), with a passwd-file passdb
//! and only the auth service; it is stopped (SIGTERM, then SIGKILL) when dropped. A
//! missing `dovecot`, `doveadm` or `swaks` fails the test.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{require_program, run, terminate, toml_str, write_test_certificate};

/// `doveadm pw -s SCHEME -p PASSWORD`: the `{SCHEME}hash` Dovecot stores.
pub fn doveadm_pw(scheme: &str, password: &str) -> String {
    let doveadm = require_program("doveadm");
    let out = run(
        Command::new(doveadm).args(["pw", "-s", scheme, "-p", password]),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "doveadm pw: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Writes a passwd-file (mode 0600) with one line per `(user, scheme, password)`.
pub fn passwd_file(dir: &Path, users: &[(&str, &str, &str)]) -> PathBuf {
    let path = dir.join("users");
    let text: String = users
        .iter()
        .map(|(u, scheme, pw)| format!("{u}:{}::::::\n", doveadm_pw(scheme, pw)))
        .collect();
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The listener keys of a certificate made in `dir`.
pub fn tls_keys(dir: &Path) -> String {
    let (cert, key) = write_test_certificate(dir);
    format!(
        "certificate = {}\nprivate_key = {}",
        toml_str(&cert.display().to_string()),
        toml_str(&key.display().to_string())
    )
}

/// `[relay]` with no relay network the test client is in (it connects from 127.0.0.1),
/// so relaying depends on AUTH alone.
pub const NO_RELAY_NETWORK: &str =
    "[relay]\ndomains = [\"localhost\"]\nnetworks = [\"127.0.0.2/32\"]\n";

/// swaks against `server` with `args`, under a deadline.
pub fn swaks(server: std::net::SocketAddr, args: &[&str]) -> Output {
    let swaks = require_program("swaks");
    run(
        Command::new(swaks)
            .arg("--server")
            .arg(format!("{}:{}", server.ip(), server.port()))
            .args(["--timeout", "20", "--helo", "client.test"])
            .args(args),
        Duration::from_secs(60),
    )
}

/// swaks's transcript (stdout).
pub fn transcript(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The server replies swaks printed that start with `code` (`<~* 535 …` and the like),
/// without swaks's prefix.
pub fn replies_with(transcript: &str, code: &str) -> Vec<String> {
    transcript
        .lines()
        .filter_map(|l| l.get(4..).map(|rest| (l, rest)))
        .filter(|(l, rest)| l.starts_with('<') && rest.starts_with(code))
        .map(|(_, rest)| rest.to_string())
        .collect()
}

/// A real Dovecot running only its auth service, listening on [`DovecotAuth::socket`].
pub struct DovecotAuth {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The auth socket (what `auth.dovecot_socket` names).
    pub socket: PathBuf,
}

impl DovecotAuth {
    /// Starts Dovecot with a passwd-file passdb of `users` (`(user, scheme, password)`,
    /// hashed with doveadm) and mechanisms PLAIN and LOGIN.
    pub fn start(users: &[(&str, &str, &str)]) -> DovecotAuth {
        let dovecot = require_program("dovecot");
        let dir = tempfile::Builder::new()
            .prefix("tern-dovecot-auth-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let base = dir.path();
        let users = passwd_file(base, users);
        let socket = base.join("auth-tern");
        let conf = base.join("dovecot.conf");
        let name = base.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::write(
            &conf,
            format!(
                "protocols = none\nlisten = 127.0.0.1\nbase_dir = {b}/run\nstate_dir = {b}/state\n\
                 instance_name = {name}\nlog_path = {b}/dovecot.log\nssl = no\n\
                 auth_mechanisms = plain login\n\
                 default_internal_user = root\ndefault_internal_group = root\n\
                 default_login_user = root\nfirst_valid_uid = 0\n\
                 passdb {{\n  driver = passwd-file\n  args = {u}\n}}\n\
                 userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home={b}\n}}\n\
                 service auth {{\n  unix_listener {s} {{\n    mode = 0600\n  }}\n}}\n",
                b = base.display(),
                u = users.display(),
                s = socket.display(),
            ),
        )
        .unwrap();
        let child = Command::new(dovecot)
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(base.join("stderr")).unwrap(),
            ))
            .spawn()
            .expect("start dovecot");
        let mut d = DovecotAuth {
            child: Some(child),
            dir,
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while UnixStream::connect(&d.socket).is_err() {
            if let Some(Ok(Some(status))) = d.child.as_mut().map(Child::try_wait) {
                panic!("dovecot exited at start ({status}):\n{}", d.log());
            }
            assert!(
                Instant::now() < deadline,
                "dovecot auth not ready within 30 s:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    /// Dovecot's log and stderr.
    pub fn log(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!("{}{}", read("dovecot.log"), read("stderr"))
    }
}

impl Drop for DovecotAuth {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            terminate(c);
        }
        if std::thread::panicking() {
            eprintln!("--- dovecot log ---\n{}", self.log());
        }
    }
}
