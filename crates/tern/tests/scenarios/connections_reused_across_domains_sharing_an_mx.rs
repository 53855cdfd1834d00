//! Connections are reused across next hops: 40 domains whose MX records all lead to one
//! host and address (as every Google Workspace domain leads to Google's MX hosts) get
//! their 80 messages over far fewer connections than there are domains, counted at the
//! peer. Each domain is its own next hop (and destination); the connection cache looks
//! connections up by endpoint, so a worker for one domain takes the connection another
//! domain's worker left idle. The TLS policy is part of the endpoint: a domain routed
//! with `tls = "none"` to the same host does not take the connections made under the
//! default `may`.

use std::time::Duration;

use crate::common::peers::{DnsServer, SmtpPeer, delivering_with};
use crate::common::{free_port, send_batch, simple_message};

const DOMAINS: usize = 40;

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn forty_domains_on_one_mx_host_share_a_few_connections() {
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    dns.set_a("mx.shared.test", "127.0.0.2".parse().unwrap(), 300);
    for d in 0..DOMAINS {
        dns.set_mx(&format!("d{d}.test"), &[(10, "mx.shared.test")], 300);
    }
    dns.set_mx("plain.test", &[(10, "mx.shared.test")], 300);
    let peer = SmtpPeer::start_on("127.0.0.2", port, &["accept"]);
    let plain = format!(
        "[[route]]\ndomains = [\"plain.test\"]\ntransport = \"mx\"\nport = {port}\ntls = \"none\"\n"
    );
    let tern = delivering_with(&dns, port, "connection_cache_idle_secs = 30\n", &plain)
        .queue("[queue]\ndeliver = true\nmax_concurrency = 4\nmin_backoff_secs = 1\nmax_backoff_secs = 2\n")
        .start();

    let messages: Vec<(String, Vec<u8>)> = (0..2 * DOMAINS)
        .map(|n| {
            (
                format!("r{n}@d{}.test", n % DOMAINS),
                simple_message(&format!("m{n}"), "shared mx"),
            )
        })
        .collect();
    send_batch(tern.addr(), 4, &messages);
    let got = peer.wait_for(2 * DOMAINS, Duration::from_secs(60));
    assert_eq!(got.len(), 2 * DOMAINS, "no duplicates");
    let (max_open, total) = peer.connections();
    assert!(
        max_open <= 4,
        "queue.max_concurrency = 4, saw {max_open} at once"
    );
    // Without reuse across next hops every domain needs a connection of its own (40 at
    // least); with it, the few connections the 4 slots opened carry everything.
    assert!(
        total <= 12,
        "{total} connections for {DOMAINS} domains sharing one MX host"
    );

    // Idle connections made under `may` wait in the cache (idle time 30 s), but a job
    // under `none` needs a connection of its own.
    crate::common::send_one(
        tern.addr(),
        "s@client.test",
        &["r@plain.test"],
        &simple_message("plain", "tls none"),
    );
    peer.wait_for(2 * DOMAINS + 1, Duration::from_secs(30));
    assert_eq!(
        peer.connections().1,
        total + 1,
        "not shared across TLS policies"
    );
}
