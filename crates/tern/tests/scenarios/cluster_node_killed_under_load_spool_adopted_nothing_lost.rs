//! A node dies under load and loses no mail (issue 20 §4, docs/cluster/adopt.md): three
//! nodes share a redis-server; node 2 takes a stream of mail for a slow sink on
//! 127.0.6.1 that defers part of it, so its spool holds mail in several states
//! (incoming, active, deferred with records) when it is SIGKILLed. Another node notices
//! (event 8004); node 1 adopts node 2's spool (`tern spool adopt`, event 8041); every
//! message node 2 acknowledged (a 250 with its queue id) reaches the sink once the sink
//! accepts again; node 2's spool is left empty but for its fence marker, and node 2
//! restarted refuses to start (event 8042) until `tern spool unfence`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::cluster::{RedisServer, start_nodes, wait_for_members};
use crate::common::peers::SmtpPeer;
use crate::common::{Setup, SmtpClient, Tern, run, simple_message};

const LIMIT: Duration = Duration::from_secs(60);

/// A node that delivers `sink.test` to `sink`, retrying after 1-2 s.
pub(crate) fn delivering_to(sink: &SmtpPeer) -> Setup {
    Setup::new()
        .queue("[queue]\ndeliver = true\nmin_backoff_secs = 1\nmax_backoff_secs = 2\n")
        .section(&format!(
            "[delivery]\nconnect_timeout_secs = 2\ngreeting_timeout_secs = 3\ncommand_timeout_secs = 5\n\n[[route]]\ndomains = [\"sink.test\"]\ntransport = \"smtp\"\nhosts = [\"{}\"]\n",
            sink.addr
        ))
}

/// Sends numbered messages to `node` from two clients until `stop`; every 250 is
/// recorded (subject -> queue id). One recipient in three is deferred by the sink.
pub(crate) fn load(
    node: &Tern,
    acked: &Arc<Mutex<BTreeMap<String, String>>>,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    let addr = node.addr();
    (0..2)
        .map(|c| {
            let (acked, stop) = (Arc::clone(acked), Arc::clone(stop));
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = SmtpClient::connect(addr) else {
                        return;
                    };
                    if s.read_reply().map(|r| r.code).ok() != Some(220) {
                        return;
                    }
                    let _ = s.command("EHLO client.test");
                    while !stop.load(Ordering::Relaxed) {
                        let subject = format!("c{c}-m{n}");
                        let rcpt = if n % 3 == 0 {
                            format!("later{n}@sink.test")
                        } else {
                            format!("r{n}@sink.test")
                        };
                        let body = simple_message(&subject, &format!("payload {c} {n}"));
                        match s.send_message("s@client.test", &[&rcpt], &body) {
                            Ok(r) if r.code == 250 => {
                                let id = r.queued_id().unwrap_or_default();
                                acked.lock().unwrap().insert(subject, id);
                                n += 1;
                            }
                            // The node died: the client stops.
                            _ => return,
                        }
                    }
                }
            })
        })
        .collect()
}

pub(crate) fn subject_of(content: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(content);
    text.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .map(|s| s.trim().to_string())
}

