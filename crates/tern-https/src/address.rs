//! The private-address guard (sans-I/O): which resolved addresses a request must not
//! connect to unless its caller allows them ([`ClientConfig::allow_private_addresses`]).
//!
//! The host of an MTA-STS policy (`mta-sts.<domain>`) or of a TLS-RPT `https:` report is
//! named by whoever controls the destination's DNS. Without this guard a hostile domain
//! could make Tern send requests to its own loopback, its LAN or a cloud metadata service
//! (169.254.169.254). The list is RFC 6890's special-purpose registries, kept to the
//! ranges that are not globally reachable unicast:
//!
//! | range | what |
//! | --- | --- |
//! | `0.0.0.0/8` | "this network", with the unspecified `0.0.0.0` (RFC 791, RFC 6890) |
//! | `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16` | private (RFC 1918) |
//! | `100.64.0.0/10` | shared address space, carrier-grade NAT (RFC 6598) |
//! | `127.0.0.0/8` | loopback |
//! | `169.254.0.0/16` | link-local (with cloud metadata services) (RFC 3927) |
//! | `192.0.0.0/24` | IETF protocol assignments (RFC 6890) |
//! | `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24` | documentation (RFC 5737) |
//! | `192.88.99.0/24` | 6to4 relay anycast, deprecated (RFC 7526) |
//! | `198.18.0.0/15` | benchmarking (RFC 2544) |
//! | `224.0.0.0/4` | multicast |
//! | `240.0.0.0/4` | reserved, with the broadcast `255.255.255.255` |
//! | `::/128`, `::1/128` | unspecified, loopback |
//! | `::/96` (other addresses) | IPv4-compatible, deprecated (RFC 4291) |
//! | `::ffff:0:0/96` | IPv4-mapped: judged as the IPv4 address it carries |
//! | `64:ff9b::/96` | NAT64 well-known prefix: judged as the IPv4 address it carries (RFC 6052) |
//! | `64:ff9b:1::/48` | NAT64 local-use prefix (RFC 8215) |
//! | `100::/64` | discard-only (RFC 6666) |
//! | `2001:db8::/32`, `3fff::/20` | documentation (RFC 3849, RFC 9637) |
//! | `2002::/16` | 6to4: judged as the IPv4 address it carries (RFC 3056) |
//! | `fc00::/7` | unique local (RFC 4193) |
//! | `fe80::/10` | link-local |
//! | `fec0::/10` | site-local, deprecated (RFC 3879) |
//! | `ff00::/8` | multicast |
//!
//! Invariant: the addresses judged are exactly the ones the client connects to (it
//! resolves once, filters, then connects to what is left), so an answer that changes
//! between two lookups (DNS rebinding) cannot slip an address past the guard.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why `ip` is not a public unicast address, or `None` when it is one.
pub fn forbidden_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_range(v4),
        IpAddr::V6(v6) => v6_range(v6),
    }
}

fn v4_range(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "this network (0.0.0.0/8)",
        (10, _, _) => "private (10.0.0.0/8)",
        (172, 16..=31, _) => "private (172.16.0.0/12)",
        (192, 168, _) => "private (192.168.0.0/16)",
        (100, 64..=127, _) => "shared address space (100.64.0.0/10)",
        (127, _, _) => "loopback (127.0.0.0/8)",
        (169, 254, _) => "link-local (169.254.0.0/16)",
        (192, 0, 0) => "IETF protocol assignments (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation (RFC 5737)",
        (192, 88, 99) => "6to4 relay anycast (192.88.99.0/24)",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (224..=239, _, _) => "multicast (224.0.0.0/4)",
        (240..=255, _, _) => "reserved (240.0.0.0/4)",
        _ => return None,
    })
}

fn v6_range(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified (::)");
    }
    if ip.is_loopback() {
        return Some("loopback (::1)");
    }
    // ::ffff:a.b.c.d
    if s[..5] == [0, 0, 0, 0, 0] && s[5] == 0xffff {
        return v4_range(embedded_v4(s[6], s[7])).map(|_| "IPv4-mapped non-public address");
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] {
        return Some("IPv4-compatible (::/96)");
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4_range(embedded_v4(s[6], s[7])).map(|_| "NAT64 of a non-public address");
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        return Some("NAT64 local use (64:ff9b:1::/48)");
    }
    if s[..4] == [0x100, 0, 0, 0] {
        return Some("discard-only (100::/64)");
    }
    if s[0] == 0x2001 && s[1] == 0x0db8 {
        return Some("documentation (2001:db8::/32)");
    }
    if s[0] == 0x3fff && s[1] & 0xf000 == 0 {
        return Some("documentation (3fff::/20)");
    }
    if s[0] == 0x2002 {
        return v4_range(embedded_v4(s[1], s[2])).map(|_| "6to4 of a non-public address");
    }
    Some(match s[0] {
        x if x & 0xfe00 == 0xfc00 => "unique local (fc00::/7)",
        x if x & 0xffc0 == 0xfe80 => "link-local (fe80::/10)",
        x if x & 0xffc0 == 0xfec0 => "site-local (fec0::/10)",
        x if x & 0xff00 == 0xff00 => "multicast (ff00::/8)",
        _ => return None,
    })
}

fn embedded_v4(high: u16, low: u16) -> Ipv4Addr {
    let [a, b] = high.to_be_bytes();
    let [c, d] = low.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn judged(ip: &str) -> Option<&'static str> {
        forbidden_range(ip.parse().unwrap())
    }

    #[test]
    fn non_public_addresses_are_named() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.0.1.51",
            "169.254.169.254",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "192.88.99.1",
            "198.18.0.1",
            "198.19.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "64:ff9b::7f00:1",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "100::1",
            "2001:db8::1",
            "3fff::1",
            "2002:7f00:1::1",
            "2002:c0a8:101::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(judged(ip).is_some(), "{ip} must be refused");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "169.253.1.1",
            "192.0.1.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.255",
            "2a00:1450:4001::1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:db9::1",
            "3ffe::1",
            "3fff:1000::1",
            "fbff::1",
        ] {
            assert_eq!(judged(ip), None, "{ip} is public");
        }
    }
}
