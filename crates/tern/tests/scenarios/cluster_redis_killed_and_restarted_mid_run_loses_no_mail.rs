//! Three nodes under load while Redis is SIGKILLed and started again (docs/cluster/state.md,
//! degraded mode): one client per node sends without a pause, each message with a
//! subject of its own, relayed to one sink on 127.0.4.10; Redis is killed while mail
//! flows, every node logs event 8002 once and keeps accepting and delivering; Redis is
//! started again (empty) while mail flows, every node logs 8003 and registers again.
//! Every acknowledged message arrives at the sink exactly once (counted by subject).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::cluster::{RedisServer, start_nodes, wait_for_members};
use crate::common::peers::SmtpPeer;
use crate::common::{Setup, Tern, send_one, simple_message};

const LIMIT: Duration = Duration::from_secs(60);

/// Waits until `sent` reaches `n`.
fn wait_sent(sent: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + LIMIT;
    while sent.load(Ordering::Relaxed) < n {
        assert!(Instant::now() < deadline, "senders stalled at {sent:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_events(nodes: &[Tern], id: u64) {
    for t in nodes {
        t.wait_for_events(id, 1, LIMIT);
    }
}

#[test]
fn cluster_redis_killed_and_restarted_mid_run_loses_no_mail() {
    let mut redis = RedisServer::start();
    let sink = SmtpPeer::start("127.0.4.10", &["accept"]);
    let route = format!(
        "[delivery]\nconnect_timeout_secs = 2\n[[route]]\ndomains = [\"flow.test\"]\ntransport = \"smtp\"\nhosts = [\"{}\"]\n",
        sink.addr
    );
    let nodes = start_nodes(&redis, 3, "", |_| {
        Setup::new()
            .queue("[queue]\ndeliver = true\nmin_backoff_secs = 1\nmax_backoff_secs = 2\n")
            .section(&route)
    });
    wait_for_members(&nodes, 3, LIMIT);
    wait_events(&nodes, 8001);

    // One sender per node, until told to stop; each message acknowledged (250) or the
    // sender panics.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(n, t)| {
            let (addr, stop, sent) = (t.addr(), Arc::clone(&stop), Arc::clone(&sent));
            std::thread::spawn(move || {
                let mut mine = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let subject = format!("flow-{n}-{mine}");
                    send_one(
                        addr,
                        "s@client.test",
                        &["sink@flow.test"],
                        &simple_message(&subject, "body"),
                    );
                    mine += 1;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                mine
            })
        })
        .collect();

    wait_sent(&sent, 60);
    redis.kill();
    wait_events(&nodes, 8002);
    let at_kill = sent.load(Ordering::Relaxed);
    let delivered_at_kill = sink.count();
    // Mail keeps flowing, in and out, while degraded.
    wait_sent(&sent, at_kill + 60);
    let deadline = Instant::now() + LIMIT;
    while sink.count() <= delivered_at_kill {
        assert!(
            Instant::now() < deadline,
            "nothing delivered while degraded"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    redis.restart();
    wait_events(&nodes, 8003);
    let at_restart = sent.load(Ordering::Relaxed);
    wait_sent(&sent, at_restart + 60);
    stop.store(true, Ordering::Relaxed);
    let total: usize = senders
        .into_iter()
        .map(|s| s.join().expect("a sender failed"))
        .sum();

    // Every acknowledged message, once.
    let got = sink.wait_for(total, Duration::from_secs(120));
    let subjects: Vec<String> = got
        .iter()
        .filter_map(|m| {
            let text = String::from_utf8_lossy(&m.content);
            text.lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_owned))
        })
        .collect();
    let unique: HashSet<&String> = subjects.iter().collect();
    assert_eq!(unique.len(), total, "every acknowledged message arrived");
    assert_eq!(subjects.len(), total, "none twice");
    for t in &nodes {
        assert_eq!(t.events_with_id(8002).len(), 1, "one event per transition");
        let deadline = Instant::now() + LIMIT;
        while !t.queue_json(&[]).is_empty() {
            assert!(Instant::now() < deadline, "{} kept mail", t.addr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Registered again in the new, empty Redis.
    wait_for_members(&nodes, 3, LIMIT);
}