/// Waits until every acknowledged subject reached the sink; returns copies per subject.
pub(crate) fn wait_all_delivered(
    sink: &SmtpPeer,
    acked: &BTreeMap<String, String>,
    limit: Duration,
) -> BTreeMap<String, usize> {
    let deadline = Instant::now() + limit;
    loop {
        let mut copies: BTreeMap<String, usize> = BTreeMap::new();
        for r in sink.received() {
            if let Some(s) = subject_of(&r.content) {
                *copies.entry(s).or_default() += 1;
            }
        }
        let missing: Vec<(&String, &String)> = acked
            .iter()
            .filter(|(s, _)| !copies.contains_key(*s))
            .collect();
        if missing.is_empty() {
            return copies;
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged messages never delivered, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Messages in the queue states of the spool at `dir` (file names; segments aside).
pub(crate) fn queued_files(dir: &std::path::Path) -> usize {
    ["incoming", "active", "deferred", "hold", "poison"]
        .iter()
        .map(|s| {
            std::fs::read_dir(dir.join(s))
                .map(|r| r.count())
                .unwrap_or(0)
        })
        .sum()
}

#[test]
fn cluster_node_killed_under_load_spool_adopted_nothing_lost() {
    let redis = RedisServer::start();
    // Slow, and deferring `later*` recipients: node 2's mail waits in several states.
    let mut sink = SmtpPeer::start("127.0.6.1", &["slow=150", "tempfail-rcpt=^later"]);
    let mut nodes = start_nodes(&redis, 3, "", |_| delivering_to(&sink));
    wait_for_members(&nodes, 3, LIMIT);

    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(&nodes[1], &acked, &stop);
    // Under load: some delivered, some deferred (with records), the rest queued.
    let deadline = Instant::now() + LIMIT;
    loop {
        let n = acked.lock().unwrap().len();
        let deferred = std::fs::read_dir(nodes[1].spool_dir().join("deferred"))
            .map(|r| r.count())
            .unwrap_or(0);
        if n >= 150 && deferred >= 5 && sink.count() >= 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the load did not build up: {n} acked, {deferred} deferred"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    nodes[1].kill9();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let node2_spool = nodes[1].spool_dir();
    assert!(
        queued_files(&node2_spool) > 0,
        "node 2 died with mail queued"
    );
    assert!(
        node2_spool.join("node").exists(),
        "a cluster node names itself in its spool"
    );

    // Another node notices the death (one event in the cluster).
    let deadline = Instant::now() + LIMIT;
    while nodes[0].events_with_id(8004).is_empty() && nodes[2].events_with_id(8004).is_empty() {
        assert!(Instant::now() < deadline, "no node noticed node 2's death");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Node 1 adopts node 2's spool.
    let out = run(
        &mut nodes[0].tern_command(&["spool", "adopt", "--json", node2_spool.to_str().unwrap()]),
        LIMIT,
    );
    assert!(
        out.status.success(),
        "tern spool adopt failed: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let run_json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON counts");
    eprintln!("adoption: {run_json}");
    assert_eq!(run_json["node"], "node2", "{run_json}");
    assert_eq!(run_json["fenced_in_redis"], true, "{run_json}");
    let adopted_event = nodes[0].wait_for_events(8041, 1, LIMIT);
    assert_eq!(adopted_event[0]["node"], "node2", "{:?}", adopted_event[0]);
    let adopted: u64 = ["incoming", "active", "deferred", "hold", "poison"]
        .iter()
        .map(|k| run_json[*k].as_u64().unwrap_or(0))
        .sum();
    assert!(adopted > 0, "{run_json}");
    assert!(run_json["deferred"].as_u64().unwrap_or(0) > 0, "{run_json}");
    assert!(
        redis.cli(&["GET", "tern:fence:node2"]).contains("node1"),
        "the fence is in Redis"
    );
    // Node 2's spool: empty but for its marker.
    assert_eq!(queued_files(&node2_spool), 0);
    assert!(node2_spool.join("adopted").exists());

    // The sink accepts everything now: every acknowledged message arrives.
    sink.restart(&["accept"]);
    let copies = wait_all_delivered(&sink, &acked, Duration::from_secs(120));
    // Duplicates only for what node 2 had in delivery at the kill.
    let duplicates: usize = copies.values().map(|n| n - 1).sum();
    assert!(duplicates <= 40, "{duplicates} duplicates");
    // No id lost: each acknowledged id left node 1's queue delivered.
    let ids: BTreeSet<&String> = acked.values().collect();
    assert_eq!(ids.len(), acked.len(), "queue ids are unique");
    let deadline = Instant::now() + LIMIT;
    while queued_files(&nodes[0].spool_dir()) > 0 {
        assert!(Instant::now() < deadline, "node 1 kept mail queued");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Tracked: `tern track <id>` on node 1 shows where it came from.
    let some_deferred = acked
        .iter()
        .find(|(s, _)| s.ends_with("-m0"))
        .map(|(_, id)| id.clone())
        .unwrap();
    let track = run(
        &mut nodes[0].tern_command(&["track", "--json", &some_deferred]),
        LIMIT,
    );
    let text = String::from_utf8_lossy(&track.stdout);
    assert!(text.contains("adopted"), "{text}");

    // Node 2 comes back: fenced.
    let status = nodes[1].restart_expecting_crash(LIMIT);
    assert!(!status.success());
    assert!(
        nodes[1].log().contains("adopted by node"),
        "{}",
        nodes[1].log()
    );
    assert_eq!(nodes[1].events_with_id(8042).len(), 1);
    // Cleared by the operator, it starts (on its empty spool).
    let out = run(&mut nodes[1].tern_command(&["spool", "unfence"]), LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(redis.cli(&["EXISTS", "tern:fence:node2"]).trim(), "0");
    nodes[1].restart();
    for t in &mut nodes {
        t.stop(Duration::from_secs(20));
    }
    sink.stop();
}
