//! A message is deferred by its peer (450 to the recipient) and delivered by a later
//! attempt. The tracking log follows it: `tern track` by queue id, by Message-ID and by
//! address (with `--json` and as a readable timeline), and `GET /api/v1/track`, each show
//! it received, the deferral with the remote host and its reply, and the delivery, in
//! that order.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::admin::Admin;
use crate::common::peers::{DnsServer, SmtpPeer, delivering};
use crate::common::{Tern, free_port, run, send_one};

const MID: &str = "<track-1.2026@client.test>";

fn track_json(tern: &Tern, query: &str) -> Value {
    let out = run(
        &mut tern.tern_command(&["track", "--json", query]),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "tern track {query}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The steps of `id`'s records, in order.
fn steps(records: &[Value], id: &str) -> Vec<(String, Value)> {
    records
        .iter()
        .filter(|r| r["id"] == id)
        .map(|r| (r["step"].as_str().unwrap().to_owned(), r.clone()))
        .collect()
}

/// Received, then an attempt deferred by the peer (host and reply), then the deferral,
/// then the delivery by the peer: in this order.
fn check_story(records: &[Value], id: &str, what: &str) {
    let s = steps(records, id);
    let pos = |pred: &dyn Fn(&(String, Value)) -> bool, name: &str| {
        s.iter()
            .position(pred)
            .unwrap_or_else(|| panic!("{what}: no {name} record for {id} in {s:#?}"))
    };
    let received = pos(
        &|(st, r)| st == "received" && r["message_id"] == MID,
        "received",
    );
    let r = &s[received].1;
    assert_eq!(r["sender"], "alice@client.test", "{what}: {r}");
    assert_eq!(r["to"], serde_json::json!(["bob@far.test"]), "{what}: {r}");
    assert!(
        r["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{what}: {r}"
    );
    assert!(
        r["size"].as_str().unwrap().parse::<u64>().unwrap() > 0,
        "{what}: {r}"
    );
    let tried = pos(
        &|(st, r)| st == "attempt" && r["result"] == "deferred",
        "deferred attempt",
    );
    let a = &s[tried].1;
    assert!(
        a["host"].as_str().unwrap().contains("127.0.0.2"),
        "{what}: {a}"
    );
    assert!(
        a["reply"].as_str().unwrap().starts_with("450"),
        "{what}: {a}"
    );
    assert_eq!(a["to"], serde_json::json!(["bob@far.test"]), "{what}: {a}");
    let deferred = pos(&|(st, _)| st == "deferred", "deferred");
    let delivered = pos(&|(st, _)| st == "delivered", "delivered");
    let d = &s[delivered].1;
    assert!(
        d["host"].as_str().unwrap().contains("127.0.0.2"),
        "{what}: {d}"
    );
    assert!(
        d["reply"].as_str().unwrap().starts_with("250"),
        "{what}: {d}"
    );
    assert!(
        received < tried && tried < deferred && deferred < delivered,
        "{what}: out of order: {s:#?}"
    );
    let times: Vec<u64> = s
        .iter()
        .map(|(_, r)| r["at_unix_ms"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{what}: {times:?}");
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn tracking_follows_a_deferral_and_a_delivery() {
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    dns.set_mx("far.test", &[(10, "mx.far.test")], 300);
    dns.set_a("mx.far.test", "127.0.0.2".parse().unwrap(), 300);
    let mut peer = SmtpPeer::start_on("127.0.0.2", port, &["tempfail-rcpt=."]);
    let tern = delivering(&dns, port, "").start();

    let content = format!(
        "From: <alice@client.test>\r\nTo: <bob@far.test>\r\nMessage-ID: {MID}\r\nSubject: follow me\r\n\r\nhello\r\n"
    );
    let id = send_one(
        tern.addr(),
        "alice@client.test",
        &["bob@far.test"],
        content.as_bytes(),
    );
    tern.wait_for_events(4002, 1, Duration::from_secs(30));
    peer.restart(&["accept"]);
    let got = peer.wait_for(1, Duration::from_secs(30));
    assert_eq!(got[0].rcpts(), vec!["bob@far.test".to_owned()]);

    // The delivery's record reaches the file within the writer's poll.
    let deadline = Instant::now() + Duration::from_secs(20);
    let by_id = loop {
        let v = track_json(&tern, &id);
        if steps(v["records"].as_array().unwrap(), &id)
            .iter()
            .any(|(s, _)| s == "delivered")
        {
            break v;
        }
        assert!(Instant::now() < deadline, "no delivered record: {v:#}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(by_id["query"], id.as_str());
    assert_eq!(by_id["truncated"], false);
    assert_eq!(by_id["ids"], serde_json::json!([id]));
    check_story(by_id["records"].as_array().unwrap(), &id, "tern track <id>");

    let by_mid = track_json(&tern, MID);
    check_story(
        by_mid["records"].as_array().unwrap(),
        &id,
        "tern track <Message-ID>",
    );
    let bare = track_json(&tern, MID.trim_matches(['<', '>']));
    assert_eq!(bare["records"], by_mid["records"], "brackets are optional");

    let by_addr = track_json(&tern, "BOB@far.test");
    check_story(
        by_addr["records"].as_array().unwrap(),
        &id,
        "tern track <address>",
    );
    let by_sender = track_json(&tern, "alice@client.test");
    check_story(
        by_sender["records"].as_array().unwrap(),
        &id,
        "tern track <sender>",
    );

    let admin = Admin::of(&tern);
    let api = admin.get(&format!("/api/v1/track?q={id}&limit=100"));
    assert_eq!(api.status, 200, "{api:?}");
    let api = api.json();
    assert_eq!(api["query"], id.as_str());
    check_story(api["records"].as_array().unwrap(), &id, "GET /api/v1/track");

    // The readable timeline: one line per step, in order, with the host and the reply.
    let out = run(
        &mut tern.tern_command(&["track", &id]),
        Duration::from_secs(30),
    );
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with(&format!("queue id {id}\n")), "{text}");
    let line_of = |needle: &str| {
        text.lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in\n{text}"))
    };
    let received = line_of(" received ");
    let deferral = line_of("result=deferred");
    let delivered = line_of(" delivered ");
    assert!(received < deferral && deferral < delivered, "{text}");
    let deferral_line = text.lines().nth(deferral).unwrap();
    assert!(deferral_line.contains("127.0.0.2"), "{deferral_line}");
    assert!(deferral_line.contains("reply=\"450"), "{deferral_line}");

    // Nothing matches: exit status 1 and a message, not an error.
    let none = run(
        &mut tern.tern_command(&["track", "nobody@nowhere.test"]),
        Duration::from_secs(30),
    );
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stdout).contains("nothing in the tracking log"));
}
