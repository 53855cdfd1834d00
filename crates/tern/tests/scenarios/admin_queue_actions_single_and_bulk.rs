//! The administrators' actions through the API, on real deferred and held mail: hold,
//! release, retry now, bounce now (one bounce, through the usual DSN path, with the
//! administrator's reason), delete with and without a bounce, resubmit, each answering
//! 409 in a state it does not apply to and emitting its event; and the same actions in
//! bulk over what a filter matches, reporting matched, touched and failed.

use std::time::Duration;

use serde_json::{Value, json};
use tern_spool::QueueId;

use super::admin_queue_list_filters_and_paging::wait_json;
use crate::common::admin::Admin;
use crate::common::peers::{DnsServer, SmtpPeer};
use crate::common::{Setup, send_one, simple_message};

fn attempts(admin: &Admin, id: &str) -> u64 {
    admin.get(&format!("/api/v1/queue/{id}")).json()["attempts"]
        .as_u64()
        .unwrap()
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn admin_queue_actions_single_and_bulk() {
    let dns = DnsServer::start();
    // Recipients with "defer" or "bulk" in them are deferred; bounces to the senders
    // (client.test) are taken.
    let peer = SmtpPeer::start("127.0.0.3", &["tempfail-rcpt=defer|bulk"]);
    // A slow receiver keeps a message in active/ for a while.
    let slow = SmtpPeer::start("127.0.0.4", &["slow=400"]);
    let tern = Setup::new()
        .dns(&dns.dns_section())
        .queue("[queue]\ndeliver = true\nmin_backoff_secs = 3600\nmax_backoff_secs = 3600\n")
        .section(&format!(
            "[[route]]\ndomains = [\"defer.test\", \"bulk.test\", \"client.test\"]\ntransport = \"smtp\"\nhosts = [\"{}\"]\n\n[[route]]\ndomains = [\"hold.test\"]\ntransport = \"hold\"\n\n[[route]]\ndomains = [\"slow.test\"]\ntransport = \"smtp\"\nhosts = [\"{}\"]\n",
            peer.addr, slow.addr
        ))
        .start();
    let admin = Admin::of(&tern);
    let post = |path: &str, body: Value| admin.post(path, &body);
    let act = |id: &str, action: &str| post(&format!("/api/v1/queue/{id}/{action}"), json!({}));

    let mut deferred = Vec::new();
    for n in 0..3 {
        deferred.push(send_one(
            tern.addr(),
            &format!("s{n}@client.test"),
            &[&format!("r{n}@defer.test")],
            &simple_message(&format!("deferred {n}"), "x"),
        ));
        tern.wait_for_events(4002, n + 1, Duration::from_secs(30));
    }
    let held = send_one(
        tern.addr(),
        "h@client.test",
        &["h@hold.test"],
        &simple_message("held", "x"),
    );
    tern.wait_for_events(4009, 1, Duration::from_secs(30));
    let (d0, d1, d2) = (&deferred[0], &deferred[1], &deferred[2]);

    // Hold, then the actions that do not apply to held mail, then release: tried now.
    let a = act(d0, "hold");
    assert_eq!(a.status, 200, "{a:?}");
    let r = a.json();
    assert_eq!(
        (r["id"].as_str(), r["action"].as_str()),
        (Some(d0.as_str()), Some("hold"))
    );
    assert_eq!(r["from_state"], "deferred");
    assert_eq!(
        admin.get(&format!("/api/v1/queue/{d0}")).json()["state"],
        "hold"
    );
    let ev = tern.wait_for_events(7002, 1, Duration::from_secs(10));
    assert_eq!(ev[0]["queue_id"], d0.as_str());
    assert_eq!(ev[0]["action"], "hold");
    assert_eq!(ev[0]["from_state"], "deferred");
    for action in ["hold", "retry", "resubmit"] {
        let a = act(d0, action);
        assert_eq!(a.status, 409, "{action} on held mail: {a:?}");
        assert_eq!(a.json()["error"]["code"], "conflict");
    }
    assert_eq!(attempts(&admin, d0), 1);
    let a = act(d0, "release");
    assert_eq!(a.status, 200, "{a:?}");
    assert!(
        a.json()["result"]
            .as_str()
            .unwrap()
            .contains("released from hold")
    );
    tern.wait_for_events(7004, 1, Duration::from_secs(10));
    wait_json(&admin, &format!("/api/v1/queue/{d0}"), |v| {
        v["attempts"] == 2 && v["state"] == "deferred"
    });
    let a = act(d0, "release");
    assert_eq!(a.status, 409, "release of deferred mail: {a:?}");

    // Retry now: tried at once, although the backoff is an hour.
    let a = act(d1, "retry");
    assert_eq!(a.status, 200, "{a:?}");
    let v = wait_json(&admin, &format!("/api/v1/queue/{d1}"), |v| {
        v["attempts"] == 2 && v["state"] == "deferred"
    });
    assert_eq!(
        v["recipient_status"][0]["history"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    tern.wait_for_events(7005, 1, Duration::from_secs(10));

    // Bounce now: the message goes, its sender gets one bounce with the reason.
    let a = act(d2, "bounce");
    assert_eq!(a.status, 200, "{a:?}");
    assert!(
        a.json()["result"].as_str().unwrap().contains("bounced"),
        "{a:?}"
    );
    assert_eq!(admin.get(&format!("/api/v1/queue/{d2}")).status, 404);
    let got = peer.wait_for(1, Duration::from_secs(30));
    let bounce = got
        .iter()
        .find(|m| m.rcpts() == ["s2@client.test"])
        .expect("a bounce to the sender");
    let text = String::from_utf8_lossy(&bounce.content);
    assert!(text.contains("bounced by the administrator"), "{text}");
    assert!(text.contains("r2@defer.test"), "{text}");
    assert_eq!(bounce.meta["mail_from"], "<>", "{:?}", bounce.meta);
    let ev = tern.wait_for_events(7003, 1, Duration::from_secs(10));
    assert_eq!(ev[0]["from_state"], "deferred");
    assert_eq!(tern.events_with_id(4004).len(), 1, "one DSN queued");

    // Delete with a bounce (held mail), and without (deferred mail).
    let a = post(
        &format!("/api/v1/queue/{held}/delete"),
        json!({"bounce": true}),
    );
    assert_eq!(a.status, 200, "{a:?}");
    let got = peer.wait_for(2, Duration::from_secs(30));
    let text = got
        .iter()
        .find(|m| m.rcpts() == ["h@client.test"])
        .map(|m| String::from_utf8_lossy(&m.content).into_owned())
        .expect("a bounce for the deleted message");
    assert!(text.contains("deleted by the administrator"), "{text}");
    let ev = tern.wait_for_events(7001, 1, Duration::from_secs(10));
    assert_eq!(
        (
            ev[0]["queue_id"].as_str(),
            ev[0]["action"].as_str(),
            ev[0]["from_state"].as_str(),
            ev[0]["bounce"].as_str()
        ),
        (
            Some(held.as_str()),
            Some("delete"),
            Some("hold"),
            Some("yes")
        )
    );
    let a = act(d1, "delete");
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["result"], "deleted from deferred");
    let ev = tern.wait_for_events(7001, 2, Duration::from_secs(10));
    assert_eq!(ev[1]["bounce"], "no");
    assert_eq!(admin.get(&format!("/api/v1/queue/{d1}")).status, 404);
    assert!(!tern.spool_dir().join("records").join(d1).exists());

    // Errors: unknown id 404, bad id 400, unknown action 404, bad body 400, no token 401.
    let unknown = QueueId::generate().to_string();
    assert_eq!(act(&unknown, "hold").status, 404);
    assert_eq!(act(d1, "delete").status, 404, "deleted already");
    assert_eq!(act("nope", "hold").status, 400);
    assert_eq!(act(d0, "expunge").status, 404);
    let a = admin.post_raw(
        &format!("/api/v1/queue/{d0}/delete"),
        r#"{"bounce": "yes"}"#,
        Some(&format!("Bearer {}", admin.token)),
    );
    assert_eq!(a.status, 400, "{a:?}");
    assert_eq!(a.json()["error"]["code"], "bad_request");
    let a = post(&format!("/api/v1/queue/{d0}/hold"), json!({"bounce": true}));
    assert_eq!(a.status, 400, "bounce goes with delete only: {a:?}");
    for path in [
        format!("/api/v1/queue/{d0}/delete"),
        "/api/v1/queue/actions/delete".to_owned(),
    ] {
        let a = admin.post_raw(&path, r#"{"filter": {"state": "deferred"}}"#, None);
        assert_eq!(a.status, 401, "{path}: {a:?}");
    }
    assert_eq!(
        admin.get(&format!("/api/v1/queue/{d0}")).json()["state"],
        "deferred"
    );

    // Bulk: three more deferred messages for bulk.test.
    let mut bulk = Vec::new();
    for n in 0..3 {
        bulk.push(send_one(
            tern.addr(),
            "b@client.test",
            &[&format!("r{n}@bulk.test")],
            &simple_message("bulk", "x"),
        ));
    }
    tern.wait_for_events(4002, 7, Duration::from_secs(30));
    let a = post("/api/v1/queue/actions/hold", json!({"filter": {}}));
    assert_eq!(a.status, 400, "an empty filter is refused: {a:?}");
    let a = post(
        "/api/v1/queue/actions/hold",
        json!({"filter": {"colour": "red"}}),
    );
    assert_eq!(a.status, 400, "{a:?}");
    let a = post(
        "/api/v1/queue/actions/expunge",
        json!({"filter": {"state": "hold"}}),
    );
    assert_eq!(a.status, 404, "{a:?}");
    let a = post(
        "/api/v1/queue/actions/hold",
        json!({"filter": {"destination": "bulk.test"}}),
    );
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        a.json(),
        json!({"matched": 3, "touched": 3, "failed": [], "failed_count": 0})
    );
    let ev = tern.wait_for_events(7007, 1, Duration::from_secs(10));
    assert_eq!(
        (ev[0]["action"].as_str(), ev[0]["touched"].as_str()),
        (Some("hold"), Some("3"))
    );
    let listed = admin.get("/api/v1/queue?state=hold").json();
    assert_eq!(listed["total"], 3);
    // Release applies to held mail only: the deferred one fails with a conflict.
    let a = post(
        "/api/v1/queue/actions/release",
        json!({"filter": {"ids": [bulk[0], d0]}}),
    );
    let r = a.json();
    assert_eq!(
        (r["matched"].as_u64(), r["touched"].as_u64()),
        (Some(2), Some(1)),
        "{r}"
    );
    assert_eq!(r["failed"][0]["id"], d0.as_str());
    assert!(
        r["failed"][0]["error"]
            .as_str()
            .unwrap()
            .contains("cannot release"),
        "{r}"
    );
    let a = post(
        "/api/v1/queue/actions/delete",
        json!({"filter": {"state": "hold", "destination": "bulk"}}),
    );
    assert_eq!(
        a.json(),
        json!({"matched": 2, "touched": 2, "failed": [], "failed_count": 0})
    );
    // bulk[0] was released: it waits (deferred) after its new attempt, then goes too.
    wait_json(&admin, &format!("/api/v1/queue/{}", bulk[0]), |v| {
        v["state"] == "deferred"
    });
    let a = post(
        "/api/v1/queue/actions/delete",
        json!({"filter": {"recipient": "@bulk.test"}}),
    );
    assert_eq!(a.json()["touched"], 1, "{a:?}");
    let left = admin.get("/api/v1/queue").json();
    assert_eq!(left["total"], 1, "only d0 is left: {left}");
    assert_eq!(left["messages"][0]["id"], d0.as_str());

    // A message being delivered is not touched: 409 while it is active.
    let busy = send_one(
        tern.addr(),
        "s@client.test",
        &["r@slow.test"],
        &simple_message("slow", "x"),
    );
    wait_json(&admin, &format!("/api/v1/queue/{busy}"), |v| {
        v["state"] == "active"
    });
    for action in ["hold", "delete", "bounce", "retry"] {
        let a = act(&busy, action);
        assert_eq!(a.status, 409, "{action} while active: {a:?}");
        assert!(
            a.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("being processed"),
            "{a:?}"
        );
    }
    slow.wait_for(1, Duration::from_secs(30));
}
