//! `GET /api/v1/queue` lists real traffic with every filter of the contract and pages it
//! oldest first; `GET /queue/{id}` shows the envelope, each recipient's status with its
//! attempt history, the headers and where the file is; `GET /queue/{id}/raw` exports the
//! message as stored. Bad parameters are 400, unknown ids 404, and nothing answers
//! without the token.

use std::time::{Duration, Instant};

use serde_json::Value;
use tern_spool::QueueId;

use crate::common::admin::Admin;
use crate::common::peers::{DnsServer, SmtpPeer};
use crate::common::{Setup, send_one, simple_message};

/// Polls `GET path` until `ok` holds for its JSON (bounded).
pub fn wait_json(admin: &Admin, path: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = admin.get(path);
        if a.status == 200 {
            let v = a.json();
            if ok(&v) {
                return v;
            }
        }
        assert!(Instant::now() < deadline, "{path}: {} {}", a.status, a.body);
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ids(v: &Value) -> Vec<String> {
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn admin_queue_list_filters_and_paging() {
    let dns = DnsServer::start();
    let peer = SmtpPeer::start("127.0.0.3", &["tempfail-rcpt=defer"]);
    let mut tern = Setup::new()
        .dns(&dns.dns_section())
        .queue("[queue]\ndeliver = true\nmin_backoff_secs = 3600\nmax_backoff_secs = 3600\n")
        .section(&format!(
            "[[route]]\ndomains = [\"defer.test\", \"client.test\"]\ntransport = \"smtp\"\nhosts = [\"{}\"]\n\n[[route]]\ndomains = [\"hold.test\"]\ntransport = \"hold\"\n",
            peer.addr
        ))
        .start();
    let mut admin = Admin::of(&tern);

    let m1 = send_one(
        tern.addr(),
        "Alice@client.test",
        &["x@defer.test"],
        &simple_message("first", "one"),
    );
    tern.wait_for_events(4002, 1, Duration::from_secs(30));
    let m2 = send_one(
        tern.addr(),
        "bob@client.test",
        &["y@defer.test", "z@defer.test"],
        &simple_message("second", "two"),
    );
    tern.wait_for_events(4002, 2, Duration::from_secs(30));
    let m3 = send_one(
        tern.addr(),
        "carol@client.test",
        &["h@hold.test"],
        &simple_message("third", "three"),
    );
    tern.wait_for_events(4009, 1, Duration::from_secs(30));

    let all = wait_json(&admin, "/api/v1/queue", |v| v["total"] == 3);
    assert_eq!(
        ids(&all),
        [m1.clone(), m2.clone(), m3.clone()],
        "oldest first"
    );
    assert_eq!(
        (all["offset"].as_u64(), all["limit"].as_u64()),
        (Some(0), Some(100))
    );
    let first = &all["messages"][0];
    assert_eq!(first["state"], "deferred");
    assert_eq!(first["sender"], "Alice@client.test");
    assert_eq!(first["recipients"], serde_json::json!(["x@defer.test"]));
    assert_eq!(first["destinations"], serde_json::json!(["defer.test"]));
    assert_eq!(first["attempts"], 1);
    assert!(first["size"].as_u64().unwrap() > 0);
    assert!(first["arrival_unix_ms"].as_u64().unwrap() > 1_700_000_000_000);
    assert!(first["age_secs"].as_u64().unwrap() < 600);
    assert!(
        first["last_error"].as_str().unwrap().contains("4.2.0"),
        "{first}"
    );
    assert!(first["next_attempt_unix_ms"].as_u64().is_some());
    let held = &all["messages"][2];
    assert_eq!(held["state"], "hold");
    assert_eq!(held["attempts"], 0);
    assert!(held["next_attempt_unix_ms"].is_null());

    let q = |query: &str| {
        let a = admin.get(&format!("/api/v1/queue?{query}"));
        assert_eq!(a.status, 200, "{query}: {a:?}");
        a.json()
    };
    let cases: Vec<(&str, Vec<&String>)> = vec![
        ("state=deferred", vec![&m1, &m2]),
        ("state=hold", vec![&m3]),
        ("state=poison", vec![]),
        ("sender=ALICE", vec![&m1]),
        ("recipient=z%40defer", vec![&m2]),
        ("destination=DEFER.test", vec![&m1, &m2]),
        ("destination=hold", vec![&m3]),
        ("error=4.2.0", vec![&m1, &m2]),
        ("min_attempts=1", vec![&m1, &m2]),
        ("min_attempts=2", vec![]),
        ("min_age_secs=3600", vec![]),
        ("max_age_secs=3600", vec![&m1, &m2, &m3]),
        ("state=deferred&sender=bob", vec![&m2]),
    ];
    for (query, want) in cases {
        let v = q(query);
        let want: Vec<String> = want.into_iter().cloned().collect();
        assert_eq!(ids(&v), want, "{query}");
        assert_eq!(v["total"].as_u64(), Some(want.len() as u64), "{query}");
    }
    let page = q("limit=1&offset=1");
    assert_eq!(
        (page["total"].as_u64(), ids(&page)),
        (Some(3), vec![m2.clone()])
    );
    let past = q("offset=10");
    assert_eq!((past["total"].as_u64(), ids(&past).len()), (Some(3), 0));

    for bad in [
        "state=frozen",
        "limit=1001",
        "limit=-1",
        "min_age_secs=old",
        "colour=red",
        "state=hold&state=deferred",
        "min_age_secs=10&max_age_secs=5",
    ] {
        let a = admin.get(&format!("/api/v1/queue?{bad}"));
        assert_eq!(a.status, 400, "{bad}: {a:?}");
        assert_eq!(a.json()["error"]["code"], "bad_request", "{bad}");
    }

    // One message in detail.
    let d = admin.get(&format!("/api/v1/queue/{m2}"));
    assert_eq!(d.status, 200, "{d:?}");
    let d = d.json();
    assert_eq!(d["id"], m2.as_str());
    assert_eq!(d["state"], "deferred");
    assert!(
        d["path"]
            .as_str()
            .unwrap()
            .ends_with(&format!("spool/deferred/{m2}")),
        "{d}"
    );
    assert_eq!(d["envelope"]["sender"], "bob@client.test");
    assert_eq!(d["envelope"]["recipients"][1]["address"], "z@defer.test");
    let rs = d["recipient_status"].as_array().unwrap();
    assert_eq!(rs.len(), 2);
    for r in rs {
        assert_eq!(r["status"], "deferred", "{r}");
        assert_eq!(r["attempts"], 1);
        assert!(r["last_reply"].as_str().unwrap().starts_with("450"), "{r}");
        let h = r["history"].as_array().unwrap();
        assert_eq!(h.len(), 1, "{r}");
        assert_eq!(h[0]["result"], "deferred");
        assert!(
            h[0]["remote"].as_str().unwrap().contains("127.0.0.3"),
            "{r}"
        );
        assert!(h[0]["at_unix_ms"].as_u64().unwrap() >= d["arrival_unix_ms"].as_u64().unwrap());
    }
    let headers = d["headers"].as_array().unwrap();
    assert_eq!(headers[0][0], "Received", "Tern's own field first: {d}");
    assert!(
        headers
            .iter()
            .any(|h| h[0] == "Subject" && h[1] == "second"),
        "{d}"
    );
    assert_eq!(d["headers_truncated"], false);
    assert_eq!(d["crashes"], 0);
    let held = admin.get(&format!("/api/v1/queue/{m3}")).json();
    assert_eq!(held["recipient_status"][0]["status"], "pending");
    assert_eq!(
        held["recipient_status"][0]["history"],
        serde_json::json!([])
    );

    // The raw message, as stored.
    let raw = admin.get(&format!("/api/v1/queue/{m1}/raw"));
    assert_eq!(raw.status, 200);
    assert_eq!(raw.content_type.as_deref(), Some("message/rfc822"));
    let stored = tern
        .spooled()
        .into_iter()
        .find(|(l, _)| l.id.to_string() == m1)
        .unwrap()
        .1;
    assert_eq!(raw.body.as_bytes(), stored.body.as_slice());
    assert!(raw.body.contains("Subject: first"));

    // Bad and unknown ids; no token.
    let unknown = QueueId::generate().to_string();
    for path in ["/api/v1/queue/nope", "/api/v1/queue/nope/raw"] {
        let a = admin.get(path);
        assert_eq!(a.status, 400, "{path}: {a:?}");
    }
    for path in [
        format!("/api/v1/queue/{unknown}"),
        format!("/api/v1/queue/{unknown}/raw"),
    ] {
        let a = admin.get(&path);
        assert_eq!(a.status, 404, "{path}: {a:?}");
        assert_eq!(a.json()["error"]["code"], "not_found");
    }
    for path in [
        "/api/v1/queue".to_owned(),
        format!("/api/v1/queue/{m1}"),
        format!("/api/v1/queue/{m1}/raw"),
    ] {
        let a = admin.get_with_auth(&path, Some("Bearer wrong"));
        assert_eq!(a.status, 401, "{path}: {a:?}");
    }

    // Every queue endpoint is in the document.
    let doc = admin.get("/api/v1/openapi.json").json();
    for (path, method) in [
        ("/api/v1/queue", "get"),
        ("/api/v1/queue/{id}", "get"),
        ("/api/v1/queue/{id}/raw", "get"),
        ("/api/v1/queue/{id}/{action}", "post"),
        ("/api/v1/queue/actions/{action}", "post"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{path} {method} missing"
        );
    }

    // A damaged file is quarantined at the next start: listed as corrupt with the reason,
    // shown without an envelope, not exported, and deleted only without a bounce.
    tern.stop(Duration::from_secs(20));
    let path = tern.spool_dir().join("deferred").join(&m1);
    // A content byte (the file's last bytes are its delivery record's frame now, and a
    // damaged last frame counts as one torn by a crash: the previous record counts).
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[tern_spool::format::HEADER_LEN + 4] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    tern.restart();
    admin = Admin::of(&tern);
    let c = wait_json(&admin, "/api/v1/queue?state=corrupt", |v| v["total"] == 1);
    assert_eq!(c["messages"][0]["id"], m1.as_str());
    assert_eq!(c["messages"][0]["sender"], "");
    assert!(
        c["messages"][0]["last_error"]
            .as_str()
            .unwrap()
            .starts_with("quarantined: "),
        "{c}"
    );
    let d = admin.get(&format!("/api/v1/queue/{m1}")).json();
    assert_eq!(
        (d["state"].as_str(), d["envelope"].is_null()),
        (Some("corrupt"), true),
        "{d}"
    );
    assert_eq!(admin.get(&format!("/api/v1/queue/{m1}/raw")).status, 409);
    let a = admin.post(
        &format!("/api/v1/queue/{m1}/delete"),
        &serde_json::json!({"bounce": true}),
    );
    assert_eq!(a.status, 409, "{a:?}");
    let a = admin.post(
        &format!("/api/v1/queue/{m1}/delete"),
        &serde_json::json!({}),
    );
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(admin.get("/api/v1/queue?state=corrupt").json()["total"], 0);
}
