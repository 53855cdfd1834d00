//! The authentication service a listener uses: the credential backend (a passwd-file or
//! Dovecot's socket), the mechanisms offered, the brute-force guard, the sender-login
//! map, and [`Exchange`], one AUTH exchange driven step by step by the SMTP session.
//!
//! Invariants:
//! - An unknown user and a wrong password end the same way for the client: same reply
//!   (the session maps both [`FailureReason::WrongPassword`] and
//!   [`FailureReason::UnknownUser`] to `535 5.7.8`), same delay, and about the same
//!   time: an unknown user's password is checked against a stand-in hash of the file's
//!   most common scheme and cost (the result ignored); SCRAM answers an unknown user with
//!   stand-in keys whose salt is stable per name. Only the event says which it was.
//! - Password checks run on the blocking pool, at most `max_concurrent_hashes` at once
//!   (a semaphore; the others wait their turn, asynchronously).
//! - While a user is locked out, every outcome for that user is [`FailureReason::Locked`]
//!   (`454 4.7.0`), a right password included, so a lockout cannot be used to test
//!   passwords.
//! - A reload swaps the backend, the mechanisms, the guard's policy and the sender map
//!   atomically (`ArcSwap`); an exchange keeps the snapshot it started with. A file that
//!   cannot be loaded leaves the previous one in force (the caller reports it). The
//!   failure counts survive reloads.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;

use crate::config::{AuthConfig, SenderCheck};
use crate::dovecot::{DovecotClient, DovecotError, DovecotExchange, DovecotStep};
use crate::guard::{FailureLedger, Guard, Lockout, MemoryLedger};
use crate::passwd::{PasswdError, PasswdFile};
use crate::sasl::login::{self, Login, LoginStep};
use crate::sasl::plain::Plain;
use crate::sasl::scram::{ScramKeys, ScramOutcome, ScramSent, ScramStart, server_nonce};
use crate::sasl::{Credentials, Mechanism, SaslError};
use crate::sender_map::{SenderLoginMap, SenderMapError};

/// Where credentials are checked.
#[derive(Debug, Clone)]
enum Backend {
    /// None configured: AUTH is answered `454 4.7.0`.
    None,
    /// A passwd-file.
    Passwd(Arc<PasswdFile>),
    /// Dovecot's auth socket.
    Dovecot(Arc<DovecotClient>),
}

/// One consistent view of the configuration.
#[derive(Debug)]
struct Loaded {
    config: AuthConfig,
    backend: Backend,
    senders: Option<Arc<SenderLoginMap>>,
    guard: Guard,
}

/// What a load or reload did, for the caller's events.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// The passwd-file loaded: its path and users.
    pub passwd: Option<(PathBuf, usize)>,
    /// The passwd-file that could not be loaded (the previous one stays, if any).
    pub passwd_error: Option<(PathBuf, PasswdError)>,
    /// The sender-login map loaded: its path and entries.
    pub senders: Option<(PathBuf, usize)>,
    /// The map that could not be loaded (the previous one stays, if any).
    pub senders_error: Option<(PathBuf, SenderMapError)>,
}

impl LoadReport {
    /// True when a file could not be loaded.
    pub fn has_errors(&self) -> bool {
        self.passwd_error.is_some() || self.senders_error.is_some()
    }
}

/// The authentication service.
pub struct AuthService {
    loaded: ArcSwap<Loaded>,
    ledger: Arc<dyn FailureLedger>,
    hashes: Arc<Semaphore>,
    /// Keys the stand-in SCRAM salts and plaintext-derived salts. Kept across restarts
    /// by the binary (`<data_dir>/auth.key`), so an unknown user's salt does not change
    /// when a real user's does not.
    secret: [u8; 32],
}

impl std::fmt::Debug for AuthService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService").finish_non_exhaustive()
    }
}

impl AuthService {
    /// Loads the configured files, with a secret made for this process (see
    /// [`AuthService::with_secret`]).
    pub fn new(config: &AuthConfig) -> (Arc<AuthService>, LoadReport) {
        let mut secret = [0u8; 32];
        let _ = getrandom::fill(&mut secret);
        AuthService::with_secret(config, secret)
    }

    /// Loads the configured files. At start a file that cannot be loaded is an error
    /// (returned in the report; the service then has no backend for it). `secret` keys
    /// the salts SCRAM shows for unknown users (and for plaintext entries): keep it
    /// across restarts (`private_file::load_or_create_secret`), or an unknown user's
    /// salt changes at a restart while a real user's does not.
    pub fn with_secret(config: &AuthConfig, secret: [u8; 32]) -> (Arc<AuthService>, LoadReport) {
        AuthService::with_ledger(config, secret, Arc::new(MemoryLedger::new()))
    }

