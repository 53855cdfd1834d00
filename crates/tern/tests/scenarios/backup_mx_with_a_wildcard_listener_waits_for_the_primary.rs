//! Issue 16: Tern is the backup MX (preference 20, 127.0.0.1 behind its `0.0.0.0`
//! listener) of a domain whose primary (preference 10, `[::1]` at the same port) is
//! down. Before, Tern relayed the mail to itself and finally bounced it. Now it knows
//! the backup is itself, drops it (RFC 5321 §5.1: hosts of its preference or worse),
//! tries only the primary, keeps the mail deferred (received once, no bounce), and
//! delivers it to the primary as soon as the primary is back.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::json;

use crate::common::local::smtp_route;
use crate::common::peers::{DnsServer, SmtpPeer, delivering};
use crate::common::{Listener, send_one, simple_message};
use crate::mx_to_self_with_a_wildcard_listener_is_kept_not_looped::mx_port_to_self;

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn backup_mx_with_a_wildcard_listener_waits_for_the_primary() {
    let mut dns = DnsServer::start();
    dns.set_mx(
        "backup.test",
        &[(10, "primary.backup.test"), (20, "mx2.backup.test")],
        300,
    );
    // The primary on IPv6 loopback: the IPv4 wildcard listener leaves it the port.
    dns.set(
        "primary.backup.test",
        json!({"AAAA": [{"addr": "::1", "ttl": 300}]}),
    );
    dns.set_a("mx2.backup.test", "127.0.0.1".parse().unwrap(), 300);
    let sender_mx = SmtpPeer::start("127.0.0.4", &["accept"]);
    let tern = delivering(&dns, 1, &smtp_route(&["client.test"], sender_mx.addr))
        .listeners(vec![Listener::new(
            "smtp",
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        )])
        .start();
    let port = mx_port_to_self(&tern);
    let me = SocketAddr::from(([127, 0, 0, 1], port));

    let m = simple_message("keep me", "until the primary is back");
    send_one(me, "s@client.test", &["u@backup.test"], &m);
    // Only the primary was tried (refused); the backup, ourselves, was not.
    let deferred = tern.wait_for_events(4002, 1, Duration::from_secs(20));
    let reason = deferred[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("[::1]"), "{deferred:?}");
    let down = tern.wait_for_events(4006, 1, Duration::from_secs(20));
    assert_eq!(down[0]["next_hop"], "mx:backup.test");
    // The address check dropped the backup before any connection: no connection to
    // ourselves for the greeting check to catch (event 4035, `how` = `greeting`).
    assert!(
        tern.events_with_id(4035).is_empty(),
        "ourselves contacted: {:?}",
        tern.events_with_id(4035)
    );
    assert_eq!(tern.events_with_id(2003).len(), 1, "copies: {}", tern.log());
    assert!(tern.events_with_id(4001).is_empty(), "delivered somewhere");
    assert!(tern.events_with_id(4003).is_empty(), "failed recipients");
    let listed = tern.queue_json(&[]);
    assert_eq!(listed.len(), 1, "kept: {listed:?}");

    // The primary comes back: the retry delivers there, once.
    let primary = SmtpPeer::start_on("::1", port, &["accept"]);
    let got = primary.wait_for(1, Duration::from_secs(30));
    assert_eq!(got[0].rcpts(), vec!["u@backup.test".to_string()]);
    assert!(got[0].content.ends_with(&m));
    tern.wait_for_events(4001, 1, Duration::from_secs(20));
    assert_eq!(tern.events_with_id(2003).len(), 1);
    assert_eq!(sender_mx.received().len(), 0, "a bounce was sent");
    assert_eq!(primary.received().len(), 1);
}
