//! What is on disk is not what Tern wrote (issue 15): unexpected entries in every spool
//! directory, FIFOs where files should be, a directory in place of a delivery record,
//! damaged segments named message by message, and file modes whatever the umask.

use std::os::unix::fs::{PermissionsExt, symlink};

use super::*;
use crate::error::{CorruptReason, SpoolError};
use crate::record::DeliveryRecord;
use crate::state::QueueState;
use crate::store::CommitMode;

fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
}

fn mksocket(path: &Path) -> std::os::unix::net::UnixListener {
    std::os::unix::net::UnixListener::bind(path).unwrap_or_else(|e| panic!("bind {e}"))
}

fn mkdir(path: &Path) {
    std::fs::create_dir(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Opens the spool on a thread and fails the test if that takes more than 20 s (a FIFO
/// opened without O_NONBLOCK would block it for ever).
fn open_within_deadline(dir: &Path, events: &Path) -> (Spool, RecoveryReport, EventLog) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (dir, events) = (dir.to_path_buf(), events.to_path_buf());
    std::thread::spawn(move || {
        let log = EventLog::open(Some(&events), false).unwrap_or_else(|e| panic!("log: {e}"));
        let opened = Spool::open(&dir, log.clone()).map(|(s, r)| (s, r, log));
        let _ = tx.send(opened);
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => panic!("the spool did not open: {e}"),
        Err(_) => panic!("Spool::open blocked (a FIFO opened without O_NONBLOCK?)"),
    }
}

/// Whether `corrupt/` holds `name` (or `name.N`) with its `.reason`, and the reason text.
fn quarantined_as(dir: &Path, name: &str) -> Option<String> {
    let corrupt = sub(dir, "corrupt");
    names(&corrupt)
        .into_iter()
        .filter(|n| {
            n == name
                || n.strip_prefix(&format!("{name}."))
                    .is_some_and(|s| s.parse::<u32>().is_ok())
        })
        .find_map(|n| std::fs::read_to_string(corrupt.join(format!("{n}.reason"))).ok())
}

async fn commit_some(spool: &Spool, n: usize) -> Vec<(QueueId, Vec<u8>)> {
    concurrent_commits(spool, n, 700).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unexpected_entries_in_every_spool_directory_are_set_aside_and_the_start_goes_on() {
    let dir = tempdir();
    let root = dir.path().join("spool");
    let (stored, deferred) = {
        let (spool, _) = open(&root);
        spool.set_commit_mode(CommitMode::Segment);
        let stored = commit_some(&spool, 4).await;
        let deferred = stored[0].0;
        spool
            .move_to(deferred, QueueState::Incoming, QueueState::Deferred)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // No attempt yet (no record frame): a record entry that is not a file is all
        // there is to say who has the message.
        (stored, deferred)
    };
    let seg = names(&sub(&root, "segments"))
        .into_iter()
        .find(|n| !n.ends_with(".out"))
        .unwrap_or_default();
    // A directory and a FIFO named like segments (the probe's two first findings).
    let dir_seg = QueueId::generate().to_string();
    mkdir(&root.join("segments").join(&dir_seg));
    let fifo_seg = QueueId::generate().to_string();
    mkfifo(&root.join("segments").join(&fifo_seg));
    write(&root.join("segments").join("notes.txt"), b"an admin's note");
    // Every other directory gets something Tern never makes there.
    let in_incoming = QueueId::generate().to_string();
    symlink("/etc/passwd", root.join("incoming").join(&in_incoming))
        .unwrap_or_else(|e| panic!("{e}"));
    let _sock = mksocket(&root.join("tmp").join("sock"));
    write(
        &root.join("tmp").join("tmpnotes"),
        b"not a write in progress",
    );
    write(&root.join("records").join("junk"), b"not a record");
    let rec = root.join("records").join(deferred.to_string());
    mkdir(&rec);
    mkdir(&root.join("free").join("f99"));
    mkfifo(&root.join("free").join("fifo"));
    write(&root.join("alloc").join("03").join("x"), b"x");
    mkdir(&root.join("alloc").join("extra"));
    mkfifo(&root.join("hold").join(QueueId::generate().to_string()));
    write(&root.join("notes.txt"), b"left alone");

    let events = dir.path().join("events.jsonl");
    let (spool, report, log) = open_within_deadline(&root, &events);
    for (name, what) in [
        (dir_seg.as_str(), "a directory"),
        (fifo_seg.as_str(), "a FIFO"),
        ("notes.txt", "a name Tern does not make"),
        (in_incoming.as_str(), "a symbolic link"),
        ("sock", "a socket"),
        ("tmpnotes", "not a name Tern gives a write in progress"),
        ("junk", "records/"),
        ("f99", "a directory"),
        ("fifo", "a FIFO"),
        ("x", "placement directory"),
        ("extra", "alloc/"),
    ] {
        let why = quarantined_as(&root, name).unwrap_or_else(|| {
            panic!(
                "{name} not in corrupt/: {:?}",
                names(&sub(&root, "corrupt"))
            )
        });
        assert!(why.contains(what), "{name}: {why}");
    }
    // The record directory went to corrupt/<id>.record, its message to hold/.
    let why = quarantined_as(&root, &format!("{deferred}.record")).unwrap_or_default();
    assert!(why.contains("a directory"), "{why}");
    assert_eq!(
        spool.find(deferred, &QueueState::ALL),
        Some(QueueState::Hold)
    );
    let held = events_with_id(&log, &events, 3010);
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["queue_id"], deferred.to_string());
    assert_eq!(held[0]["held_from"], "deferred");
    // The administrator's note in the spool directory itself is left and reported.
    assert!(root.join("notes.txt").is_file());
    let unknown = events_with_id(&log, &events, 3011);
    assert_eq!(unknown.len(), 1);
    assert_eq!(unknown[0]["names"], "notes.txt");
    // Every message is still there, byte for byte.
    for (id, body) in &stored[1..] {
        let got = spool.read(QueueState::Incoming, *id).map(|m| m.body);
        assert_eq!(got.ok().as_ref(), Some(body), "{id}");
    }
    assert!(names(&sub(&root, "segments")).contains(&seg));
    assert_eq!(report.count(QueueState::Hold), 1, "{report:?}");
    drop(spool);
    drop(log);
    // A second start finds nothing new.
    let (_spool, report, _log) = open_within_deadline(&root, &dir.path().join("e2.jsonl"));
    assert_eq!(report.quarantined, 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifos_where_spool_files_should_be_never_block_the_start() {
    let dir = tempdir();
    let root = dir.path().join("spool");
    let stored = {
        let (spool, _) = open(&root);
        spool.set_commit_mode(CommitMode::Segment);
        commit_some(&spool, 2).await
    };
    let seg = names(&sub(&root, "segments"))
        .into_iter()
        .find(|n| !n.ends_with(".out"))
        .unwrap_or_default();
    let out = root.join("segments").join(format!("{seg}.out"));
    std::fs::remove_file(&out).unwrap_or_else(|e| panic!("{e}"));
    mkfifo(&out);
    std::fs::remove_file(root.join("spool.key")).unwrap_or_else(|e| panic!("{e}"));
    mkfifo(&root.join("spool.key"));
    std::fs::remove_file(root.join("spool.lock")).unwrap_or_else(|e| panic!("{e}"));
    mkfifo(&root.join("spool.lock"));
    mkfifo(&root.join("segments").join(QueueId::generate().to_string()));
    mkfifo(&root.join("records").join(QueueId::generate().to_string()));
    mkfifo(&root.join("incoming").join(QueueId::generate().to_string()));
    mkfifo(&root.join("tmp").join(QueueId::generate().to_string()));
    let events = dir.path().join("events.jsonl");
    let (spool, report, log) = open_within_deadline(&root, &events);
    assert_eq!(
        report.quarantined,
        7,
        "{report:?} {:?}",
        names(&sub(&root, "corrupt"))
    );
    assert!(quarantined_as(&root, "spool.key").is_some());
    assert_eq!(events_with_id(&log, &events, 3013).len(), 1, "a new key");
    assert!(
        root.join("spool.lock")
            .symlink_metadata()
            .is_ok_and(|m| m.is_file())
    );
    assert!(
        root.join("spool.key")
            .symlink_metadata()
            .is_ok_and(|m| m.is_file())
    );
    for (id, body) in &stored {
        let got = spool.read(QueueState::Incoming, *id).map(|m| m.body);
        assert_eq!(got.ok().as_ref(), Some(body), "{id}");
    }
    // A tool beside the server does not block on them either.
    mkfifo(&root.join("segments").join(QueueId::generate().to_string()));
    let ro = Spool::open_read_only(&root).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ro.queued(), 2);
    drop(spool);
    assert_eq!(Spool::lock_holder(&root).ok(), Some(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_segment_names_every_message_in_its_reason_its_events_and_the_tracking_log() {
    let dir = tempdir();
    let root = dir.path().join("spool");
    let stored = {
        let (spool, _) = open(&root);
        spool.set_commit_mode(CommitMode::Segment);
        let mut stored = Vec::new();
        // One at a time, so that the file order is the id order.
        for i in 0..5 {
            let body = content(600 + i * 10, i as u8);
            stored.push((store(&spool, &body, 4096).await, body));
        }
        stored
    };
    let seg = names(&sub(&root, "segments"))
        .into_iter()
        .find(|n| !n.ends_with(".out"))
        .unwrap_or_default();
    let path = root.join("segments").join(&seg);
    let mut bytes = std::fs::read(&path).unwrap_or_default();
    let at = |id: QueueId| {
        let needle = id.to_string();
        bytes
            .windows(15)
            .position(|w| w == needle.as_bytes())
            .map(|p| p - 12)
            .unwrap_or_else(|| panic!("no frame of {id}"))
    };
    let (second, fourth) = (at(stored[1].0), at(stored[3].0));
    bytes[second + 64 + 30] ^= 0x20; // the second message's content
    bytes[fourth + 3] ^= 0x20; // the fourth message's frame
    write(&path, &bytes);
    let events = dir.path().join("events.jsonl");
    let tracking = dir.path().join("tracking");
    let log = EventLog::open_with_tracking(
        Some(&events),
        false,
        Some(tern_events::tracking::TrackingConfig {
            dir: tracking.clone(),
            max_file_bytes: 1 << 20,
            max_file_age: Duration::from_secs(3600),
            keep_files: 4,
        }),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (spool, report) = Spool::open(&root, log.clone()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.quarantined, 1);
    let reason = std::fs::read_to_string(root.join("corrupt").join(format!("{seg}.reason")))
        .unwrap_or_default();
    // Every damage, with its offset and a description that says what it is.
    assert!(
        reason.contains(&format!("damage: offset {second} "))
            && reason.contains("fails validation"),
        "{reason}"
    );
    assert!(
        reason.contains(&format!("damage: offset {fourth} "))
            && reason.contains("not a record frame"),
        "{reason}"
    );
    assert!(!reason.contains("bad magic at start of file"), "{reason}");
    // Every message, with what became of it.
    let (damaged, lost_frame) = (stored[1].0, stored[3].0);
    assert!(
        reason.contains(&format!("message {damaged} at offset {second}: damaged")),
        "{reason}"
    );
    for i in [0, 2, 4] {
        let id = stored[i].0;
        assert!(
            reason.contains(&format!("message {id} at offset")),
            "{reason}"
        );
        assert!(reason.contains(&format!("incoming/{id}")), "{reason}");
        let got = spool.read(QueueState::Incoming, id).map(|m| m.body);
        assert_eq!(got.ok().as_ref(), Some(&stored[i].1));
    }
    // The fourth one's frame is gone, so its id is unknown: its bytes stay in the segment.
    assert_eq!(spool.find(lost_frame, &QueueState::ALL), None);
    let q = events_with_id(&log, &events, 3003);
    assert_eq!(q.len(), 1);
    assert_eq!(q[0]["damaged_ids"], damaged.to_string());
    for i in [0, 2, 4] {
        assert!(
            q[0]["written_out_ids"]
                .as_str()
                .unwrap_or("")
                .contains(&stored[i].0.to_string())
        );
    }
    let d = events_with_id(&log, &events, 3007);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0]["queue_id"], damaged.to_string());
    assert_eq!(d[0]["moved_to"], format!("corrupt/{seg}"));
    assert_eq!(events_with_id(&log, &events, 3008).len(), 3);
    // `tern track <id>` finds what happened to each.
    let found = tern_events::tracking::search(&tracking, &damaged.to_string(), 100)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        found
            .records
            .iter()
            .any(|r| r["step"] == "quarantined" && r["moved_to"] == format!("corrupt/{seg}")),
        "{:?}",
        found.records
    );
    let found = tern_events::tracking::search(&tracking, &stored[4].0.to_string(), 100)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        found.records.iter().any(|r| r["step"] == "recovered"),
        "{:?}",
        found.records
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_is_not_a_file_holds_its_message_while_tern_runs() {
    let dir = tempdir();
    let events = dir.path().join("events.jsonl");
    let (spool, _, log) = open_logged(&dir.path().join("spool"), &events);
    let id = store(&spool, &content(500, 3), 4096).await;
    spool
        .move_to(id, QueueState::Incoming, QueueState::Active)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rec = spool.dir().join("records").join(id.to_string());
    mkdir(&rec);
    // Before: an I/O error at every read, for ever (event 4010 in the queue).
    assert!(matches!(
        spool.read_record(id),
        Err(SpoolError::Corrupt(CorruptReason::RecordNotAFile))
    ));
    assert!(
        spool
            .hold_without_record(id, QueueState::Active)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    );
    assert_eq!(spool.find(id, &QueueState::ALL), Some(QueueState::Hold));
    assert!(
        spool
            .dir()
            .join("corrupt")
            .join(format!("{id}.record"))
            .is_dir()
    );
    assert_eq!(spool.read_record(id).ok(), Some(None));
    let held = events_with_id(&log, &events, 3010);
    assert_eq!(held.len(), 1);
    assert_eq!(held[0]["held_from"], "active");
    // Released, it is tried as if never attempted.
    assert_eq!(spool.release(id).await.ok(), Some(QueueState::Hold));
    // A FIFO in its place does not block the read.
    mkfifo(&rec);
    assert!(matches!(
        spool.read_record(id),
        Err(SpoolError::Corrupt(CorruptReason::RecordNotAFile))
    ));
}

fn check_modes(dir: &Path, bad: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let Ok(meta) = path.symlink_metadata() else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            if mode != 0o700 {
                bad.push(format!("{} {mode:o}", path.display()));
            }
            check_modes(&path, bad);
        } else if mode != 0o600 {
            bad.push(format!("{} {mode:o}", path.display()));
        }
    }
}

/// Sets the process umask for the life of the guard.
struct Umask(rustix::fs::Mode);

impl Umask {
    fn set(mask: u32) -> Umask {
        Umask(rustix::process::umask(rustix::fs::Mode::from_raw_mode(
            mask,
        )))
    }
}

impl Drop for Umask {
    fn drop(&mut self) {
        rustix::process::umask(self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_files_are_0600_in_0700_directories_whatever_the_umask() {
    for mask in [0o022, 0o000] {
        let _umask = Umask::set(mask);
        let dir = tempdir();
        let root = dir.path().join("spool");
        {
            let (spool, _) = open(&root);
            let mut ids = Vec::new();
            for mode in [
                CommitMode::Segment,
                CommitMode::File,
                CommitMode::Batch,
                CommitMode::Segment,
            ] {
                spool.set_commit_mode(mode);
                ids.push(store(&spool, &content(900, 1), 4096).await);
            }
            spool.set_commit_mode(CommitMode::Segment);
            ids.push(
                store(
                    &spool,
                    &content(crate::MessageWriter::BUFFER_LIMIT + 10, 2),
                    65536,
                )
                .await,
            );
            spool
                .move_to(ids[0], QueueState::Incoming, QueueState::Deferred)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            spool
                .write_record(&DeliveryRecord::new(ids[0], 2))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            spool
                .move_to(ids[1], QueueState::Incoming, QueueState::Hold)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            spool
                .remove(QueueState::Incoming, ids[2])
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let reason = CorruptReason::BadRecord("test".into());
            spool
                .quarantine_message(QueueState::Hold, ids[1], &reason)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        // A damaged segment is written out and quarantined at the next start.
        let seg = names(&sub(&root, "segments"))
            .into_iter()
            .find(|n| !n.ends_with(".out"))
            .unwrap_or_default();
        let path = root.join("segments").join(&seg);
        let mut bytes = std::fs::read(&path).unwrap_or_default();
        let n = bytes.len();
        bytes[n - 100] ^= 1;
        std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("{e}"));
        drop(open(&root));
        let mut bad = Vec::new();
        check_modes(&root, &mut bad);
        let root_mode = root
            .metadata()
            .map(|m| m.permissions().mode() & 0o7777)
            .ok();
        assert_eq!(root_mode, Some(0o700));
        assert!(bad.is_empty(), "umask {mask:03o}: {bad:?}");
        assert!(!names(&sub(&root, "corrupt")).is_empty());
    }
}
