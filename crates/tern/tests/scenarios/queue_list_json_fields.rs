//! `tern queue list --json` prints one JSON object per message per line with id, state,
//! sender, recipients (address and status), size and arrival, read straight from the
//! spool: the same output while the server runs and after it stopped. Plain
//! `tern queue list` prints a mailq-style table.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::{Setup, run, send_one, simple_message};
use serde_json::Value;

/// Seconds since the epoch of an RFC 3339 UTC timestamp like `2026-11-23T16:55:00.123Z`.
fn rfc3339_utc_secs(s: &str) -> i64 {
    let b = s.as_bytes();
    assert!(
        b.len() >= 20
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && s.ends_with('Z'),
        "not an RFC 3339 UTC timestamp: {s:?}"
    );
    let num = |r: std::ops::Range<usize>| -> i64 { s[r].parse().unwrap() };
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    let (hh, mm, ss) = (num(11..13), num(14..16), num(17..19));
    // Days from civil (proleptic Gregorian), 1970-01-01 = 0.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + hh * 3600 + mm * 60 + ss
}

#[test]
fn json_lines_carry_every_field_running_and_stopped() {
    let mut tern = Setup::new().start();
    let addr = tern.addr();
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;

    let sent: Vec<(String, &str, Vec<&str>)> = vec![
        (
            send_one(
                addr,
                "sender@client.test",
                &["you@localhost"],
                &simple_message("one", "first"),
            ),
            "sender@client.test",
            vec!["you@localhost"],
        ),
        (
            send_one(
                addr,
                "",
                &["a@localhost", "b@localhost"],
                &simple_message("two", "bounce-like"),
            ),
            "",
            vec!["a@localhost", "b@localhost"],
        ),
        (
            send_one(
                addr,
                "x@client.test",
                &["someone@example.org"],
                &simple_message("three", "relayed from loopback"),
            ),
            "x@client.test",
            vec!["someone@example.org"],
        ),
    ];

    let running = tern.queue_json(&[]);
    assert_eq!(
        running.len(),
        3,
        "one line per message while running: {running:?}"
    );
    let spool = tern.spool();
    for (line, (id, sender, rcpts)) in running.iter().zip(&sent) {
        let obj = line.as_object().expect("each line is a JSON object");
        for key in ["id", "state", "sender", "recipients", "size", "arrival"] {
            assert!(obj.contains_key(key), "missing {key} in {line}");
        }
        assert_eq!(line["id"], Value::from(id.as_str()), "{line}");
        assert_eq!(id.len(), 15, "queue id {id}");
        assert_eq!(line["state"], "incoming", "{line}");
        assert_eq!(line["sender"], Value::from(*sender), "{line}");
        let listed: Vec<&str> = line["recipients"]
            .as_array()
            .expect("recipients is an array")
            .iter()
            .map(|r| {
                assert_eq!(r["status"]["state"], "pending", "{r}");
                r["address"].as_str().expect("recipient address")
            })
            .collect();
        assert_eq!(&listed, rcpts, "{line}");
        let stored = spool
            .read(tern_spool::QueueState::Incoming, id.parse().unwrap())
            .unwrap();
        assert_eq!(
            line["size"].as_u64(),
            Some(stored.body.len() as u64),
            "size is the stored content's size: {line}"
        );
        let arrival = rfc3339_utc_secs(line["arrival"].as_str().expect("arrival string"));
        assert!(
            (started - 5..=started + 120).contains(&arrival),
            "arrival {} is not about now ({started}): {line}",
            line["arrival"]
        );
    }

    let state_filtered = tern.queue_json(&["--state", "incoming"]);
    assert_eq!(state_filtered, running);
    assert!(tern.queue_json(&["--state", "deferred"]).is_empty());
    let bogus = run(
        &mut tern.tern_command(&["queue", "list", "--json", "--state", "bogus"]),
        Duration::from_secs(30),
    );
    assert!(!bogus.status.success(), "an unknown state is an error");
    assert!(
        String::from_utf8_lossy(&bogus.stderr).contains("bogus"),
        "{}",
        String::from_utf8_lossy(&bogus.stderr)
    );

    tern.stop(Duration::from_secs(10));
    let stopped = tern.queue_json(&[]);
    assert_eq!(
        stopped, running,
        "the listing is the same with the server stopped"
    );
}

#[test]
fn plain_listing_looks_like_mailq() {
    let mut tern = Setup::new().start();
    let addr = tern.addr();
    let id1 = send_one(
        addr,
        "sender@client.test",
        &["you@localhost"],
        &simple_message("one", "x"),
    );
    let id2 = send_one(
        addr,
        "",
        &["a@localhost", "b@localhost"],
        &simple_message("two", "y"),
    );
    tern.stop(Duration::from_secs(10));

    let out = run(
        &mut tern.tern_command(&["queue", "list"]),
        Duration::from_secs(30),
    );
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("-Queue ID-"),
        "header line first:\n{text}"
    );
    let row1 = lines
        .iter()
        .find(|l| l.starts_with(&id1))
        .unwrap_or_else(|| panic!("{id1} not listed:\n{text}"));
    assert!(
        row1.contains("incoming") && row1.ends_with("sender@client.test"),
        "{row1}"
    );
    let row2 = lines
        .iter()
        .position(|l| l.starts_with(&id2))
        .unwrap_or_else(|| panic!("{id2} not listed:\n{text}"));
    assert!(lines[row2].ends_with("MAILER-DAEMON"), "{}", lines[row2]);
    assert_eq!(lines[row2 + 1].trim(), "a@localhost");
    assert_eq!(lines[row2 + 2].trim(), "b@localhost");
    assert!(
        lines.last().unwrap().starts_with("-- ")
            && lines.last().unwrap().ends_with("Kbytes in 2 Requests."),
        "summary line last:\n{text}"
    );

    // An empty queue says so.
    let empty = Setup::new().start();
    let out = run(
        &mut empty.tern_command(&["queue", "list"]),
        Duration::from_secs(30),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Mail queue is empty"
    );
}
