//! MTA-STS `enforce` (RFC 8461 §5): the domain's policy, fetched over HTTPS from a test
//! CA's server, lets mail go only to MX hosts its `mx` patterns list, under `verify`.
//! - d1: its only MX is listed → delivered over TLS;
//! - d2: its only MX is not listed → never connected to (the peer sees no connection),
//!   deferred 4.7.5, event 4181 naming MTA-STS;
//! - d3: an unlisted MX preferred over a listed one → the listed one gets the mail;
//! - d4: a listed MX whose certificate expired → deferred (certificate-expired), never
//!   sent there.
//!
//! The policy is fetched once per domain (event 4151) and cached in the data directory.

use std::time::Duration;

use crate::common::mtasts::{PolicyServer, TestCa, policy, publish};
use crate::common::peers::{DnsServer, SmtpPeer, delivering_with};
use crate::common::{free_port, send_one, simple_message};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn enforce_sends_only_to_listed_hosts_with_valid_certificates() {
    let ca = TestCa::new();
    let mut dns = DnsServer::start();
    let sts_ip = "127.0.1.51";
    let domains = ["d1.test", "d2.test", "d3.test", "d4.test"];
    let server = PolicyServer::start(
        sts_ip,
        &ca,
        &domains,
        &policy("enforce", &["mx1.sts.test", "*.old.sts.test"], 86400),
    );
    for d in domains {
        publish(&mut dns, d, "20261207", sts_ip.parse().unwrap());
    }
    let port = free_port("127.0.1.52".parse().unwrap());
    let (cert, key) = ca.leaf(&["mx1.sts.test"], false);
    let listed = SmtpPeer::start_on_with_tls("127.0.1.52", port, &cert, &key);
    let (cert, key) = ca.leaf(&["rogue.sts.test"], false);
    let rogue = SmtpPeer::start_on_with_tls("127.0.1.53", port, &cert, &key);
    let (cert, key) = ca.leaf(&["mx.old.sts.test"], true);
    let expired = SmtpPeer::start_on_with_tls("127.0.1.54", port, &cert, &key);
    dns.set_a("mx1.sts.test", "127.0.1.52".parse().unwrap(), 300);
    dns.set_a("rogue.sts.test", "127.0.1.53".parse().unwrap(), 300);
    dns.set_a("mx.old.sts.test", "127.0.1.54".parse().unwrap(), 300);
    dns.set_mx("d1.test", &[(10, "mx1.sts.test")], 300);
    dns.set_mx("d2.test", &[(10, "rogue.sts.test")], 300);
    dns.set_mx(
        "d3.test",
        &[(5, "rogue.sts.test"), (10, "mx1.sts.test")],
        300,
    );
    dns.set_mx("d4.test", &[(10, "mx.old.sts.test")], 300);
    let tern = delivering_with(&dns, port, &ca.delivery_keys(), "")
        .section(&ca.mta_sts_section(5))
        .start();

    for (i, d) in domains.iter().enumerate() {
        send_one(
            tern.addr(),
            "s@client.test",
            &[&format!("u{i}@{d}")],
            &simple_message(d, "x"),
        );
    }
    let got = listed.wait_for(2, Duration::from_secs(30));
    let mut rcpts: Vec<String> = got.iter().flat_map(|r| r.rcpts()).collect();
    rcpts.sort();
    assert_eq!(rcpts, ["u0@d1.test", "u2@d3.test"]);
    for r in &got {
        assert!(
            r.meta["tls"]
                .as_str()
                .unwrap_or_default()
                .starts_with("TLSv1."),
            "{:?}",
            r.meta
        );
    }
    let deferred = tern.wait_for_events(4002, 2, Duration::from_secs(30));
    let reasons: Vec<String> = deferred.iter().map(|e| e["reason"].to_string()).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("4.7.5") && r.contains("does not list MX host rogue.sts.test")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("mx.old.sts.test") && r.contains("expired")),
        "{reasons:?}"
    );
    let refused = tern.wait_for_events(4181, 2, Duration::from_secs(10));
    assert!(
        refused
            .iter()
            .any(|e| e["reason"].to_string().contains("MTA-STS")),
        "{refused:?}"
    );
    assert_eq!(
        rogue.connections().1,
        0,
        "the unlisted MX was never connected to"
    );
    assert!(
        expired.received().is_empty(),
        "nothing sent to the expired certificate"
    );
    let fetched = tern.wait_for_events(4151, 4, Duration::from_secs(10));
    assert!(
        fetched.iter().all(|e| e["mode"] == "enforce"),
        "{fetched:?}"
    );
    assert_eq!(server.requests(), 4, "one fetch per domain");
    // Cached in the data directory, 0600.
    let file = tern
        .spool_dir()
        .parent()
        .unwrap()
        .join("mta-sts/d1.test.json");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", file.display());
}
