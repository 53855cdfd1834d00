//! SIGTERM stops Tern cleanly and promptly: an idle session is told `421 4.3.2`, the
//! process exits with status 0 within the grace period plus 2 s, and the event log
//! records the stop (1002 server.stopping, 1003 server.stopped).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use crate::common::peers::{DnsServer, SmtpPeer};
use crate::common::{Setup, SmtpClient, send_one, simple_message};

const GRACE_SECS: u64 = 3;

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn sigterm_closes_idle_session_with_421_and_exits_zero_within_grace() {
    let mut tern = Setup::new().grace_secs(GRACE_SECS).start();
    let mut idle = SmtpClient::connect(tern.addr()).unwrap();
    idle.hello("idle.client.test");
    // A session that has said EHLO and then nothing: idle between commands. Prove the
    // server has processed it (NOOP answered) before the signal.
    assert_eq!(idle.command("NOOP").unwrap().code, 250);

    let signalled = Instant::now();
    tern.signal(libc::SIGTERM);
    let reply = idle
        .read_reply()
        .expect("the idle session gets a reply before closing");
    assert_eq!(reply.code, 421, "{}", reply.text());
    assert!(
        reply.lines[0].starts_with("4.3.2 "),
        "enhanced status 4.3.2: {}",
        reply.text()
    );
    let limit = Duration::from_secs(GRACE_SECS + 2);
    let status = tern
        .wait_exit(limit)
        .unwrap_or_else(|| panic!("tern still running {limit:?} after SIGTERM"));
    let took = signalled.elapsed();
    assert!(took <= limit, "exit took {took:?}");
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");

    // After the reply the server closes the connection.
    assert!(idle.read_reply().is_err(), "connection closed after 421");

    let stopping = tern.events_with_id(1002);
    let stopped = tern.events_with_id(1003);
    assert_eq!(stopping.len(), 1, "one server.stopping event");
    assert_eq!(stopped.len(), 1, "one server.stopped event");
    assert_eq!(stopping[0]["signal"], "SIGTERM");
    assert_eq!(stopping[0]["grace_secs"], GRACE_SECS.to_string());
    // 1003 is written after 1002.
    let events = tern.events();
    let pos = |id: u64| {
        events
            .iter()
            .position(|e| e["id"].as_u64() == Some(id))
            .unwrap()
    };
    assert!(pos(1002) < pos(1003));
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn sigterm_with_no_session_exits_at_once() {
    let mut tern = Setup::new().grace_secs(30).start();
    let signalled = Instant::now();
    tern.signal(libc::SIGTERM);
    let status = tern
        .wait_exit(Duration::from_secs(5))
        .expect("with no session a long grace period is not waited out");
    assert_eq!(status.code(), Some(0));
    assert!(signalled.elapsed() < Duration::from_secs(5));
    // New connections are refused once stopped.
    assert!(SmtpClient::connect(tern.addr()).is_err());
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn sigterm_lets_a_message_in_progress_finish() {
    let mut tern = Setup::new().grace_secs(GRACE_SECS).start();
    let mut busy = SmtpClient::connect(tern.addr()).unwrap();
    busy.hello("busy.client.test");
    assert_eq!(busy.command("MAIL FROM:<a@client.test>").unwrap().code, 250);
    assert_eq!(busy.command("RCPT TO:<b@localhost>").unwrap().code, 250);
    assert_eq!(busy.command("DATA").unwrap().code, 354);
    busy.write_raw(b"Subject: in progress\r\n\r\nfirst half\r\n")
        .unwrap();

    tern.signal(libc::SIGTERM);
    // The stop is under way once 1002 is logged; the session is inside DATA and is
    // allowed to finish its message.
    tern.wait_for_events(1002, 1, Duration::from_secs(5));
    busy.write_raw(b"second half\r\n.\r\n").unwrap();
    let reply = busy.read_reply().unwrap();
    let id = reply.queued_id().unwrap_or_else(|| {
        panic!(
            "message in progress at SIGTERM not queued: {}",
            reply.text()
        )
    });
    let status = tern
        .wait_exit(Duration::from_secs(GRACE_SECS + 2))
        .expect("exit within the grace period");
    assert_eq!(status.code(), Some(0));
    let queued = tern.queue_json(&[]);
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0]["id"], id.as_str());
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn sigterm_cuts_a_stalled_message_after_the_grace_period() {
    let mut tern = Setup::new().grace_secs(GRACE_SECS).start();
    let mut stalled = SmtpClient::connect(tern.addr()).unwrap();
    stalled.hello("stalled.client.test");
    assert_eq!(
        stalled.command("MAIL FROM:<a@client.test>").unwrap().code,
        250
    );
    assert_eq!(stalled.command("RCPT TO:<b@localhost>").unwrap().code, 250);
    assert_eq!(stalled.command("DATA").unwrap().code, 354);
    stalled
        .write_raw(b"Subject: never finished\r\n\r\npartial\r\n")
        .unwrap();

    let signalled = Instant::now();
    tern.signal(libc::SIGTERM);
    let limit = Duration::from_secs(GRACE_SECS + 2);
    let status = tern.wait_exit(limit).unwrap_or_else(|| {
        panic!("tern still running {limit:?} after SIGTERM with a stalled DATA")
    });
    assert_eq!(status.code(), Some(0));
    assert!(
        signalled.elapsed() >= Duration::from_secs(GRACE_SECS),
        "the message in progress was given the grace period ({:?})",
        signalled.elapsed()
    );
    assert!(
        tern.queue_json(&[]).is_empty(),
        "the unfinished message is not queued"
    );
    assert!(
        tern.spool_files("tmp").is_empty(),
        "no partial write left behind"
    );
}

/// The outbound side: a delivery whose peer stops answering in the middle of the data
/// (its timeouts are minutes long) does not hold the stop past the grace period, and the
/// message it carried stays queued for the next start.
#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn sigterm_with_a_delivery_hanging_mid_data_exits_within_grace() {
    let dns = DnsServer::start();
    let peer = SmtpPeer::start("127.0.0.3", &["hang-mid-data"]);
    let mut tern = Setup::new()
        .grace_secs(GRACE_SECS)
        .dns(&dns.dns_section())
        .queue("[queue]\ndeliver = true\n")
        .section(&format!(
            "[[route]]\ndomains = [\"relay.test\"]\ntransport = \"smtp\"\nhosts = [\"{}\"]\n",
            peer.addr
        ))
        .start();
    // 200 lines of 900 octets: more than the peer reads before it stops answering.
    let body = format!("{}\n", "x".repeat(900)).repeat(200);
    let id = send_one(
        tern.addr(),
        "s@client.test",
        &["r@relay.test"],
        &simple_message("hangs", &body),
    );
    peer.wait_for_log("hanging mid-data", Duration::from_secs(20));

    let signalled = Instant::now();
    tern.signal(libc::SIGTERM);
    // Grace for the queue, then a bounded runtime shutdown (5 s) for what is left.
    let limit = Duration::from_secs(GRACE_SECS + 7);
    let status = tern.wait_exit(limit).unwrap_or_else(|| {
        panic!(
            "tern still running {limit:?} after SIGTERM with a hanging delivery\n{}",
            tern.log()
        )
    });
    assert_eq!(status.code(), Some(0), "{}", tern.log());
    eprintln!("stopped in {:?}", signalled.elapsed());
    let queued = tern.queue_json(&[]);
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0]["id"], id.as_str());
    assert_ne!(queued[0]["state"], "active", "a clean stop empties active/");
}
