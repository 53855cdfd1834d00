//! Kill -9 while files flow through the pickup directory. A writer drops numbered files
//! (both formats, now and then a large one) without pause; Tern is SIGKILLed at random
//! instants and restarted, five times. At the end every file dropped is queued, with its
//! envelope, exactly once, or twice when a kill fell between its commit and its removal
//! from `.claimed/` (the documented duplicate window: at most one file per kill, since
//! files are committed one at a time). Nothing goes to badmail, nothing is quarantined,
//! and nothing is left in the pickup directory or `.claimed/`.
//!
//! The run is driven by a seed printed on failure; `TERN_TEST_SEED=<n>` replays its kill
//! delays and file sizes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::connectors::{
    drop_file, drop_pair, file_names, header, pickup_dir, wait_pickup_empty,
};
use crate::common::{Rng, Setup};

const KILLS: usize = 5;

fn write_one(dir: &std::path::Path, n: u64, rng: &mut Rng) {
    let mut body = format!("body of file {n}\n");
    if rng.range(0, 15) == 0 {
        let target = rng.range(64 * 1024, 400 * 1024) as usize;
        while body.len() < target {
            body.push_str("filler line of a large pickup file, to widen the commit window\n");
        }
    }
    let headers = format!("X-Seq: {n}\nSubject: pickup {n}\n");
    if n.is_multiple_of(2) {
        let content = format!("From: <w@writer.test>\nTo: r{n}@example.org\n{headers}\n{body}");
        drop_file(dir, &format!("m{n:06}.txt"), content.as_bytes());
    } else {
        let env = format!(
            r#"{{"version":1,"sender":"w@writer.test","recipients":["r{n}@example.org"]}}"#
        );
        drop_pair(
            dir,
            &format!("p{n:06}"),
            &env,
            format!("{headers}\n{body}").as_bytes(),
        );
    }
}

#[test]
fn every_dropped_file_is_queued_despite_kills() {
    let (mut rng, seed) = Rng::from_env_or_clock();
    eprintln!("pickup kill -9 test: seed {seed} (replay with TERN_TEST_SEED={seed})");
    let mut tern = Setup::new()
        .grace_secs(2)
        .section("[pickup]\ninterval_ms = 20\nmax_files_per_scan = 8\n")
        .start();
    let dir = pickup_dir(&tern);
    std::fs::create_dir_all(&dir).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, dir) = (Arc::clone(&stop), dir.clone());
        let mut wrng = Rng::new(seed ^ 0x5EED);
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                write_one(&dir, n, &mut wrng);
                n += 1;
                std::thread::sleep(Duration::from_millis(4));
            }
            n
        })
    };

    let mut delays = Vec::new();
    for kill in 0..KILLS {
        let before = tern.spool_files("incoming").len();
        let deadline = Instant::now() + Duration::from_secs(30);
        while tern.spool_files("incoming").len() < before + 20 {
            assert!(
                Instant::now() < deadline,
                "no progress before kill {kill} (seed {seed})\n{}",
                tern.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // The kill instant is the random variable of this test, not a wait.
        let delay = Duration::from_millis(rng.range(0, 400));
        delays.push(delay);
        std::thread::sleep(delay);
        tern.kill9();
        tern.restart();
    }
    stop.store(true, Ordering::Release);
    let written = writer.join().unwrap();
    wait_pickup_empty(&tern, Duration::from_secs(120));
    tern.stop(Duration::from_secs(15));

    let context = format!("seed {seed}, kill delays {delays:?}, {written} files written");
    let mut violations = Vec::new();
    let mut copies: BTreeMap<u64, usize> = BTreeMap::new();
    for (listed, stored) in tern.spooled() {
        let env = listed.envelope.as_ref().unwrap();
        let Some(n) = header(&stored.body, "X-Seq").and_then(|v| v.parse::<u64>().ok()) else {
            violations.push(format!("{} has no X-Seq", listed.id));
            continue;
        };
        *copies.entry(n).or_default() += 1;
        let rcpts: Vec<&str> = env.recipients.iter().map(|r| r.address.as_str()).collect();
        if rcpts != [format!("r{n}@example.org")] || env.sender != "w@writer.test" {
            violations.push(format!("file {n}: envelope {} -> {rcpts:?}", env.sender));
        }
        if !String::from_utf8_lossy(&stored.body).contains(&format!("\r\n\r\nbody of file {n}\r\n"))
        {
            violations.push(format!("file {n}: body differs"));
        }
    }
    for n in 0..written {
        match copies.get(&n).copied().unwrap_or(0) {
            0 => violations.push(format!("LOST: file {n} was never queued")),
            1 | 2 => {}
            c => violations.push(format!("file {n} queued {c} times")),
        }
    }
    let duplicates = copies.values().filter(|c| **c == 2).count();
    if duplicates > KILLS {
        violations.push(format!("{duplicates} duplicates for {KILLS} kills"));
    }
    let badmail = file_names(&dir.join("badmail"));
    if !badmail.is_empty() {
        violations.push(format!("badmail holds {badmail:?}"));
    }
    let corrupt = tern.spool_files("corrupt");
    if !corrupt.is_empty() {
        violations.push(format!("corrupt/ holds {corrupt:?}"));
    }
    let recovered = tern.events_with_id(6025).len();
    eprintln!(
        "{context}: {} queued, {duplicates} duplicates (the window), {recovered} restarts found claimed files",
        copies.values().sum::<usize>()
    );
    assert!(
        violations.is_empty(),
        "{context}: {} violation(s):\n{}",
        violations.len(),
        violations
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(written >= 100, "{context}: too few files to prove anything");
}
