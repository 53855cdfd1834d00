//! Kill -9 while messages flow out through the `drop` transport. Three clients send
//! numbered messages over SMTP; a collector takes every pair from the drop directory as
//! another system would (when the `.eml` appears it reads both files and removes them);
//! Tern is SIGKILLed five times at random instants and restarted. One message in eight
//! is large (up to 300 KB), so writes take long enough for a kill or a read to meet one. At the end:
//! - every file the collector read under a final name was complete: its envelope file
//!   parses and names its queue id, its message file is exactly a message a client sent
//!   (after Tern's Received field);
//! - every acknowledged message was collected at least once, with its recipients;
//! - duplicates (a queue id collected twice) stay within the documented window: a message
//!   written but not yet recorded as delivered when Tern died, at most
//!   `max_active_messages` (8 here) per kill;
//! - no temporary file is left in the drop directory, and the queue is empty.
//!
//! The run is driven by a seed printed on failure (`TERN_TEST_SEED=<n>` replays the kill
//! delays).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::connectors::wait_until;
use crate::common::{Rng, Setup, SmtpClient, simple_message, split_received};

const KILLS: usize = 5;
const MAX_ACTIVE: usize = 8;

/// One pair taken by the collector.
struct Collected {
    id: String,
    eml: Vec<u8>,
    env: Value,
}

/// Takes every complete pair once (`.eml` present, then `.env` read), removing the
/// `.eml` first and then the `.env`. A `.eml` whose `.env` is missing waits.
fn sweep(dir: &Path, out: &mut Vec<Collected>, problems: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let names: Vec<String> = rd
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for name in names {
        let Some(id) = name.strip_suffix(".eml") else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let (eml_path, env_path) = (dir.join(&name), dir.join(format!("{id}.env")));
        let (Ok(eml), Ok(env)) = (std::fs::read(&eml_path), std::fs::read(&env_path)) else {
            continue;
        };
        match serde_json::from_slice::<Value>(&env) {
            Ok(v) if v["queue_id"] == id => out.push(Collected {
                id: id.to_owned(),
                eml,
                env: v,
            }),
            Ok(v) => problems.push(format!("{id}.env names {}", v["queue_id"])),
            Err(e) => problems.push(format!("{id}.env is not complete JSON: {e}")),
        }
        let _ = std::fs::remove_file(&eml_path);
        let _ = std::fs::remove_file(&env_path);
    }
}

