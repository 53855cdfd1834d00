//! Every MX host of a destination refuses: the message is deferred, never dropped, the
//! destination is marked down (event 4006) while other destinations carry on at once,
//! and when a host comes back the message is delivered by a retry.

use std::time::Duration;

use crate::common::peers::{DnsServer, SmtpPeer, delivering};
use crate::common::{free_port, send_one, simple_message};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn a_dead_destination_defers_and_recovers_without_slowing_others() {
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    dns.set_mx(
        "down.test",
        &[(10, "a.down.test"), (20, "b.down.test")],
        300,
    );
    dns.set_a("a.down.test", "127.0.0.2".parse().unwrap(), 300);
    dns.set_a("b.down.test", "127.0.0.3".parse().unwrap(), 300);
    dns.set_mx("up.test", &[(10, "mx.up.test")], 300);
    dns.set_a("mx.up.test", "127.0.0.5".parse().unwrap(), 300);
    // Nobody listens on 127.0.0.2 and 127.0.0.3 yet: both refuse.
    let up = SmtpPeer::start_on("127.0.0.5", port, &["accept"]);
    let tern = delivering(&dns, port, "").start();

    let m = simple_message("patience", "wait for me");
    send_one(tern.addr(), "s@client.test", &["x@down.test"], &m);
    let deferred = tern.wait_for_events(4002, 1, Duration::from_secs(20));
    assert!(
        deferred[0]["reason"].as_str().unwrap().contains("127.0.0."),
        "the reason names a host: {deferred:?}"
    );
    let down = tern.wait_for_events(4006, 1, Duration::from_secs(20));
    assert_eq!(down[0]["next_hop"], "mx:down.test");
    let listed = tern.queue_json(&[]);
    assert_eq!(listed.len(), 1, "the message stays queued: {listed:?}");
    assert!(listed[0]["attempts"].as_u64().unwrap() >= 1, "{listed:?}");
    assert!(
        listed[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("127.0.0."),
        "the operator sees why it waits: {listed:?}"
    );

    // Another destination is not slowed by the dead one.
    send_one(
        tern.addr(),
        "s@client.test",
        &["y@up.test"],
        &simple_message("other", "fast"),
    );
    up.wait_for(1, Duration::from_secs(10));

    // The second MX comes back: a retry delivers there.
    let back = SmtpPeer::start_on("127.0.0.3", port, &["accept"]);
    let got = back.wait_for(1, Duration::from_secs(30));
    assert_eq!(got[0].rcpts(), vec!["x@down.test".to_string()]);
    assert!(got[0].content.ends_with(&m));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !tern.queue_json(&[]).is_empty() {
        assert!(std::time::Instant::now() < deadline, "queue never emptied");
        std::thread::sleep(Duration::from_millis(50));
    }
}
