//! Pre-greeting talk (`[screen] pregreet`, postscreen's greet action): a client that is
//! not in the pass cache gets `220-` and waits `greet_wait` for the final `220 `; a raw
//! socket that sends EHLO before that is
//! - `drop`: answered `521 5.5.1 Protocol error` and closed, never greeted;
//! - `enforce` (after a reload): greeted, its early EHLO answered, then every RCPT
//!   refused `550 5.5.1`;
//! - `ignore`: logged only, its mail accepted; it is not remembered as passed, so it
//!   waits again at its next connection.
//!
//! A client that waits is greeted and accepted in every mode. Each violation is logged
//! (event 2182, with its action and what was sent) and counted.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::SmtpClient;
use crate::common::screen::{greet, metric, rcpt, setup};

/// Connects from `from`, reads the first greeting line, sends EHLO at once.
fn talk_early(addr: SocketAddr, from: &str) -> SmtpClient {
    let mut c = SmtpClient::connect_from(addr, from.parse().unwrap()).unwrap();
    let first = c.read_line().unwrap();
    assert!(first.starts_with("220-mx.tern.test"), "{first}");
    c.write_raw(b"EHLO early.test\r\n").unwrap();
    c
}

fn reload_to(tern: &crate::common::Tern, from: &str, to: &str, reloads: usize) {
    tern.replace_in_config(
        &format!("pregreet = \"{from}\""),
        &format!("pregreet = \"{to}\""),
    );
    tern.signal(libc::SIGHUP);
    tern.wait_for_events(1007, reloads, Duration::from_secs(20));
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn pregreet_talk_is_refused_per_mode() {
    let tern = setup("greet_wait = \"2s\"\npregreet = \"drop\"\n").start();
    let addr = tern.addr();

    // drop
    let mut c = talk_early(addr, "127.0.1.2");
    assert_eq!(c.read_line().unwrap(), "521 5.5.1 Protocol error");
    assert!(c.read_line().is_err(), "closed after 521");
    let mut polite = greet(addr, "127.0.9.9");
    assert_eq!(polite.lines.len(), 2, "{:?}", polite.lines);
    assert!(
        polite.waited >= Duration::from_secs(2),
        "{:?}",
        polite.waited
    );
    assert_eq!(
        rcpt(&mut polite.client, "a@s.test", "bob@example.test").0,
        250
    );

    // enforce
    reload_to(&tern, "drop", "enforce", 1);
    let mut c = talk_early(addr, "127.0.2.3");
    let rest = c.read_reply().unwrap();
    assert_eq!(rest.code, 220, "the greeting's final line: {}", rest.text());
    let ehlo = c.read_reply().unwrap();
    assert_eq!(ehlo.code, 250, "the early EHLO answered: {}", ehlo.text());
    assert_eq!(c.command("MAIL FROM:<a@s.test>").unwrap().code, 250);
    let r = c.command("RCPT TO:<bob@example.test>").unwrap();
    assert_eq!(
        (r.code, r.text()),
        (550, "550 5.5.1 Protocol error".to_string())
    );

    // ignore
    reload_to(&tern, "enforce", "ignore", 2);
    for _ in 0..2 {
        let mut c = talk_early(addr, "127.0.3.4");
        assert_eq!(c.read_reply().unwrap().code, 220);
        assert_eq!(c.read_reply().unwrap().code, 250);
        assert_eq!(c.command("MAIL FROM:<a@s.test>").unwrap().code, 250);
        assert_eq!(c.command("RCPT TO:<bob@example.test>").unwrap().code, 250);
        // talk_early asserts the `220-` line: the second round waited again.
    }

    let logged = tern.wait_for_events(2182, 3, Duration::from_secs(20));
    let text: Vec<String> = logged.iter().map(|e| e.to_string()).collect();
    for (client, action) in [
        ("127.0.1.2", "drop"),
        ("127.0.2.3", "enforce"),
        ("127.0.3.4", "ignore"),
    ] {
        assert!(
            text.iter().any(|e| e.contains(client)
                && e.contains(&format!("\"action\":\"{action}\""))
                && e.contains("EHLO early.test")),
            "{client} {action}: {text:#?}"
        );
    }
    assert_eq!(
        metric(&tern, "tern_smtp_screen_total{outcome=\"pregreet\"}"),
        4.0
    );
}