    /// [`AuthService::with_secret`] with failure counts kept in `ledger` (a cluster
    /// node's ledger shared through Redis, `tern_cluster::auth`).
    pub fn with_ledger(
        config: &AuthConfig,
        secret: [u8; 32],
        ledger: Arc<dyn FailureLedger>,
    ) -> (Arc<AuthService>, LoadReport) {
        let empty = Loaded {
            config: config.clone(),
            backend: Backend::None,
            senders: None,
            guard: Guard::new(config.guard_policy(), Arc::clone(&ledger)),
        };
        let service = Arc::new(AuthService {
            loaded: ArcSwap::from_pointee(empty),
            ledger,
            hashes: Arc::new(Semaphore::new(config.hash_permits())),
            secret,
        });
        let report = service.reload(config);
        (service, report)
    }

    /// Applies `config`: files are read again; one that cannot be loaded keeps the
    /// previous one (when its path did not change) and is named in the report.
    /// `max_concurrent_hashes` takes effect at the next start.
    pub fn reload(&self, config: &AuthConfig) -> LoadReport {
        let old = self.loaded.load_full();
        let mut report = LoadReport::default();
        let backend = match (&config.passwd_file, &config.dovecot_socket) {
            (Some(path), _) => match PasswdFile::load(path) {
                Ok(file) => {
                    report.passwd = Some((path.clone(), file.len()));
                    Backend::Passwd(Arc::new(file))
                }
                Err(e) => {
                    report.passwd_error = Some((path.clone(), e));
                    match &old.backend {
                        Backend::Passwd(f) if f.path() == path => old.backend.clone(),
                        _ => Backend::None,
                    }
                }
            },
            (None, Some(socket)) => match &old.backend {
                Backend::Dovecot(c)
                    if c.path() == socket
                        && old.config.dovecot_timeout_secs == config.dovecot_timeout_secs =>
                {
                    old.backend.clone()
                }
                _ => Backend::Dovecot(Arc::new(DovecotClient::new(
                    socket,
                    Duration::from_secs(config.dovecot_timeout_secs),
                ))),
            },
            (None, None) => Backend::None,
        };
        let senders = match &config.sender_login_map {
            Some(path) => match SenderLoginMap::load(path) {
                Ok(map) => {
                    report.senders = Some((path.clone(), map.len()));
                    Some(Arc::new(map))
                }
                Err(e) => {
                    report.senders_error = Some((path.clone(), e));
                    old.senders.clone()
                }
            },
            None => None,
        };
        self.loaded.store(Arc::new(Loaded {
            config: config.clone(),
            backend,
            senders,
            guard: Guard::new(config.guard_policy(), Arc::clone(&self.ledger)),
        }));
        report
    }

    /// Learns Dovecot's mechanisms (and checks its socket); `Ok(None)` without Dovecot.
    pub async fn probe_dovecot(&self) -> Result<Option<Vec<String>>, DovecotError> {
        let loaded = self.loaded.load_full();
        match &loaded.backend {
            Backend::Dovecot(c) => c.probe().await.map(Some),
            _ => Ok(None),
        }
    }

    /// The mechanisms to advertise: the configured ones, less those Dovecot said it
    /// does not offer (once it said).
    pub fn mechanisms(&self) -> Vec<Mechanism> {
        let loaded = self.loaded.load();
        let mut list = loaded.config.mechanisms.clone();
        if let Backend::Dovecot(c) = &loaded.backend {
            let offered = c.mechanisms();
            if !offered.is_empty() {
                list.retain(|m| offered.iter().any(|o| o == m.name()));
            }
        }
        list
    }

    /// True while the client's network is locked out.
    pub async fn client_locked(&self, ip: IpAddr) -> bool {
        let guard = self.loaded.load().guard.clone();
        guard.client_locked(ip, Instant::now()).await
    }

    /// The sender check in force.
    pub fn sender_check(&self) -> SenderCheck {
        self.loaded.load().config.sender_check
    }

    /// True when `login` may send as `address` (always, when the check is off or no
    /// map is loaded).
    pub fn sender_allowed(&self, login: &str, address: &str) -> bool {
        let loaded = self.loaded.load();
        if loaded.config.sender_check == SenderCheck::Off {
            return true;
        }
        match &loaded.senders {
            Some(map) => map.owns(login, address),
            // Configured but never loaded: nobody owns anything.
            None => address.is_empty(),
        }
    }

