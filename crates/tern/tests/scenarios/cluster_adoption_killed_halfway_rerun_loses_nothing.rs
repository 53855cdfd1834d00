//! An adoption cut by kill -9 of the adopting node, then run again, loses nothing and
//! delivers each message once (docs/cluster/adopt.md, "The duplicate window"): node 2
//! dies with deferred mail; node 1 starts adopting its spool and is SIGKILLed once ten
//! messages are written in its spool (the tenth not yet removed from node 2's: the
//! message is in both spools); restarted, node 1 schedules what it already has, and the
//! rerun of `tern spool adopt` completes the adoption, keeping one copy of the message
//! that was in both. Every acknowledged message reaches the sink exactly once.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::cluster::{RedisServer, start_nodes, wait_for_members};
use crate::common::peers::SmtpPeer;
use crate::common::{run, send_one, simple_message, terminate};

use super::cluster_node_killed_under_load_spool_adopted_nothing_lost::{
    delivering_to, queued_files, wait_all_delivered,
};

const LIMIT: Duration = Duration::from_secs(60);
const MESSAGES: usize = 30;

#[test]
fn cluster_adoption_killed_halfway_rerun_loses_nothing() {
    let redis = RedisServer::start();
    // Defers everything until it is restarted accepting.
    let mut sink = SmtpPeer::start("127.0.6.2", &["tempfail-rcpt=."]);
    let mut nodes = start_nodes(&redis, 2, "", |i| {
        let s = delivering_to(&sink);
        if i == 0 {
            s.env("TERN_FAULT_ADOPT_FREEZE_AFTER", "10")
        } else {
            s
        }
    });
    wait_for_members(&nodes, 2, LIMIT);

    let mut acked = BTreeMap::new();
    for n in 0..MESSAGES {
        let subject = format!("m{n}");
        let id = send_one(
            nodes[1].addr(),
            "s@client.test",
            &[&format!("r{n}@sink.test")],
            &simple_message(&subject, &format!("payload {n}")),
        );
        acked.insert(subject, id);
    }
    let node2_spool = nodes[1].spool_dir();
    let deadline = Instant::now() + LIMIT;
    while std::fs::read_dir(node2_spool.join("deferred"))
        .map(|r| r.count())
        .unwrap_or(0)
        < MESSAGES
    {
        assert!(Instant::now() < deadline, "node 2 did not defer its mail");
        std::thread::sleep(Duration::from_millis(50));
    }
    nodes[1].kill9();

    // The adoption freezes after its tenth message: kill -9 node 1 there.
    let mut cli = nodes[0]
        .tern_command(&["spool", "adopt", node2_spool.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tern spool adopt");
    let node1_spool = nodes[0].spool_dir();
    let deadline = Instant::now() + LIMIT;
    while queued_files(&node1_spool) < 10 {
        assert!(
            Instant::now() < deadline,
            "the adoption did not start: {}",
            nodes[0].log()
        );
        assert!(cli.try_wait().unwrap().is_none(), "the CLI ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    nodes[0].kill9();
    terminate(cli);
    assert!(
        node2_spool.join("adopted").exists(),
        "fenced before anything moved"
    );
    // Nothing lost: every message is in one spool or both (the one in flight).
    let here = queued_files(&node1_spool);
    let there = queued_files(&node2_spool);
    assert_eq!(here, 10);
    assert_eq!(here + there, MESSAGES + 1, "one message in both spools");

    // Restarted, node 1 schedules what it has; the rerun completes the adoption.
    nodes[0].unset_env("TERN_FAULT_ADOPT_FREEZE_AFTER");
    // The killed process's address file, until the new one writes its own.
    let _ = std::fs::remove_file(nodes[0].data_dir.join("admin.addr"));
    nodes[0].restart();
    // Its admin listener answers (and the cluster sees it alone alive).
    wait_for_members(&nodes[..1], 1, LIMIT);
    let out = run(
        &mut nodes[0].tern_command(&["spool", "adopt", "--json", node2_spool.to_str().unwrap()]),
        LIMIT,
    );
    assert!(
        out.status.success(),
        "rerun failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let counts: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(counts["already_here"], 1, "{counts}");
    assert_eq!(counts["deferred"], (MESSAGES - 10) as u64, "{counts}");
    assert_eq!(queued_files(&node2_spool), 0);

    sink.restart(&["accept"]);
    let copies = wait_all_delivered(&sink, &acked, Duration::from_secs(120));
    assert!(
        copies.values().all(|n| *n == 1),
        "each message delivered once: {copies:?}"
    );
    assert_eq!(copies.len(), MESSAGES);
    nodes[0].stop(Duration::from_secs(20));
    sink.stop();
}
