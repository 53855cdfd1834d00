//! `tern dest list` shows the destination limits: a node alone with
//! `[[delivery.destination_limits]]` (`max_connections = 2` and a message rate for
//! `slow.test`) delivers six messages to a slow sink over at most two connections, which
//! then stay open, idle, in the connection cache. While they are open, the limit shows
//! as many connections held as the sink has open, never more than 2, in `--json` and in
//! the table with what it covers; once the cache closes them (10 s idle), it shows 0:
//! the lease goes with its connection.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::peers::{DnsServer, SmtpPeer, delivering_with};
use crate::common::{Tern, run, send_batch, simple_message};

fn dest_list(tern: &Tern, json: bool) -> String {
    let args: &[&str] = if json {
        &["dest", "list", "--json"]
    } else {
        &["dest", "list"]
    };
    let out = run(&mut tern.tern_command(args), Duration::from_secs(30));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn held(tern: &Tern) -> (Value, u64) {
    let v: Value = serde_json::from_str(dest_list(tern, true).trim()).expect("json");
    let l = v["limits"][0].clone();
    let n = l["connections"].as_u64().expect("a count of connections");
    (l, n)
}

#[test]
fn dest_list_shows_destination_limits_and_their_leases() {
    let mut dns = DnsServer::start();
    dns.set_mx("slow.test", &[(10, "mx.slow.test")], 300);
    dns.set_a("mx.slow.test", "127.0.3.21".parse().unwrap(), 300);
    let sink = SmtpPeer::start("127.0.3.21", &["slow=50"]);
    let limit = "destination_limits = [{ name = \"slow\", next_hops = [\"slow.test\"], max_connections = 2, max_messages = \"600/1m\" }]\n";
    let tern = delivering_with(
        &dns,
        sink.port(),
        &format!("connection_cache_idle_secs = 10\n{limit}"),
        "",
    )
    .start();
    crate::common::admin::Admin::of(&tern);

    let messages: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| {
            (
                format!("r{i}@slow.test"),
                simple_message(&format!("m{i}"), "slow"),
            )
        })
        .collect();
    send_batch(tern.addr(), 3, &messages);
    assert_eq!(sink.wait_for(6, Duration::from_secs(60)).len(), 6);
    let (max_open, _) = sink.connections();
    assert!(max_open <= 2, "{max_open} connections at once (limit 2)");

    // The cached connections hold their leases: as many as the sink has open.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (limit, n) = loop {
        let (l, n) = held(&tern);
        let open = sink.open_connections();
        if n >= 1 && n == open {
            break (l, n);
        }
        assert!(
            Instant::now() < deadline,
            "held {n}, the sink has {open} open"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(n <= 2, "{limit}");
    assert_eq!(limit["name"], "slow");
    assert_eq!(limit["max_connections"], 2);
    assert_eq!(limit["max_messages"], "600/1m");
    assert_eq!(limit["next_hops"][0], "slow.test");
    assert_eq!(limit["scope"], "node", "a node alone");
    let table = dest_list(&tern, false);
    let line = table
        .lines()
        .find(|l| l.starts_with("slow "))
        .unwrap_or_else(|| panic!("no limit line: {table}"));
    assert!(
        line.contains(" node ") && line.contains("/2 ") && line.contains(" 600/1m "),
        "{table}"
    );
    assert!(line.ends_with("slow.test"), "{table}");
    assert!(table.contains("CONNECTIONS (here)"), "{table}");

    // Closed by the cache after 10 s idle: the leases go with them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, n) = held(&tern);
        if n == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "leases still held: {n}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(sink.open_connections(), 0);
}
