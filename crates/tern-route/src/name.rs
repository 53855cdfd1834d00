//! Domain names and address literals as routing sees them.
//!
//! Purpose: one place that decides how a domain is normalised (ASCII lowercase, one
//! trailing dot removed), what a syntactically valid domain is, and how an RFC 5321
//! address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`) is parsed and written.
//!
//! Invariants: [`normalize`] is idempotent; [`canonical_literal`] output parses back with
//! [`parse_address_literal`] to the same address, and is lowercase (so next-hop keys built
//! from it are stable whatever case the sender used).
//!
//! Trust: inputs come from envelopes (remote peers), DNS answers and the configuration
//! file; nothing here panics or allocates more than a copy of its input.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv6Addr};

/// Longest domain name in presentation form without the trailing dot (RFC 1035 §2.3.4).
pub(crate) const MAX_DOMAIN_LEN: usize = 253;
/// Longest label (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// Lowercases (ASCII) and removes one trailing dot; borrows when nothing changes.
///
/// Address literals are rewritten to their canonical form so `[IPv6:2001:DB8::1]` and
/// `[ipv6:2001:db8:0::1]` name the same destination.
pub(crate) fn normalize(domain: &str) -> Cow<'_, str> {
    let trimmed = domain.strip_suffix('.').unwrap_or(domain);
    if trimmed.starts_with('[')
        && let Some(ip) = parse_address_literal(trimmed)
    {
        return Cow::Owned(canonical_literal(ip));
    }
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        Cow::Borrowed(trimmed)
    }
}

/// Parses an RFC 5321 §4.1.3 address literal: `[1.2.3.4]` or `[IPv6:...]` (tag
/// case-insensitive). Returns `None` for anything else, including a bare IPv6 address in
/// brackets without the `IPv6:` tag, which RFC 5321 does not allow.
pub fn parse_address_literal(text: &str) -> Option<IpAddr> {
    let inner = text.strip_prefix('[')?.strip_suffix(']')?;
    match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("ipv6:") => {
            inner.get(5..)?.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        }
        _ => inner.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

/// Writes an address as a lowercase address literal: `[192.0.2.1]`, `[ipv6:2001:db8::1]`.
pub(crate) fn canonical_literal(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => format!("[ipv6:{v6}]"),
    }
}

/// Checks the syntax of a normalised (lowercase, no trailing dot) host name: labels of
/// letters, digits and inner hyphens, 1 to 63 octets each, 253 octets in all. Returns a
/// sentence saying what is wrong.
pub(crate) fn check_domain(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the domain is empty");
    }
    if name.len() > MAX_DOMAIN_LEN {
        return Err("the domain is longer than 253 characters");
    }
    if !name.is_ascii() {
        return Err("the domain is not ASCII; write internationalised names as A-labels (xn--...)");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("the domain has an empty label");
        }
        if label.len() > MAX_LABEL_LEN {
            return Err("a label of the domain is longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("the domain may hold only letters, digits, hyphens and dots");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label of the domain starts or ends with a hyphen");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_lowercases_and_strips_one_dot() {
        assert_eq!(normalize("Example.COM."), "example.com");
        assert_eq!(normalize("example.com"), "example.com");
        assert!(matches!(normalize("example.com"), Cow::Borrowed(_)));
        assert_eq!(normalize("[IPv6:2001:DB8:0::1]"), "[ipv6:2001:db8::1]");
        assert_eq!(normalize("[192.0.2.1]"), "[192.0.2.1]");
        assert_eq!(normalize("[bogus]"), "[bogus]");
    }

    #[test]
    fn literals_parse_and_round_trip() {
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(parse_address_literal("[192.0.2.1]"), Some(v4));
        assert_eq!(parse_address_literal("[IPv6:2001:db8::1]"), Some(v6));
        assert_eq!(parse_address_literal("[2001:db8::1]"), None);
        assert_eq!(parse_address_literal("192.0.2.1"), None);
        assert_eq!(parse_address_literal("[IPv6:192.0.2.1]"), None);
        assert_eq!(parse_address_literal("["), None);
        for ip in [v4, v6] {
            assert_eq!(parse_address_literal(&canonical_literal(ip)), Some(ip));
        }
    }

    #[test]
    fn domain_syntax() {
        assert!(check_domain("example.com").is_ok());
        assert!(check_domain("localhost").is_ok());
        assert!(check_domain("a-b.c1").is_ok());
        for bad in [
            "",
            "a..b",
            "-a.com",
            "a-.com",
            "a_b.com",
            "exa mple.com",
            "é.com",
        ] {
            assert!(check_domain(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_domain(&"a".repeat(64)).is_err());
        assert!(check_domain(&["a"; 128].join(".")).is_err());
    }
}
