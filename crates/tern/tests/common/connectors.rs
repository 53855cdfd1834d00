//! Helpers for the scenarios of the local ways in and out: the pickup directory, the drop
//! transport and `tern sendmail`.
//!
//! Files are dropped the way a well-behaved writer must: under a hidden name, then renamed
//! (a pair: envelope file first). `tern sendmail` runs as a child with its stdin fed from
//! a thread and a deadline, like every other command of the harness. Waits poll a
//! condition with a deadline.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{POLL, Tern, tern_bin};

/// The `[pickup]` section scenarios use: fast scans.
pub const FAST_PICKUP: &str = "[pickup]\ninterval_ms = 50\n";

/// The pickup directory of a test server.
pub fn pickup_dir(tern: &Tern) -> PathBuf {
    tern.data_dir.join("pickup")
}

/// Writes `content` to `dir/name` atomically (hidden temporary name, then rename).
pub fn drop_file(dir: &Path, name: &str, content: &[u8]) {
    std::fs::create_dir_all(dir).expect("create pickup directory");
    let tmp = dir.join(format!(".test-writer-{name}"));
    std::fs::write(&tmp, content).expect("write temporary file");
    std::fs::rename(&tmp, dir.join(name)).expect("rename into place");
}

/// Drops a pair: `<stem>.env` first, then `<stem>.eml`.
pub fn drop_pair(dir: &Path, stem: &str, envelope: &str, content: &[u8]) {
    drop_file(dir, &format!("{stem}.env"), envelope.as_bytes());
    drop_file(dir, &format!("{stem}.eml"), content);
}

/// The names of the files (not directories) in `dir`, sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .filter(|e| e.file_type().map(|t| !t.is_dir()).unwrap_or(false))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Polls `cond` until it holds; panics with `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(POLL);
    }
}

/// Waits until the pickup directory and its `.claimed/` hold no file.
pub fn wait_pickup_empty(tern: &Tern, limit: Duration) {
    let dir = pickup_dir(tern);
    wait_until(limit, "the pickup directory empties", || {
        file_names(&dir).is_empty() && file_names(&dir.join(".claimed")).is_empty()
    });
}

/// Runs `cmd` with `input` on its stdin, under a deadline.
pub fn run_with_stdin(cmd: &mut Command, input: &[u8], limit: Duration) -> Output {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(limit) {
        Ok(r) => r.unwrap_or_else(|e| panic!("{shown}: {e}")),
        Err(_) => {
            if let Ok(p) = libc::pid_t::try_from(pid) {
                // SAFETY: kill(2) on our own child.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            let _ = waiter.join();
            panic!("{shown} did not finish within {limit:?}");
        }
    };
    let _ = feeder.join();
    let _ = waiter.join();
    out
}

/// `tern sendmail -C <the server's config> ARGS` with `input` on stdin.
pub fn sendmail(tern: &Tern, args: &[&str], input: &[u8]) -> Output {
    let config = tern.config_path.as_ref().expect("a configured server");
    let mut cmd = Command::new(tern_bin());
    cmd.current_dir(&tern.dir)
        .arg("sendmail")
        .arg("-C")
        .arg(config)
        .args(args);
    run_with_stdin(&mut cmd, input, Duration::from_secs(30))
}

/// Asserts a command succeeded; returns its stdout.
pub fn assert_ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of the first header field `name` in `content` (unfolded), if any.
pub fn header(content: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(content);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut value: Option<String> = None;
    for line in head.split("\r\n") {
        if let Some(v) = value.as_mut() {
            if line.starts_with(' ') || line.starts_with('\t') {
                v.push_str(line);
                continue;
            }
            break;
        }
        if let Some((n, v)) = line.split_once(':')
            && n.eq_ignore_ascii_case(name)
        {
            value = Some(v.trim().to_owned());
        }
    }
    value
}
