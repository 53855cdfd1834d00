//! tern-auth against the real Dovecot tools: hashes made by `doveadm pw` for every
//! scheme verify (and a wrong password does not), and the Dovecot auth client works
//! against a real Dovecot auth service (PLAIN, LOGIN, a wrong password, an unknown
//! user), started by the test as `dovecot -F -c <conf>` in a temporary directory with a
//! passwd-file passdb and its own `auth` Unix listener, and stopped at the end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_auth::dovecot::{DovecotClient, DovecotStep};
use tern_auth::scheme::StoredPassword;
use tern_auth::{AuthConfig, AuthService, FailureReason, Mechanism, Step};

fn require(program: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"] {
        let p = Path::new(dir).join(program);
        if p.exists() {
            return p;
        }
    }
    panic!("{program} is not installed (scripts/test.sh installs dovecot-core)");
}

fn doveadm_pw(scheme: &str, password: &str) -> String {
    let out = Command::new(require("doveadm"))
        .args(["pw", "-s", scheme, "-p", password])
        .output()
        .expect("run doveadm pw");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn every_doveadm_scheme_verifies() {
    for scheme in [
        "ARGON2ID",
        "BLF-CRYPT",
        "SHA512-CRYPT",
        "SHA256-CRYPT",
        "SCRAM-SHA-256",
        "PLAIN",
    ] {
        let hash = doveadm_pw(scheme, "correct horse");
        let stored = StoredPassword::parse(&hash).unwrap_or_else(|e| panic!("{hash}: {e}"));
        assert_eq!(stored.scheme(), scheme);
        assert!(stored.verify(b"correct horse"), "{hash}");
        assert!(!stored.verify(b"correct horsf"), "{hash}");
    }
}

struct Dovecot {
    child: Option<Child>,
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Dovecot {
    fn start(users: &str) -> Dovecot {
        let dovecot = require("dovecot");
        let dir = tempfile::Builder::new()
            .prefix("tern-auth-dovecot-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let base = dir.path();
        std::fs::write(base.join("users"), users).unwrap();
        let socket = base.join("auth-tern");
        let conf = base.join("dovecot.conf");
        let name = base.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::write(
            &conf,
            format!(
                "protocols = none\nlisten = 127.0.0.1\nbase_dir = {b}/run\nstate_dir = {b}/state\n\
                 instance_name = {name}\nlog_path = {b}/dovecot.log\nssl = no\n\
                 auth_mechanisms = plain login\n\
                 default_internal_user = root\ndefault_internal_group = root\ndefault_login_user = root\n\
                 first_valid_uid = 0\n\
                 passdb {{\n  driver = passwd-file\n  args = {b}/users\n}}\n\
                 userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home={b}\n}}\n\
                 service auth {{\n  unix_listener {s} {{\n    mode = 0600\n  }}\n}}\n",
                b = base.display(),
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
        let mut d = Dovecot {
            child: Some(child),
            dir,
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&d.socket).is_err() {
            if let Some(Ok(Some(status))) = d.child.as_mut().map(Child::try_wait) {
                panic!("dovecot exited at start ({status}):\n{}", d.log());
            }
            assert!(Instant::now() < deadline, "dovecot not ready:\n{}", d.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn log(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!("{}{}", read("dovecot.log"), read("stderr"))
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- dovecot log ---\n{}", self.log());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn dovecot_socket_plain_login_and_wrong_password() {
    let hash = doveadm_pw("SHA512-CRYPT", "s3cret");
    let dovecot = Dovecot::start(&format!("alice:{hash}::::::\n"));
    let client = Arc::new(DovecotClient::new(&dovecot.socket, Duration::from_secs(20)));
    let ip = "127.0.0.1".parse().unwrap();

    let mut plain = client.exchange("PLAIN", None, ip, true);
    assert_eq!(
        plain.step(Some(b"\0alice\0s3cret")).await.unwrap(),
        DovecotStep::Ok {
            user: "alice".into(),
            final_data: None
        }
    );
    assert_eq!(client.mechanisms(), ["PLAIN", "LOGIN"]);

    let mut login = client.exchange("LOGIN", None, ip, true);
    assert_eq!(
        login.step(None).await.unwrap(),
        DovecotStep::Challenge(b"Username:".to_vec())
    );
    assert_eq!(
        login.step(Some(b"alice")).await.unwrap(),
        DovecotStep::Challenge(b"Password:".to_vec())
    );
    assert_eq!(
        login.step(Some(b"s3cret")).await.unwrap(),
        DovecotStep::Ok {
            user: "alice".into(),
            final_data: None
        }
    );

    let mut wrong = client.exchange("PLAIN", None, ip, true);
    assert!(matches!(
        wrong.step(Some(b"\0alice\0nope")).await.unwrap(),
        DovecotStep::Fail {
            temporary: false,
            ..
        }
    ));

    // Through the service: the same, with the guard's bookkeeping.
    let config = AuthConfig {
        dovecot_socket: Some(dovecot.socket.clone()),
        failure_delay_ms: 0,
        ..AuthConfig::default()
    };
    let (service, report) = AuthService::new(&config);
    assert!(!report.has_errors());
    service.probe_dovecot().await.unwrap();
    assert_eq!(service.mechanisms(), [Mechanism::Plain, Mechanism::Login]);
    let mut ex = service.start(Mechanism::Plain, None, ip, true);
    assert!(
        matches!(ex.step(Some(b"\0alice\0s3cret".to_vec())).await, Step::Success(u) if u == "alice")
    );
    let mut ex = service.start(Mechanism::Plain, None, ip, true);
    let Step::Failure(f) = ex.step(Some(b"\0nobody\0s3cret".to_vec())).await else {
        panic!("unknown user authenticated");
    };
    assert!(
        matches!(f.reason, FailureReason::WrongPassword),
        "{:?}",
        f.reason
    );

    // No Dovecot behind the socket is a temporary failure, not a wrong password.
    let gone = AuthConfig {
        dovecot_socket: Some(dovecot.socket.with_file_name("no-such-socket")),
        ..config
    };
    let (service, _) = AuthService::new(&gone);
    let mut ex = service.start(Mechanism::Plain, None, ip, true);
    let Step::Failure(f) = ex.step(Some(b"\0alice\0s3cret".to_vec())).await else {
        panic!("authenticated without Dovecot");
    };
    assert!(
        matches!(f.reason, FailureReason::Unavailable(_)),
        "{:?}",
        f.reason
    );
}

/// The passwd-file backend: a right password, a wrong one and an unknown user, through
/// the service, for every scheme doveadm makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
async fn passwd_file_made_with_doveadm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    let mut f = std::fs::File::create(&path).unwrap();
    for (user, scheme) in [
        ("argon", "ARGON2ID"),
        ("blf", "BLF-CRYPT"),
        ("sha512", "SHA512-CRYPT"),
        ("sha256", "SHA256-CRYPT"),
        ("scram", "SCRAM-SHA-256"),
    ] {
        writeln!(f, "{user}:{}", doveadm_pw(scheme, &format!("pw-of-{user}"))).unwrap();
    }
    drop(f);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = AuthConfig {
        passwd_file: Some(path),
        failure_delay_ms: 0,
        ..AuthConfig::default()
    };
    let (service, report) = AuthService::new(&config);
    assert_eq!(report.passwd.as_ref().map(|p| p.1), Some(5), "{report:?}");
    let ip = "192.0.2.1".parse().unwrap();
    for user in ["argon", "blf", "sha512", "sha256", "scram"] {
        let mut ex = service.start(Mechanism::Plain, None, ip, true);
        let msg = format!("\0{user}\0pw-of-{user}");
        assert!(
            matches!(ex.step(Some(msg.into_bytes())).await, Step::Success(u) if u == user),
            "{user}"
        );
        let mut ex = service.start(Mechanism::Login, None, ip, true);
        assert!(matches!(ex.step(None).await, Step::Challenge(c) if c == b"Username:"));
        assert!(matches!(
            ex.step(Some(user.as_bytes().to_vec())).await,
            Step::Challenge(_)
        ));
        let Step::Failure(fail) = ex.step(Some(b"wrong".to_vec())).await else {
            panic!("{user}: wrong password accepted");
        };
        assert!(matches!(fail.reason, FailureReason::WrongPassword));
    }
    let mut ex = service.start(Mechanism::Plain, None, ip, true);
    let Step::Failure(fail) = ex.step(Some(b"\0ghost\0pw".to_vec())).await else {
        panic!("unknown user accepted");
    };
    assert!(matches!(fail.reason, FailureReason::UnknownUser));
}
