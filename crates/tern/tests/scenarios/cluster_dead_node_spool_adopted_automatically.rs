//! Automatic adoption (`cluster.adopt_path`, docs/cluster/adopt.md): node 2's spool is
//! reachable from node 1 at `<base>/node2/spool`; node 2 dies with deferred mail; node 1
//! declares it dead (event 8004), takes the adoption lock in Redis and adopts its spool
//! by itself (event 8041 with auto=true); every message reaches the sink once it
//! accepts, and node 2 is fenced.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::cluster::{RedisServer, start_nodes, wait_for_members};
use crate::common::peers::SmtpPeer;
use crate::common::{send_one, simple_message};

use super::cluster_node_killed_under_load_spool_adopted_nothing_lost::{
    delivering_to, queued_files, wait_all_delivered,
};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn cluster_dead_node_spool_adopted_automatically() {
    let redis = RedisServer::start();
    let base = tempfile::tempdir().expect("tempdir");
    let mut sink = SmtpPeer::start("127.0.6.3", &["tempfail-rcpt=."]);
    let extra = format!(
        "adopt_path = \"{}/{{node}}/spool\"\n",
        base.path().display()
    );
    let mut nodes = start_nodes(&redis, 2, &extra, |i| {
        let s = delivering_to(&sink);
        if i == 1 {
            s.data_dir(&base.path().join("node2"))
        } else {
            s
        }
    });
    wait_for_members(&nodes, 2, LIMIT);
    let mut acked = BTreeMap::new();
    for n in 0..10 {
        let subject = format!("auto{n}");
        let id = send_one(
            nodes[1].addr(),
            "s@client.test",
            &[&format!("r{n}@sink.test")],
            &simple_message(&subject, "payload"),
        );
        acked.insert(subject, id);
    }
    let spool2 = nodes[1].spool_dir();
    assert_eq!(spool2, base.path().join("node2/spool"));
    let deadline = Instant::now() + LIMIT;
    while std::fs::read_dir(spool2.join("deferred"))
        .map(|r| r.count())
        .unwrap_or(0)
        < 10
    {
        assert!(Instant::now() < deadline, "node 2 did not defer its mail");
        std::thread::sleep(Duration::from_millis(50));
    }
    nodes[1].kill9();

    let adopted = nodes[0].wait_for_events(8041, 1, LIMIT);
    assert_eq!(adopted[0]["auto"], "true", "{:?}", adopted[0]);
    assert_eq!(adopted[0]["deferred"], "10", "{:?}", adopted[0]);
    assert_eq!(nodes[0].events_with_id(8004).len(), 1);
    assert_eq!(queued_files(&spool2), 0);
    // The adoption lock is released.
    assert_eq!(redis.cli(&["EXISTS", "tern:adopting:node2"]).trim(), "0");

    sink.restart(&["accept"]);
    let copies = wait_all_delivered(&sink, &acked, Duration::from_secs(60));
    assert!(copies.values().all(|n| *n == 1), "{copies:?}");
    let status = nodes[1].restart_expecting_crash(LIMIT);
    assert!(!status.success(), "node 2 is fenced");
    nodes[0].stop(Duration::from_secs(20));
    sink.stop();
}
