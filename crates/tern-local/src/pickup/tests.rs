//! Unit tests of the pickup service, one scan at a time, on a real spool.

use std::path::Path;

use tern_spool::intake::BoxFuture;
use tern_spool::{MessageDraft, QueueState, Spool};

use super::*;

struct Fixture {
    _root: tempfile::TempDir,
    pickup: PathBuf,
    spool: Spool,
    events_path: PathBuf,
    service: Service,
}

fn config(dir: &Path) -> PickupConfig {
    PickupConfig {
        dir: dir.to_path_buf(),
        interval: Duration::from_millis(50),
        max_files_per_scan: 100,
        max_message_size: 10_000,
        max_recipients: 10,
        default_sender: "postmaster".into(),
        hostname: "host.test".into(),
        orphan_after: Duration::from_secs(3600),
    }
}

fn fixture_with(edit: impl FnOnce(&mut PickupConfig)) -> Fixture {
    let root = tempfile::tempdir().unwrap();
    let pickup = root.path().join("pickup");
    let (spool, _) = Spool::open(&root.path().join("spool"), EventLog::discard()).unwrap();
    let events_path = root.path().join("events.jsonl");
    let events = EventLog::open(Some(&events_path), false).unwrap();
    let mut cfg = config(&pickup);
    edit(&mut cfg);
    let dirs = Dirs::new(&pickup);
    dirs.prepare(rustix::process::geteuid().as_raw()).unwrap();
    let service = Service {
        config: cfg,
        dirs,
        intake: Arc::new(spool.clone()),
        events,
        back_pressure: None,
        beat: Heartbeat::detached("pickup", tern_watchdog::Kind::Listener),
    };
    Fixture {
        _root: root,
        pickup,
        spool,
        events_path,
        service,
    }
}

fn fixture() -> Fixture {
    fixture_with(|_| {})
}

impl Fixture {
    /// Drops a file the way a writer must: hidden name, then rename.
    fn drop_file(&self, name: &str, content: &[u8]) {
        let tmp = self.pickup.join(format!(".writing-{name}"));
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, self.pickup.join(name)).unwrap();
    }

    async fn scan(&self) {
        let (_tx, rx) = watch::channel(false);
        self.service.scan(false, &rx).await;
    }

    /// Every queued message: (envelope, content).
    fn queued(&self) -> Vec<(Envelope, String)> {
        let mut out = Vec::new();
        for m in self.spool.list(Some(QueueState::Incoming)).unwrap() {
            let stored = self.spool.read(QueueState::Incoming, m.id).unwrap();
            out.push((
                stored.envelope,
                String::from_utf8_lossy(&stored.body).into_owned(),
            ));
        }
        out
    }

    fn names(&self, sub: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.pickup.join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !sub.is_empty() || (n != CLAIMED_DIR && n != BADMAIL_DIR))
            .collect();
        v.sort();
        v
    }

    fn events(&self, id: u32) -> Vec<serde_json::Value> {
        self.service.events.flush(Duration::from_secs(5));
        std::fs::read_to_string(&self.events_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["id"].as_u64() == Some(u64::from(id)))
            .collect()
    }
}

fn rcpts(env: &Envelope) -> Vec<&str> {
    env.recipients.iter().map(|r| r.address.as_str()).collect()
}

#[tokio::test]
async fn a_plain_file_is_queued_with_its_envelope_from_the_headers() {
    let f = fixture();
    f.drop_file(
        "one.txt",
        b"From: Alice <alice@example.com>\nTo: bob@example.net\nCc: carol@example.org\nBcc: dave@example.org\nSubject: hi\n\nbody\n",
    );
    f.scan().await;
    let q = f.queued();
    assert_eq!(q.len(), 1);
    let (env, content) = &q[0];
    assert_eq!(env.sender, "alice@example.com");
    assert_eq!(
        rcpts(env),
        ["bob@example.net", "carol@example.org", "dave@example.org"]
    );
    assert_eq!(env.client.listener, "pickup");
    assert!(
        content.starts_with("Received: by host.test (Tern pickup, from userid "),
        "{content}"
    );
    assert!(content.contains(&format!("\tid {}; ", env.id)), "{content}");
    assert!(!content.contains("dave"), "Bcc disclosed: {content}");
    assert!(content.contains("\r\nDate: "), "{content}");
    assert!(
        content.contains(&format!("\r\nMessage-ID: <{}@host.test>\r\n", env.id)),
        "{content}"
    );
    assert!(content.ends_with("\r\n\r\nbody\r\n"));
    assert!(f.names("").is_empty() && f.names(CLAIMED_DIR).is_empty());
    let ev = f.events(6021);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["format"], "headers");
    assert_eq!(ev[0]["queue_id"], env.id.to_string());
}

