//! Issue 15, point 5, while Tern runs: a deferred message's legacy delivery record
//! (`spool/records/<id>`, as versions before 2026-12 wrote it, beside a message file
//! with no record frame) is replaced by a directory between two attempts. Tern used to
//! fail the message at every retry for ever (event 4010: the read hits "Is a
//! directory"). Now the next attempt finds that the record is not a file: the entry goes
//! to `corrupt/<id>.record` and the message to `hold/` (event 3010, tracked), where an
//! operator releases it; nothing is sent again on its own, and no error repeats.
//! (Records are now frames in the message file; a directory at `records/<id>` of a
//! message that has one changes nothing: see the spool's unit tests.)

use std::time::{Duration, Instant};

use tern_spool::{DeliveryRecord, QueueId};

use crate::common::peers::SmtpPeer;
use crate::common::{Setup, send_one, simple_message, strip_record_frames, write_legacy_record};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn record_replaced_by_a_directory_holds_its_message() {
    let peer = SmtpPeer::start("127.0.0.6", &["tempfail-rcpt=^later@"]);
    let route = format!(
        "[delivery]\nconnect_timeout_secs = 2\ngreeting_timeout_secs = 3\ncommand_timeout_secs = 5\n\
         [[route]]\ndomains = [\"relay.test\"]\ntransport = \"smtp\"\nhosts = [\"{}\"]\n",
        peer.addr
    );
    let mut tern = Setup::new()
        .queue("[queue]\ndeliver = true\nmin_backoff_secs = 3\nmax_backoff_secs = 4\n")
        .section(&route)
        .start();
    let id = send_one(
        tern.addr(),
        "s@client.test",
        &["later@relay.test"],
        &simple_message("later", "deferred once"),
    );
    // The first attempt is deferred: the message waits in deferred/ with its record.
    tern.wait_for_events(4002, 1, Duration::from_secs(20));
    let spool = tern.spool_dir();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !spool.join("deferred").join(&id).is_file() {
        assert!(Instant::now() < deadline, "no deferred message");
        std::thread::sleep(Duration::from_millis(20));
    }
    // As an older version left it: no frame in the file, the record in records/<id>.
    tern.stop(Duration::from_secs(10));
    let qid: QueueId = id.parse().unwrap();
    strip_record_frames(&spool.join("deferred").join(&id), qid);
    let mut legacy = DeliveryRecord::new(qid, 1);
    legacy.attempts = 1;
    // Due in 5 s: time to replace it before the next attempt reads it.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    legacy.next_attempt_micros = Some(i64::try_from(now.as_micros()).unwrap() + 5_000_000);
    write_legacy_record(&spool, &legacy);
    // The file's time says when it is due (Tern keeps the next attempt there; the
    // rewrite above made it "now", which an upgrade from an older version also gives:
    // an early attempt, docs/SPOOL.md). Here it must wait its 5 s.
    let due = std::time::UNIX_EPOCH + now + Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(spool.join("deferred").join(&id))
        .unwrap()
        .set_times(std::fs::FileTimes::new().set_modified(due))
        .unwrap();
    tern.restart();
    let record = spool.join("records").join(&id);
    assert!(record.is_file(), "a legacy record is kept at start");
    std::fs::remove_file(&record).unwrap();
    std::fs::create_dir(&record).unwrap();

    let held = tern.wait_for_events(3010, 1, Duration::from_secs(30));
    assert_eq!(held[0]["queue_id"], id);
    assert_eq!(held[0]["held_from"], "active");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !spool.join("hold").join(&id).is_file() {
        assert!(
            Instant::now() < deadline,
            "not held: {:?}",
            tern.spool_files("hold")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(spool.join("corrupt").join(format!("{id}.record")).is_dir());
    assert!(
        spool
            .join("corrupt")
            .join(format!("{id}.record.reason"))
            .is_file()
    );
    // It was held at its next attempt, instead of failing on its record (event 4010).
    assert!(
        tern.events_with_id(4010).is_empty(),
        "{:?}",
        tern.events_with_id(4010)
    );
    assert_eq!(peer.count(), 0);
}
