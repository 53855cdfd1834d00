//! Issue 16 §2, at most one file per deferred message: a message deferred to a dead host
//! is exactly one file in the spool (its delivery record is a frame appended to it, no
//! `records/<id>`); after kill -9 and a restart its attempt count and last error are
//! intact; and a `records/<id>` file left by an older version (beside a message file with
//! no frame) is honoured, then moved into the message file by the next attempt.

use std::path::Path;
use std::time::{Duration, Instant};

use tern_spool::{DeliveryRecord, QueueId};

use crate::common::{
    Setup, Tern, free_port, run, send_one, simple_message, strip_record_frames, write_legacy_record,
};

/// Every spool entry (in any directory) named after message `id`.
fn entries_of(spool: &Path, id: &str) -> Vec<String> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(spool).unwrap().flatten() {
        if let Ok(entries) = std::fs::read_dir(dir.path()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(id) {
                    out.push(format!("{}/{name}", dir.file_name().to_string_lossy()));
                }
            }
        }
    }
    out.sort();
    out
}

/// The message's line of `tern queue list --json`, once its attempts reach `n`.
fn wait_attempts(tern: &Tern, id: &str, n: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = tern.queue_json(&[]);
        if let Some(m) = listed.iter().find(|m| m["id"] == id)
            && m["attempts"].as_u64() >= Some(n)
            && m["state"] == "deferred"
        {
            return m.clone();
        }
        assert!(
            Instant::now() < deadline,
            "attempts never reached {n}: {listed:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn retry(tern: &Tern, id: &str) {
    let out = run(
        &mut tern.tern_command(&["queue", "retry", id]),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn deferred_message_is_one_file_and_keeps_its_record_across_kill9() {
    // Nobody listens there: every attempt is deferred.
    let dead = format!("127.0.0.7:{}", free_port("127.0.0.7".parse().unwrap()));
    let mut tern = Setup::new()
        .queue("[queue]\ndeliver = true\nmin_backoff_secs = 3600\nmax_backoff_secs = 3600\n")
        .section(&format!(
            "[delivery]\nconnect_timeout_secs = 2\n\
             [[route]]\ndomains = [\"dead.test\"]\ntransport = \"smtp\"\nhosts = [\"{dead}\"]\n"
        ))
        .start();
    let id = send_one(
        tern.addr(),
        "s@client.test",
        &["x@dead.test"],
        &simple_message("dead", "waits"),
    );
    let qid: QueueId = id.parse().unwrap();
    let spool = tern.spool_dir();

    // One attempt: one file, in deferred/, and nothing in records/.
    let first = wait_attempts(&tern, &id, 1);
    assert!(
        first["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("127.0.0.7"),
        "{first:?}"
    );
    assert_eq!(entries_of(&spool, &id), vec![format!("deferred/{id}")]);
    assert!(tern.spool_files("records").is_empty());

    // A second attempt, then kill -9: both attempts are still counted after a restart.
    retry(&tern, &id);
    let second = wait_attempts(&tern, &id, 2);
    assert_eq!(second["attempts"], 2);
    tern.kill9();
    tern.restart();
    let after = wait_attempts(&tern, &id, 2);
    assert_eq!(after["attempts"], 2, "the attempt count survived kill -9");
    assert_eq!(after["last_error"], second["last_error"]);
    assert_eq!(entries_of(&spool, &id), vec![format!("deferred/{id}")]);

    // As an older version left it: the message file without frames, and its record in
    // records/<id> (7 attempts). It is honoured, then migrated by the next attempt. The
    // older version did not keep the due time in the file's modification time, so the
    // restart schedules it from the time of its last write (now): an early attempt, the
    // documented price of the upgrade (docs/SPOOL.md); that attempt is the eighth.
    tern.stop(Duration::from_secs(10));
    let path = spool.join("deferred").join(&id);
    strip_record_frames(&path, qid);
    let mut legacy = DeliveryRecord::new(qid, 1);
    legacy.attempts = 7;
    legacy.last_error = Some("from an older version".into());
    // Due in an hour, like the others: only the retry below tries it.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    legacy.next_attempt_micros = Some(i64::try_from(now.as_micros()).unwrap() + 3_600_000_000);
    write_legacy_record(&spool, &legacy);
    tern.restart();
    let migrated = wait_attempts(&tern, &id, 8);
    assert_eq!(
        migrated["attempts"], 8,
        "the legacy record is honoured: 7 attempts, then this one: {migrated:?}"
    );
    assert_eq!(
        entries_of(&spool, &id),
        vec![format!("deferred/{id}")],
        "the legacy record was moved into the message file"
    );
    tern.stop(Duration::from_secs(10));
    tern.restart();
    assert_eq!(wait_attempts(&tern, &id, 8)["attempts"], 8);
}
