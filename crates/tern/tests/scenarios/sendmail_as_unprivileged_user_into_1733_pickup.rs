//! Issue 15: with the documented pickup mode 1733 an unprivileged user may create files
//! in the pickup directory but not read or list it, so it cannot open the directory to
//! fsync it. `tern sendmail` used to exit 73 ("fsync ... Permission denied") after the
//! message was already submitted, and a script that retries sent it twice. Now it exits 0
//! (the files are synced, the directory sync is not possible for that user, documented),
//! the message is queued exactly once, with the user's uid in its Received field, and the
//! submitted files had mode 0644 whatever the umask.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use crate::common::connectors::{assert_ok, run_with_stdin, wait_until};
use crate::common::local::open_tempdir;
use crate::common::{Setup, tern_bin};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn sendmail_as_nobody_exits_0_and_the_message_is_queued_once() {
    let shared = open_tempdir();
    let pickup = shared.path().join("pickup");
    let tern = Setup::new()
        .section(&format!(
            "[pickup]\ninterval_ms = 50\ndir = {:?}\n",
            pickup.display().to_string()
        ))
        .start();
    tern.wait_for_events(6026, 1, Duration::from_secs(20));
    std::fs::set_permissions(&pickup, std::fs::Permissions::from_mode(0o1733)).unwrap();
    // A configuration file the user can read (the server's is in a root-only directory).
    let config = shared.path().join("tern.toml");
    std::fs::copy(tern.config_path.as_ref().unwrap(), &config).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(tern_bin())
        .arg("sendmail")
        .arg("-C")
        .arg(&config)
        .args(["-f", "someone@example.org", "rcpt@example.net"])
        .env("HOME", "/")
        .current_dir("/");
    let out = run_with_stdin(
        &mut cmd,
        b"Subject: from nobody\n\nhello\n",
        Duration::from_secs(30),
    );
    assert_ok(&out, "sendmail as nobody into a 1733 pickup directory");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let queued = tern.wait_for_events(6021, 1, Duration::from_secs(20));
    assert_eq!(queued[0]["sender"], "someone@example.org", "{queued:?}");
    wait_until(
        Duration::from_secs(20),
        "the pickup directory empties",
        || {
            std::fs::read_dir(&pickup)
                .unwrap()
                .filter_map(Result::ok)
                .all(|e| e.file_type().unwrap().is_dir())
        },
    );
    let spooled = tern.spooled();
    assert_eq!(spooled.len(), 1, "queued once");
    let content = String::from_utf8_lossy(&spooled[0].1.body).into_owned();
    assert!(content.contains("from userid 65534"), "{content}");
    assert_eq!(tern.events_with_id(6021).len(), 1);
}
