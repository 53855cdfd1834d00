//! The seed failure "one corrupt queued message crashed the service at every start": a
//! message whose processing aborts the whole process (a fault injected by the test build,
//! `--features tern/fault-injection`) is poisoned after two crashes it caused, and mail
//! flows between them. The abort leaves a last gasp naming the message; the next start
//! counts that crash against it (event 4011, evidence `last_gasp`) and holds it as a
//! suspect while new mail is delivered; its probe aborts Tern again, and the start after
//! that poisons it (event 4012). It is never tried again.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use crate::common::peers::{DnsServer, SmtpPeer};
use crate::common::{Setup, send_one, simple_message};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn a_message_that_crashes_tern_is_poisoned_and_the_rest_flows() {
    let dns = DnsServer::start();
    let relay = SmtpPeer::start("127.0.0.3", &["accept"]);
    let mut tern = Setup::new()
        .dns(&dns.dns_section())
        .queue(
            "[queue]\ndeliver = true\nmin_backoff_secs = 1\npoison_threshold = 2\nprobe_delay_secs = 4\n",
        )
        .section(&format!(
            "[[route]]\ndomains = [\"relay.test\"]\ntransport = \"smtp\"\nhosts = [\"{}\"]\n",
            relay.addr
        ))
        .env("TERN_FAULT_ABORT_ON", "Subject: poison pill")
        .start();
    let good = |tern: &crate::common::Tern, n: &str| {
        send_one(
            tern.addr(),
            "s@client.test",
            &["r@relay.test"],
            &simple_message(&format!("good {n}"), "fine"),
        )
    };

    for n in 0..5 {
        good(&tern, &n.to_string());
    }
    relay.wait_for(5, Duration::from_secs(20));
    let pill = send_one(
        tern.addr(),
        "s@client.test",
        &["r@relay.test"],
        &simple_message("poison pill", "this one kills the process"),
    );
    let first = tern.wait_exit(Duration::from_secs(20)).unwrap_or_else(|| {
        panic!("tern did not crash on the poison message: was it built with --features tern/fault-injection? (scripts/test.sh does that)")
    });
    assert_eq!(first.signal(), Some(libc::SIGABRT), "{first:?}");
    assert!(
        tern.log().contains("last gasp"),
        "the handler reported the signal"
    );

    // Second run: the last gasp named the pill, so one crash is counted against it, and
    // it waits as a suspect while the rest flows.
    tern.restart();
    let counted = tern.wait_for_events(4011, 1, Duration::from_secs(20));
    assert_eq!(counted[0]["queue_id"], pill.as_str());
    assert_eq!(counted[0]["evidence"], "last_gasp");
    assert_eq!(counted[0]["crashes"], "1");
    let after = tern.wait_for_events(4015, 1, Duration::from_secs(20));
    assert_eq!(after[0]["evidence"], "last_gasp");
    assert_eq!(after[0]["signal"], libc::SIGABRT.to_string());
    for n in 0..3 {
        good(&tern, &format!("between {n}"));
    }
    relay.wait_for(8, Duration::from_secs(20));
    assert!(
        tern.is_running(),
        "mail was delivered between the two crashes"
    );
    // Its probe (after probe_delay_secs) aborts the process again.
    let second = tern
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the probe of the pill did not crash tern\n{}", tern.log()));
    assert!(!second.success(), "{second:?}");
    let probed = tern.events_with_id(4016);
    assert_eq!(probed.last().unwrap()["queue_ids"], pill.as_str());
    assert_eq!(probed.last().unwrap()["group"], "1", "probed alone");

    // Third run: two crashes caused by it: poisoned before anything else; Tern keeps
    // running.
    tern.restart();
    let poisoned = tern.wait_for_events(4012, 1, Duration::from_secs(20));
    assert_eq!(poisoned[0]["queue_id"], pill.as_str());
    assert_eq!(poisoned[0]["crashes"], "2");
    let counted = tern.events_with_id(4011);
    assert_eq!(counted.len(), 2, "one crash counted per death: {counted:?}");
    assert_eq!(counted[1]["evidence"], "last_gasp");

    // The rest flows: new mail is delivered while the poison message waits.
    good(&tern, "after");
    relay.wait_for(9, Duration::from_secs(20));
    assert!(tern.is_running(), "no further crash");
    let poison = tern.queue_json(&["--state", "poison"]);
    assert_eq!(poison.len(), 1, "{poison:?}");
    assert_eq!(poison[0]["id"], pill.as_str());
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
    assert_eq!(
        tern.events_with_id(4015).len(),
        2,
        "two starts after a crash"
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