#[tokio::test]
async fn a_pair_is_queued_with_its_envelope_file_and_only_when_complete() {
    let f = fixture();
    let env = br#"{"version":1,"sender":"s@example.com","recipients":["x@example.net",{"address":"y@example.net","notify":"never"}],"ret":"hdrs"}"#;
    f.drop_file("p1.env", env);
    f.scan().await;
    assert!(f.queued().is_empty(), "a lone .env waits");
    assert_eq!(f.names(""), ["p1.env"]);
    f.drop_file(
        "p1.eml",
        b"To: other@example.org\nBcc: kept@example.org\n\n8bit \xc3\xa9\n",
    );
    f.drop_file("p2.eml", b"To: a@example.org\n\nno envelope yet\n");
    f.scan().await;
    let q = f.queued();
    assert_eq!(q.len(), 1);
    let (e, content) = &q[0];
    assert_eq!(e.sender, "s@example.com");
    assert_eq!(rcpts(e), ["x@example.net", "y@example.net"]);
    assert!(e.recipients[1].notify.is_some_and(|n| n.never));
    assert_eq!(e.params.dsn_ret, Some(DsnRet::Hdrs));
    assert_eq!(e.params.body, BodyType::EightBitMime);
    assert!(
        content.contains("Bcc: kept@example.org"),
        "the envelope was explicit"
    );
    assert_eq!(
        f.names(""),
        ["p2.eml"],
        "a lone .eml waits for its envelope"
    );
    assert_eq!(f.events(6021)[0]["format"], "envelope");
}

