//! Mailbox addresses as Tern judges them for relay control.
//!
//! `smtp-proto` has already checked the path syntax, removed source routes (RFC 5321
//! §4.1.2 lets a server ignore them; Tern discards them so they can never steer mail) and
//! removed the quoting of quoted local parts. [`Mailbox::parse`] splits what is left at
//! the last `@`, validates the domain, and re-quotes a local part that is not a dot-atom,
//! so the stored address means exactly what the client sent.
//!
//! Relay safety: [`Mailbox::routing_trick`] reports local parts that older mail systems
//! interpret as further routing (`user%other@local`, `host!user@local`, and a quoted
//! `"user@other"@local`). The session refuses those from clients outside the relay
//! networks (Postfix `allow_untrusted_routing = no`), so address syntax can never turn
//! into relaying.

use std::fmt;

/// Longest domain (RFC 1035) and local part (RFC 5321 §4.5.3.1.1) Tern accepts.
pub const MAX_DOMAIN_LEN: usize = 255;
/// Longest local part.
pub const MAX_LOCAL_LEN: usize = 64;

/// A validated `local@domain` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The local part as the client meant it (unquoted form).
    pub local: String,
    /// The domain, lower-cased, without a trailing dot.
    pub domain: String,
}

/// A local part that some mail systems treat as a route to another host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutingTrick {
    /// `user%host@domain` (the "percent hack").
    Percent,
    /// `host!user@domain` (UUCP bang path).
    Bang,
    /// `"user@host"@domain`: an `@` hidden in a quoted local part.
    QuotedAt,
}

/// Why an address is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// No `@`, or an empty local part or domain. Reply `501 5.1.3`.
    #[error("address is not of the form local@domain")]
    NotLocalAtDomain,
    /// The local part is longer than 64 octets. Reply `501 5.1.3`.
    #[error("local part is too long")]
    LocalTooLong,
    /// The domain is not a valid host name. Reply `501 5.1.2`.
    #[error("invalid domain {0:?}")]
    BadDomain(String),
    /// The address holds non-ASCII characters but the transaction did not declare
    /// SMTPUTF8. Reply `553 5.6.7`.
    #[error("non-ASCII address without SMTPUTF8")]
    NeedsSmtpUtf8,
    /// A control character. Reply `501 5.1.3`.
    #[error("control character in address")]
    ControlCharacter,
}

impl Mailbox {
    /// Parses an address as returned by `smtp-proto` (quotes removed, no angle brackets).
    pub fn parse(addr: &str) -> Result<Mailbox, AddressError> {
        if addr.chars().any(|c| c.is_control()) {
            return Err(AddressError::ControlCharacter);
        }
        let (local, domain) = addr
            .rsplit_once('@')
            .ok_or(AddressError::NotLocalAtDomain)?;
        if local.is_empty() || domain.is_empty() {
            return Err(AddressError::NotLocalAtDomain);
        }
        if local.len() > MAX_LOCAL_LEN {
            return Err(AddressError::LocalTooLong);
        }
        let domain = domain.strip_suffix('.').unwrap_or(domain).to_lowercase();
        if !valid_domain(&domain) {
            return Err(AddressError::BadDomain(domain));
        }
        Ok(Mailbox {
            local: local.to_string(),
            domain,
        })
    }

    /// True when any part is not ASCII (needs SMTPUTF8, RFC 6531).
    pub fn is_international(&self) -> bool {
        !self.local.is_ascii() || !self.domain.is_ascii()
    }

    /// The routing trick this local part holds, if any.
    pub fn routing_trick(&self) -> Option<RoutingTrick> {
        if self.local.contains('@') {
            Some(RoutingTrick::QuotedAt)
        } else if self.local.contains('%') {
            Some(RoutingTrick::Percent)
        } else if self.local.contains('!') {
            Some(RoutingTrick::Bang)
        } else {
            None
        }
    }

    /// True when the local part is a dot-atom and needs no quotes.
    fn local_is_dot_atom(&self) -> bool {
        !self.local.starts_with('.')
            && !self.local.ends_with('.')
            && !self.local.contains("..")
            && self
                .local
                .chars()
                .all(|c| c == '.' || is_atext(c) || !c.is_ascii())
    }
}

impl fmt::Display for Mailbox {
    /// The canonical RFC 5321 form: quoted local part when needed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.local_is_dot_atom() {
            write!(f, "{}@{}", self.local, self.domain)
        } else {
            f.write_str("\"")?;
            for c in self.local.chars() {
                if c == '"' || c == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
            write!(f, "\"@{}", self.domain)
        }
    }
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

/// The domain of a stored address: what follows its last `@` (a quoted local part may
/// hold `@` itself), or `""` for an address without one (`postmaster`). Not normalised:
/// callers that compare or route lower-case it. The one definition every crate uses.
pub fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
}

/// A host name: dot-separated labels of letters, digits and inner hyphens (or non-ASCII
/// U-labels, whose SMTPUTF8 requirement is checked separately), 1..=63 octets each.
pub fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= MAX_DOMAIN_LEN
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_address() {
        let m = Mailbox::parse("User.Name@Example.COM.").unwrap();
        assert_eq!(m.local, "User.Name");
        assert_eq!(m.domain, "example.com");
        assert_eq!(m.to_string(), "User.Name@example.com");
        assert_eq!(m.routing_trick(), None);
    }

    #[test]
    fn quoted_local_parts_are_requoted() {
        let m = Mailbox::parse("john doe@x.org").unwrap();
        assert_eq!(m.to_string(), "\"john doe\"@x.org");
        let m = Mailbox::parse("a\"b@x.org").unwrap();
        assert_eq!(m.to_string(), "\"a\\\"b\"@x.org");
    }

    #[test]
    fn routing_tricks_are_recognised() {
        let t = |a: &str| Mailbox::parse(a).unwrap().routing_trick();
        assert_eq!(t("user%other.org@local.test"), Some(RoutingTrick::Percent));
        assert_eq!(t("other.org!user@local.test"), Some(RoutingTrick::Bang));
        assert_eq!(t("user@other.org@local.test"), Some(RoutingTrick::QuotedAt));
        // The hidden @ stays inside the quotes when written back out.
        assert_eq!(
            Mailbox::parse("user@other.org@local.test")
                .unwrap()
                .to_string(),
            "\"user@other.org\"@local.test"
        );
    }

    #[test]
    fn bad_domains() {
        for a in [
            "a@",
            "@b",
            "a@-x.org",
            "a@x..org",
            "a@x_y.org",
            "a@[1.2.3.4]",
            "ab",
        ] {
            assert!(Mailbox::parse(a).is_err(), "{a}");
        }
        let long = format!("{}@x.org", "a".repeat(65));
        assert_eq!(Mailbox::parse(&long), Err(AddressError::LocalTooLong));
    }

    #[test]
    fn international() {
        assert!(
            Mailbox::parse("jürgen@bücher.de")
                .unwrap()
                .is_international()
        );
        assert!(!Mailbox::parse("j@b.de").unwrap().is_international());
    }

    #[test]
    fn the_domain_is_after_the_last_at_and_empty_without_one() {
        assert_eq!(domain_of("\"a@b\"@Example.COM"), "Example.COM");
        assert_eq!(domain_of("user@example.org"), "example.org");
        assert_eq!(domain_of("postmaster"), "");
    }
}
