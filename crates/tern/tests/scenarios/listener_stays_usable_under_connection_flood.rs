//! A listener stays usable under the cheap attacks a security review ran against it:
//!
//! - a flood of idle connections from 20 loopback addresses (127.0.0.2 to 127.0.0.21),
//!   each within the per-client limit, against a small `max_connections` (20): the
//!   sessions idle longest give way (`421 4.7.0 … closing idle connection`), so a new
//!   client still gets its greeting and sends a message; a relay-network client
//!   (127.0.0.100) gets in through the reserve without displacing anyone; a client over
//!   its per-client limit is refused; the listener enters stress (event 2015) and leaves
//!   it when the flood is gone (2016);
//! - on a second listener with short timeouts: a command trickled one byte at a time and
//!   DATA content trickled the same way are cut at their deadlines (`421 4.4.2`, event
//!   2007 with the stage), nothing is queued from them, and a client sending NOOPs is cut
//!   at the junk-command limit (`421 4.7.0`, event 2013).
//!
//! The IPv6 /64 rule is pinned by the limiter's unit tests (`tern-smtpd/src/limits.rs`):
//! loopback has only `::1`.

#![allow(clippy::unwrap_used)]

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::common::{Listener, Reply, Setup, SmtpClient, simple_message};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn from(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn connect(addr: SocketAddr, source: IpAddr) -> SmtpClient {
    SmtpClient::connect_from(addr, source).unwrap_or_else(|e| panic!("connect from {source}: {e}"))
}

fn greeting(c: &mut SmtpClient) -> Reply {
    c.read_reply().expect("a greeting or a refusal")
}

/// Sends `bytes` one at a time, `every` apart, until the server answers (or the bytes
/// run out); returns the answer and how long after the first byte it came.
fn trickle(c: &mut SmtpClient, bytes: &[u8], every: Duration) -> (Reply, Duration) {
    let started = Instant::now();
    let mut peek = [0u8; 1];
    for b in bytes {
        if c.write_raw(std::slice::from_ref(b)).is_err() {
            break;
        }
        c.stream().set_read_timeout(Some(every)).unwrap();
        match c.stream().peek(&mut peek) {
            Ok(_) => break,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("reading while trickling: {e}"),
        }
    }
    c.stream()
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let reply = c
        .read_reply()
        .expect("the server answers the trickling client");
    (reply, started.elapsed())
}

#[test]
fn idle_flood_and_slow_clients_cannot_shut_out_real_senders() {
    let tern = Setup::new()
        .listeners(vec![
            // 20 places, 4 of them (20 %) for relay networks, 2 per client address;
            // timeouts long enough that the flood stays for the whole test.
            Listener::new("mx", LOOPBACK).with(
                "max_connections = 20\nmax_connections_per_client = 2\nrelay_reserve_percent = 20\n\
                 [listener.timeouts]\ncommand = 120\n[listener.stress]\ncommand_timeout = 60\n",
            ),
            // Short timeouts and a small junk limit for the slow clients.
            Listener::new("slow", LOOPBACK)
                .with("max_junk_commands = 3\n[listener.timeouts]\ncommand = 1\ndata = 1\n"),
        ])
        .section("[relay]\ndomains = [\"localhost\"]\nnetworks = [\"127.0.0.100/32\"]\n")
        .start();
    let mx = tern.addr_of("mx");
    let slow = tern.addr_of("slow");

    // The flood: two idle connections from each of 20 addresses, one after the other.
    // Sixteen places are open to outside clients; every connection past them makes the
    // oldest idle one give way, so every flooder is greeted and the first 24 are closed.
    let mut flood: Vec<SmtpClient> = Vec::new();
    for i in 0..40u8 {
        let mut c = connect(mx, from(2 + i / 2));
        let g = greeting(&mut c);
        assert_eq!(g.code, 220, "flood connection {i}: {}", g.text());
        flood.push(c);
    }
    for (i, c) in flood.iter_mut().enumerate().take(24) {
        let r = c.read_reply().expect("the displaced session says why");
        assert_eq!(
            r.text(),
            "421 4.7.0 mx.tern.test Too many connections, closing idle connection",
            "flood connection {i}"
        );
    }
    let mut flood: Vec<SmtpClient> = flood.split_off(24);
    tern.wait_for_events(2014, 24, Duration::from_secs(10));
    // The listener is in stress (16 of 20 places in use, stress.enter_percent 80).
    let on = tern.wait_for_events(2015, 1, Duration::from_secs(10));
    assert_eq!(on[0]["listener"], "mx", "{}", on[0]);

    // A third connection from an address that has two already is refused.
    let mut greedy = connect(mx, from(21));
    assert_eq!(
        greeting(&mut greedy).text(),
        "421 4.7.0 mx.tern.test Too many connections, try again later"
    );

    // A real sender gets in (the oldest idle flooder gives way) and sends its message.
    let mut sender = connect(mx, from(50));
    let g = greeting(&mut sender);
    assert_eq!(g.code, 220, "the new client is greeted: {}", g.text());
    let mut displaced = flood.remove(0);
    assert_eq!(
        displaced.read_reply().unwrap().text(),
        "421 4.7.0 mx.tern.test Too many connections, closing idle connection"
    );
    sender.command("EHLO real.sender.test").unwrap();
    let queued = sender
        .send_message(
            "real@sender.test",
            &["postmaster@localhost"],
            &simple_message("through the flood", "hello"),
        )
        .unwrap();
    assert!(queued.queued_id().is_some(), "{}", queued.text());

    // A relay-network client takes a reserved place: nobody else has to give way.
    let evicted_before = tern.events_with_id(2014).len();
    let mut relay = connect(mx, from(100));
    assert_eq!(greeting(&mut relay).code, 220);
    relay.command("EHLO relay.client.test").unwrap();
    let relayed = relay
        .send_message(
            "app@relay.client.test",
            &["someone@example.net"],
            &simple_message("via the reserve", "relayed"),
        )
        .unwrap();
    assert!(relayed.queued_id().is_some(), "{}", relayed.text());
    for (i, c) in flood.iter_mut().enumerate() {
        let r = c.command("NOOP").unwrap();
        assert_eq!(r.code, 250, "flood session {i} still open: {}", r.text());
    }
    assert_eq!(tern.events_with_id(2014).len(), evicted_before);

    // On the short-timeout listener: a command trickled byte by byte is cut about 1 s
    // after the server began waiting for it, not when the line would have ended (6 s).
    let mut c = connect(slow, from(60));
    assert_eq!(greeting(&mut c).code, 220);
    let (r, after) = trickle(
        &mut c,
        b"EHLO a.client.that.sends.one.byte.at.a.time.test\r\n",
        Duration::from_millis(120),
    );
    assert_eq!(
        r.text(),
        "421 4.4.2 mx.tern.test Timeout exceeded, closing connection"
    );
    assert!(after < Duration::from_secs(4), "cut after {after:?}");

    // DATA content trickled one byte every 120 ms (8 octets/s, far under min_data_rate)
    // is cut at about timeouts.data (1 s).
    let mut c = connect(slow, from(61));
    c.hello("slow.data.test");
    assert_eq!(c.command("MAIL FROM:<slow@data.test>").unwrap().code, 250);
    assert_eq!(
        c.command("RCPT TO:<postmaster@localhost>").unwrap().code,
        250
    );
    assert_eq!(c.command("DATA").unwrap().code, 354);
    let body = b"Subject: slow\r\n\r\nthis content arrives far too slowly to be accepted\r\n.\r\n";
    let (r, after) = trickle(&mut c, body, Duration::from_millis(120));
    assert_eq!(
        r.text(),
        "421 4.4.2 mx.tern.test Timeout exceeded, closing connection"
    );
    assert!(after < Duration::from_secs(4), "cut after {after:?}");

    // NOOPs past max_junk_commands (3) close the session.
    let mut c = connect(slow, from(62));
    c.hello("noop.test");
    for _ in 0..3 {
        assert_eq!(c.command("NOOP").unwrap().code, 250);
    }
    assert_eq!(
        c.command("NOOP").unwrap().text(),
        "421 4.7.0 mx.tern.test Too many junk commands, closing connection"
    );

    let timeouts = tern.wait_for_events(2007, 2, Duration::from_secs(10));
    let stages: Vec<&str> = timeouts
        .iter()
        .filter_map(|e| e["stage"].as_str())
        .collect();
    assert!(
        stages.contains(&"command") && stages.contains(&"content"),
        "{timeouts:?}"
    );
    tern.wait_for_events(2013, 1, Duration::from_secs(10));

    // Only the two real messages were queued.
    let bodies: Vec<String> = tern
        .spooled()
        .iter()
        .map(|(_, m)| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert!(bodies.iter().all(|b| !b.contains("Subject: slow")));

    // The flood goes away: the listener leaves stress.
    drop(flood);
    drop(displaced);
    drop(sender);
    drop(relay);
    let off = tern.wait_for_events(2016, 1, Duration::from_secs(10));
    assert_eq!(off[0]["listener"], "mx", "{}", off[0]);
}
