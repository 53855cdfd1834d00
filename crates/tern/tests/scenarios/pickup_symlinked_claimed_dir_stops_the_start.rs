//! Issue 15: with the documented pickup mode 1733 a local user can create `.claimed` or
//! `badmail` before Tern first starts. As a symbolic link, `.claimed` would make Tern read
//! (and deliver, then delete) files it was never given, and `badmail` would make Tern move
//! files into a directory that user owns. `tern serve` must refuse to start, with a
//! non-zero exit and an error naming the directory and saying it is a link. An older
//! Tern's `.claimed` of mode 0755 is only tightened to 0700, with warning event 6010.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::connectors::FAST_PICKUP;
use crate::common::{Setup, run, tern_bin};

/// `tern serve` with `config` must fail quickly, its last stderr line naming `path` and
/// `what`.
fn assert_start_refused(config: &Path, path: &Path, what: &str) {
    let out = run(
        Command::new(tern_bin())
            .arg("serve")
            .arg("--config")
            .arg(config),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "tern serve started anyway:\n{stderr}"
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("tern: ")
            && last.contains(&path.display().to_string())
            && last.contains(what),
        "the error does not name {} ({what}):\n{stderr}",
        path.display()
    );
}

#[test]
fn a_symlinked_claimed_or_badmail_dir_stops_the_start() {
    for which in [".claimed", "badmail"] {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let pickup = data.join("pickup");
        std::fs::create_dir_all(&pickup).unwrap();
        std::fs::set_permissions(&pickup, std::fs::Permissions::from_mode(0o1733)).unwrap();
        // The local user's directory, and the link to it.
        let theirs = root.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::write(
            theirs.join("root-only"),
            b"To: thief@evil.example\n\nsecret\n",
        )
        .unwrap();
        symlink(&theirs, pickup.join(which)).unwrap();
        let config = root.path().join("tern.toml");
        std::fs::write(
            &config,
            Setup::new().section(FAST_PICKUP).config_text_for(&data),
        )
        .unwrap();
        assert_start_refused(&config, &pickup.join(which), "is a symbolic link");
        assert!(theirs.join("root-only").is_file(), "nothing read or moved");
        assert_eq!(std::fs::read_dir(&theirs).unwrap().count(), 1);
    }
}

#[test]
fn a_loose_claimed_dir_is_tightened_with_a_warning() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let claimed = data.join("pickup/.claimed");
    std::fs::create_dir_all(&claimed).unwrap();
    std::fs::set_permissions(&claimed, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tern = Setup::new().section(FAST_PICKUP).data_dir(&data).start();
    // Both the pickup directory and `.claimed` were made 0755 (as an older Tern did).
    let fixed = tern.wait_for_events(6010, 2, Duration::from_secs(20));
    let dirs: Vec<String> = fixed
        .iter()
        .map(|e| e["dir"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        dirs,
        [
            data.join("pickup").display().to_string(),
            claimed.display().to_string()
        ]
    );
    for e in &fixed {
        assert_eq!(e["old_mode"], "0755", "{e}");
        assert_eq!(e["new_mode"], "0700", "{e}");
    }
    let mode = std::fs::metadata(&claimed).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700);
    let badmail = std::fs::metadata(data.join("pickup/badmail"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(badmail & 0o7777, 0o700, "created 0700 whatever the umask");
}
