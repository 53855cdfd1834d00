//! Recovery and quarantine: partial writes, every kind of corruption, second scans, and
//! quarantine from `list` and `read`.

use std::os::unix::fs::symlink;

use super::*;
use crate::error::{CorruptReason, Section, SpoolError};
use crate::format::{self, HEADER_LEN, TRAILER_LEN};
use crate::state::QueueState;
use crate::testutil::reseal;

fn valid_file(id: QueueId, body: &[u8]) -> Vec<u8> {
    format::encode(body, &envelope(id, body.len() as u64, 1)).unwrap_or_else(|e| panic!("{e}"))
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// What a bad entry is made of.
enum Bad {
    Bytes(Vec<u8>),
    Dir,
    Symlink(PathBuf),
    Fifo,
}

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

struct Case {
    state: QueueState,
    name: String,
    bad: Bad,
    /// Expected reason text (prefix of the Display form).
    reason: String,
}

fn case(state: QueueState, name: String, bad: Bad, reason: impl std::fmt::Display) -> Case {
    Case {
        state,
        name,
        bad,
        reason: reason.to_string(),
    }
}

fn corruptions(outside: &Path) -> Vec<Case> {
    use QueueState::*;
    let mut cases = Vec::new();
    let fresh = || QueueId::generate();
    let body = content(200, 5);
    let truncated = CorruptReason::Truncated;
    let no_trailer = CorruptReason::MissingTrailer;
    for (at, reason) in [
        (0, &truncated),
        (10, &truncated),
        (HEADER_LEN + 3, &truncated),
    ] {
        let id = fresh();
        let f = valid_file(id, &body);
        cases.push(case(
            Incoming,
            id.to_string(),
            Bad::Bytes(f[..at].to_vec()),
            reason,
        ));
    }
    for back in [1, TRAILER_LEN, 300] {
        let id = fresh();
        let f = valid_file(id, &body);
        cases.push(case(
            Active,
            id.to_string(),
            Bad::Bytes(f[..f.len() - back].to_vec()),
            &no_trailer,
        ));
    }
    let flip = |at: &dyn Fn(usize) -> usize, section: Section| -> (QueueId, Bad, CorruptReason) {
        let id = QueueId::generate();
        let mut f = valid_file(id, &body);
        let i = at(f.len());
        f[i] ^= 0x20;
        (
            id,
            Bad::Bytes(f),
            CorruptReason::ChecksumMismatch { section },
        )
    };
    let (id, bad, r) = flip(&|_| HEADER_LEN + 50, Section::Content);
    cases.push(case(Deferred, id.to_string(), bad, r));
    let (id, bad, r) = flip(&|len| len - TRAILER_LEN - 10, Section::Envelope);
    cases.push(case(Deferred, id.to_string(), bad, r));
    let (id, bad, r) = flip(&|len| len - 20, Section::Trailer);
    cases.push(case(Hold, id.to_string(), bad, r));

    let id = fresh();
    let mut f = valid_file(id, &body);
    let t = f.len() - TRAILER_LEN;
    f[8] = 2;
    f[t + 8] = 2;
    reseal(&mut f);
    cases.push(case(
        Hold,
        id.to_string(),
        Bad::Bytes(f),
        CorruptReason::UnsupportedVersion(2),
    ));

    let id = fresh();
    let junk = b"{\"id\": 12, garbage";
    let trailer = format::Trailer {
        version: format::VERSION,
        flags: 0,
        content_crc: crc32c::crc32c(&body),
        content_offset: HEADER_LEN as u64,
        content_len: body.len() as u64,
        envelope_offset: (HEADER_LEN + body.len()) as u64,
        envelope_len: junk.len() as u64,
        envelope_crc: crc32c::crc32c(junk),
    };
    let mut f = format::encode_header().to_vec();
    f.extend_from_slice(&body);
    f.extend_from_slice(junk);
    f.extend_from_slice(&format::encode_trailer(&trailer));
    cases.push(case(
        Incoming,
        id.to_string(),
        Bad::Bytes(f),
        "envelope is not valid JSON",
    ));

    let (a, b) = (fresh(), fresh());
    cases.push(case(
        Incoming,
        b.to_string(),
        Bad::Bytes(valid_file(a, &body)),
        "invalid envelope: envelope id",
    ));

    let mut f = valid_file(fresh(), &body);
    f[0] = b'M';
    cases.push(case(
        Poison,
        fresh().to_string(),
        Bad::Bytes(f),
        CorruptReason::BadMagic,
    ));

    cases.push(case(
        Deferred,
        "junk.txt".into(),
        Bad::Bytes(b"junk".to_vec()),
        "file name",
    ));
    let lower = fresh().to_string().to_lowercase();
    cases.push(case(
        Hold,
        lower,
        Bad::Bytes(valid_file(fresh(), &body)),
        "file name",
    ));
    cases.push(case(
        Active,
        fresh().to_string(),
        Bad::Dir,
        CorruptReason::UnexpectedEntry(
            "a directory in active/, not a regular file (it was not opened)".into(),
        ),
    ));
    // A FIFO must not block the scan.
    cases.push(case(
        Hold,
        fresh().to_string(),
        Bad::Fifo,
        CorruptReason::UnexpectedEntry(
            "a FIFO (named pipe) in hold/, not a regular file (it was not opened)".into(),
        ),
    ));
    let target = outside.join("elsewhere");
    let id = fresh();
    write(&target, &valid_file(id, &body));
    cases.push(case(
        Deferred,
        id.to_string(),
        Bad::Symlink(target),
        CorruptReason::UnexpectedEntry(
            "a symbolic link in deferred/, not a regular file (it was not opened)".into(),
        ),
    ));

    // Large files take the streaming validation path.
    let big = content(1536 * 1024, 7);
    let id = fresh();
    let mut f = valid_file(id, &big);
    f[HEADER_LEN + 1_200_000] ^= 1;
    cases.push(case(
        Incoming,
        id.to_string(),
        Bad::Bytes(f),
        CorruptReason::ChecksumMismatch {
            section: Section::Content,
        },
    ));
    let id = fresh();
    let f = valid_file(id, &big);
    cases.push(case(
        Active,
        id.to_string(),
        Bad::Bytes(f[..f.len() - 1000].to_vec()),
        &no_trailer,
    ));
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_removes_partials_and_quarantines_every_corruption() {
    let dir = tempdir();
    let root = dir.path().join("spool");
    let events = dir.path().join("events.jsonl");
    // First life: some real commits, then a "crash" leaving everything below on disk.
    let good_ids = {
        let (spool, _) = open(&root);
        let mut ids = Vec::new();
        for i in 0..3u8 {
            ids.push(store(&spool, &content(500, i), 64).await);
        }
        ids
    };
    let mut good_by_state = vec![(QueueState::Incoming, good_ids.clone())];
    for state in [
        QueueState::Active,
        QueueState::Deferred,
        QueueState::Hold,
        QueueState::Poison,
    ] {
        let id = QueueId::generate();
        write(
            &root.join(state.as_str()).join(id.to_string()),
            &valid_file(id, &content(1536 * 1024, 1)),
        );
        good_by_state.push((state, vec![id]));
    }
    write(
        &root.join("tmp").join(QueueId::generate().to_string()),
        &content(99, 0),
    );
    // A delivery record being written (`tmp/<id>.record`) is Tern's partial write too.
    write(
        &root
            .join("tmp")
            .join(format!("{}.record", QueueId::generate())),
        b"",
    );
    std::fs::create_dir(root.join("tmp").join("stuckdir")).unwrap_or_else(|e| panic!("{e}"));

    let cases = corruptions(dir.path());
    for c in &cases {
        let p = root.join(c.state.as_str()).join(&c.name);
        match &c.bad {
            Bad::Bytes(b) => write(&p, b),
            Bad::Dir => std::fs::create_dir(&p).unwrap_or_else(|e| panic!("{e}")),
            Bad::Symlink(t) => symlink(t, &p).unwrap_or_else(|e| panic!("{e}")),
            Bad::Fifo => mkfifo(&p),
        }
    }
    // An older quarantined file with the same name as one case must survive untouched.
    let older = root.join("corrupt").join(&cases[6].name);
    write(&older, b"older quarantined file");

    let (spool, report, log) = open_logged(&root, &events);
    assert_eq!(report.partials_removed, 2);
    assert_eq!(
        report.quarantined,
        cases.len() + 1,
        "cases plus the directory in tmp/; left: {:?}",
        QueueState::ALL.map(|s| (s, names(&root.join(s.as_str()))))
    );
    assert!(names(&root.join("tmp")).is_empty());
    for (state, ids) in &good_by_state {
        assert_eq!(report.count(*state), ids.len(), "{state}");
        for id in ids {
            assert!(
                spool.path_of(*state, *id).is_file(),
                "good file moved from {state}"
            );
        }
    }
    assert_eq!(spool.queued(), 3 + 3);
    assert_eq!(report.count(QueueState::Corrupt), cases.len() + 2);
    assert_eq!(
        std::fs::read(&older).ok().as_deref(),
        Some(&b"older quarantined file"[..])
    );
    assert!(root.join("corrupt").join("stuckdir").is_dir());

    for (i, c) in cases.iter().enumerate() {
        assert!(
            !root.join(c.state.as_str()).join(&c.name).exists(),
            "{} still in place",
            c.name
        );
        let name = if i == 6 {
            format!("{}.1", c.name)
        } else {
            c.name.clone()
        };
        let moved = root.join("corrupt").join(&name);
        match &c.bad {
            Bad::Bytes(b) => assert!(std::fs::read(&moved).ok().as_ref() == Some(b), "{name}"),
            Bad::Dir => assert!(moved.is_dir()),
            Bad::Symlink(t) => assert_eq!(std::fs::read_link(&moved).ok().as_ref(), Some(t)),
            Bad::Fifo => {
                use std::os::unix::fs::FileTypeExt;
                let ft = moved.symlink_metadata().map(|m| m.file_type());
                assert!(ft.map(|t| t.is_fifo()).unwrap_or(false));
            }
        }
        let why = std::fs::read_to_string(root.join("corrupt").join(format!("{name}.reason")))
            .unwrap_or_default();
        assert!(
            why.contains(&format!("reason: {}", c.reason)),
            "{name}: {why:?} lacks {}",
            c.reason
        );
        assert!(why.contains(&format!("file: {}/{}", c.state.as_str(), c.name)));
    }

    assert_eq!(events_with_id(&log, &events, 3002).len(), 2);
    assert_eq!(events_with_id(&log, &events, 3003).len(), cases.len() + 1);
    let recovered = events_with_id(&log, &events, 3001);
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0]["incoming"], "3");
    assert_eq!(recovered[0]["quarantined"], (cases.len() + 1).to_string());

    // The listing shows the good messages and the quarantined ones, nothing else.
    let listed = spool.list(None).unwrap_or_else(|e| panic!("{e}"));
    let good = listed.iter().filter(|m| m.envelope.is_some()).count();
    assert_eq!(good, 3 + 4);
    assert!(
        listed
            .iter()
            .filter(|m| m.envelope.is_none())
            .all(|m| m.state == QueueState::Corrupt)
    );
    drop(spool);

    // A second scan finds nothing new.
    let (_spool, again) = open(&root);
    assert_eq!(again.quarantined, 0);
    assert_eq!(again.partials_removed, 0);
    assert_eq!(again.counts, report.counts);
}

