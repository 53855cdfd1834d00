//! `tern sendmail` works whether or not the server runs: with the server stopped the
//! message waits in the pickup directory as a complete pair (the spool, locked by no one,
//! is not touched), and the server queues it as soon as it starts again.

use std::time::Duration;

use crate::common::Setup;
use crate::common::connectors::{
    FAST_PICKUP, assert_ok, file_names, pickup_dir, sendmail, wait_pickup_empty,
};

#[test]
fn mail_submitted_while_stopped_is_queued_at_the_next_start() {
    let mut tern = Setup::new().section(FAST_PICKUP).start();
    tern.stop(Duration::from_secs(15));
    let before = tern.spool().list(None).unwrap().len();

    for n in 0..3 {
        let out = sendmail(
            &tern,
            &[&format!("r{n}@example.net")],
            format!("Subject: offline {n}\n\nwritten while Tern was down\n").as_bytes(),
        );
        assert_ok(&out, "sendmail with the server stopped");
    }
    let waiting = file_names(&pickup_dir(&tern));
    assert_eq!(waiting.len(), 6, "three pairs wait: {waiting:?}");
    assert!(
        waiting
            .iter()
            .all(|n| n.ends_with(".env") || n.ends_with(".eml"))
    );
    assert_eq!(
        tern.spool().list(None).unwrap().len(),
        before,
        "the spool is untouched"
    );

    tern.restart();
    wait_pickup_empty(&tern, Duration::from_secs(20));
    let mut rcpts: Vec<String> = tern
        .spooled()
        .iter()
        .map(|(m, _)| m.envelope.as_ref().unwrap().recipients[0].address.clone())
        .collect();
    rcpts.sort();
    assert_eq!(
        rcpts,
        ["r0@example.net", "r1@example.net", "r2@example.net"]
    );
    assert_eq!(
        tern.wait_for_events(6021, 3, Duration::from_secs(10)).len(),
        3
    );
    tern.stop(Duration::from_secs(15));
}
