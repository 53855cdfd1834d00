//! One view of three nodes (issue 20 §3, docs/cluster/view.md), every command run against
//! node 1 only:
//! - `tern track --cluster <Message-ID>` finds the message node 3 holds and names node 3;
//! - `tern queue list --cluster` lists the messages of every node with their node;
//! - `tern queue summary --cluster` adds the nodes' tables up, `tern dest list --cluster`
//!   merges the destinations, `tern dest show --cluster` finds one on the node that knows
//!   it (the others' 404 is not a missing answer);
//! - an action through node 1's proxy (`POST /api/v1/cluster/nodes/node2/queue/<id>/hold`)
//!   changes the message node 2 holds;
//! - a node listed in Redis whose admin URL is a listener that does not know the token
//!   never receives it, from the proxy or from the CLI: it is named as not answering;
//! - a SIGKILLed node is named as not answering (exit status 3, partial) within the
//!   per-node bound, not waited for; once declared dead `tern cluster status` shows it
//!   DEAD (exit 3) until `tern cluster forget`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::admin::Admin;
use crate::common::cluster::{RedisServer, start_nodes, wait_for_members};
use crate::common::{Setup, Tern, free_port, run, send_one};

const LIMIT: Duration = Duration::from_secs(30);
const MESSAGE_ID: &str = "<held.on.three@client.test>";

/// Runs `tern args...` against `t`: (exit code, stdout, stderr).
fn cli(t: &Tern, args: &[&str]) -> (i32, String, String) {
    let out = run(&mut t.tern_command(args), Duration::from_secs(60));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Polls `tern args...` on `t` until `ok` holds for its (code, stdout), within LIMIT.
fn until(t: &Tern, args: &[&str], ok: impl Fn(i32, &str) -> bool) -> (i32, String) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let (code, out, err) = cli(t, args);
        if ok(code, &out) {
            return (code, out);
        }
        assert!(
            Instant::now() < deadline,
            "tern {args:?}: exit {code}\n{out}\n{err}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A listener that is not Tern: it answers every request with a proof that cannot be
/// right, and keeps what it received.
fn impostor() -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.5.1:0").expect("bind 127.0.5.1");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            if let Ok(mut k) = keep.lock() {
                k.extend_from_slice(buf.get(..n).unwrap_or_default());
            }
            let body = r#"{"proof":"0000"}"#;
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, seen)
}

