//! An administrator's bounce is sent exactly once even when Tern dies in the middle of
//! it: the process is aborted after the failures were written to the delivery record and
//! before the bounce was queued; at the next start the queue finds the failed recipients
//! that were never reported, sends the one bounce and removes the message.

use std::time::{Duration, Instant};

use crate::common::peers::{DnsServer, SmtpPeer};
use crate::common::{Setup, run, send_one};

const MARKER: &str = "X-Fault: admin-crash";
const FAULT: &str = "TERN_FAULT_ABORT_AT";

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn admin_bounce_survives_a_crash_and_is_sent_once() {
    let dns = DnsServer::start();
    let peer = SmtpPeer::start("127.0.0.3", &["tempfail-rcpt=defer"]);
    let mut tern = Setup::new()
        .dns(&dns.dns_section())
        .queue("[queue]\ndeliver = true\nmin_backoff_secs = 3600\nmax_backoff_secs = 3600\n")
        .section(&format!(
            "[[route]]\ndomains = [\"defer.test\", \"client.test\"]\ntransport = \"smtp\"\nhosts = [\"{}\"]\n",
            peer.addr
        ))
        .env(FAULT, &format!("admin-bounce:{MARKER}"))
        .start();
    let content = format!("From: <s@client.test>\r\n{MARKER}\r\nSubject: doomed\r\n\r\nx\r\n");
    let id = send_one(
        tern.addr(),
        "s@client.test",
        &["a@defer.test", "b@defer.test"],
        content.as_bytes(),
    );
    tern.wait_for_events(4002, 1, Duration::from_secs(30));

    // The bounce kills the server half way.
    let out = run(
        &mut tern.tern_command(&["queue", "bounce", &id]),
        Duration::from_secs(30),
    );
    assert!(!out.status.success(), "the server died under the request");
    let status = tern
        .wait_exit(Duration::from_secs(20))
        .expect("tern aborted");
    assert!(!status.success());
    assert!(peer.received().is_empty(), "no bounce yet");
    let left = tern.queue_json(&[]);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["state"], "deferred");
    assert_eq!(
        left[0]["recipients"][0]["status"]["state"], "failed",
        "{left:?}"
    );

    // Started again: the unreported failures are bounced once, the message goes.
    tern.unset_env(FAULT);
    tern.restart();
    let got = peer.wait_for(1, Duration::from_secs(30));
    assert_eq!(got[0].rcpts(), ["s@client.test"]);
    let text = String::from_utf8_lossy(&got[0].content);
    assert!(text.contains("bounced by the administrator"), "{text}");
    assert!(
        text.contains("a@defer.test") && text.contains("b@defer.test"),
        "{text}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !tern.queue_json(&[]).is_empty() {
        assert!(Instant::now() < deadline, "{:?}", tern.queue_json(&[]));
        std::thread::sleep(Duration::from_millis(50));
    }
    tern.stop(Duration::from_secs(20));
    assert_eq!(peer.received().len(), 1, "one bounce, not two");
    assert_eq!(tern.events_with_id(4004).len(), 1);
}
