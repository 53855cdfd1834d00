//! Destinations over the admin API, with real traffic to a relay host that is down: the
//! destination is listed down with its retry time and last error; suspending it keeps
//! its mail queued (a new message is deferred, not lost) and shows it suspended;
//! resuming lifts only the suspension; a restart forgets suspension and down mark but
//! counts the deferred mail again; a retry after the host came back delivers at once,
//! long before the 300 s backoff. Auth failures, unknown names and actions, and
//! actions that do not apply are refused with the documented codes.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::admin::Admin;
use crate::common::peers::SmtpPeer;
use crate::common::{Setup, free_port, send_one, simple_message};

fn destination(admin: &Admin, name: &str) -> Option<Value> {
    let a = admin.get("/api/v1/destinations");
    assert_eq!(a.status, 200, "{a:?}");
    a.json()["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .cloned()
}

fn wait_destination(
    admin: &Admin,
    hop: &str,
    what: &str,
    pred: impl Fn(&Option<Value>) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = destination(admin, hop);
        if pred(&d) {
            return d.unwrap_or(Value::Null);
        }
        assert!(Instant::now() < deadline, "{what} never seen; last: {d:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn admin_destinations_suspend_resume_retry() {
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let port = free_port(ip);
    // The destination is named for its relay host; in a URL path its brackets are escaped.
    let hop = format!("smtp:[127.0.0.1]:{port}");
    let seg = hop.replace('[', "%5B").replace(']', "%5D");
    let mut tern = Setup::new()
        .queue("[queue]\ndeliver = true\nmin_backoff_secs = 300\nmax_backoff_secs = 600\n")
        .section(&format!(
            "[delivery]\nconnect_timeout_secs = 2\n[[route]]\ndomains = [\"down.test\"]\ntransport = \"smtp\"\nhosts = [\"127.0.0.1:{port}\"]\n"
        ))
        .start();
    let mut admin = Admin::of(&tern);

    // Nothing listens on the relay host's port: refused, the destination goes down.
    send_one(
        tern.addr(),
        "s@client.test",
        &["x@down.test"],
        &simple_message("one", "1"),
    );
    let down = tern.wait_for_events(4006, 1, Duration::from_secs(20));
    assert_eq!(down[0]["next_hop"], hop);
    let d = wait_destination(&admin, &hop, "down", |d| {
        d.as_ref()
            .is_some_and(|d| d["state"] == "down" && d["queued"] == 1)
    });
    let until = d["down_until_unix_ms"].as_u64().expect("down until");
    let now = crate::common::admin::unix_ms();
    assert!(until > now && until <= now + 301_000, "{d}");
    assert!(
        d["last_error"].as_str().unwrap().contains("127.0.0.1"),
        "the error names the host: {d}"
    );
    assert_eq!(d["limit"], 20, "queue.destination_concurrency");
    assert_eq!(d["in_use"], 0);

    // The summary groups it under the same name.
    let s = admin.get("/api/v1/queue/summary").json();
    assert_eq!(s["grouped_by"], "destination", "{s}");
    assert_eq!(s["rows"][0]["destination"], hop, "{s}");
    assert_eq!(s["rows"][0]["total"], 1, "{s}");
    assert_eq!(s["rows"][0]["counts"][0], 1, "younger than 5 minutes: {s}");

    // Auth, bad names and actions.
    for auth in [None, Some("Bearer wrong")] {
        let a = admin.get_with_auth("/api/v1/destinations", auth);
        assert_eq!(a.status, 401, "{a:?}");
    }
    let no_token = admin.post_with_auth(&format!("/api/v1/destinations/{seg}/suspend"), None);
    assert_eq!(no_token.status, 401, "{no_token:?}");
    assert_eq!(
        destination(&admin, &hop).unwrap()["state"],
        "down",
        "nothing changed"
    );
    let bad = admin.post(&format!("/api/v1/destinations/{seg}/flush"), &json!({}));
    assert_eq!(bad.status, 400, "{bad:?}");
    assert_eq!(bad.json()["error"]["code"], "bad_request");
    let unknown = admin.post("/api/v1/destinations/mx:nowhere.test/retry", &json!({}));
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert_eq!(unknown.json()["error"]["code"], "not_found");
    let not_suspended = admin.post(&format!("/api/v1/destinations/{seg}/resume"), &json!({}));
    assert_eq!(not_suspended.status, 409, "{not_suspended:?}");
    assert_eq!(not_suspended.json()["error"]["code"], "conflict");

    // Suspend: listed suspended; new mail for it waits, deferred, not lost.
    let s = admin.post(&format!("/api/v1/destinations/{seg}/suspend"), &json!({}));
    assert_eq!(s.status, 200, "{s:?}");
    assert_eq!(s.json()["action"], "suspend");
    assert_eq!(s.json()["name"], hop);
    let ev = tern.wait_for_events(7021, 1, Duration::from_secs(10));
    assert_eq!(ev[0]["next_hop"], hop);
    assert_eq!(destination(&admin, &hop).unwrap()["state"], "suspended");
    send_one(
        tern.addr(),
        "s@client.test",
        &["y@down.test"],
        &simple_message("two", "2"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let deferred = tern.events_with_id(4002);
        if deferred
            .iter()
            .any(|e| e["reason"].as_str().unwrap_or("").contains("suspended"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no deferral for the suspension: {deferred:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(tern.queue_json(&[]).len(), 2, "both messages stay queued");
    wait_destination(&admin, &hop, "two queued while suspended", |d| {
        d.as_ref()
            .is_some_and(|d| d["state"] == "suspended" && d["queued"] == 2)
    });
    let retry_suspended = admin.post(&format!("/api/v1/destinations/{seg}/retry"), &json!({}));
    assert_eq!(retry_suspended.status, 409, "{retry_suspended:?}");

    // Resume lifts the suspension only: the host is still down until its time. The
    // waiting messages are tried at once and deferred again, as down (4.4.1).
    let deferrals = tern.events_with_id(4002).len();
    let r = admin.post(&format!("/api/v1/destinations/{seg}/resume"), &json!({}));
    assert_eq!(r.status, 200, "{r:?}");
    let resumed = tern.wait_for_events(7022, 1, Duration::from_secs(10));
    assert_eq!(resumed[0]["messages"], "2", "{resumed:?}");
    let again = tern.wait_for_events(4002, deferrals + 2, Duration::from_secs(20));
    assert!(
        again[deferrals..]
            .iter()
            .all(|e| e["reason"].as_str().unwrap_or("").contains("4.4.1")),
        "deferred again as down: {again:?}"
    );
    wait_destination(&admin, &hop, "down again after resume", |d| {
        d.as_ref().is_some_and(|d| d["state"] == "down")
    });

    // Suspended again, then a restart: neither the suspension nor the down mark is
    // kept, and the deferred messages are counted again from the spool.
    let s = admin.post(&format!("/api/v1/destinations/{seg}/suspend"), &json!({}));
    assert_eq!(s.status, 200, "{s:?}");
    tern.stop(Duration::from_secs(20));
    tern.restart();
    admin = Admin::of(&tern);
    let d = wait_destination(&admin, &hop, "counted after the restart", |d| {
        d.as_ref().is_some_and(|d| d["queued"] == 2)
    });
    assert_eq!(d["state"], "active", "a restart clears the suspension: {d}");
    assert!(
        d["last_error"].as_str().unwrap().contains("4.4.1"),
        "the last deferral, from the delivery records: {d}"
    );

    // The host comes back; without a retry it would wait 300 s. Retry delivers now.
    let peer = SmtpPeer::start_on("127.0.0.1", port, &["accept"]);
    let r = admin.post(&format!("/api/v1/destinations/{seg}/retry"), &json!({}));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["action"], "retry");
    let ev = tern.wait_for_events(7023, 1, Duration::from_secs(10));
    assert_eq!(ev[0]["next_hop"], hop);
    let got = peer.wait_for(2, Duration::from_secs(30));
    let mut rcpts: Vec<String> = got.iter().flat_map(|m| m.rcpts()).collect();
    rcpts.sort();
    assert_eq!(rcpts, vec!["x@down.test", "y@down.test"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !tern.queue_json(&[]).is_empty() {
        assert!(Instant::now() < deadline, "queue never emptied");
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_destination(&admin, &hop, "nothing queued", |d| {
        d.as_ref()
            .is_none_or(|d| d["queued"] == 0 && d["state"] == "active")
    });
}