/// Stores two messages and damages the second one's envelope on disk.
async fn one_good_one_bad(root: &Path) -> (QueueId, QueueId) {
    let (spool, _) = open(root);
    let good = store(&spool, b"good message", 100).await;
    let bad = store(&spool, b"bad message", 100).await;
    let path = spool.path_of(QueueState::Incoming, bad);
    let mut f = std::fs::read(&path).unwrap_or_default();
    let at = f.len() - TRAILER_LEN - 3;
    f[at] ^= 1;
    write(&path, &f);
    (good, bad)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_list_reports_corrupt_files_without_moving_them() {
    let dir = tempdir();
    let (good, bad) = one_good_one_bad(dir.path()).await;
    write(&dir.path().join("incoming").join("stray-name"), b"x");
    let ro = Spool::open_read_only(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let listed = ro
        .list(Some(QueueState::Incoming))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed.len(), 2);
    assert_eq!(
        (listed[0].id, listed[0].state),
        (good, QueueState::Incoming)
    );
    assert_eq!(
        (listed[1].id, listed[1].state, listed[1].envelope.is_none()),
        (bad, QueueState::Corrupt, true)
    );
    assert!(matches!(
        ro.read(QueueState::Incoming, bad),
        Err(SpoolError::Corrupt(_))
    ));
    assert!(ro.path_of(QueueState::Incoming, bad).exists());
    assert!(dir.path().join("incoming").join("stray-name").exists());
    assert!(names(&dir.path().join("corrupt")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_write_list_quarantines_corrupt_files() {
    let dir = tempdir();
    let root = dir.path().join("spool");
    let (spool, _) = open(&root);
    let good = store(&spool, b"good", 100).await;
    let bad = store(&spool, b"bad", 100).await;
    let path = spool.path_of(QueueState::Incoming, bad);
    let mut f = std::fs::read(&path).unwrap_or_default();
    f[HEADER_LEN + 1] ^= 1; // content: list does not read it
    let at = f.len() - TRAILER_LEN - 3;
    f[at] ^= 1; // envelope: list does
    write(&path, &f);
    write(&root.join("hold").join("stray-name"), b"x");
    assert_eq!(spool.queued(), 2);

    let listed = spool.list(None).unwrap_or_else(|e| panic!("{e}"));
    let summary: Vec<_> = listed
        .iter()
        .map(|m| (m.id, m.state, m.envelope.is_some()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (good, QueueState::Incoming, true),
            (bad, QueueState::Corrupt, false)
        ]
    );
    assert!(!path.exists());
    assert!(root.join("corrupt").join(bad.to_string()).exists());
    assert!(root.join("corrupt").join(format!("{bad}.reason")).exists());
    assert!(root.join("corrupt").join("stray-name").exists());
    assert_eq!(spool.queued(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_quarantines_a_file_with_bad_content() {
    let dir = tempdir();
    let (spool, _) = open(dir.path());
    let id = store(&spool, b"content that will rot", 100).await;
    let path = spool.path_of(QueueState::Incoming, id);
    let mut f = std::fs::read(&path).unwrap_or_default();
    f[HEADER_LEN + 2] ^= 1;
    write(&path, &f);
    // The envelope is intact, so a listing still shows it...
    assert_eq!(
        spool.list(Some(QueueState::Incoming)).map(|l| l.len()).ok(),
        Some(1)
    );
    // ...but a full read checks the content.
    let r = spool.read(QueueState::Incoming, id);
    assert!(
        matches!(
            r,
            Err(SpoolError::Corrupt(CorruptReason::ChecksumMismatch {
                section: Section::Content
            }))
        ),
        "{r:?}"
    );
    assert!(!path.exists());
    assert!(dir.path().join("corrupt").join(id.to_string()).exists());
    assert_eq!(spool.queued(), 0);
    assert!(matches!(
        spool.read(QueueState::Incoming, id),
        Err(SpoolError::NotFound)
    ));
}