#[tokio::test]
async fn bad_files_go_to_badmail_with_reasons_and_the_good_ones_flow() {
    let f = fixture();
    f.drop_file("a-good.txt", b"To: a@example.org\n\nfirst\n");
    f.drop_file("garbage.txt", b"\x89PNG\r\n\x1a\n");
    f.drop_file("big.txt", &vec![b'x'; 10_001]);
    f.drop_file("nobody.txt", b"Subject: no recipient\n\nx\n");
    f.drop_file("badaddr.txt", b"To: <a@@example.org>\n\nx\n");
    f.drop_file("badenv.env", b"{\"version\": 1, \"sender\": 5}");
    f.drop_file("badenv.eml", b"To: a@example.org\n\nx\n");
    f.drop_file("we ird", b"To: a@example.org\n\nx\n");
    std::os::unix::fs::symlink("/etc/passwd", f.pickup.join("link.txt")).unwrap();
    f.drop_file("z-good.txt", b"To: z@example.org\n\nlast\n");
    f.scan().await;
    let q = f.queued();
    let mut got: Vec<&str> = q
        .iter()
        .map(|(e, _)| e.recipients[0].address.as_str())
        .collect();
    got.sort_unstable();
    assert_eq!(got, ["a@example.org", "z@example.org"]);
    assert!(f.names("").is_empty(), "{:?}", f.names(""));
    let bad = f.names(BADMAIL_DIR);
    let reason = |n: &str| {
        std::fs::read_to_string(f.pickup.join(BADMAIL_DIR).join(format!("{n}.reason")))
            .unwrap_or_else(|e| panic!("no reason for {n} in {bad:?}: {e}"))
    };
    assert!(reason("garbage.txt").contains("not a message"));
    assert!(reason("big.txt").contains("more than the limit of 10000"));
    assert!(reason("nobody.txt").contains("no recipient"));
    assert!(reason("badaddr.txt").contains("To address"));
    assert!(reason("badenv").contains("envelope file is not valid"));
    assert!(reason("link.txt").contains("not a regular file"));
    assert!(bad.contains(&"badenv.env".to_owned()) && bad.contains(&"badenv.eml".to_owned()));
    let weird = bad
        .iter()
        .find(|n| n.starts_with("invalid-name-") && n.ends_with(".reason"));
    let weird = std::fs::read_to_string(f.pickup.join(BADMAIL_DIR).join(weird.unwrap())).unwrap();
    assert!(weird.contains("\"we ird\""), "{weird}");
    // The symlink itself was moved, not its target read.
    assert!(
        f.pickup
            .join(BADMAIL_DIR)
            .join("link.txt")
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(f.events(6022).len(), 7);
    // Never retried: the next scan finds nothing to do.
    f.scan().await;
    assert_eq!(f.events(6022).len(), 7);
    assert_eq!(f.queued().len(), 2);
}

#[tokio::test]
async fn half_pairs_go_to_badmail_after_the_orphan_limit() {
    let f = fixture_with(|c| c.orphan_after = Duration::ZERO);
    f.drop_file(
        "lone.env",
        br#"{"version":1,"sender":"","recipients":["a@b.test"]}"#,
    );
    f.drop_file("lone2.eml", b"To: a@b.test\n\nx\n");
    std::fs::write(f.pickup.join(".tern-stale.eml.tmp"), b"partial").unwrap();
    std::fs::write(f.pickup.join(".other-writer"), b"partial").unwrap();
    f.scan().await;
    let bad = f.names(BADMAIL_DIR);
    assert_eq!(
        bad,
        ["lone.env", "lone.reason", "lone2.eml", "lone2.reason"]
    );
    assert_eq!(
        f.names(""),
        [".other-writer"],
        "only Tern's own stale temporaries go"
    );
}

#[tokio::test]
async fn claimed_leftovers_are_processed_first_after_a_crash() {
    let f = fixture_with(|c| c.max_files_per_scan = 2);
    let claimed = f.pickup.join(CLAIMED_DIR);
    // Claimed, not queued (or queued and not removed): processed again.
    std::fs::write(claimed.join("left.txt"), b"To: left@example.org\n\nx\n").unwrap();
    // The crash came between claiming the .env and the .eml.
    std::fs::write(
        claimed.join("half.env"),
        br#"{"version":1,"sender":"","recipients":["half@example.org"]}"#,
    )
    .unwrap();
    f.drop_file("half.eml", b"To: ignored@example.org\n\nx\n");
    // A queued pair whose .eml was removed before the crash: its .env just goes.
    std::fs::write(
        claimed.join("done.env"),
        br#"{"version":1,"sender":"","recipients":["done@example.org"]}"#,
    )
    .unwrap();
    f.drop_file("new1.txt", b"To: new1@example.org\n\nx\n");
    f.drop_file("new2.txt", b"To: new2@example.org\n\nx\n");
    let (_tx, rx) = watch::channel(false);
    f.service.scan(true, &rx).await;
    let mut got: Vec<String> = f
        .queued()
        .iter()
        .map(|(e, _)| e.recipients[0].address.clone())
        .collect();
    got.sort();
    assert_eq!(
        got,
        ["half@example.org", "left@example.org"],
        "leftovers first, two per scan"
    );
    assert!(
        f.names(CLAIMED_DIR).is_empty(),
        "{:?}",
        f.names(CLAIMED_DIR)
    );
    assert_eq!(f.events(6025).len(), 1);
    f.scan().await;
    assert_eq!(f.queued().len(), 4);
    assert!(f.names("").is_empty());
    assert!(f.names(BADMAIL_DIR).is_empty());
}

/// An intake whose commits fail like a full disk.
struct FailingIntake;

struct FailingDraft(QueueId);

impl MessageIntake for FailingIntake {
    fn begin(&self) -> Box<dyn MessageDraft> {
        Box::new(FailingDraft(QueueId::generate()))
    }
    fn queued(&self) -> usize {
        0
    }
}

impl MessageDraft for FailingDraft {
    fn id(&self) -> QueueId {
        self.0
    }
    fn written(&self) -> u64 {
        0
    }
    fn write<'a>(&'a mut self, _: &'a [u8]) -> BoxFuture<'a, Result<(), SpoolError>> {
        Box::pin(async { Ok(()) })
    }
    fn commit(self: Box<Self>, _: Envelope) -> BoxFuture<'static, Result<(), SpoolError>> {
        Box::pin(async {
            Err(SpoolError::Io {
                op: "fdatasync",
                path: "spool".into(),
                error: std::io::Error::from_raw_os_error(libc::ENOSPC),
            })
        })
    }
}

#[tokio::test]
async fn a_temporary_failure_keeps_the_file_claimed_for_the_next_scan() {
    let mut f = fixture();
    let good = Arc::clone(&f.service.intake);
    f.service.intake = Arc::new(FailingIntake);
    f.drop_file("one.txt", b"To: a@example.org\n\nx\n");
    f.drop_file("two.txt", b"To: b@example.org\n\nx\n");
    f.scan().await;
    assert_eq!(f.events(6023).len(), 1, "one deferral ends the scan");
    assert_eq!(f.names(CLAIMED_DIR), ["one.txt", "two.txt"]);
    assert!(
        f.names(BADMAIL_DIR).is_empty(),
        "a full disk is not the file's fault"
    );
    f.service.intake = good;
    f.scan().await;
    assert_eq!(f.queued().len(), 2);
    assert!(f.names(CLAIMED_DIR).is_empty());
}

