//! The chaos soak (`bench/chaos/run.py`) in its short form, on the binary under test:
//! about a minute of load from concurrent smtplib clients while Tern, relaying to an
//! aiosmtpd sink with its default queue settings (poison threshold 2), is killed with
//! SIGKILL at ten random moments and restarted. The script exits non-zero when an
//! acknowledged message is lost, when a message is poisoned (a kill is no message's
//! fault), when duplicates exceed the messages in process at the kills (the duplicate
//! window of docs/DELIVERY.md), when a spool entry is corrupt, or when the queue does not
//! drain; its summary is printed.

use std::process::Command;
use std::time::Duration;

use crate::common::{require_python_modules, run, tern_bin};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn ten_kills_in_a_minute_lose_nothing_acknowledged() {
    let python = require_python_modules(&["aiosmtpd"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/chaos/run.py");
    let out = run(
        Command::new(python)
            .arg(script)
            .env("SHORT", "1")
            .env("TERN_BIN", tern_bin())
            .env("DRAIN", "120"),
        Duration::from_secs(300),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "the chaos soak failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("JSON summary");
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["lost"], 0, "{summary}");
    assert_eq!(summary["poisoned"], 0, "{summary}");
    assert_eq!(
        summary["queued_at_end"]["active"], 0,
        "suspects cleared: {summary}"
    );
    assert!(summary["kills"].as_u64().unwrap() >= 10, "{summary}");
    assert!(summary["acknowledged"].as_u64().unwrap() > 0, "{summary}");
}