#[test]
fn every_acknowledged_message_is_dropped_complete_despite_kills() {
    let (mut rng, seed) = Rng::from_env_or_clock();
    eprintln!("drop kill -9 test: seed {seed} (replay with TERN_TEST_SEED={seed})");
    let root = tempfile::tempdir().unwrap();
    let drop_dir: PathBuf = root.path().join("drop");
    std::fs::create_dir(&drop_dir).unwrap();
    let mut tern = Setup::new()
        .grace_secs(2)
        .queue(&format!(
            "[queue]\ndeliver = true\nmin_backoff_secs = 1\nmax_backoff_secs = 2\ndestination_concurrency = 4\nmax_active_messages = {MAX_ACTIVE}\n"
        ))
        .section(&format!(
            "[[route]]\ndomains = [\"*\"]\ntransport = \"drop\"\ndir = {:?}\n",
            drop_dir.display().to_string()
        ))
        .start();
    let addr = tern.addr();

    // subject -> (content, recipients, acknowledged id)
    type Sent = BTreeMap<String, (Vec<u8>, Vec<String>, Option<String>)>;
    let sent: Arc<Mutex<Sent>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|c| {
            let (sent, stop) = (Arc::clone(&sent), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut n: usize = 0;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = SmtpClient::connect(addr) else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    if s.read_reply().map(|r| r.code).ok() != Some(220)
                        || s.command("EHLO client.test").map(|r| r.code).ok() != Some(250)
                    {
                        continue;
                    }
                    while !stop.load(Ordering::Relaxed) {
                        let subject = format!("c{c}-m{n}");
                        n += 1;
                        let mut text = format!("payload {c} {n}");
                        if n.is_multiple_of(8) {
                            let size = 100_000 + (n * 7919) % 200_000;
                            while text.len() < size {
                                text.push_str(
                                    "\nfiller line of a large message for the drop directory",
                                );
                            }
                        }
                        let body = simple_message(&subject, &text);
                        let rcpts = vec![
                            format!("{subject}.a@legacy.test"),
                            format!("{subject}.b@legacy.test"),
                        ];
                        sent.lock()
                            .unwrap()
                            .insert(subject.clone(), (body.clone(), rcpts.clone(), None));
                        let to: Vec<&str> = rcpts.iter().map(String::as_str).collect();
                        match s.send_message("s@client.test", &to, &body) {
                            Ok(r) => match r.queued_id() {
                                Some(id) => {
                                    if let Some(e) = sent.lock().unwrap().get_mut(&subject) {
                                        e.2 = Some(id);
                                    }
                                }
                                None => break,
                            },
                            Err(_) => break,
                        }
                    }
                }
            })
        })
        .collect();
    let collected: Arc<Mutex<(Vec<Collected>, Vec<String>)>> = Arc::default();
    let collector_stop = Arc::new(AtomicBool::new(false));
    let collector = {
        let (collected, stop, dir) = (
            Arc::clone(&collected),
            Arc::clone(&collector_stop),
            drop_dir.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                {
                    let mut guard = collected.lock().unwrap();
                    let (out, problems) = &mut *guard;
                    sweep(&dir, out, problems);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let count = |c: &Arc<Mutex<(Vec<Collected>, Vec<String>)>>| c.lock().unwrap().0.len();

    let mut delays = Vec::new();
    for kill in 0..KILLS {
        let before = count(&collected);
        let deadline = Instant::now() + Duration::from_secs(60);
        while count(&collected) < before + 40 {
            assert!(
                Instant::now() < deadline,
                "no drops before kill {kill} (seed {seed})\n{}",
                tern.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let delay = Duration::from_millis(rng.range(0, 300));
        delays.push(delay);
        std::thread::sleep(delay);
        tern.kill9();
        tern.restart();
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    wait_until(
        Duration::from_secs(90),
        "the queue drains into the drop directory",
        || tern.spool().queued() == 0,
    );
    tern.stop(Duration::from_secs(15));
    collector_stop.store(true, Ordering::Relaxed);
    collector.join().unwrap();
    let (mut got, mut problems) = std::mem::take(&mut *collected.lock().unwrap());
    sweep(&drop_dir, &mut got, &mut problems);

    let context = format!("seed {seed}, kill delays {delays:?}");
    let sent = sent.lock().unwrap();
    type SentRef<'a> = (&'a String, &'a Vec<String>, &'a Option<String>);
    let by_content: HashMap<&[u8], SentRef<'_>> = sent
        .iter()
        .map(|(s, (c, r, id))| (c.as_slice(), (s, r, id)))
        .collect();
    let mut violations = problems;
    let mut copies: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &got {
        *copies.entry(c.id.as_str()).or_default() += 1;
        let (received, rest) = split_received(&c.eml);
        let Some((subject, rcpts, acked)) = by_content.get(rest) else {
            violations.push(format!(
                "{}.eml ({} bytes) is not a message a client sent (partial?)",
                c.id,
                c.eml.len()
            ));
            continue;
        };
        if !received.contains(&format!("id {}", c.id)) {
            violations.push(format!("{}.eml has another message's Received field", c.id));
        }
        if let Some(a) = acked
            && *a != c.id
        {
            violations.push(format!(
                "{subject}: acknowledged as {a}, dropped as {}",
                c.id
            ));
        }
        let env_rcpts: Vec<&str> = c.env["recipients"]
            .as_array()
            .map(|a| a.iter().filter_map(|r| r["address"].as_str()).collect())
            .unwrap_or_default();
        if env_rcpts != rcpts.iter().map(String::as_str).collect::<Vec<_>>() {
            violations.push(format!("{}: envelope recipients {env_rcpts:?}", c.id));
        }
    }
    let mut acked = 0;
    for (subject, (_, _, id)) in sent.iter() {
        if let Some(id) = id {
            acked += 1;
            if !copies.contains_key(id.as_str()) {
                violations.push(format!(
                    "LOST: {subject} ({id}) was acknowledged but never dropped"
                ));
            }
        }
    }
    let duplicates: usize = copies.values().map(|n| n - 1).sum();
    if duplicates > KILLS * MAX_ACTIVE {
        violations.push(format!(
            "{duplicates} duplicates, more than {} ({KILLS} kills x {MAX_ACTIVE})",
            KILLS * MAX_ACTIVE
        ));
    }
    // What is left: a temporary file would be a write never finished nor redone; half a
    // pair is only possible when a rewrite after a kill raced the collector's removal of
    // the same queue id, which was then collected already.
    for e in std::fs::read_dir(&drop_dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        let stem = name.trim_end_matches(".eml").trim_end_matches(".env");
        if name.starts_with('.') || !copies.contains_key(stem) {
            violations.push(format!("the drop directory still holds {name}"));
        }
    }
    eprintln!(
        "{context}: {acked} acknowledged, {} pairs collected, {} distinct, {duplicates} duplicates",
        got.len(),
        copies.len()
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
    assert!(acked >= 100, "{context}: only {acked} acknowledged");
}