#[test]
fn cluster_view_finds_a_message_by_message_id_on_any_node() {
    let redis = RedisServer::start();
    let refused = free_port("127.0.5.1".parse().unwrap());
    let mut nodes = start_nodes(&redis, 3, "", |_| {
        Setup::new()
            .queue("[queue]\ndeliver = true\nmin_backoff_secs = 3600\nmax_backoff_secs = 3600\n")
            .section(&format!(
                "[[route]]\ndomains = [\"down.test\"]\ntransport = \"smtp\"\nhosts = [\"127.0.5.1:{refused}\"]\n\n[[route]]\ndomains = [\"held.test\"]\ntransport = \"hold\"\n"
            ))
    });
    wait_for_members(&nodes, 3, LIMIT);

    // Node 1 holds one message, node 2 has one deferred, node 3 holds the one searched.
    let on1 = send_one(
        nodes[0].addr(),
        "s@client.test",
        &["a@held.test"],
        b"Subject: one\r\n\r\non node 1\r\n",
    );
    let on2 = send_one(
        nodes[1].addr(),
        "s@client.test",
        &["b@down.test"],
        b"Subject: two\r\n\r\non node 2\r\n",
    );
    let on3 = send_one(
        nodes[2].addr(),
        "s@client.test",
        &["c@held.test"],
        format!("Message-ID: {MESSAGE_ID}\r\nSubject: three\r\n\r\non node 3\r\n").as_bytes(),
    );
    let n1 = &nodes[0];

    // The Message-ID is found on node 3, asking node 1.
    let (code, out) = until(n1, &["track", "--cluster", "--json", MESSAGE_ID], |c, o| {
        c == 0 && o.contains(&on3)
    });
    let v = json_of(&out);
    assert_eq!(v["nodes"], serde_json::json!(["node3"]), "{out}");
    assert_eq!(v["partial"], false, "{out}");
    assert!(
        v["records"].as_array().is_some_and(|r| r
            .iter()
            .all(|x| x["node"] == "node3" && x["id"] == on3.as_str())),
        "{out}"
    );
    let _ = code;
    let (code, text, _) = cli(n1, &["track", "--cluster", MESSAGE_ID]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("== node node3 ==") && text.contains(&on3),
        "{text}"
    );

    // Every node's messages, with their node (wait until node 2's is deferred).
    let (_, out) = until(n1, &["queue", "list", "--cluster", "--json"], |c, o| {
        c == 0
            && serde_json::from_str::<Value>(o.trim()).is_ok_and(|v| {
                v["messages"].as_array().is_some_and(|m| {
                    m.len() == 3
                        && m.iter()
                            .all(|x| x["state"] == "hold" || x["state"] == "deferred")
                })
            })
    });
    let v = json_of(&out);
    let node_of = |id: &str| -> Value {
        v["messages"]
            .as_array()
            .and_then(|m| m.iter().find(|x| x["id"] == id))
            .map(|x| x["node"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(node_of(&on1), "node1", "{out}");
    assert_eq!(node_of(&on2), "node2", "{out}");
    assert_eq!(node_of(&on3), "node3", "{out}");
    let (code, text, _) = cli(n1, &["queue", "list", "--cluster"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("-Node-") && text.contains("3 Requests"),
        "{text}"
    );

    // The summary adds up (hold counted too) with each node's line.
    let (code, out, err) = cli(
        n1,
        &[
            "queue",
            "summary",
            "--cluster",
            "--json",
            "--state",
            "hold,deferred",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let v = json_of(&out);
    assert_eq!(v["total"], 3, "{out}");
    assert_eq!(v["nodes"].as_array().map(Vec::len), Some(3), "{out}");
    let (code, text, _) = cli(
        n1,
        &["queue", "summary", "--cluster", "--state", "hold,deferred"],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("node node2"), "{text}");

    // Destinations merged: node 2's down.test is there, named with its node.
    let (code, out, err) = cli(n1, &["dest", "list", "--cluster", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v = json_of(&out);
    assert!(
        v["destinations"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x["node"] == "node2"
                && x["name"].as_str().is_some_and(|n| n.contains("127.0.5.1")))),
        "{out}"
    );

    // One destination across the nodes: node 2 holds its mail; the others know it only
    // by node 2's shared down mark (or answer 404, which is not a missing answer).
    let name = v["destinations"]
        .as_array()
        .and_then(|d| d.iter().find(|x| x["node"] == "node2"))
        .and_then(|x| x["name"].as_str())
        .expect("node 2's destination")
        .to_string();
    let (code, out, err) = cli(n1, &["dest", "show", "--cluster", "--json", &name]);
    assert_eq!(code, 0, "{out}{err}");
    let v = json_of(&out);
    assert_eq!(v["partial"], false, "{out}");
    let found: Vec<&str> = v["nodes"]
        .as_array()
        .map(|n| n.iter().filter_map(|x| x["node"].as_str()).collect())
        .unwrap_or_default();
    assert!(found.contains(&"node2"), "{out}");
    for d in v["nodes"].as_array().into_iter().flatten() {
        let d = &d["destination"];
        assert_eq!(d["name"], name.as_str(), "{out}");
        assert_eq!(d["set_by"], "node2", "{out}");
    }
    let at2 = v["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|x| x["node"] == "node2"))
        .expect("node 2's answer");
    assert_eq!(at2["destination"]["queued"], 1, "{out}");
    let (code, text, _) = cli(n1, &["dest", "show", "--cluster", &name]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("== node node2\nDestination "), "{text}");
    let (code, text, _) = cli(n1, &["dest", "show", "--cluster", "mx:nowhere.test"]);
    assert_eq!(code, 1, "known nowhere: {text}");
    assert!(
        text.contains("No node that answered knows mx:nowhere.test"),
        "{text}"
    );

    // An action through node 1's proxy changes node 2's message.
    let admin1 = Admin::of(n1);
    let a = admin1.post(
        &format!("/api/v1/cluster/nodes/node2/queue/{on2}/hold"),
        &serde_json::json!({}),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let moved = Admin::of(&nodes[1]).get(&format!("/api/v1/queue/{on2}"));
    assert_eq!(moved.json()["state"], "hold", "{}", moved.body);
    // The proxy reads too, and refuses paths outside the API.
    let s = admin1.get("/api/v1/cluster/nodes/node3/status");
    assert_eq!(s.status, 200, "{}", s.body);
    let out = admin1.get("/api/v1/cluster/nodes/node3/%2e%2e/%2e%2e/metrics");
    assert_eq!(out.status, 400, "{}", out.body);
    let unknown = admin1.get("/api/v1/cluster/nodes/nobody/status");
    assert_eq!(unknown.status, 404, "{}", unknown.body);

    // A node listed in Redis that is not Tern never receives the token.
    let (fake, seen) = impostor();
    let url = format!("http://{fake}");
    redis.cli(&[
        "HSET",
        "tern:node:evil",
        "name",
        "evil",
        "id",
        "99",
        "version",
        "0",
        "admin_url",
        &url,
        "seen_ms",
        "1",
    ]);
    redis.cli(&["SADD", "tern:nodes", "evil"]);
    let a = admin1.get("/api/v1/cluster/nodes/evil/status");
    assert_eq!(a.status, 502, "{}", a.body);
    let (code, out, _) = cli(n1, &["queue", "list", "--cluster", "--json"]);
    assert_eq!(code, 3, "{out}");
    let v = json_of(&out);
    assert_eq!(v["missing"][0]["node"], "evil", "{out}");
    assert_eq!(v["messages"].as_array().map(Vec::len), Some(3), "{out}");
    let received = String::from_utf8_lossy(&seen.lock().unwrap().clone()).into_owned();
    assert!(
        received.contains("/proof"),
        "the impostor was asked: {received}"
    );
    assert!(
        !received.contains(crate::common::cluster::CLUSTER_TOKEN),
        "the token went to a listener that is not Tern: {received}"
    );
    // The impostor goes as an administrator removes a node: its heartbeat key gone, then
    // forgotten (which also clears a death another node may have recorded meanwhile).
    redis.cli(&["DEL", "tern:node:evil"]);
    let (code, out, err) = cli(&nodes[0], &["cluster", "forget", "evil"]);
    assert_eq!(code, 0, "{out}{err}");

    // Node 3 dies: named as not answering, quickly; then listed DEAD until forgotten.
    nodes[2].kill9();
    let n1 = &nodes[0];
    let started = Instant::now();
    let (code, out, _) = cli(n1, &["track", "--cluster", "--json", MESSAGE_ID]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a dead node is not waited for"
    );
    assert_eq!(code, 3, "partial: {out}");
    let v = json_of(&out);
    assert_eq!(v["partial"], true, "{out}");
    let missing: Vec<&str> = v["missing"]
        .as_array()
        .map(|m| m.iter().filter_map(|x| x["node"].as_str()).collect())
        .unwrap_or_default();
    assert!(missing.contains(&"node3"), "{out}");
    // Declared dead (event 8004, by whichever node wins): listed DEAD with the time.
    let (code, text) = until(n1, &["cluster", "status"], |_, o| {
        o.contains("DEAD") && o.contains("declared dead")
    });
    let deadline = Instant::now() + LIMIT;
    let deaths = || {
        nodes[..2]
            .iter()
            .flat_map(|t| t.events_with_id(8004))
            .filter(|e| e["node"] == "node3")
            .count()
    };
    while deaths() == 0 {
        assert!(Instant::now() < deadline, "no node logged event 8004");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(deaths(), 1, "one node logs the death");
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains("node3") && text.contains("declared dead"),
        "{text}"
    );
    let (code, out, _) = cli(n1, &["cluster", "status", "--json"]);
    assert_eq!(code, 3, "{out}");
    let v = json_of(&out);
    let dead: Vec<&Value> = v["nodes"]
        .as_array()
        .map(|n| n.iter().filter(|x| x["alive"] == false).collect())
        .unwrap_or_default();
    assert_eq!(dead.len(), 1, "{out}");
    assert_eq!(dead[0]["name"], "node3");
    assert!(dead[0]["dead_since_ms"].as_u64().is_some(), "{out}");
    let (code, out, err) = cli(n1, &["cluster", "forget", "node3"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, text, _) = cli(n1, &["cluster", "status"]);
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("node3"), "{text}");
    // A live node cannot be forgotten.
    let (code, _, err) = cli(n1, &["cluster", "forget", "node2"]);
    assert_ne!(code, 0, "{err}");
}
