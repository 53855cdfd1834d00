//! The lazy open of a server's spool and the background load of `deferred/`
//! (`Spool::open_lazy`, `Spool::load_deferred`).

use std::collections::BTreeSet;

use tern_events::EventLog;

use super::{open, store};
use crate::record::DeliveryRecord;
use crate::state::QueueState;
use crate::store::{BacklogStep, DeferredEntry, Spool};

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
    let mut due = BTreeSet::new();
    let mut damaged = Vec::new();
    let load = spool
        .load_deferred(2, &mut |step| {
            match step {
                BacklogStep::Read(batch) => got.push(batch),
                BacklogStep::Due(d) => due.extend(d.into_iter().map(|(id, _)| id)),
                BacklogStep::Damaged(ids) => damaged.extend(ids),
                BacklogStep::AllDue(_) => {}
            }
            true
        })
        .unwrap();
    // The damaged file is scheduled from its name (nothing is read in the first pass),
    // then reported when read, for the queue to quarantine (it may be delivering it).
    assert_eq!(due, BTreeSet::from([a, b, bad, d]));
    assert_eq!(load.scheduled, 4);
    assert_eq!(damaged, vec![bad]);
    assert_eq!(load.damaged, 1);
    assert!(got.iter().all(|b| b.len() <= 2), "chunks of at most 2");
    let ids: BTreeSet<_> = got.iter().flatten().map(|e| e.id).collect();
    assert_eq!(ids, BTreeSet::from([a, b, d]));
    let a_rec = got.iter().flatten().find(|e| e.id == a).unwrap();
    assert_eq!(a_rec.record.as_ref().map(|r| r.attempts), Some(3));
    assert_eq!(a_rec.envelope.id, a);
    assert_eq!(load.loaded, 3);
    assert_eq!(load.quarantined, 1, "the junk name only");
    assert_eq!(load.orphans_removed, 1);
    assert!(!load.stopped);
    assert!(bad_path.exists(), "left to the queue");
    assert!(!dir.path().join("records").join(gone.to_string()).exists());
    // `a`'s record is a frame in its own file: nothing of it in records/.
    assert!(!dir.path().join("records").join(a.to_string()).exists());
    assert_eq!(
        spool.queued(),
        4,
        "the scheduled messages count toward the queue size"
    );
    // The names alone, in id order (the admin API's pages of one state).
    let mut want = vec![a, b, bad, d];
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
    // Stopped at the first read chunk: everything was scheduled, two were read.
    let mut steps = Vec::new();
    let load = spool
        .load_deferred(2, &mut |step| {
            let read = matches!(step, BacklogStep::Read(_));
            steps.push(match step {
                BacklogStep::Due(d) => format!("due {}", d.len()),
                BacklogStep::AllDue(n) => format!("all due {n}"),
                BacklogStep::Read(b) => format!("read {}", b.len()),
                BacklogStep::Damaged(b) => format!("damaged {}", b.len()),
            });
            !read
        })
        .unwrap();
    assert_eq!(steps, ["due 5", "all due 5", "read 2"]);
    assert!(load.stopped);
    assert_eq!(load.loaded, 2);
    // Stopped while scheduling: nothing read.
    drop(spool);
    let (spool, _) = Spool::open_lazy(dir.path(), EventLog::discard(), None).unwrap();
    let mut steps = 0;
    let load = spool
        .load_deferred(2, &mut |_| {
            steps += 1;
            false
        })
        .unwrap();
    assert_eq!((steps, load.scheduled, load.loaded), (1, 5, 0));
    assert!(load.stopped);
    drop(spool);
    // An eager open counted deferred/ already: the load hands it over, counts nothing.
    let (spool, report) = open(dir.path());
    assert_eq!(report.count(QueueState::Deferred), 5);
    let before = spool.queued();
    let load = spool.load_deferred(100, &mut |_| true).unwrap();
    assert_eq!(load.loaded, 5);
    assert_eq!(spool.queued(), before);
}

#[tokio::test]
async fn a_deferred_message_is_scheduled_from_its_files_modification_time_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let later = deferred(&spool, b"Subject: later\r\n\r\nx\r\n").await;
    let old = deferred(&spool, b"Subject: old\r\n\r\nx\r\n").await;
    let now = tern_watchdog::clock::unix_micros();
    // A record with a next attempt an hour ahead sets the file's time to it.
    let mut rec = DeliveryRecord::new(later, 1);
    rec.next_attempt_micros = Some(now + 3_600_000_000);
    spool.write_record(&rec).await.unwrap();
    // A record without one leaves the time of the write.
    spool
        .write_record(&DeliveryRecord::new(old, 1))
        .await
        .unwrap();
    drop(spool);
    let (spool, _) = Spool::open_lazy(dir.path(), EventLog::discard(), None).unwrap();
    let mut due = std::collections::HashMap::new();
    let mut read_before_all_due = false;
    let mut all_due = None;
    spool
        .load_deferred(10, &mut |step| {
            match step {
                BacklogStep::Due(d) => due.extend(d),
                BacklogStep::AllDue(n) => all_due = Some(n),
                BacklogStep::Read(b) => read_before_all_due |= all_due.is_none() && !b.is_empty(),
                BacklogStep::Damaged(_) => panic!("nothing is damaged"),
            }
            true
        })
        .unwrap();
    assert_eq!(all_due, Some(2));
    assert!(
        !read_before_all_due,
        "every message is scheduled before any is read"
    );
    let at = |id| *due.get(&id).unwrap();
    // To the microsecond: the file time keeps nanoseconds.
    assert_eq!(at(later), now + 3_600_000_000);
    assert!(at(old) <= tern_watchdog::clock::unix_micros() && at(old) > now - 60_000_000);
    assert_eq!(spool.queued(), 2);
}

#[tokio::test]
async fn a_file_damaged_after_it_was_scheduled_is_reported_not_quarantined_under_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let good = deferred(&spool, b"Subject: g\r\n\r\ng\r\n").await;
    let bad = deferred(&spool, b"Subject: b\r\n\r\nb\r\n").await;
    drop(spool);
    let (spool, _) = Spool::open_lazy(dir.path(), EventLog::discard(), None).unwrap();
    let bad_path = dir.path().join("deferred").join(bad.to_string());
    let mut queued_after_due = 0;
    let mut read = Vec::new();
    let mut damaged = Vec::new();
    let load = spool
        .load_deferred(10, &mut |step| {
            match step {
                BacklogStep::AllDue(_) => {
                    queued_after_due = spool.queued();
                    // Damaged between the two passes.
                    let mut bytes = std::fs::read(&bad_path).unwrap();
                    bytes[20] ^= 0x55;
                    std::fs::write(&bad_path, &bytes).unwrap();
                }
                BacklogStep::Read(b) => read.extend(b.into_iter().map(|e| e.id)),
                BacklogStep::Damaged(ids) => damaged.extend(ids),
                BacklogStep::Due(_) => {}
            }
            true
        })
        .unwrap();
    assert_eq!(queued_after_due, 2);
    assert_eq!(read, vec![good]);
    assert_eq!(damaged, vec![bad]);
    let counts = (load.scheduled, load.loaded, load.damaged, load.quarantined);
    assert_eq!(counts, (2, 1, 1, 0));
    // The queue may be moving it to active/ right now: only the message task, which
    // owns it while it runs, quarantines it (and then it stops counting).
    assert!(bad_path.exists());
    assert_eq!(spool.queued(), 2);
}