    /// Write the user in the Received header.
    pub fn received_show_user(&self) -> bool {
        self.loaded.load().config.received_show_user
    }

    /// Leave the client out of the Received header of authenticated submissions.
    pub fn received_hide_client(&self) -> bool {
        self.loaded.load().config.received_hide_client
    }

    /// Starts an exchange with `mechanism` for the client at `remote` (this server's
    /// address `local`); `secured` when the session is encrypted or trusted loopback.
    /// The caller has checked that the mechanism is offered and the client not locked.
    pub fn start(
        self: &Arc<Self>,
        mechanism: Mechanism,
        local: Option<IpAddr>,
        remote: IpAddr,
        secured: bool,
    ) -> Exchange {
        let loaded = self.loaded.load_full();
        let stage = match (&loaded.backend, mechanism) {
            (Backend::Dovecot(c), m) => {
                Stage::Dovecot(c.exchange(m.name(), local, remote, secured))
            }
            (Backend::None, _) => Stage::NoBackend,
            (Backend::Passwd(_), Mechanism::Plain) => Stage::Plain(Plain::new()),
            (Backend::Passwd(_), Mechanism::Login) => Stage::Login(Login::new()),
            (Backend::Passwd(_), Mechanism::ScramSha256) => Stage::ScramStart(ScramStart::new()),
        };
        Exchange {
            service: Arc::clone(self),
            loaded,
            mechanism,
            remote,
            stage,
            scram_why: None,
        }
    }
}

/// Where an exchange stands.
enum Stage {
    NoBackend,
    Plain(Plain),
    Login(Login),
    ScramStart(ScramStart),
    ScramSent(ScramSent),
    /// The last server message (SCRAM's server-final, or Dovecot's data with its OK) was
    /// sent; the client's empty answer completes the exchange.
    ScramFinal(String),
    Dovecot(DovecotExchange),
    Done,
}

/// What the session does next.
#[derive(Debug)]
pub enum Step {
    /// Send `334` with this challenge (base64-encoded by the session) and wait for the
    /// client's response.
    Challenge(Vec<u8>),
    /// Authenticated as this user: `235 2.7.0`.
    Success(String),
    /// Not authenticated.
    Failure(Failure),
}

/// How an exchange failed.
#[derive(Debug)]
pub struct Failure {
    /// The user name the client gave, when known.
    pub user: Option<String>,
    /// Why.
    pub reason: FailureReason,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Lockouts this failure started (one event each).
    pub lockouts: Vec<Lockout>,
}

/// Why an exchange failed, and the reply for it.
#[derive(Debug)]
#[non_exhaustive]
pub enum FailureReason {
    /// Wrong password: `535 5.7.8 Authentication credentials invalid`.
    WrongPassword,
    /// No such user: the same `535 5.7.8`.
    UnknownUser,
    /// SCRAM for a user whose stored password is neither SCRAM-SHA-256 nor plaintext:
    /// the same `535 5.7.8`.
    NoScramKeys,
    /// The client's messages were refused by the mechanism: the same `535 5.7.8`.
    Refused(SaslError),
    /// The client or the user is locked out: `454 4.7.0`.
    Locked,
    /// The backend could not answer: `454 4.7.0 Temporary authentication failure`.
    Unavailable(String),
}

impl FailureReason {
    /// A short word for events and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            FailureReason::WrongPassword => "wrong_password",
            FailureReason::UnknownUser => "unknown_user",
            FailureReason::NoScramKeys => "no_scram_keys",
            FailureReason::Refused(_) => "refused",
            FailureReason::Locked => "locked",
            FailureReason::Unavailable(_) => "unavailable",
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailureReason::Refused(e) => write!(f, "refused: {e}"),
            FailureReason::Unavailable(e) => write!(f, "unavailable: {e}"),
            other => f.write_str(other.label()),
        }
    }
}

/// One AUTH exchange.
pub struct Exchange {
    service: Arc<AuthService>,
    loaded: Arc<Loaded>,
    mechanism: Mechanism,
    remote: IpAddr,
    stage: Stage,
    /// Why a SCRAM exchange on stand-in keys will fail (for the event).
    scram_why: Option<FailureReason>,
}

