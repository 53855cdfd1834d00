//! Under the usual umask 022, what Tern writes about mail and its own control is still
//! private: the event log and the tracking log name senders and recipients, the admin
//! token unlocks the API, `admin.addr` and `status.json` describe the server. Modes are
//! set explicitly, never left to the umask. Files left looser by an older version are
//! tightened at the next start, and an admin token that was readable by others is
//! reported (event 7025), since someone may have read it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::common::admin::Admin;
use crate::common::{Setup, send_one, simple_message};

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn private_files_keep_their_modes_under_umask_022() {
    let mut tern = Setup::new().umask(0o022).start();
    let admin = Admin::of(&tern);
    // Something to track.
    send_one(
        tern.addr(),
        "a@client.test",
        &["b@localhost"],
        &simple_message("modes", "x"),
    );
    tern.wait_for_events(2003, 1, Duration::from_secs(20));
    let d = tern.data_dir.clone();
    let expect = [
        (d.clone(), 0o750),
        (d.join("events.jsonl"), 0o600),
        (d.join("tracking"), 0o700),
        (d.join("tracking").join("tracking.jsonl"), 0o600),
        (d.join("admin.token"), 0o600),
        (d.join("admin.addr"), 0o600),
    ];
    crate::common::connectors::wait_until(Duration::from_secs(20), "tracking.jsonl", || {
        d.join("tracking").join("tracking.jsonl").exists()
    });
    for (p, m) in &expect {
        assert_eq!(mode(p), *m, "{}", p.display());
    }
    if d.join("status.json").exists() {
        assert_eq!(mode(&d.join("status.json")), 0o600);
    }
    assert_eq!(admin.get("/api/v1/status").status, 200);
    tern.stop(Duration::from_secs(30));

    // As an older version left them.
    for (p, _) in &expect[1..5] {
        let loose = if p.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(loose)).unwrap();
    }
    tern.restart();
    let fixed = tern.wait_for_events(7025, 1, Duration::from_secs(20));
    assert_eq!(fixed[0]["mode"], "0644", "{fixed:?}");
    for (p, m) in &expect {
        assert_eq!(mode(p), *m, "{} after the restart", p.display());
    }
    // The token still works: it was tightened, not replaced.
    assert_eq!(Admin::of(&tern).get("/api/v1/status").status, 200);
}
