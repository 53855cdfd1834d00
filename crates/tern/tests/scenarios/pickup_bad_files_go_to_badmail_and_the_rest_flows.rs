//! Files the pickup service cannot use go to `badmail/` with a `.reason` file beside them
//! and event 6022, and never block the files behind them: good files dropped between the
//! bad ones are all queued. A restart does not try the bad files again.

use std::time::Duration;

use crate::common::Setup;
use crate::common::connectors::{
    drop_file, drop_pair, file_names, pickup_dir, wait_pickup_empty, wait_until,
};

#[test]
fn bad_files_are_set_aside_with_reasons_and_good_files_flow() {
    let mut tern = Setup::new()
        .listener_keys("max_message_size = 4096")
        .section("[pickup]\ninterval_ms = 50\norphan_after_secs = 1\n")
        .start();
    let dir = pickup_dir(&tern);
    let good = |n: usize| format!("To: good{n}@example.org\nSubject: good {n}\n\nbody {n}\n");
    drop_file(&dir, "01-good.txt", good(1).as_bytes());
    drop_file(&dir, "02-garbage.bin", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR");
    drop_file(&dir, "03-good.txt", good(3).as_bytes());
    drop_file(&dir, "04-big.txt", &[b'x'; 5000]);
    drop_file(
        &dir,
        "05-nobody.txt",
        b"Subject: for nobody\n\nno To, Cc or Bcc\n",
    );
    drop_pair(
        &dir,
        "06-badenv",
        "{\"version\": 1, \"sender\": 7}",
        good(6).as_bytes(),
    );
    drop_file(&dir, "07-good.txt", good(7).as_bytes());
    drop_file(&dir, "08-lonely.eml", good(8).as_bytes());
    std::os::unix::fs::symlink("/etc/hostname", dir.join("09-link.txt")).unwrap();
    drop_pair(
        &dir,
        "10-good",
        r#"{"version":1,"sender":"","recipients":["good10@example.org"]}"#,
        good(10).as_bytes(),
    );

    let badmail = dir.join("badmail");
    let reasons = [
        ("02-garbage.bin", "not a message"),
        ("04-big.txt", "more than the limit of 4096"),
        ("05-nobody.txt", "no recipient"),
        ("06-badenv", "envelope file is not valid"),
        ("08-lonely", "without its envelope file 08-lonely.env"),
        ("09-link.txt", "not a regular file"),
    ];
    wait_until(
        Duration::from_secs(20),
        "every bad file has its reason",
        || {
            reasons
                .iter()
                .all(|(n, _)| badmail.join(format!("{n}.reason")).exists())
        },
    );
    for (name, want) in reasons {
        let text = std::fs::read_to_string(badmail.join(format!("{name}.reason"))).unwrap();
        assert!(text.contains(want), "{name}.reason lacks {want:?}:\n{text}");
        assert!(text.contains("file: "), "{text}");
    }
    let bad_files = file_names(&badmail);
    for f in [
        "02-garbage.bin",
        "04-big.txt",
        "06-badenv.env",
        "06-badenv.eml",
        "08-lonely.eml",
        "09-link.txt",
    ] {
        assert!(
            bad_files.contains(&f.to_owned()),
            "{f} not in badmail: {bad_files:?}"
        );
    }
    wait_pickup_empty(&tern, Duration::from_secs(10));
    let incoming = tern.wait_for_incoming(4, Duration::from_secs(10));
    let mut rcpts: Vec<String> = incoming
        .iter()
        .map(|m| m.envelope.as_ref().unwrap().recipients[0].address.clone())
        .collect();
    rcpts.sort();
    assert_eq!(
        rcpts,
        [
            "good10@example.org",
            "good1@example.org",
            "good3@example.org",
            "good7@example.org"
        ]
    );
    let events = tern.wait_for_events(6022, 6, Duration::from_secs(10));
    assert_eq!(events.len(), 6, "{events:?}");

    // Never retried: after a restart nothing more is queued or set aside.
    tern.stop(Duration::from_secs(15));
    tern.restart();
    // A new file queued proves a scan ran after the restart.
    drop_file(&dir, "11-good.txt", good(11).as_bytes());
    assert_eq!(tern.wait_for_incoming(5, Duration::from_secs(10)).len(), 5);
    wait_pickup_empty(&tern, Duration::from_secs(10));
    assert_eq!(file_names(&badmail), bad_files);
    assert_eq!(tern.spool().list(None).unwrap().len(), 5);
    tern.stop(Duration::from_secs(15));
    assert_eq!(tern.events_with_id(6022).len(), 6);
}