impl Exchange {
    /// The mechanism.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The next step. The first call takes the initial response (`None` when the
    /// client sent none: the first challenge is returned); later calls take each
    /// response to a challenge.
    pub async fn step(&mut self, response: Option<Vec<u8>>) -> Step {
        let stage = std::mem::replace(&mut self.stage, Stage::Done);
        match (stage, response) {
            (Stage::NoBackend, _) => self.unavailable("no credential source configured".into()),
            (Stage::Done, _) => {
                self.fail(
                    None,
                    FailureReason::Refused(SaslError::Malformed("exchange")),
                )
                .await
            }
            (Stage::Plain(p), None) => {
                self.stage = Stage::Plain(p);
                Step::Challenge(Vec::new())
            }
            (Stage::Plain(p), Some(r)) => match p.respond(&r) {
                Ok(creds) => self.check_password(creds).await,
                Err(e) => self.fail(None, FailureReason::Refused(e)).await,
            },
            (Stage::Login(l), None) => {
                self.stage = Stage::Login(l);
                Step::Challenge(login::USERNAME.to_vec())
            }
            (Stage::Login(l), Some(r)) => match l.respond(&r) {
                Ok(LoginStep::Challenge(next, c)) => {
                    self.stage = Stage::Login(next);
                    Step::Challenge(c.to_vec())
                }
                Ok(LoginStep::Done(creds)) => self.check_password(creds).await,
                Err(e) => self.fail(None, FailureReason::Refused(e)).await,
            },
            (Stage::ScramStart(s), None) => {
                self.stage = Stage::ScramStart(s);
                Step::Challenge(Vec::new())
            }
            (Stage::ScramStart(s), Some(r)) => match s.respond(&r) {
                Ok(need) => {
                    let user = need.user().to_string();
                    let (keys, known) = self.scram_keys(&user).await;
                    let nonce = match server_nonce() {
                        Ok(n) => n,
                        Err(e) => return self.unavailable(format!("random source: {e}")),
                    };
                    let (sent, first) = need.challenge(keys, known.is_ok(), &nonce);
                    self.stage = Stage::ScramSent(sent);
                    self.scram_why = known.err();
                    Step::Challenge(first)
                }
                Err(e) => self.fail(None, FailureReason::Refused(e)).await,
            },
            (Stage::ScramSent(s), r) => match s.respond(&r.unwrap_or_default()) {
                Ok(ScramOutcome::Verified { user, server_final }) => {
                    if self.loaded.guard.user_locked(&user, Instant::now()).await {
                        return self.fail(Some(user), FailureReason::Locked).await;
                    }
                    self.stage = Stage::ScramFinal(user);
                    Step::Challenge(server_final)
                }
                Ok(ScramOutcome::Refused { user }) => {
                    let why = self
                        .scram_why
                        .take()
                        .unwrap_or(FailureReason::WrongPassword);
                    self.fail(Some(user), why).await
                }
                Err(e) => self.fail(None, FailureReason::Refused(e)).await,
            },
            (Stage::ScramFinal(user), r) => {
                if r.is_some_and(|r| !r.is_empty()) {
                    return self
                        .fail(
                            Some(user),
                            FailureReason::Refused(SaslError::Malformed("SCRAM")),
                        )
                        .await;
                }
                self.succeed(user).await
            }
            (Stage::Dovecot(mut d), r) => match d.step(r.as_deref()).await {
                Ok(DovecotStep::Challenge(c)) => {
                    self.stage = Stage::Dovecot(d);
                    Step::Challenge(c)
                }
                Ok(DovecotStep::Ok {
                    user,
                    final_data: Some(data),
                }) => {
                    // The client gets the last server message first (SCRAM's v=).
                    self.stage = Stage::ScramFinal(user);
                    Step::Challenge(data)
                }
                Ok(DovecotStep::Ok {
                    user,
                    final_data: None,
                }) => self.succeed(user).await,
                Ok(DovecotStep::Fail {
                    temporary: true, ..
                }) => self.unavailable("dovecot reported a temporary failure".into()),
                Ok(DovecotStep::Fail {
                    user,
                    temporary: false,
                }) => self.fail(user, FailureReason::WrongPassword).await,
                Err(e) => self.unavailable(e.to_string()),
            },
        }
    }

