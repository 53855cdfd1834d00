//! Helpers of the screening and greylisting scenarios (docs/SCREENING.md).
//!
//! The servers they describe accept mail for `example.test`, and only 127.0.0.1 (the
//! harness's own start probe) is a relay network: clients connect from other loopback
//! addresses (127.0.0.2 and up) to be screened.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::json;

use super::admin::Admin;
use super::peers::DnsServer;
use super::{Setup, SmtpClient, Tern};

/// The relay policy of every screening scenario.
pub const RELAY: &str = "[relay]\ndomains = [\"example.test\"]\nnetworks = [\"127.0.0.1/32\"]\n";

/// A server with `[screen] enabled = true` plus `keys`, and the relay policy above.
pub fn setup(keys: &str) -> Setup {
    Setup::new()
        .section(RELAY)
        .section(&format!("[screen]\nenabled = true\n{keys}\n"))
}

/// A client that has read its whole greeting.
pub struct Greeted {
    /// The client, ready for EHLO.
    pub client: SmtpClient,
    /// Every line of the greeting as sent (`220-...`, `220 ...`).
    pub lines: Vec<String>,
    /// Time from the connection to the final greeting line.
    pub waited: Duration,
}

/// Connects from `from` and reads the greeting to its final line.
pub fn greet(addr: SocketAddr, from: &str) -> Greeted {
    let source: IpAddr = from.parse().expect("source address");
    let started = Instant::now();
    let mut client = SmtpClient::connect_from(addr, source).expect("connect");
    let mut lines = Vec::new();
    loop {
        let line = client.read_line().expect("greeting line");
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line);
        if last {
            break;
        }
    }
    Greeted {
        client,
        lines,
        waited: started.elapsed(),
    }
}

/// EHLO, MAIL FROM `from`, RCPT TO `to`: the RCPT reply's code and text (panics when
/// EHLO or MAIL fail).
pub fn rcpt(client: &mut SmtpClient, from: &str, to: &str) -> (u16, String) {
    let r = client.command("EHLO client.test").expect("EHLO");
    assert_eq!(r.code, 250, "{}", r.text());
    let r = client
        .command(&format!("MAIL FROM:<{from}>"))
        .expect("MAIL");
    assert_eq!(r.code, 250, "{}", r.text());
    let r = client.command(&format!("RCPT TO:<{to}>")).expect("RCPT");
    (r.code, r.text())
}

/// Publishes `answer` as the A record of `client` under `zone` (the reversed octets),
/// with a TTL of 300 s.
pub fn list(dns: &mut DnsServer, client: &str, zone: &str, answer: &str) {
    let ip: std::net::Ipv4Addr = client.parse().expect("an IPv4 client");
    let [a, b, c, d] = ip.octets();
    dns.set(
        &format!("{d}.{c}.{b}.{a}.{zone}"),
        json!({"A": [{"addr": answer, "ttl": 300}]}),
    );
}

/// The value of `series` in a `/metrics` scrape (0 when absent).
pub fn metric(tern: &Tern, series: &str) -> f64 {
    let a = Admin::of(tern).get("/metrics");
    assert_eq!(a.status, 200, "{a:?}");
    a.body
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}
