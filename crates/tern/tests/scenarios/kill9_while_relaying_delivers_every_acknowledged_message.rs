//! Kill -9 while relaying: four clients send numbered messages while Tern relays them to
//! a smarthost, reusing the files of delivered messages for new ones. Tern is killed
//! three times at moments that vary and restarted. Every message that got a 250 reaches
//! the smarthost at least once, byte-identical, and duplicates stay rare (each is a
//! message that was in delivery when the process died).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::peers::{DnsServer, SmtpPeer, delivering};
use crate::common::{SmtpClient, free_port, simple_message};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn every_acknowledged_message_is_delivered_after_three_kills() {
    let dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    let relay = SmtpPeer::start("127.0.0.3", &["accept"]);
    let route = format!(
        "[[route]]\ndomains = [\"relay.test\"]\ntransport = \"smtp\"\nhosts = [\"{}\"]\n",
        relay.addr
    );
    // The default poison threshold (2): a kill -9 is a crash no message caused, and the
    // messages in delivery at it are suspects, never poisoned for being there (issue 16).
    let mut tern = delivering(&dns, port, &route)
        .queue("[queue]\ndeliver = true\nmin_backoff_secs = 1\nmax_backoff_secs = 2\n")
        .start();
    let addr = tern.addr();

    let acked: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = SmtpClient::connect(addr) else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    if s.read_reply().map(|r| r.code).ok() != Some(220) {
                        continue;
                    }
                    let _ = s.command("EHLO client.test");
                    while !stop.load(Ordering::Relaxed) {
                        let subject = format!("c{c}-m{n}");
                        let body = simple_message(&subject, &format!("payload {c} {n}"));
                        match s.send_message("s@client.test", &["r@relay.test"], &body) {
                            Ok(r) if r.code == 250 => {
                                acked.lock().unwrap().insert(subject, body);
                                n += 1;
                            }
                            _ => break,
                        }
                    }
                }
            })
        })
        .collect();

    for round in 0..3u64 {
        // Kill at a moment that moves with the round: after 100, 170, 240 deliveries.
        let target = relay.received().len() + 100 + 70 * round as usize;
        let deadline = Instant::now() + Duration::from_secs(60);
        while relay.received().len() < target {
            assert!(
                Instant::now() < deadline,
                "the flow stalled before kill {round}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        tern.kill9();
        tern.restart();
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }

    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 300,
        "only {} messages acknowledged",
        acked.len()
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got: BTreeSet<String> = relay
            .received()
            .iter()
            .filter_map(|r| subject_of(&r.content))
            .collect();
        let missing: Vec<&String> = acked.keys().filter(|k| !got.contains(*k)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged messages never delivered, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let received = relay.received();
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    for r in &received {
        let Some(subject) = subject_of(&r.content) else {
            continue;
        };
        if let Some(body) = acked.get(&subject) {
            assert!(r.content.ends_with(body), "{subject} arrived altered");
        }
        *copies.entry(subject).or_default() += 1;
    }
    let duplicates: usize = copies.values().map(|n| n - 1).sum();
    assert!(
        duplicates <= 3 * 200,
        "{duplicates} duplicates for three kills: more than what was in flight"
    );
}

fn subject_of(content: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(content);
    text.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .map(|s| s.trim().to_string())
}
