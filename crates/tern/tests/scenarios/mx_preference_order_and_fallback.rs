//! MX hosts are tried in preference order: the best host gets the mail while it works;
//! when it fails in any way (refused, hangs, 421 greeting, 4xx to MAIL, drops the
//! connection), the next host by preference gets it.

use std::time::Duration;

use crate::common::peers::{DnsServer, SmtpPeer, delivering};
use crate::common::{free_port, send_one, simple_message};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn the_best_mx_gets_the_mail_and_each_kind_of_failure_moves_on_to_the_next() {
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    dns.set_mx(
        "example.test",
        &[(20, "mx2.example.test"), (10, "mx1.example.test")],
        300,
    );
    dns.set_a("mx1.example.test", "127.0.0.2".parse().unwrap(), 300);
    dns.set_a("mx2.example.test", "127.0.0.3".parse().unwrap(), 300);
    let mut best = SmtpPeer::start_on("127.0.0.2", port, &["accept"]);
    let backup = SmtpPeer::start_on("127.0.0.3", port, &["accept"]);
    let tern = delivering(&dns, port, "").start();

    let m = simple_message("one", "to the best host");
    send_one(tern.addr(), "s@client.test", &["a@example.test"], &m);
    let got = best.wait_for(1, Duration::from_secs(20));
    assert_eq!(got[0].rcpts(), vec!["a@example.test".to_string()]);
    assert_eq!(got[0].mail_from(), "s@client.test");
    assert!(got[0].content.ends_with(&m), "content arrives intact");
    assert!(backup.received().is_empty(), "the backup got nothing");

    // Each way the best host can fail: the next message goes to the backup.
    let failures: &[Option<&str>] = &[
        None, // stopped: connection refused
        Some("hang"),
        Some("greet421"),
        Some("tempfail-mail"),
        Some("drop-mid-data"),
    ];
    for (n, failure) in failures.iter().enumerate() {
        match failure {
            None => best.stop(),
            Some(b) => best.restart(&[b]),
        }
        let before = backup.received().len();
        send_one(
            tern.addr(),
            "s@client.test",
            &["b@example.test"],
            &simple_message(&format!("failure {n}"), "to the backup"),
        );
        let got = backup.wait_for(before + 1, Duration::from_secs(30));
        assert_eq!(got.len(), before + 1, "{failure:?}");
    }
    // The failing host stored nothing more than the first message (a dropped transfer
    // is not a delivery), and every later message is at the backup exactly once.
    assert_eq!(best.received().len(), 1);
    assert_eq!(backup.received().len(), failures.len());
}
