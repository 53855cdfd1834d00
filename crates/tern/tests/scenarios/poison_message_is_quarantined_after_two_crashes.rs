//! The seed failure "one corrupt queued message crashed the service at every start":
//! a message whose processing kills the whole process (a fault injected by the test build,
//! `--features tern/fault-injection`) is counted at each restart, and at the poison
//! threshold (2) it goes to the poison queue and is never tried again, while every other
//! message is delivered.

use std::time::{Duration, Instant};

use crate::common::peers::{DnsServer, SmtpPeer};
use crate::common::{Setup, send_one, simple_message};

#[test]
fn a_message_that_crashes_tern_is_poisoned_and_the_rest_flows() {
    let dns = DnsServer::start();
    let relay = SmtpPeer::start("127.0.0.3", &["accept"]);
    let mut tern = Setup::new()
        .dns(&dns.dns_section())
        .queue("[queue]\ndeliver = true\nmin_backoff_secs = 1\npoison_threshold = 2\n")
        .section(&format!(
            "[[route]]\ndomains = [\"relay.test\"]\ntransport = \"smtp\"\nhosts = [\"{}\"]\n",
            relay.addr
        ))
        .env("TERN_FAULT_ABORT_ON", "Subject: poison pill")
        .start();

    for n in 0..5 {
        send_one(
            tern.addr(),
            "s@client.test",
            &["r@relay.test"],
            &simple_message(&format!("good {n}"), "fine"),
        );
    }
    relay.wait_for(5, Duration::from_secs(20));
    send_one(
        tern.addr(),
        "s@client.test",
        &["r@relay.test"],
        &simple_message("poison pill", "this one kills the process"),
    );
    let status = tern.wait_exit(Duration::from_secs(20)).unwrap_or_else(|| {
        panic!("tern did not crash on the poison message: was it built with --features tern/fault-injection? (scripts/test.sh does that)")
    });
    assert!(!status.success(), "{status:?}");

    // First restart: the crash is counted, the message tried again, and it crashes again.
    let second = tern.restart_expecting_crash(Duration::from_secs(20));
    assert!(!second.success(), "{second:?}");
    // Second restart: threshold reached, the message goes to poison; Tern keeps running.
    tern.restart();
    let poisoned = tern.wait_for_events(4012, 1, Duration::from_secs(20));
    assert_eq!(poisoned[0]["crashes"], "2");
    let counted = tern.events_with_id(4011);
    assert_eq!(
        counted.len(),
        2,
        "one crash counted per restart: {counted:?}"
    );

    // The rest flows: new mail is delivered while the poison message waits.
    send_one(
        tern.addr(),
        "s@client.test",
        &["r@relay.test"],
        &simple_message("after", "still flowing"),
    );
    relay.wait_for(6, Duration::from_secs(20));
    assert!(tern.is_running(), "no further crash");
    let poison = tern.queue_json(&["--state", "poison"]);
    assert_eq!(poison.len(), 1, "{poison:?}");
    assert_eq!(poison[0]["id"], poisoned[0]["queue_id"]);
    // Never retried automatically: a restart leaves it alone.
    tern.stop(Duration::from_secs(20));
    tern.restart();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        assert!(tern.is_running());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        tern.events_with_id(4011).len(),
        2,
        "a clean stop is not a crash"
    );
    assert_eq!(tern.queue_json(&["--state", "poison"]).len(), 1);
    assert!(
        relay
            .received()
            .iter()
            .all(|r| !String::from_utf8_lossy(&r.content).contains("poison pill")),
        "the poison message was never delivered"
    );
}