#[tokio::test]
async fn the_service_runs_and_stops() {
    let f = fixture();
    f.drop_file("one.txt", b"To: a@example.org\n\nx\n");
    let pickup = Pickup::start(
        f.service.config.clone(),
        Arc::clone(&f.service.intake),
        f.service.events.clone(),
        None,
        Heartbeat::detached("pickup", tern_watchdog::Kind::Listener),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while f.queued().is_empty() {
        assert!(std::time::Instant::now() < deadline, "not picked up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::timeout(Duration::from_secs(5), pickup.stop())
        .await
        .unwrap();
}

// Issue 15: the directories and files of the pickup directory are checked, not trusted.

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn my_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

#[test]
fn the_pickup_modes_keep_the_documented_ones_and_tighten_the_rest() {
    for (from, to) in [
        (0o700, 0o700),
        (0o1733, 0o1733),
        (0o755, 0o700),
        (0o750, 0o700),
        (0o777, 0o1733),
        (0o733, 0o1733),
        (0o770, 0o1730),
        (0o2770, 0o3730),
        (0o000, 0o700),
    ] {
        assert_eq!(files::pickup_mode(from), to, "{from:o}");
    }
}

#[test]
fn directories_are_created_0700_and_loose_ones_fixed_with_a_record() {
    // The umask of an ordinary login (the bug: .claimed and badmail came out 0755).
    // SAFETY-free: rustix's umask is safe; 022 is the usual value, harmless to the others.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let root = tempfile::tempdir().unwrap();
    let dirs = Dirs::new(&root.path().join("pickup"));
    assert!(dirs.prepare(my_uid()).unwrap().is_empty());
    for d in [&dirs.pickup, &dirs.claimed, &dirs.badmail] {
        assert_eq!(mode_of(d), 0o700, "{}", d.display());
    }
    // An older Tern's directories: 0755. Fixed and reported; a 1733 pickup is kept.
    for d in [&dirs.claimed, &dirs.badmail] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&dirs.pickup, std::fs::Permissions::from_mode(0o1733)).unwrap();
    let fixes = dirs.prepare(my_uid()).unwrap();
    let fixed: Vec<_> = fixes
        .iter()
        .map(|f| (f.dir.clone(), f.old, f.new))
        .collect();
    assert_eq!(
        fixed,
        [
            (dirs.claimed.clone(), 0o755, 0o700),
            (dirs.badmail.clone(), 0o755, 0o700)
        ]
    );
    assert_eq!(mode_of(&dirs.claimed), 0o700);
    assert_eq!(mode_of(&dirs.pickup), 0o1733);
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn a_symlinked_or_foreign_pickup_directory_refuses_to_start() {
    for which in [CLAIMED_DIR, BADMAIL_DIR, ""] {
        let root = tempfile::tempdir().unwrap();
        let pickup = root.path().join("pickup");
        let elsewhere = root.path().join("attacker");
        std::fs::create_dir_all(&elsewhere).unwrap();
        let linked = if which.is_empty() {
            pickup.clone()
        } else {
            std::fs::create_dir(&pickup).unwrap();
            pickup.join(which)
        };
        symlink(&elsewhere, &linked).unwrap();
        let e = Dirs::new(&pickup).prepare(my_uid()).unwrap_err();
        assert_eq!(e.path, linked);
        assert!(e.why.contains("is a symbolic link"), "{e}");
        // A file in its place is refused too.
        std::fs::remove_file(&linked).unwrap();
        std::fs::write(&linked, b"x").unwrap();
        let e = Dirs::new(&pickup).prepare(my_uid()).unwrap_err();
        assert!(e.why.contains("not a directory"), "{e}");
    }
    // Owned by someone else (Tern's uid pretended to be another one).
    let root = tempfile::tempdir().unwrap();
    let dirs = Dirs::new(&root.path().join("pickup"));
    dirs.prepare(my_uid()).unwrap();
    let e = dirs.prepare(my_uid().wrapping_add(4242)).unwrap_err();
    assert!(e.why.contains("not by Tern"), "{e}");
}

#[tokio::test]
async fn a_hard_linked_file_is_never_read() {
    let f = fixture();
    let outside = f._root.path().join("secret");
    std::fs::write(&outside, b"To: thief@evil.test\r\n\r\nroot's secret\r\n").unwrap();
    std::fs::hard_link(&outside, f.pickup.join("grab")).unwrap();
    f.scan().await;
    assert!(f.queued().is_empty(), "nothing read through the link");
    let reason = std::fs::read_to_string(f.pickup.join("badmail/grab.reason")).unwrap();
    assert!(reason.contains("2 names (hard links)"), "{reason}");
    assert_eq!(
        std::fs::read(&outside).unwrap(),
        b"To: thief@evil.test\r\n\r\nroot's secret\r\n",
        "the other name's file is untouched"
    );
    // The .reason file's mode is set, not left to the umask.
    assert_eq!(mode_of(&f.pickup.join("badmail/grab.reason")), 0o640);
}
