//! Adoption of another spool (`adopt`): every state merged with its record and crash
//! count, segments, a different key, corrupt entries, refusals, and an adoption cut at
//! each step then rerun.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tern_events::EventLog;

use super::{content, names, open, store};
use crate::error::SpoolError;
use crate::id::QueueId;
use crate::record::DeliveryRecord;
use crate::state::QueueState;
use crate::store::{AdoptOptions, AdoptReport, CommitMode, Spool};

/// What the foreign spool held: id -> (state there, content, record).
type Made = BTreeMap<QueueId, (QueueState, Vec<u8>, Option<DeliveryRecord>)>;

const NEXT: i64 = 4_102_444_800_000_000; // 2100-01-01

/// A foreign spool with a message in every state (two in incoming: one resident in a
/// segment, one a file), records with attempts, a crash count, and a corrupt file.
async fn foreign(dir: &Path) -> Made {
    let (spool, _) = open(dir);
    let mut made = Made::new();
    // Resident in a segment (the default commit mode).
    let body = content(3000, 1);
    let id = store(&spool, &body, 700).await;
    made.insert(id, (QueueState::Incoming, body, None));
    spool.set_commit_mode(CommitMode::File);
    let body = content(5000, 2);
    let id = store(&spool, &body, 700).await;
    made.insert(id, (QueueState::Incoming, body, None));
    for (i, state) in [
        QueueState::Active,
        QueueState::Deferred,
        QueueState::Hold,
        QueueState::Poison,
    ]
    .into_iter()
    .enumerate()
    {
        let body = content(1000 + i * 100, 10 + i as u8);
        let id = store(&spool, &body, 500).await;
        spool
            .move_to(id, QueueState::Incoming, state)
            .await
            .unwrap();
        let mut rec = DeliveryRecord::new(id, 2);
        rec.attempts = 3 + i as u32;
        rec.crashes = 1;
        rec.next_attempt_micros = Some(NEXT);
        spool.write_record(&rec).await.unwrap();
        made.insert(id, (state, body, Some(rec)));
    }
    // Garbage under a message name: quarantined there, copied here as corrupt.
    let bad = QueueId::generate();
    std::fs::write(dir.join("deferred").join(bad.to_string()), b"not a message").unwrap();
    made
}

fn opts() -> AdoptOptions {
    AdoptOptions {
        by: "node-1".into(),
        poison_threshold: 5,
        ..AdoptOptions::default()
    }
}

fn adopt(here: &Spool, there: &Path, opts: &AdoptOptions) -> Result<AdoptReport, SpoolError> {
    here.adopt(there, opts, EventLog::discard())
}

/// Every message of `made` is in `here` once, in its expected state, with its content
/// and its record (active ones deferred, one more crash, due now); `there` holds none.
fn check_merged(here_dir: &Path, there: &Path, made: &Made) {
    let (here, report) = open(here_dir);
    // Reopened under its own key: every adopted record frame authenticates here.
    assert_eq!(report.quarantined, 0, "{report:?}");
    for (id, (state, body, rec)) in made {
        let want = match state {
            QueueState::Active => QueueState::Deferred,
            s => *s,
        };
        let found: Vec<QueueState> = QueueState::ALL
            .into_iter()
            .filter(|s| *s != QueueState::Corrupt && here.find(*id, &[*s]).is_some())
            .collect();
        assert_eq!(found, vec![want], "message {id}");
        let msg = here.read(want, *id).unwrap();
        assert_eq!(&msg.body, body, "content of {id}");
        let got = here.read_record(*id).unwrap();
        match (state, rec) {
            (QueueState::Active, Some(r)) => {
                let got = got.unwrap();
                assert_eq!(got.crashes, r.crashes + 1, "crash counted");
                assert_eq!(got.attempts, r.attempts);
                assert_eq!(got.next_attempt_micros, None, "due at once");
            }
            (_, r) => assert_eq!(&got, r, "record of {id}"),
        }
    }
    for s in [
        "incoming", "active", "deferred", "hold", "poison", "records", "tmp",
    ] {
        assert!(
            names(&there.join(s)).is_empty(),
            "{s}: {:?}",
            names(&there.join(s))
        );
    }
    assert!(names(&here_dir.join("tmp")).is_empty());
    assert!(
        names(&there.join("segments")).is_empty(),
        "{:?}",
        names(&there.join("segments"))
    );
    let marker = crate::store::read_marker(there).unwrap().unwrap();
    assert_eq!(marker.by, "node-1");
}

