//! Which mail is signed, sans-I/O: the message's origin (from its envelope) and its
//! From header's domain decide; the keys of the signing domain then sign.
//!
//! Rules, in order (docs/DKIM.md):
//! 1. the message must have an origin listed in `dkim.origins`: its client
//!    authenticated, was in a relay network, or it was submitted locally (pickup,
//!    `tern sendmail`, Tern's own notifications). Mail that merely passes through
//!    (an outside client sending to a local or relay domain) is never signed;
//! 2. the header section must have exactly one From field with an address; its domain
//!    is the candidate signing domain (a message with no From, or two, is not signed:
//!    RFC 6376 §5.4 and DMARC treat such messages as broken);
//! 3. the signing domain is that domain when configured, else its nearest parent
//!    configured with `subdomains = true`; none: not signed.
//!
//! Trust: the header section is hostile; it is bounded by the caller (the queue keeps at
//! most 128 KiB of it) and read with mail-parser, which does not panic on any input.

use mail_parser::{HeaderName, MessageParser};

use crate::config::Origin;

/// Where a message came from, as its envelope records it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Source {
    /// The client authenticated (SMTP AUTH).
    pub authenticated: bool,
    /// The client was in a relay network.
    pub relay_network: bool,
    /// Locally submitted (pickup, sendmail) or made by Tern (a notification).
    pub local: bool,
}

impl Source {
    /// The origins the message has, strongest first.
    pub fn origins(&self) -> impl Iterator<Item = Origin> + '_ {
        [
            (self.authenticated, Origin::Authenticated),
            (self.relay_network, Origin::RelayNetwork),
            (self.local, Origin::Local),
        ]
        .into_iter()
        .filter_map(|(on, o)| on.then_some(o))
    }
}

/// Why a message is not signed (not an error: most mail Tern relays inbound is not).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unsigned {
    /// No signing domain is configured.
    Disabled,
    /// None of the message's origins is in `dkim.origins` (mail passing through).
    NotOurs,
    /// No single From field with an address in the header section; what was found.
    NoFrom(&'static str),
    /// No key for the From domain (nor a parent with `subdomains = true`).
    NoKey(String),
}

/// The From domain of a header section (lower case, no trailing dot).
pub fn from_domain(head: &[u8]) -> Result<String, Unsigned> {
    let Some(message) = MessageParser::new().parse_headers(head) else {
        return Err(Unsigned::NoFrom("no header section"));
    };
    let froms = message
        .headers()
        .iter()
        .filter(|h| h.name == HeaderName::From)
        .count();
    match froms {
        0 => return Err(Unsigned::NoFrom("no From field")),
        1 => {}
        _ => return Err(Unsigned::NoFrom("more than one From field")),
    }
    let address = message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .ok_or(Unsigned::NoFrom("a From field without an address"))?;
    let domain = address
        .rsplit_once('@')
        .map(|(_, d)| d.trim().trim_end_matches('.').to_ascii_lowercase())
        .filter(|d| !d.is_empty())
        .ok_or(Unsigned::NoFrom("a From address without a domain"))?;
    Ok(domain)
}

/// The candidate signing domains for a From domain, most specific first: the domain,
/// then each parent (`a.b.example.com`, `b.example.com`, `example.com`, `com`).
pub fn candidates(domain: &str) -> impl Iterator<Item = (&str, bool)> {
    let mut rest = Some(domain);
    let mut first = true;
    std::iter::from_fn(move || {
        let here = rest?;
        rest = here.split_once('.').map(|(_, parent)| parent);
        let exact = std::mem::replace(&mut first, false);
        Some((here, exact))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_from_domain_is_read_from_the_one_from_field() {
        let d = |h: &str| from_domain(h.as_bytes());
        assert_eq!(
            d("Subject: x\r\nFrom: \"A, B\" <a@Example.COM>\r\n\r\nbody").unwrap(),
            "example.com"
        );
        assert_eq!(d("from: a@b.example.\r\n\r\n").unwrap(), "b.example");
        assert_eq!(
            d("From: Jörg <j@x.test>,\r\n  other@y.test\r\n\r\n").unwrap(),
            "x.test"
        );
        assert!(matches!(d("To: a@b\r\n\r\n"), Err(Unsigned::NoFrom(_))));
        assert!(matches!(
            d("From: a@b.test\r\nFrom: c@d.test\r\n\r\n"),
            Err(Unsigned::NoFrom("more than one From field"))
        ));
        assert!(matches!(
            d("From: undisclosed\r\n\r\n"),
            Err(Unsigned::NoFrom(_))
        ));
        assert!(matches!(d(""), Err(Unsigned::NoFrom(_))));
    }

    #[test]
    fn candidates_walk_up_the_parents() {
        let c: Vec<_> = candidates("a.b.example.com").collect();
        assert_eq!(
            c,
            [
                ("a.b.example.com", true),
                ("b.example.com", false),
                ("example.com", false),
                ("com", false)
            ]
        );
    }

    #[test]
    fn origins_in_order() {
        let s = Source {
            authenticated: true,
            relay_network: false,
            local: true,
        };
        assert_eq!(
            s.origins().collect::<Vec<_>>(),
            [Origin::Authenticated, Origin::Local]
        );
        assert_eq!(Source::default().origins().count(), 0);
    }

    proptest::proptest! {
        #[test]
        fn any_header_section_is_judged_without_panicking(head in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = from_domain(&head);
        }
    }
}
