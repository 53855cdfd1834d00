//! The spool disk fills up while clients keep sending: a 16 MiB tmpfs that the test
//! mounts as the data directory, and a filler file that grows on it, first to below the
//! back-pressure threshold (`back_pressure.min_free_bytes`, 3 MiB here), then until the
//! filesystem is full.
//!
//! - Clients get `452 4.3.1` at MAIL (back pressure), or a 4xx after the data when a
//!   write fails (`451 4.3.0`, also for a transaction that passed MAIL before the disk
//!   filled); never a 5xx, and never a 250 for something that was not stored.
//! - Mail queued before the disk filled keeps being delivered while it is full, also
//!   mail whose retry came while nothing could be written.
//! - Once the filler is removed, Tern accepts again by itself (no restart), within a
//!   few back-pressure checks.
//! - Nothing half-written becomes a message: after a restart every queued file is valid
//!   (nothing quarantined) and every message queued or delivered got a 250.
//!
//! The tmpfs is unmounted by its guard, also when the test fails; it is declared before
//! the server so the server stops first.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::mounts::TmpfsMount;
use crate::common::peers::SmtpPeer;
use crate::common::{
    Reply, Setup, SmtpClient, dot_stuff, header_value, send_batch, simple_message,
};

const FS_SIZE: u64 = 16 << 20;
const THRESHOLD: u64 = 3 << 20;
const EARLY: usize = 20;

/// What happened to one message a client tried to send.
#[derive(Debug, Clone)]
enum Outcome {
    Queued(String),
    /// Refused with this reply (code and text).
    Refused(String),
}

fn mail_reply(addr: SocketAddr) -> Reply {
    let mut c = SmtpClient::connect(addr).unwrap();
    c.hello("client.test");
    let r = c.command("MAIL FROM:<probe@client.test>").unwrap();
    let _ = c.command("QUIT");
    r
}

