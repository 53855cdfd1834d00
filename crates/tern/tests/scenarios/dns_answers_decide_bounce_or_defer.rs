//! What the DNS says decides the fate: null MX bounces with 5.1.10, a domain that does not
//! exist bounces with 5.1.2, SERVFAIL defers (no bounce), no MX means the domain's own
//! address (implicit MX), and an MX list whose best host is Tern itself neither loops
//! nor bounces: it is deferred with 4.4.6 and kept (issue 16; event 4035).

use std::time::Duration;

use crate::common::peers::{DnsServer, SmtpPeer, delivering, parse_dsn_with_python};
use crate::common::{free_port, send_one, simple_message};
use serde_json::json;

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn null_mx_nxdomain_servfail_implicit_mx_and_mx_to_self() {
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    dns.set_mx("client.test", &[(10, "mx.client.test")], 300);
    dns.set_a("mx.client.test", "127.0.0.4".parse().unwrap(), 300);
    dns.set("nullmx.test", json!({"behaviour": "null_mx"}));
    dns.set("servfail.test", json!({"behaviour": "servfail"}));
    dns.set(
        "implicit.test",
        json!({"A": [{"addr": "127.0.0.2", "ttl": 300}]}),
    );
    // Tern (mx.tern.test) is the best MX of loop.test: mail must not loop.
    dns.set_mx(
        "loop.test",
        &[(10, "mx.tern.test"), (20, "backup.loop.test")],
        300,
    );
    dns.set_a("mx.tern.test", "127.0.0.1".parse().unwrap(), 300);
    dns.set_a("backup.loop.test", "127.0.0.2".parse().unwrap(), 300);
    let implicit = SmtpPeer::start_on("127.0.0.2", port, &["accept"]);
    let sender_mx = SmtpPeer::start_on("127.0.0.4", port, &["accept"]);
    let tern = delivering(&dns, port, "").start();

    let send = |to: &str| {
        send_one(
            tern.addr(),
            "s@client.test",
            &[to],
            &simple_message(to, "dns decides"),
        )
    };
    send("a@implicit.test");
    let got = implicit.wait_for(1, Duration::from_secs(20));
    assert_eq!(got[0].rcpts(), vec!["a@implicit.test".to_string()]);

    send("a@servfail.test");
    let deferred = tern.wait_for_events(4002, 1, Duration::from_secs(20));
    assert!(
        deferred[0]["reason"].as_str().unwrap().contains("4.4.3"),
        "{deferred:?}"
    );

    let mut expected = vec![("a@nullmx.test", "5.1.10"), ("a@gone.test", "5.1.2")];
    for (to, _) in &expected {
        send(to);
    }
    let bounces = sender_mx.wait_for(2, Duration::from_secs(30));
    let mut seen: Vec<(String, String)> = bounces
        .iter()
        .map(|b| {
            let dsn = parse_dsn_with_python(&b.content);
            let r = &dsn["recipients"][0];
            (
                r["Final-Recipient"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("rfc822; ")
                    .to_string(),
                r["Status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    expected.sort();
    let expected: Vec<(String, String)> = expected
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(seen, expected);
    // loop.test: we are its best MX by name. Kept, deferred with 4.4.6; nothing went to
    // its backup (preference 20 is worse than ours).
    send("a@loop.test");
    let looped = tern.wait_for_events(4035, 1, Duration::from_secs(20));
    assert_eq!(looped[0]["next_hop"], "mx:loop.test", "{looped:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !tern.events_with_id(4002).iter().any(|e| {
        e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("4.4.6") && r.contains("best MX"))
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "no 4.4.6 deferral: {:?}",
            tern.events_with_id(4002)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The SERVFAIL domain and the loop produced no bounce.
    assert_eq!(implicit.received().len(), 1);
    assert_eq!(sender_mx.received().len(), 2);
}