#[tokio::test]
async fn every_state_is_merged_with_its_record_crash_count_and_corrupt_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let made = foreign(&a).await;
    crate::store::write_node(
        &a,
        &crate::store::SpoolNode {
            name: "node-2".into(),
            id: 2,
        },
    )
    .unwrap();
    {
        let (here, _) = open(&b);
        let report = adopt(&here, &a, &opts()).unwrap();
        assert_eq!(report.count(QueueState::Incoming), 2);
        for s in [
            QueueState::Active,
            QueueState::Deferred,
            QueueState::Hold,
            QueueState::Poison,
        ] {
            assert_eq!(report.count(s), 1, "{s}");
        }
        assert_eq!(report.crashed, 1);
        assert_eq!(report.poisoned, 0);
        assert_eq!(report.already_here, 0);
        assert_eq!(
            report.node.as_ref().map(|n| n.name.as_str()),
            Some("node-2")
        );
        assert_eq!(report.recovery.count(QueueState::Corrupt), 1);
        // The quarantined file and its reason.
        assert_eq!(report.corrupt_moved, 2, "{report:?}");
        assert_eq!(report.corrupt_left, 0);
        assert_eq!(report.adopted.len(), 6);
        let deferred = report
            .adopted
            .iter()
            .find(|m| m.from == QueueState::Deferred)
            .unwrap();
        assert_eq!(deferred.next_attempt_micros, Some(NEXT), "retry time kept");
        // The two keys differ: the frames were re-authenticated, not copied.
        assert_ne!(
            std::fs::read(a.join("spool.key")).unwrap(),
            std::fs::read(b.join("spool.key")).unwrap()
        );
    }
    check_merged(&b, &a, &made);
    let (here, _) = open(&b);
    assert_eq!(
        here.list(Some(QueueState::Corrupt)).unwrap().len(),
        1,
        "the corrupt file, listed here"
    );
    assert!(names(&a.join("corrupt")).is_empty());
    assert_eq!(
        crate::store::read_marker(&a)
            .unwrap()
            .unwrap()
            .node
            .as_deref(),
        Some("node-2")
    );
}

#[tokio::test]
async fn an_active_message_at_the_threshold_is_poisoned() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let made = foreign(&a).await;
    let (here, _) = open(&b);
    let mut o = opts();
    o.poison_threshold = 2;
    let report = adopt(&here, &a, &o).unwrap();
    assert_eq!(report.poisoned, 1);
    let active = made
        .iter()
        .find(|(_, (s, _, _))| *s == QueueState::Active)
        .map(|(id, _)| *id)
        .unwrap();
    assert_eq!(
        here.find(active, &[QueueState::Poison]),
        Some(QueueState::Poison)
    );
    assert_eq!(here.read_record(active).unwrap().unwrap().crashes, 2);
}

#[tokio::test]
async fn an_adoption_cut_at_any_step_and_rerun_loses_nothing_and_keeps_one_copy() {
    // Cut at the 1st, 2nd, ... step (marker, each message placed, each removed, each
    // corrupt entry) until a run goes through: every cut leaves a state a rerun
    // completes.
    for cut in 1.. {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        let made = foreign(&a).await;
        let steps = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&steps);
        let mut o = opts();
        o.fault = Some(Arc::new(move |_step| {
            if counter.fetch_add(1, Ordering::SeqCst) + 1 == cut {
                return Err(SpoolError::BlockingTask("cut".into()));
            }
            Ok(())
        }));
        let completed = {
            let (here, _) = open(&b);
            let first = adopt(&here, &a, &o);
            if first.is_ok() {
                true
            } else {
                // The rerun, as after a kill: a new process, both spools reopened.
                drop(here);
                let (here, _) = open(&b);
                let report = adopt(&here, &a, &opts()).unwrap();
                let placed_before = cut / 2;
                assert!(report.already_here <= placed_before.max(1), "{report:?}");
                false
            }
        };
        check_merged(&b, &a, &made);
        if completed {
            assert!(cut > 10, "the cuts covered every step ({cut})");
            break;
        }
    }
}

#[tokio::test]
async fn adoption_is_refused_for_its_own_spool_a_non_spool_and_a_live_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let (here, _) = open(&b);
    assert!(matches!(
        adopt(&here, &b, &opts()),
        Err(SpoolError::NotASpool(_))
    ));
    std::fs::create_dir(&a).unwrap();
    std::fs::write(a.join("notes"), b"x").unwrap();
    assert!(matches!(
        adopt(&here, &a, &opts()),
        Err(SpoolError::NotASpool(_))
    ));
    assert_eq!(
        names(&a),
        vec!["notes".to_string()],
        "nothing created there"
    );
    assert!(matches!(
        adopt(&here, &tmp.path().join("missing"), &opts()),
        Err(SpoolError::NotASpool(_))
    ));
    let c = tmp.path().join("c");
    let (live, _) = open(&c);
    assert!(matches!(adopt(&here, &c, &opts()), Err(SpoolError::Locked)));
    assert!(
        crate::store::read_marker(&c).unwrap().is_none(),
        "not fenced"
    );
    drop(live);
}

#[test]
fn the_node_file_and_the_marker_are_read_strictly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    assert_eq!(crate::store::read_node(d).unwrap(), None);
    std::fs::write(d.join("node"), br#"{"name":"bad name!","id":2}"#).unwrap();
    assert_eq!(crate::store::read_node(d).unwrap(), None);
    std::fs::write(d.join("node"), br#"{"name":"n2","id":5000}"#).unwrap();
    assert_eq!(crate::store::read_node(d).unwrap(), None);
    std::fs::write(d.join("node"), vec![b' '; 10_000]).unwrap();
    assert!(crate::store::read_node(d).is_err());
    let node = crate::store::SpoolNode {
        name: "n2".into(),
        id: 2,
    };
    crate::store::write_node(d, &node).unwrap();
    assert_eq!(crate::store::read_node(d).unwrap(), Some(node));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.join("node"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Garbage in the marker still fences.
    std::fs::write(d.join("adopted"), b"garbage").unwrap();
    assert!(crate::store::read_marker(d).unwrap().is_some());
    assert!(crate::store::remove_marker(d).unwrap());
    assert!(crate::store::read_marker(d).unwrap().is_none());
}