fn wait_for_mail_reply(addr: SocketAddr, code: u16, what: &str) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = mail_reply(addr);
        if r.code == code {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: MAIL still gets {}",
            r.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A session that is inside DATA (354 received), waiting for its content.
fn open_data_session(addr: SocketAddr, rcpt: &str) -> SmtpClient {
    let mut c = SmtpClient::connect(addr).unwrap();
    c.hello("client.test");
    assert_eq!(c.command("MAIL FROM:<s@client.test>").unwrap().code, 250);
    assert_eq!(c.command(&format!("RCPT TO:<{rcpt}>")).unwrap().code, 250);
    assert_eq!(c.command("DATA").unwrap().code, 354);
    c
}

fn message_of(subject: &str, size: usize) -> Vec<u8> {
    let line = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\n";
    simple_message(subject, &line.repeat(size / line.len() + 1))
}

/// Fills the filesystem of `path` until a write fails with ENOSPC.
fn fill_up(file: &mut std::fs::File) {
    let chunk = vec![0x55u8; 64 * 1024];
    for _ in 0..(FS_SIZE / 4096) {
        match file.write(&chunk) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return,
            Err(e) => panic!("filler: {e}"),
        }
    }
    panic!("the filesystem never filled up");
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn full_spool_disk_refuses_with_4xx_keeps_delivering_and_recovers_by_itself() {
    let fs = TmpfsMount::new(FS_SIZE, "mode=0700");
    let mut receiver = SmtpPeer::start("127.0.0.3", &["tempfail-rcpt=^early-"]);
    let route = format!(
        "[delivery]\nconnect_timeout_secs = 2\ngreeting_timeout_secs = 3\ncommand_timeout_secs = 5\n\
         [[route]]\ndomains = [\"relay.test\"]\ntransport = \"smtp\"\nhosts = [\"{}\"]\n",
        receiver.addr
    );
    let mut tern = Setup::new()
        .data_dir(&fs.path.join("data"))
        .queue("[queue]\ndeliver = true\nmin_backoff_secs = 1\nmax_backoff_secs = 2\n")
        .section(&format!(
            "[back_pressure]\nmin_free_bytes = {THRESHOLD}\nmin_free_percent = 0.0\ncheck_interval_ms = 50\n"
        ))
        .section(&route)
        .start();
    let addr = tern.addr();
    let outcomes: Arc<Mutex<BTreeMap<String, Outcome>>> = Arc::default();

    // 1. Normal operation: 20 messages deferred by the receiver (with records), 20
    // delivered.
    let early: Vec<(String, Vec<u8>)> = (0..EARLY)
        .map(|i| {
            (
                format!("early-{i}@relay.test"),
                message_of(&format!("early-{i}"), 2000),
            )
        })
        .chain((0..20).map(|i| {
            (
                format!("now-{i}@relay.test"),
                message_of(&format!("now-{i}"), 2000),
            )
        }))
        .collect();
    for ((rcpt, _), id) in early.iter().zip(send_batch(addr, 4, &early)) {
        let subject = rcpt.trim_end_matches("@relay.test").to_string();
        outcomes
            .lock()
            .unwrap()
            .insert(subject, Outcome::Queued(id));
    }
    receiver.wait_for(20, Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(30);
    // Each has a delivery record (a frame in its file) once an attempt finished.
    let tried = || {
        tern.queue_json(&[])
            .iter()
            .filter(|m| m["attempts"].as_u64() >= Some(1))
            .count()
    };
    while tried() < EARLY {
        assert!(
            Instant::now() < deadline,
            "the early messages were never deferred"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Two transactions past MAIL, waiting for their content when the disk fills.
    let mut big_session = open_data_session(addr, "big@relay.test");
    let mut small_session = open_data_session(addr, "small@relay.test");

    // 2. Clients keep sending while the disk fills.
    let stop = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = (0..3)
        .map(|t| {
            let (stop, outcomes) = (Arc::clone(&stop), Arc::clone(&outcomes));
            std::thread::spawn(move || {
                let sizes = [1_000, 60_000, 300_000];
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    // Refused only once the server is gone (the test failed and stopped it).
                    let Ok(mut c) = SmtpClient::connect(addr) else {
                        return;
                    };
                    c.hello("client.test");
                    for _ in 0..5 {
                        let subject = format!("load-{t}-{n}");
                        let body = message_of(&subject, sizes[n % sizes.len()]);
                        n += 1;
                        let rcpt = format!("{subject}@relay.test");
                        let (out, go_on) = match c.send_message("s@client.test", &[&rcpt], &body) {
                            Ok(r) => match r.queued_id() {
                                Some(id) => (Outcome::Queued(id), true),
                                None => (Outcome::Refused(r.text()), true),
                            },
                            // A refusal before the data (the reply's text), or the
                            // connection ended (then the session starts over).
                            Err(e) => {
                                let replied = ["MAIL: ", "RCPT ", "DATA: "]
                                    .iter()
                                    .any(|p| e.starts_with(p));
                                (Outcome::Refused(e), replied)
                            }
                        };
                        let refused = matches!(out, Outcome::Refused(_));
                        outcomes.lock().unwrap().insert(subject, out);
                        if !go_on || stop.load(Ordering::Relaxed) {
                            break;
                        }
                        if refused {
                            // Pace the retries of a refused client, as a real one would.
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                    let _ = c.command("QUIT");
                }
            })
        })
        .collect();

    // 3. Below the threshold: back pressure.
    let filler_path = fs.path.join("filler");
    let mut filler = std::fs::File::create(&filler_path).unwrap();
    let leave = THRESHOLD / 2;
    let fill = fs.available().saturating_sub(leave);
    filler.set_len(0).unwrap();
    let chunk = vec![0xAAu8; 64 * 1024];
    let mut written = 0u64;
    while written < fill {
        let n = chunk.len().min(usize::try_from(fill - written).unwrap());
        // The server writes too (spool, event and tracking logs) while this fills, so
        // the disk may run out a little early: full is below the threshold as well.
        match filler.write_all(&chunk[..n]) {
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            r => r.unwrap(),
        }
        written += n as u64;
    }
    let r = wait_for_mail_reply(addr, 452, "below the threshold");
    assert!(r.lines[0].starts_with("4.3.1 "), "{}", r.text());

    // 4. Completely full: the transactions that passed MAIL earlier fail with a 4xx.
    fill_up(&mut filler);
    assert!(fs.available() < 64 * 1024, "the filesystem is full");
    let big = message_of("big", 1 << 20);
    big_session.write_raw(&dot_stuff(&big)).unwrap();
    let r = big_session.read_reply().unwrap();
    assert!(
        (400..500).contains(&r.code),
        "1 MiB on a full disk: {}",
        r.text()
    );
    outcomes
        .lock()
        .unwrap()
        .insert("big".into(), Outcome::Refused(r.text()));
    small_session
        .write_raw(&dot_stuff(&message_of("small", 1000)))
        .unwrap();
    let r = small_session.read_reply().unwrap();
    // A small message may still fit in the file of a delivered one (reused in place).
    let small = match r.queued_id() {
        Some(id) => Outcome::Queued(id),
        None => Outcome::Refused(r.text()),
    };
    outcomes.lock().unwrap().insert("small".into(), small);

    // 5. Queued mail keeps flowing while the disk is full, also mail whose retry came
    // while nothing could be written: wait for a round of retries, then let them in.
    // Writes that failed gave their space back: the filler takes it again, on every
    // turn of the waits, so the disk stays full.
    fill_up(&mut filler);
    let early_tries = |r: &SmtpPeer| r.log().matches("RCPT TO:<early-").count();
    let before = early_tries(&receiver);
    let deadline = Instant::now() + Duration::from_secs(30);
    while early_tries(&receiver) < before + EARLY {
        assert!(
            Instant::now() < deadline,
            "no retries while the disk was full"
        );
        fill_up(&mut filler);
        std::thread::sleep(Duration::from_millis(50));
    }
    receiver.restart(&["accept"]);
    let delivered_early = |r: &SmtpPeer| {
        r.received()
            .iter()
            .filter(|m| {
                header_value(&m.content, "Subject").is_some_and(|s| s.starts_with("early-"))
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered_early(&receiver) < EARLY {
        assert!(
            Instant::now() < deadline,
            "only {} of {EARLY} queued messages delivered while the disk was full; spool: active {:?} deferred {:?}",
            delivered_early(&receiver),
            tern.spool_files("active"),
            tern.spool_files("deferred")
        );
        fill_up(&mut filler);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(fs.available() < THRESHOLD, "still full");
    assert_eq!(mail_reply(addr).code, 452, "still refusing while full");

    // 6. Space comes back: accepted again without a restart.
    drop(filler);
    std::fs::remove_file(&filler_path).unwrap();
    wait_for_mail_reply(addr, 250, "after the filler was removed");
    tern.wait_for_events(3005, 1, Duration::from_secs(10));
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        l.join().unwrap();
    }
    let after = send_batch(
        addr,
        1,
        &[("after@relay.test".into(), message_of("after", 1000))],
    );
    outcomes
        .lock()
        .unwrap()
        .insert("after".into(), Outcome::Queued(after[0].clone()));

    // Every refusal was a 4xx; some of each kind happened.
    let outcomes = outcomes.lock().unwrap().clone();
    let mut refused_at_mail = 0;
    for (subject, o) in &outcomes {
        if let Outcome::Refused(text) = o {
            let code = text.trim_start_matches("MAIL: ").get(..3).unwrap_or("");
            assert!(code.starts_with('4'), "{subject} refused with {text:?}");
            refused_at_mail += usize::from(text.starts_with("MAIL: 452 4.3.1"));
        }
    }
    assert!(
        refused_at_mail > 0,
        "clients were refused at MAIL: {outcomes:?}"
    );
    let acked: BTreeMap<String, String> = outcomes
        .iter()
        .filter_map(|(s, o)| match o {
            Outcome::Queued(id) => Some((s.clone(), id.clone())),
            Outcome::Refused(_) => None,
        })
        .collect();
    let acked_ids: BTreeSet<&String> = acked.values().collect();

    // 7. Stopped, everything in the spool was acknowledged (read while no server runs:
    // a running one moves and removes files as it delivers); after a restart, recovery
    // finds every file valid.
    tern.stop(Duration::from_secs(20));
    for (m, _) in tern.spooled() {
        assert!(
            acked_ids.contains(&m.id.to_string()),
            "{} is queued but was never acknowledged",
            m.id
        );
    }
    tern.restart();
    let last = tern
        .wait_for_events(3001, 2, Duration::from_secs(10))
        .pop()
        .unwrap();
    assert_eq!(last["quarantined"], "0", "nothing half-written: {last}");
    assert!(tern.spool_files("corrupt").is_empty());

    // 8. Everything acknowledged is delivered, nothing else, and the queue empties.
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let got: BTreeSet<String> = receiver
            .received()
            .iter()
            .filter_map(|r| header_value(&r.content, "Subject"))
            .collect();
        if acked.keys().all(|s| got.contains(s)) {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "acknowledged but never delivered: {:?}",
            acked
                .keys()
                .filter(|s| !got.contains(*s))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let unacked: Vec<&String> = got.iter().filter(|s| !acked.contains_key(*s)).collect();
    assert!(unacked.is_empty(), "delivered without a 250: {unacked:?}");
    eprintln!(
        "{} messages acknowledged, {} refused ({refused_at_mail} at MAIL)",
        acked.len(),
        outcomes.len() - acked.len()
    );
}