    /// PLAIN and LOGIN: checks the password on the blocking pool.
    async fn check_password(&mut self, creds: Credentials) -> Step {
        let Backend::Passwd(file) = &self.loaded.backend else {
            return self.unavailable("no passwd-file loaded".into());
        };
        let file = Arc::clone(file);
        let permit = match Arc::clone(&self.service.hashes).acquire_owned().await {
            Ok(p) => p,
            Err(e) => return self.unavailable(e.to_string()),
        };
        let user = creds.user.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            match file.lookup(&creds.user) {
                Some(entry) => (
                    Some(entry.name.clone()),
                    entry.password.verify(&creds.password),
                ),
                None => {
                    if let Some(stand_in) = file.stand_in() {
                        let _ = stand_in.verify(&creds.password);
                    }
                    (None, false)
                }
            }
        })
        .await;
        match checked {
            Ok((Some(name), true)) => self.succeed(name).await,
            Ok((Some(_), false)) => self.fail(Some(user), FailureReason::WrongPassword).await,
            Ok((None, _)) => self.fail(Some(user), FailureReason::UnknownUser).await,
            Err(e) => self.unavailable(format!("password check failed: {e}")),
        }
    }

    /// The user's SCRAM keys, or stand-in keys and why the exchange will fail.
    async fn scram_keys(&self, user: &str) -> (ScramKeys, Result<(), FailureReason>) {
        let Backend::Passwd(file) = &self.loaded.backend else {
            return (
                ScramKeys::stand_in(user, &self.service.secret, 4096),
                Err(FailureReason::UnknownUser),
            );
        };
        let iterations = file.scram_iterations();
        let stand_in = ScramKeys::stand_in(user, &self.service.secret, iterations);
        let entry = file.lookup(user).map(|e| e.password.clone());
        match entry {
            Some(p) => {
                if let Some(k) = p.scram_keys() {
                    return (k.clone(), Ok(()));
                }
                let Some(plain) = p.plaintext().map(<[u8]>::to_vec) else {
                    return (stand_in, Err(FailureReason::NoScramKeys));
                };
                // A plaintext entry: derive keys with a salt stable per user.
                let salt = stand_in.salt.clone();
                let permit = Arc::clone(&self.service.hashes).acquire_owned().await;
                let derived = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    ScramKeys::derive(&plain, &salt, iterations)
                })
                .await;
                match derived {
                    Ok(k) => (k, Ok(())),
                    Err(_) => (stand_in, Err(FailureReason::UnknownUser)),
                }
            }
            None => (stand_in, Err(FailureReason::UnknownUser)),
        }
    }

    async fn succeed(&mut self, user: String) -> Step {
        let now = Instant::now();
        if self.loaded.guard.user_locked(&user, now).await {
            return self.fail(Some(user), FailureReason::Locked).await;
        }
        self.loaded.guard.succeeded(&user).await;
        Step::Success(user)
    }

    async fn fail(&mut self, user: Option<String>, reason: FailureReason) -> Step {
        let now = Instant::now();
        let guard = &self.loaded.guard;
        let locked = match &user {
            Some(u) => guard.user_locked(u, now).await,
            None => false,
        };
        let reason = if locked {
            FailureReason::Locked
        } else {
            reason
        };
        let verdict = guard.failed(self.remote, user.as_deref(), now).await;
        Step::Failure(Failure {
            user,
            reason,
            delay: verdict.delay,
            lockouts: verdict.lockouts,
        })
    }

    fn unavailable(&mut self, why: String) -> Step {
        Step::Failure(Failure {
            user: None,
            reason: FailureReason::Unavailable(why),
            delay: Duration::ZERO,
            lockouts: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn service_with(lines: &str) -> (Arc<AuthService>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, lines).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = AuthConfig {
            passwd_file: Some(path),
            failure_delay_ms: 0,
            max_failure_delay_ms: 0,
            mechanisms: vec![Mechanism::Plain, Mechanism::ScramSha256],
            ..AuthConfig::default()
        };
        let (service, report) = AuthService::new(&config);
        assert!(!report.has_errors(), "{report:?}");
        (service, dir)
    }

    async fn plain(service: &Arc<AuthService>, user: &str, pw: &str) -> (Step, Duration) {
        let ip = "192.0.2.1".parse().unwrap();
        let mut ex = service.start(Mechanism::Plain, None, ip, true);
        let started = Instant::now();
        let step = ex.step(Some(format!("\0{user}\0{pw}").into_bytes())).await;
        (step, started.elapsed())
    }

    /// An unknown user costs a hash check too: without the stand-in its answer would
    /// come back at once, telling it from a wrong password.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unknown_user_takes_as_long_as_a_wrong_password() {
        let hash = bcrypt::hash("right", 11).unwrap();
        let (service, _dir) = service_with(&format!("alice:{{BLF-CRYPT}}{hash}\n"));
        let mut wrong = Duration::MAX;
        let mut unknown = Duration::MAX;
        for _ in 0..3 {
            let (step, t) = plain(&service, "alice", "wrong").await;
            assert!(matches!(
                step,
                Step::Failure(Failure {
                    reason: FailureReason::WrongPassword,
                    ..
                })
            ));
            wrong = wrong.min(t);
            let (step, t) = plain(&service, "mallory", "wrong").await;
            assert!(matches!(
                step,
                Step::Failure(Failure {
                    reason: FailureReason::UnknownUser,
                    ..
                })
            ));
            unknown = unknown.min(t);
        }
        assert!(
            unknown * 2 >= wrong,
            "unknown user {unknown:?} vs wrong password {wrong:?}"
        );
        let (step, _) = plain(&service, "ALICE", "right").await;
        assert!(matches!(step, Step::Success(u) if u == "alice"));
    }

    /// The user lockout answers `Locked` even to the right password.
    #[tokio::test]
    async fn a_locked_user_cannot_test_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, "bob:{PLAIN}right\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = AuthConfig {
            passwd_file: Some(path),
            failure_delay_ms: 0,
            max_failure_delay_ms: 0,
            max_failures_per_user: 2,
            ..AuthConfig::default()
        };
        let (service, _) = AuthService::new(&config);
        for i in 0..2u8 {
            let ip = std::net::IpAddr::from([198, 51, 100, i]);
            let mut ex = service.start(Mechanism::Plain, None, ip, true);
            let Step::Failure(f) = ex.step(Some(b"\0bob\0wrong".to_vec())).await else {
                panic!("wrong password accepted");
            };
            assert!(matches!(f.reason, FailureReason::WrongPassword));
            assert_eq!(f.lockouts.len(), usize::from(i));
        }
        let ip = std::net::IpAddr::from([203, 0, 113, 9]);
        let mut ex = service.start(Mechanism::Plain, None, ip, true);
        let Step::Failure(f) = ex.step(Some(b"\0bob\0right".to_vec())).await else {
            panic!("locked-out user authenticated");
        };
        assert!(matches!(f.reason, FailureReason::Locked));
    }

    /// SCRAM through the service, the client side computed here from RFC 5802: a
    /// `{PLAIN}` entry gets keys derived on the fly, and the server's signature checks.
    #[tokio::test]
    async fn scram_against_a_plaintext_entry() {
        use base64::Engine;
        use base64::engine::general_purpose::STANDARD;
        let (service, _dir) = service_with("carol:{PLAIN}pencil\n");
        let ip = "192.0.2.1".parse().unwrap();
        let mut ex = service.start(Mechanism::ScramSha256, None, ip, true);
        let Step::Challenge(c) = ex.step(None).await else {
            panic!("no first challenge")
        };
        assert!(c.is_empty());
        let first_bare = "n=carol,r=clientnonce";
        let Step::Challenge(server_first) =
            ex.step(Some(format!("n,,{first_bare}").into_bytes())).await
        else {
            panic!("no server-first")
        };
        let server_first = String::from_utf8(server_first).unwrap();
        let mut fields = server_first.split(',');
        let nonce = fields
            .next()
            .unwrap()
            .strip_prefix("r=")
            .unwrap()
            .to_string();
        let salt = STANDARD
            .decode(fields.next().unwrap().strip_prefix("s=").unwrap())
            .unwrap();
        let iterations: u32 = fields
            .next()
            .unwrap()
            .strip_prefix("i=")
            .unwrap()
            .parse()
            .unwrap();
        let keys = ScramKeys::derive(b"pencil", &salt, iterations);
        let mut salted = [0u8; 32];
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            std::num::NonZeroU32::new(iterations).unwrap(),
            &salt,
            b"pencil",
            &mut salted,
        );
        let client_key = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &salted),
            b"Client Key",
        );
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{first_bare},{server_first},{without_proof}");
        let signature = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &keys.stored_key),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(signature.as_ref())
            .map(|(a, b)| a ^ b)
            .collect();
        let final_msg = format!("{without_proof},p={}", STANDARD.encode(proof));
        let Step::Challenge(server_final) = ex.step(Some(final_msg.into_bytes())).await else {
            panic!("proof refused")
        };
        let expected = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &keys.server_key),
            auth_message.as_bytes(),
        );
        assert_eq!(
            server_final,
            format!("v={}", STANDARD.encode(expected.as_ref())).into_bytes()
        );
        assert!(matches!(ex.step(Some(Vec::new())).await, Step::Success(u) if u == "carol"));
    }
}
