//! The lazy open of a server's spool and the background load of `deferred/`
//! (`Spool::open_lazy`, `Spool::load_deferred`).

use std::collections::BTreeSet;

use tern_events::EventLog;

use super::{open, store};
use crate::record::DeliveryRecord;
use crate::state::QueueState;
use crate::store::{DeferredEntry, Spool};

async fn deferred(spool: &Spool, body: &[u8]) -> crate::QueueId {
    let id = store(spool, body, 64).await;
    spool
        .move_to(id, QueueState::Incoming, QueueState::Deferred)
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn a_lazy_open_leaves_deferred_to_the_load_which_validates_and_hands_it_over() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let a = deferred(&spool, b"Subject: a\r\n\r\na\r\n").await;
    let b = deferred(&spool, b"Subject: b\r\n\r\nb\r\n").await;
    let bad = deferred(&spool, b"Subject: c\r\n\r\nc\r\n").await;
    let gone = store(&spool, b"Subject: g\r\n\r\ng\r\n", 64).await;
    let d = store(&spool, b"Subject: d\r\n\r\nd\r\n", 64).await;
    spool
        .move_to(d, QueueState::Incoming, QueueState::Active)
        .await
        .unwrap();
    let mut rec = DeliveryRecord::new(a, 2);
    rec.attempts = 3;
    spool.write_record(&rec).await.unwrap();
    // `gone` has a record from an older version (records/), left behind below.
    super::write_legacy_record(dir.path(), &DeliveryRecord::new(gone, 2));
    drop(spool);
    let deferred_dir = dir.path().join("deferred");
    // Damage: a body byte of `bad` (its checksum fails), a name Tern does not make.
    let bad_path = deferred_dir.join(bad.to_string());
    let mut bytes = std::fs::read(&bad_path).unwrap();
    bytes[20] ^= 0x55;
    std::fs::write(&bad_path, &bytes).unwrap();
    std::fs::write(deferred_dir.join("junk"), b"x").unwrap();
    // `gone` was delivered and removed, its record left behind; `d` was moving from
    // active to deferred when the process died (both names).
    std::fs::remove_file(dir.path().join("incoming").join(gone.to_string())).unwrap();
    std::fs::hard_link(
        dir.path().join("active").join(d.to_string()),
        deferred_dir.join(d.to_string()),
    )
    .unwrap();

    let (spool, report) = Spool::open_lazy(dir.path(), EventLog::discard(), None).unwrap();
    // Nothing of deferred/ or records/ was read, but the duplicate was resolved.
    assert_eq!(report.count(QueueState::Deferred), 0);
    assert_eq!(report.count(QueueState::Active), 0);
    assert!(!dir.path().join("active").join(d.to_string()).exists());
    assert!(bad_path.exists(), "not validated at open");
    assert!(deferred_dir.join("junk").exists());
    assert!(dir.path().join("records").join(gone.to_string()).exists());
    assert_eq!(spool.queued(), 0);

    let mut got: Vec<Vec<DeferredEntry>> = Vec::new();
    let load = spool
        .load_deferred(2, &mut |batch| {
            got.push(batch);
            true
        })
        .unwrap();
    assert!(got.iter().all(|b| b.len() <= 2), "chunks of at most 2");
    let ids: BTreeSet<_> = got.iter().flatten().map(|e| e.id).collect();
    assert_eq!(ids, BTreeSet::from([a, b, d]));
    let a_rec = got.iter().flatten().find(|e| e.id == a).unwrap();
    assert_eq!(a_rec.record.as_ref().map(|r| r.attempts), Some(3));
    assert_eq!(a_rec.envelope.id, a);
    assert_eq!(load.loaded, 3);
    assert_eq!(load.quarantined, 2);
    assert_eq!(load.orphans_removed, 1);
    assert!(!load.stopped);
    assert!(!bad_path.exists());
    assert!(dir.path().join("corrupt").join(bad.to_string()).exists());
    assert!(!dir.path().join("records").join(gone.to_string()).exists());
    // `a`'s record is a frame in its own file: nothing of it in records/.
    assert!(!dir.path().join("records").join(a.to_string()).exists());
    assert_eq!(
        spool.queued(),
        3,
        "the loaded messages count toward the queue size"
    );
    // The names alone, in id order (the admin API's pages of one state).
    let mut want = vec![a, b, d];
    want.sort();
    assert_eq!(spool.ids(QueueState::Deferred).unwrap(), want);
    assert!(spool.ids(QueueState::Corrupt).unwrap().is_empty());
}

#[tokio::test]
async fn the_load_stops_when_asked_and_an_eager_spool_is_not_counted_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    for n in 0..5u8 {
        deferred(&spool, &[b'a' + n, b'\r', b'\n']).await;
    }
    drop(spool);
    let (spool, _) = Spool::open_lazy(dir.path(), EventLog::discard(), None).unwrap();
    let mut chunks = 0;
    let load = spool
        .load_deferred(2, &mut |_| {
            chunks += 1;
            false
        })
        .unwrap();
    assert_eq!(chunks, 1);
    assert!(load.stopped);
    assert_eq!(load.loaded, 2);
    drop(spool);
    // An eager open counted deferred/ already: the load hands it over, counts nothing.
    let (spool, report) = open(dir.path());
    assert_eq!(report.count(QueueState::Deferred), 5);
    let before = spool.queued();
    let load = spool.load_deferred(100, &mut |_| true).unwrap();
    assert_eq!(load.loaded, 5);
    assert_eq!(spool.queued(), before);
}
