//! What the seeds' administrators did by hand (stop the service, move files, bisect the
//! queue) is one command each: `tern queue release` takes a message out of the poison or
//! hold queue (crash count reset, tried at once) and `tern queue delete` removes one, with
//! the server running (through its admin API) or stopped (directly on the spool). A
//! poisoned message can also be resubmitted, which is refused for mail that is not poisoned.

use std::time::Duration;

use crate::common::peers::{DnsServer, SmtpPeer};
use crate::common::{Setup, run, send_one, simple_message};

const MARKER: &str = "X-Fault: panic-marker";
const FAULT: &str = "TERN_FAULT_PANIC_ON";

fn bad_message(n: u32) -> Vec<u8> {
    format!("From: <s@client.test>\r\n{MARKER}\r\nSubject: bad {n}\r\n\r\nboom\r\n").into_bytes()
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn release_and_delete_with_the_server_running_or_stopped() {
    let dns = DnsServer::start();
    let relay = SmtpPeer::start("127.0.0.3", &["accept"]);
    let relay_route = format!(
        "[[route]]\ndomains = [\"relay.test\", \"client.test\"]\ntransport = \"smtp\"\nhosts = [\"{}\"]\n",
        relay.addr
    );
    let mut tern = Setup::new()
        .dns(&dns.dns_section())
        .queue("[queue]\ndeliver = true\nmin_backoff_secs = 1\nmax_backoff_secs = 1\npoison_threshold = 2\n")
        .section(&format!(
            "{relay_route}\n[[route]]\ndomains = [\"hold.test\"]\ntransport = \"hold\"\n"
        ))
        .env(FAULT, &format!("load:{MARKER}"))
        .start();
    let cli = |tern: &crate::common::Tern, args: &[&str]| {
        let out = run(&mut tern.tern_command(args), Duration::from_secs(30));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };

    // A poisoned message and a held one.
    let bad = send_one(
        tern.addr(),
        "s@client.test",
        &["r@relay.test"],
        &bad_message(1),
    );
    tern.wait_for_events(4012, 1, Duration::from_secs(30));
    let held = send_one(
        tern.addr(),
        "s@client.test",
        &["h@hold.test"],
        &simple_message("held", "wait"),
    );
    tern.wait_for_events(4009, 1, Duration::from_secs(30));

    // Resubmit applies to poisoned mail only.
    let (ok, text) = cli(&tern, &["queue", "resubmit", &held]);
    assert!(!ok, "{text}");
    assert!(text.contains("cannot resubmit"), "{text}");

    // Server running: release the poisoned one. The queue takes it at once (event 7004, through the admin API)
    // with its count reset, so it takes two more failures to poison it again.
    let (ok, text) = cli(&tern, &["queue", "release", &bad]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("{bad}: released from poison")),
        "{text}"
    );
    let released = tern.wait_for_events(7004, 1, Duration::from_secs(20));
    assert_eq!(released[0]["queue_id"], bad.as_str());
    let again = tern.wait_for_events(4012, 2, Duration::from_secs(30));
    assert_eq!(again[1]["queue_id"], bad.as_str());
    assert_eq!(
        tern.events_with_id(4013).len(),
        4,
        "2 failures, release, 2 failures"
    );

    // Server running: the operator routes hold.test for real, reloads, releases.
    let cfg = tern.config_path.clone().unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap();
    let rerouted = text.replace(
        "domains = [\"hold.test\"]\ntransport = \"hold\"",
        &format!(
            "domains = [\"hold.test\"]\ntransport = \"smtp\"\nhosts = [\"{}\"]",
            relay.addr
        ),
    );
    assert_ne!(text, rerouted);
    std::fs::write(&cfg, rerouted).unwrap();
    let (ok, text) = cli(&tern, &["reload"]);
    assert!(ok, "{text}");
    tern.wait_for_events(1007, 1, Duration::from_secs(20));
    let (ok, text) = cli(&tern, &["queue", "release", &held]);
    assert!(ok, "{text}");
    assert!(text.contains("released from hold"), "{text}");
    let got = relay.wait_for(1, Duration::from_secs(20));
    assert!(
        got.iter().any(|r| r.rcpts() == ["h@hold.test"]),
        "held mail delivered"
    );

    // Server running: delete the poisoned one; nothing can be released or deleted twice.
    let (ok, text) = cli(&tern, &["queue", "delete", &bad]);
    assert!(ok, "{text}");
    assert!(text.contains("deleted from poison"), "{text}");
    assert!(tern.queue_json(&["--state", "poison"]).is_empty());
    assert!(
        !tern.spool_dir().join("records").join(&bad).exists(),
        "its record went with it"
    );
    let (ok, text) = cli(&tern, &["queue", "delete", &bad]);
    assert!(!ok, "{text}");
    assert!(text.contains("not found"), "{text}");
    let (ok, text) = cli(&tern, &["queue", "release", "not-a-queue-id"]);
    assert!(!ok, "{text}");
    assert!(text.contains("is not a queue id"), "{text}");

    // Server stopped: poison another, fix the fault, release directly, start: delivered.
    let bad2 = send_one(
        tern.addr(),
        "s@client.test",
        &["r@relay.test"],
        &bad_message(2),
    );
    tern.wait_for_events(4012, 3, Duration::from_secs(30));
    tern.stop(Duration::from_secs(20));
    let (ok, text) = cli(&tern, &["queue", "release", &bad2]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("{bad2}: released from poison")),
        "{text}"
    );
    assert_eq!(tern.queue_json(&["--state", "deferred"]).len(), 1);
    tern.unset_env(FAULT);
    tern.restart();
    let got = relay.wait_for(2, Duration::from_secs(20));
    assert!(
        got.iter()
            .any(|r| String::from_utf8_lossy(&r.content).contains("Subject: bad 2")),
        "released message delivered after the restart"
    );
    tern.stop(Duration::from_secs(20));
    assert!(
        tern.queue_json(&[]).is_empty(),
        "{:?}",
        tern.queue_json(&[])
    );
}
