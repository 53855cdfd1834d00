//! The tracking log rotates by size: with a small `max_file_bytes`, forty messages leave
//! several files, none past the limit, and every message's received record is in exactly
//! one of them; `tern track` finds a message whose records are in a rotated file, and
//! the oldest files beyond `keep_files` are removed. Works with the server stopped too.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Setup, run, send_batch, simple_message};

const MAX: u64 = 4096;

fn received_ids(dir: &std::path::Path) -> (HashMap<String, usize>, Vec<(String, u64)>) {
    let mut ids = HashMap::new();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        files.push((name, text.len() as u64));
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if v["step"] == "received" {
                *ids.entry(v["id"].as_str().unwrap().to_owned()).or_insert(0) += 1;
            }
        }
    }
    files.sort();
    (ids, files)
}

#[test]
fn tracking_log_rotates_by_size_without_losing_records() {
    let mut tern = Setup::new()
        .section(&format!(
            "[tracking]\nmax_file_bytes = {MAX}\nkeep_files = 1000\n"
        ))
        .start();
    let messages: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| {
            (
                format!("rcpt{i}@remote.test"),
                simple_message(&format!("m{i}"), "rotate me"),
            )
        })
        .collect();
    let sent = send_batch(tern.addr(), 4, &messages);
    let dir = tern.data_dir.join("tracking");
    let deadline = Instant::now() + Duration::from_secs(20);
    let (ids, files) = loop {
        let (ids, files) = received_ids(&dir);
        if ids.len() >= sent.len() {
            break (ids, files);
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} received records: {files:?}",
            ids.len(),
            sent.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    for id in &sent {
        assert_eq!(ids.get(id), Some(&1), "{id} recorded once: {files:?}");
    }
    assert!(files.len() >= 3, "rotated at least twice: {files:?}");
    assert!(files.iter().all(|(_, len)| *len <= MAX), "{files:?}");
    assert!(
        files.iter().any(|(n, _)| n == "tracking.jsonl")
            && files
                .iter()
                .filter(|(n, _)| n != "tracking.jsonl")
                .all(|(n, _)| n.starts_with("tracking-") && n.ends_with("Z.jsonl")),
        "{files:?}"
    );

    // With the server stopped, tern track still reads the files, the rotated ones too.
    tern.stop(Duration::from_secs(20));
    let first = &sent[0];
    let out = run(
        &mut tern.tern_command(&["track", "--json", first]),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let records = v["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{v:#}");
    assert_eq!(records[0]["step"], "received");
    assert_eq!(records[0]["to"], serde_json::json!(["rcpt0@remote.test"]));

    // keep_files bounds the rotated files: a restart with keep_files = 2 and more mail
    // leaves two of them.
    tern.replace_in_config("keep_files = 1000", "keep_files = 2");
    tern.restart();
    let more: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (format!("more{i}@remote.test"), simple_message("more", "x")))
        .collect();
    send_batch(tern.addr(), 2, &more);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, files) = received_ids(&dir);
        let rotated = files.iter().filter(|(n, _)| n != "tracking.jsonl").count();
        if rotated == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rotated files never pruned to 2: {files:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
