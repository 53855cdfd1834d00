//! Issue 16: Tern listening on `0.0.0.0` (CONFIG.md's example listener) and a domain
//! whose only MX resolves to 127.0.0.1, at Tern's own port. Before, the self check
//! compared the MX address with `0.0.0.0`, matched nothing, and Tern relayed the mail to
//! itself until the hop limit (50 copies, then a bounce). Now the wildcard listener owns
//! every address of the machine: Tern is the best MX, so nothing is sent anywhere; the
//! message is deferred with 4.4.6 and a clear reason (event 4035), stays queued, is
//! received once, and nobody gets a bounce. The greeting carries the process's loop
//! mark, the second line of defence for what addresses cannot show (NAT).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::common::local::smtp_route;
use crate::common::peers::{DnsServer, SmtpPeer, delivering};
use crate::common::{Listener, SmtpClient, send_one, simple_message};

/// Points the `*` MX route (written with `port = 1`) at Tern's own listener port, and
/// reloads (SIGHUP, event 1007): the harness chooses the listener's port at start.
pub(crate) fn mx_port_to_self(tern: &crate::common::Tern) -> u16 {
    let port = tern.addr().port();
    tern.replace_in_config("\nport = 1\n", &format!("\nport = {port}\n"));
    let before = tern.events_with_id(1007).len();
    tern.signal(libc::SIGHUP);
    tern.wait_for_events(1007, before + 1, Duration::from_secs(20));
    port
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn mx_to_self_with_a_wildcard_listener_is_kept_not_looped() {
    let mut dns = DnsServer::start();
    dns.set_mx("loop.test", &[(10, "mx.elsewhere.test")], 300);
    dns.set_a("mx.elsewhere.test", "127.0.0.1".parse().unwrap(), 300);
    // Where a bounce to the sender would go: it must get none.
    let sender_mx = SmtpPeer::start("127.0.0.4", &["accept"]);
    let tern = delivering(&dns, 1, &smtp_route(&["client.test"], sender_mx.addr))
        .listeners(vec![Listener::new(
            "smtp",
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        )])
        .start();
    let port = mx_port_to_self(&tern);
    let me = SocketAddr::from(([127, 0, 0, 1], port));

    // The greeting names the host and carries this process's loop mark.
    let mut c = SmtpClient::connect(me).unwrap();
    let greeting = c.read_reply().unwrap().text();
    assert!(
        greeting.starts_with("220 mx.tern.test ESMTP Tern loop-check="),
        "{greeting}"
    );
    drop(c);

    send_one(
        me,
        "s@client.test",
        &["a@loop.test"],
        &simple_message("to myself", "must not loop"),
    );
    let looped = tern.wait_for_events(4035, 1, Duration::from_secs(20));
    assert_eq!(looped[0]["how"], "address", "{looped:?}");
    assert_eq!(looped[0]["next_hop"], "mx:loop.test");
    let deferred = tern.wait_for_events(4002, 1, Duration::from_secs(20));
    let reason = deferred[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("4.4.6") && reason.contains("loops back to this server"),
        "{deferred:?}"
    );

    // Received once (no copy came back through the listener), kept, not bounced.
    assert_eq!(tern.events_with_id(2003).len(), 1, "copies: {}", tern.log());
    assert!(tern.events_with_id(4001).is_empty(), "delivered somewhere");
    let listed = tern.queue_json(&[]);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(
        listed[0]["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("4.4.6"),
        "{listed:?}"
    );
    assert!(tern.events_with_id(4003).is_empty(), "failed recipients");
    assert_eq!(sender_mx.received().len(), 0, "a bounce was sent");
}
