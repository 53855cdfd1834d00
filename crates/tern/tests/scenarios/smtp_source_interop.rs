//! Tern takes the load of Postfix's smtp-source: 10 parallel sessions sending 500
//! messages of 1 KiB each; smtp-source reports no error and all 500 are queued.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use crate::common::{Setup, require_program, run};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn smtp_source_500_messages_over_10_sessions_are_all_queued() {
    let smtp_source = require_program("smtp-source");
    let mut tern = Setup::new().start();

    let out = run(
        Command::new(&smtp_source)
            .args(["-s", "10", "-m", "500", "-l", "1024"])
            .args([
                "-M",
                "client.test",
                "-f",
                "source@client.test",
                "-t",
                "sink@localhost",
            ])
            .arg(tern.server_arg()),
        Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "smtp-source failed: {}\n{stderr}",
        out.status
    );
    assert!(
        !stderr.contains("smtp-source:"),
        "smtp-source reported a problem:\n{stderr}"
    );

    let queued = tern.queue_json(&[]);
    assert_eq!(
        queued.len(),
        500,
        "every message smtp-source sent is queued"
    );
    let first_size = queued[0]["size"].as_u64().unwrap();
    assert!(first_size > 1024, "a 1 KiB body plus headers: {first_size}");
    for m in &queued {
        assert_eq!(m["state"], "incoming");
        assert_eq!(m["sender"], "source@client.test");
        assert_eq!(m["recipients"][0]["address"], "sink@localhost");
        // Same body and headers every time; only the Received header's id and date vary
        // (and by at most a few bytes).
        let size = m["size"].as_u64().unwrap();
        assert!(size.abs_diff(first_size) < 16, "{m}");
    }
    let mut ids: Vec<&str> = queued.iter().map(|m| m["id"].as_str().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 500, "queue ids are unique");

    // Each acknowledged message is logged once (event 2003, keyed by its queue id).
    tern.wait_for_events(2003, 500, Duration::from_secs(10));
    tern.stop(Duration::from_secs(10));
    assert_eq!(
        tern.queue_json(&[]).len(),
        500,
        "still 500 after a clean stop"
    );
}
