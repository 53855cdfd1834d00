//! A data directory Tern cannot use stops `tern serve` at once, with a non-zero exit and
//! an error on stderr that names the path, instead of a server that runs without a
//! spool: a spool directory on a filesystem remounted read-only (which stops root too,
//! unlike permissions), and a data directory that cannot be created because a regular
//! file is in its path.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::mounts::TmpfsMount;
use crate::common::{Setup, run, tern_bin};

/// Runs `tern serve --config <file>` and expects it to exit non-zero, quickly, with
/// `path` on stderr.
fn assert_start_fails_naming(config: &Path, path: &Path) {
    let started = Instant::now();
    let out = run(
        Command::new(tern_bin())
            .arg("serve")
            .arg("--config")
            .arg(config),
        Duration::from_secs(30),
    );
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "tern serve started anyway:\n{stderr}"
    );
    assert!(
        took < Duration::from_secs(10),
        "it took {took:?} to give up"
    );
    let shown = path.display().to_string();
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("tern: ") && last.contains(&shown),
        "the error does not name {shown}:\n{stderr}"
    );
    if let Some((_, cause)) = last.rsplit_once(": ") {
        assert_eq!(
            last.matches(cause).count(),
            1,
            "the cause is given once: {last}"
        );
    }
    eprintln!("{last}");
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn read_only_spool_filesystem_stops_the_start_naming_the_spool() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let spool = data.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let fs = TmpfsMount::at(&spool, 4 << 20);
    // A spool that worked, then its filesystem went read-only (as after disk errors).
    let mut tern = Setup::new().data_dir(&data).start();
    tern.stop(Duration::from_secs(10));
    fs.remount_read_only();
    assert!(
        std::fs::write(spool.join("probe"), b"x").is_err(),
        "root can still write to the read-only mount"
    );
    assert_start_fails_naming(tern.config_path.as_ref().unwrap(), &spool);
    assert!(!tern.is_running());
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn data_dir_under_a_regular_file_stops_the_start_naming_it() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("file"), b"not a directory").unwrap();
    let data = root.path().join("file").join("data");
    let config = root.path().join("tern.toml");
    std::fs::write(&config, Setup::new().config_text_for(&data)).unwrap();
    assert_start_fails_naming(&config, &data);
}
