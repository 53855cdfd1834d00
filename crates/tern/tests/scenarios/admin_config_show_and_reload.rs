//! The configuration over the admin API: `GET /config` shows the effective configuration
//! with its defaults and without the token; `POST /reload` applies a changed file (the
//! new queue settings show at once) and refuses a broken one with every problem listed,
//! changing nothing. With delivery off, the destination endpoints answer 503 and the
//! queue summary groups the waiting mail by domain. Every endpoint needs the token and
//! is in the OpenAPI document.

use std::time::Duration;

use serde_json::json;

use crate::common::admin::Admin;
use crate::common::{Setup, send_one, simple_message};

const SECRET: &str = "configured-admin-token-0123456789";

#[test]
fn admin_config_show_and_reload() {
    let tern = Setup::new()
        .admin(&format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{SECRET}\"\n"
        ))
        .start();
    // A configured token is not written to the data directory; the harness's client
    // reads it from there, so put it where it looks.
    std::fs::write(tern.data_dir.join("admin.token"), SECRET).unwrap();
    let admin = Admin::of(&tern);

    for path in [
        "/api/v1/config",
        "/api/v1/queue/summary",
        "/api/v1/destinations",
    ] {
        let a = admin.get_with_auth(path, None);
        assert_eq!(a.status, 401, "{path}: {a:?}");
        let a = admin.get_with_auth(path, Some("Bearer configured-admin-token"));
        assert_eq!(a.status, 401, "{path} with a prefix of the token: {a:?}");
    }
    let a = admin.post_with_auth("/api/v1/reload", Some("Bearer nope"));
    assert_eq!(a.status, 401, "{a:?}");
    assert!(
        tern.events_with_id(7024).is_empty(),
        "no reload without the token"
    );

    let shown = admin.get("/api/v1/config");
    assert_eq!(shown.status, 200, "{shown:?}");
    assert!(
        !shown.body.contains(SECRET),
        "the token leaked: {}",
        shown.body
    );
    let c = shown.json();
    assert_eq!(c["admin"]["token"], "<redacted>");
    assert_eq!(c["queue"]["deliver"], false);
    assert_eq!(c["queue"]["max_concurrency"], 100, "defaults are filled in");
    assert_eq!(c["queue"]["min_backoff_secs"], 300);
    assert_eq!(c["listener"][0]["name"], "smtp");
    assert_eq!(c["listener"][0]["max_command_line"], 512);
    assert_eq!(c["server"]["data_dir"], tern.data_dir.display().to_string());
    assert_eq!(c["relay"]["networks"][0], "127.0.0.0/8");

    // A good change, reloaded over the API.
    tern.replace_in_config(
        "[queue]\ndeliver = false\n",
        "[queue]\ndeliver = false\nmax_concurrency = 7\n",
    );
    let r = admin.post("/api/v1/reload", &json!({}));
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.json()["result"].as_str().unwrap().contains("reloaded"),
        "{r:?}"
    );
    tern.wait_for_events(7024, 1, Duration::from_secs(10));
    tern.wait_for_events(1007, 1, Duration::from_secs(10));
    assert_eq!(
        admin.get("/api/v1/config").json()["queue"]["max_concurrency"],
        7
    );

    // A broken file: 400 with every problem, nothing changes.
    tern.replace_in_config("max_concurrency = 7\n", "max_concurrency = 0\n");
    tern.replace_in_config(
        "log_level = \"info\"\n",
        "log_level = \"info\"\nbogus_key = 1\n",
    );
    let r = admin.post("/api/v1/reload", &json!({}));
    assert_eq!(r.status, 400, "{r:?}");
    let e = r.json();
    assert_eq!(e["error"]["code"], "bad_request");
    let problems: Vec<String> = e["error"]["problems"]
        .as_array()
        .expect("problems listed")
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    assert!(
        problems.iter().any(|p| p.contains("server.bogus_key")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("queue.max_concurrency")),
        "{problems:?}"
    );
    tern.wait_for_events(1008, 1, Duration::from_secs(10));
    assert_eq!(
        admin.get("/api/v1/config").json()["queue"]["max_concurrency"],
        7,
        "the refused file changed nothing"
    );

    // Delivery is off: no scheduler, so no destinations.
    let d = admin.get("/api/v1/destinations");
    assert_eq!(d.status, 503, "{d:?}");
    assert_eq!(d.json()["error"]["code"], "unavailable");
    let d = admin.post("/api/v1/destinations/mx:example.com/retry", &json!({}));
    assert_eq!(d.status, 503, "{d:?}");

    // The summary still works from the spool, by domain.
    for i in 0..3 {
        send_one(
            tern.addr(),
            "s@client.test",
            &["a@example.com", "b@Example.COM", "c@other.test"],
            &simple_message(&format!("m{i}"), "x"),
        );
    }
    send_one(
        tern.addr(),
        "s@client.test",
        &["d@other.test"],
        &simple_message("m3", "x"),
    );
    let s = admin.get("/api/v1/queue/summary");
    assert_eq!(s.status, 200, "{s:?}");
    let s = s.json();
    assert_eq!(s["grouped_by"], "domain", "{s}");
    assert_eq!(s["buckets"].as_array().unwrap().len(), 7);
    assert_eq!(s["buckets"][0], "0-5m");
    assert_eq!(s["buckets"][6], "160m+");
    assert_eq!(s["total"], 4, "{s}");
    assert_eq!(s["counts"][0], 4, "{s}");
    assert_eq!(s["rows"][0]["destination"], "other.test", "{s}");
    assert_eq!(s["rows"][0]["total"], 4, "{s}");
    assert_eq!(s["rows"][1]["destination"], "example.com", "{s}");
    assert_eq!(
        s["rows"][1]["total"], 3,
        "each message once per domain: {s}"
    );
    let held = admin.get("/api/v1/queue/summary?state=hold").json();
    assert_eq!(held["total"], 0, "{held}");
    assert_eq!(held["rows"], json!([]), "{held}");
    for bad in ["state=bogus", "state=corrupt", "by=sender"] {
        let a = admin.get(&format!("/api/v1/queue/summary?{bad}"));
        assert_eq!(a.status, 400, "{bad}: {a:?}");
        assert_eq!(a.json()["error"]["code"], "bad_request");
    }

    let doc = admin.get("/api/v1/openapi.json").json();
    for (path, method) in [
        ("/api/v1/config", "get"),
        ("/api/v1/reload", "post"),
        ("/api/v1/destinations", "get"),
        ("/api/v1/destinations/{name}/{action}", "post"),
        ("/api/v1/queue/summary", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{path} missing: {doc}"
        );
    }
}
