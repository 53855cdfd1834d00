//! Several listeners, IPv4 and IPv6, each with its own limits: both accept mail, each
//! advertises its own `SIZE` in EHLO and enforces it, and the queued envelope and
//! Received header record which listener and address family the mail came in on.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::common::{Listener, Setup, SmtpClient, simple_message, split_received};

/// Fails the test clearly when the machine has no IPv6 loopback.
fn require_ipv6_loopback() {
    let table = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("00000000000000000000000000000001")),
        "this machine has no IPv6 loopback (::1 missing from /proc/net/if_inet6); \
         the IPv6 listener test needs it"
    );
}

fn size_advertised(ehlo: &crate::common::Reply) -> u64 {
    ehlo.lines
        .iter()
        .find_map(|l| l.strip_prefix("SIZE "))
        .unwrap_or_else(|| panic!("no SIZE in EHLO: {}", ehlo.text()))
        .parse()
        .unwrap()
}

fn message_of(len: usize) -> Vec<u8> {
    let mut m = b"Subject: sized\r\n\r\n".to_vec();
    while m.len() < len {
        m.extend_from_slice(&[b'x'; 78]);
        m.extend_from_slice(b"\r\n");
    }
    m
}

#[test]
fn ipv4_and_ipv6_listeners_accept_mail_with_their_own_limits() {
    require_ipv6_loopback();
    let tern = Setup::new()
        .listeners(vec![
            Listener::new("v4", IpAddr::V4(Ipv4Addr::LOCALHOST)).with("max_message_size = 100000"),
            Listener::new("v6", IpAddr::V6(Ipv6Addr::LOCALHOST)).with("max_message_size = 200000"),
        ])
        .start();
    let (v4, v6) = (tern.addr_of("v4"), tern.addr_of("v6"));
    assert!(v6.is_ipv6());

    let mut c4 = SmtpClient::connect(v4).unwrap();
    let ehlo4 = c4.hello("v4.client.test");
    let mut c6 = SmtpClient::connect(v6).unwrap();
    let ehlo6 = c6.hello("v6.client.test");
    assert_eq!(size_advertised(&ehlo4), 100_000);
    assert_eq!(size_advertised(&ehlo6), 200_000);

    let small = simple_message("small", "fits everywhere");
    let id4 = c4
        .send_message("a@client.test", &["four@localhost"], &small)
        .unwrap()
        .queued_id()
        .expect("queued on v4");
    let id6 = c6
        .send_message("a@client.test", &["six@localhost"], &small)
        .unwrap()
        .queued_id()
        .expect("queued on v6");

    // 150 kB: over the v4 limit, under the v6 one.
    let medium = message_of(150_000);
    let declared = c4.command("MAIL FROM:<a@client.test> SIZE=150000").unwrap();
    assert_eq!(
        declared.code,
        552,
        "SIZE over the v4 limit: {}",
        declared.text()
    );
    let undeclared = c4
        .send_message("a@client.test", &["four@localhost"], &medium)
        .unwrap();
    assert_eq!(undeclared.code, 552, "{}", undeclared.text());
    assert!(
        undeclared.lines[0].starts_with("5.3.4"),
        "{}",
        undeclared.text()
    );
    let id6_medium = c6
        .send_message("a@client.test", &["six@localhost"], &medium)
        .unwrap()
        .queued_id()
        .expect("150 kB fits the v6 limit");

    let spooled = tern.spooled();
    assert_eq!(spooled.len(), 3);
    let find = |id: &str| {
        spooled
            .iter()
            .find(|(m, _)| m.id.to_string() == id)
            .unwrap()
    };
    let (m4, s4) = find(&id4);
    let env4 = m4.envelope.as_ref().unwrap();
    assert_eq!(env4.client.listener, "v4");
    assert!(
        env4.client.address.starts_with("127.0.0.1:"),
        "{}",
        env4.client.address
    );
    assert!(
        split_received(&s4.body)
            .0
            .contains("(localhost [127.0.0.1])")
    );
    for id in [&id6, &id6_medium] {
        let (m6, s6) = find(id);
        let env6 = m6.envelope.as_ref().unwrap();
        assert_eq!(env6.client.listener, "v6");
        assert!(
            env6.client.address.starts_with("[::1]:"),
            "{}",
            env6.client.address
        );
        let (received, rest) = split_received(&s6.body);
        assert!(received.contains("(localhost [IPv6:::1])"), "{received}");
        if id == &id6_medium {
            assert_eq!(rest, medium.as_slice());
        }
    }
}
