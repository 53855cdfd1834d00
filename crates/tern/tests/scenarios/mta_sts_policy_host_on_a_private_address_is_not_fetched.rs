//! The private-address guard (docs/SECURITY.md): a domain whose `mta-sts.<domain>`
//! resolves to a loopback address does not get Tern to send it a request. With
//! `[mta_sts] allow_private_addresses` at its default (false), the policy is not fetched
//! (event 4152, `sts-policy-fetch-error`, the address named), the server never sees a
//! request, and the mail goes out as the route says.

use std::time::Duration;

use crate::common::mtasts::{PolicyServer, TestCa, policy, publish};
use crate::common::peers::{DnsServer, SmtpPeer, delivering_with};
use crate::common::{free_port, send_one, simple_message, toml_str};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn policy_host_on_a_loopback_address_is_not_fetched() {
    let ca = TestCa::new();
    let mut dns = DnsServer::start();
    let sts_ip = "127.0.1.66";
    let server = PolicyServer::start(
        sts_ip,
        &ca,
        &["inside.test"],
        &policy("enforce", &["nowhere.test"], 86400),
    );
    publish(&mut dns, "inside.test", "1", sts_ip.parse().unwrap());
    let port = free_port("127.0.1.67".parse().unwrap());
    let peer = SmtpPeer::start_on("127.0.1.67", port, &["accept"]);
    dns.set_a("mx.inside.test", "127.0.1.67".parse().unwrap(), 300);
    dns.set_mx("inside.test", &[(10, "mx.inside.test")], 300);
    // The CA is trusted and the fetch bound short: only the guard stops the fetch.
    let section = format!(
        "[mta_sts]\nca_file = {}\nfetch_timeout_secs = 5\n",
        toml_str(&ca.ca_file.display().to_string())
    );
    let tern = delivering_with(&dns, port, &ca.delivery_keys(), "")
        .section(&section)
        .start();

    send_one(
        tern.addr(),
        "s@client.test",
        &["a@inside.test"],
        &simple_message("inside", "x"),
    );
    let failed = tern.wait_for_events(4152, 1, Duration::from_secs(20));
    assert_eq!(failed[0]["domain"], "inside.test", "{failed:?}");
    assert_eq!(failed[0]["result"], "sts-policy-fetch-error", "{failed:?}");
    let reason = failed[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("127.0.1.66") && reason.contains("loopback"),
        "{reason}"
    );
    // Delivered as the route says (the enforce policy was never seen).
    let got = peer.wait_for(1, Duration::from_secs(30));
    assert_eq!(got[0].rcpts(), ["a@inside.test"]);
    assert_eq!(server.requests(), 0, "no request reached the policy host");
    assert!(tern.events_with_id(4151).is_empty());
}
