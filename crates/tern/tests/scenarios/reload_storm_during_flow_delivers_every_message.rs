//! The seed failure "inbound conversion deadlocked while directory (routing) changes were
//! imported": Tern reloads its configuration hundreds of times per second while 5,000
//! messages flow in and out, and every message is delivered exactly once (no crash, so
//! no duplicate window). Each reload swaps the relay policy, the routing table (the flow's
//! domain alternates between two smarthosts) and the queue settings (the concurrency
//! limits alternate) atomically; readers never wait, and no code holds two locks.
//!
//! The configuration file is replaced by rename, so the server never reads half a file;
//! SIGHUPs that arrive while a reload runs are merged by the signal stream, so the server
//! applies somewhat fewer reloads than it is sent: the test counts what it applied (event
//! 1007) and requires at least 50 per second over the flow (184/s measured alone on the
//! 2-core test machine; the bound leaves room for a loaded CI run).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::free_port;
use crate::common::peers::{
    DnsServer, SmtpPeer, delivering, finish_smtp_source, spawn_smtp_source,
};

const MESSAGES: usize = 5000;

fn route(host: std::net::SocketAddr) -> String {
    format!("[[route]]\ndomains = [\"flow.test\"]\ntransport = \"smtp\"\nhosts = [\"{host}\"]\n")
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn five_thousand_messages_flow_through_a_reload_storm() {
    let dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    let a = SmtpPeer::start("127.0.0.2", &["accept"]);
    let b = SmtpPeer::start("127.0.0.3", &["accept"]);
    let tern = delivering(&dns, port, &route(a.addr)).start();
    let config = tern.config_path.clone().unwrap();
    let original = std::fs::read_to_string(&config).unwrap();
    let variants = [
        original.clone(),
        original.replace(&route(a.addr), &route(b.addr)).replace(
            "[queue]\n",
            "[queue]\nmax_concurrency = 7\ndestination_concurrency = 3\n",
        ),
    ];
    assert_ne!(variants[0], variants[1]);

    // The storm: replace the file by rename and signal, every 2 ms, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let pid = i32::try_from(tern.pid()).unwrap();
    let storm = {
        let (stop, sent, config) = (Arc::clone(&stop), Arc::clone(&sent), config.clone());
        std::thread::spawn(move || {
            let tmp = config.with_extension("toml.next");
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                std::fs::write(&tmp, &variants[n % 2]).unwrap();
                std::fs::rename(&tmp, &config).unwrap();
                // SAFETY: kill(2) on the server's pid; no memory is passed.
                assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
                n += 1;
                sent.store(n, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let started = Instant::now();

    let source = spawn_smtp_source(&tern.server_arg(), MESSAGES, "sink@flow.test");
    finish_smtp_source(source);

    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let total = a.received().len() + b.received().len();
        if total >= MESSAGES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {total} of {MESSAGES} arrived during the storm; queue: {}",
            tern.queue_json(&[]).len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let flow = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    storm.join().unwrap();

    let (na, nb) = (a.received().len(), b.received().len());
    assert_eq!(na + nb, MESSAGES, "exactly once: a={na} b={nb}");
    assert!(
        na > 0 && nb > 0,
        "the reloads moved mail between hosts: a={na} b={nb}"
    );
    let applied = tern.events_with_id(1007).len();
    let refused = tern.events_with_id(1008).len();
    let rate = applied as f64 / flow.as_secs_f64();
    eprintln!(
        "{MESSAGES} messages in {flow:?}; {} SIGHUPs sent, {applied} reloads applied \
         ({rate:.0}/s), {refused} refused",
        sent.load(Ordering::Relaxed)
    );
    assert_eq!(refused, 0, "every file was complete");
    assert!(
        rate >= 50.0,
        "only {rate:.0} reloads per second were applied"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !tern.queue_json(&[]).is_empty() {
        assert!(Instant::now() < deadline, "queue never emptied");
        std::thread::sleep(Duration::from_millis(50));
    }
}
