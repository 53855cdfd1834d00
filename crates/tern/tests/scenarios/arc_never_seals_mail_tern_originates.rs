//! Only forwarded mail is sealed. The same message, relayed for a client inside the
//! relay networks and submitted locally (`tern sendmail`, the pickup directory), leaves
//! without an ARC set and without event 4114 (it is not a failure: such mail is
//! DKIM-signed instead when [dkim] says so); a client outside the relay networks
//! sending it gets it sealed (so the check can fail).

use std::time::Duration;

use crate::common::arc::{section, top_seal};
use crate::common::connectors::{assert_ok, sendmail};
use crate::common::dkim::generate;
use crate::common::peers::{SmtpPeer, send_with};
use crate::common::{Listener, Setup};

fn message(case: &str) -> Vec<u8> {
    format!("X-Case: {case}\r\nFrom: <s@ours.test>\r\nTo: <a@dest.test>\r\nSubject: {case}\r\n\r\nbody\r\n")
        .into_bytes()
}

fn case_of(content: &[u8]) -> String {
    String::from_utf8_lossy(content)
        .lines()
        .find_map(|l| l.strip_prefix("X-Case: ").map(str::to_string))
        .unwrap_or_default()
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn relay_networks_and_local_submission_are_not_sealed() {
    let keys = tempfile::tempdir().unwrap();
    let key = generate(keys.path(), "forward.test", "arc", "rsa");
    let sink = SmtpPeer::start("127.0.0.3", &[]);
    // Two listeners: 127.0.0.1 is in the relay networks, 127.0.0.4 is reached from
    // 127.0.0.4, which is not.
    let tern = Setup::new()
        .listeners(vec![
            Listener::new("smtp", "127.0.0.1".parse().unwrap()),
            Listener::new("mx", "127.0.0.4".parse().unwrap()),
        ])
        .queue("[queue]\ndeliver = true\nmin_backoff_secs = 1\nmax_backoff_secs = 2\n")
        .section("[relay]\ndomains = [\"dest.test\"]\nnetworks = [\"127.0.0.1/32\"]\n")
        .section(&format!(
            "[[route]]\ndomains = [\"dest.test\"]\ntransport = \"smtp\"\nhosts = [\"{}\"]\ntls = \"none\"\n",
            sink.addr
        ))
        .section(&section(&key, ""))
        .start();
    send_with(
        tern.addr_of("smtp"),
        "MAIL FROM:<s@ours.test>",
        &["RCPT TO:<a@dest.test>"],
        &message("relay-network"),
    );
    let out = sendmail(
        &tern,
        &["-f", "s@ours.test", "a@dest.test"],
        &message("local"),
    );
    assert_ok(&out, "sendmail");
    let mut c =
        crate::common::SmtpClient::connect_from(tern.addr_of("mx"), "127.0.0.4".parse().unwrap())
            .unwrap();
    c.hello("outside.test");
    assert_eq!(c.command("MAIL FROM:<s@ours.test>").unwrap().code, 250);
    assert_eq!(c.command("RCPT TO:<a@dest.test>").unwrap().code, 250);
    assert_eq!(c.command("DATA").unwrap().code, 354);
    c.write_raw(&crate::common::dot_stuff(&message("outside")))
        .unwrap();
    assert_eq!(c.read_reply().unwrap().code, 250);
    let _ = c.command("QUIT");

    let got = sink.wait_for(3, Duration::from_secs(30));
    assert_eq!(got.len(), 3);
    for r in &got {
        let case = case_of(&r.content);
        match case.as_str() {
            "relay-network" | "local" => assert_eq!(
                top_seal(&r.content),
                None,
                "{case} was sealed: {}",
                String::from_utf8_lossy(&r.content)
            ),
            "outside" => assert_eq!(top_seal(&r.content), Some((1, "none".to_string()))),
            other => panic!("unknown case {other}"),
        }
    }
    tern.wait_for_events(4113, 1, Duration::from_secs(10));
    assert!(
        tern.events_with_id(4114).is_empty(),
        "{:?}",
        tern.events_with_id(4114)
    );
}
