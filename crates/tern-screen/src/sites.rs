//! DNS list sites in Postfix's `postscreen_dnsbl_sites` syntax, the names asked, and the
//! score. Sans I/O.
//!
//! A site is `zone[=filter][*weight]`:
//! - `zone`: the list's DNS zone (`zen.spamhaus.org`), a host name;
//! - `filter`: the answers that count, four octet patterns separated by dots, each a
//!   number or a bracketed list of numbers and ranges separated by `;`
//!   (`127.0.0.[2..11]`, `127.0.0.[2;4;9..11]`); without one, an answer counts when it
//!   is in 127.0.0.0/8 but neither 127.0.0.1 nor in 127.255.255.0/24 (RFC 5782 §2.1
//!   reserves the first; lists such as Spamhaus answer the second to say "your query was
//!   refused", which is no listing: postscreen would count it);
//! - `weight`: an integer, 1 when left out; negative for an allow list (DNSWL).
//!
//! The score of a client is the sum of the weights of the sites whose answer has an
//! address their filter accepts, each site once however many of its addresses match
//! (as postscreen adds them). A site given twice with different filters counts twice,
//! as in Postfix.
//!
//! Trust: sites come from the configuration (parsed strictly); answers come from the
//! network and are only compared.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

/// Why a site does not parse (the message names what is wrong).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SiteError {
    /// The zone is not a host name.
    #[error("`{0}`: the zone is not a host name")]
    Zone(String),
    /// The filter is not four octet patterns.
    #[error("`{0}`: the filter must be four octet patterns like 127.0.0.[2..11]")]
    Filter(String),
    /// The weight is not an integer from -1000 to 1000 (zero included: a site of weight
    /// zero is asked and never counts).
    #[error("`{0}`: the weight must be an integer from -1000 to 1000")]
    Weight(String),
}

/// One octet's pattern: inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OctetPattern(Vec<(u8, u8)>);

impl OctetPattern {
    fn matches(&self, octet: u8) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&octet))
    }

    fn parse(text: &str) -> Option<OctetPattern> {
        let inner = match text.strip_prefix('[') {
            Some(rest) => rest.strip_suffix(']')?,
            None => {
                let n = number(text)?;
                return Some(OctetPattern(vec![(n, n)]));
            }
        };
        let mut ranges = Vec::new();
        for part in inner.split(';') {
            let range = match part.split_once("..") {
                Some((lo, hi)) => (number(lo)?, number(hi)?),
                None => {
                    let n = number(part)?;
                    (n, n)
                }
            };
            if range.0 > range.1 || ranges.len() >= 256 {
                return None;
            }
            ranges.push(range);
        }
        Some(OctetPattern(ranges))
    }
}

impl fmt::Display for OctetPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let [(lo, hi)] = self.0.as_slice()
            && lo == hi
        {
            return write!(f, "{lo}");
        }
        f.write_str("[")?;
        for (i, (lo, hi)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}..{hi}")?;
            }
        }
        f.write_str("]")
    }
}

/// A decimal octet, digits only.
fn number(text: &str) -> Option<u8> {
    if text.is_empty() || text.len() > 3 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The answers of a site that count as a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter([OctetPattern; 4]);

impl Filter {
    /// Whether `addr` is accepted.
    pub fn matches(&self, addr: Ipv4Addr) -> bool {
        self.0
            .iter()
            .zip(addr.octets())
            .all(|(pattern, octet)| pattern.matches(octet))
    }
}

impl FromStr for Filter {
    type Err = SiteError;

    fn from_str(text: &str) -> Result<Filter, SiteError> {
        let bad = || SiteError::Filter(text.to_owned());
        // Dots separate octets only outside brackets (`[2..11]` holds two).
        let mut parts = Vec::new();
        let mut depth = 0u8;
        let mut start = 0;
        for (i, c) in text.char_indices() {
            match c {
                '[' => depth = depth.saturating_add(1),
                ']' => depth = depth.saturating_sub(1),
                '.' if depth == 0 => {
                    parts.push(text.get(start..i).ok_or_else(bad)?);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(text.get(start..).ok_or_else(bad)?);
        let patterns: Vec<OctetPattern> = parts
            .into_iter()
            .map(OctetPattern::parse)
            .collect::<Option<_>>()
            .ok_or_else(bad)?;
        let octets: [OctetPattern; 4] = patterns.try_into().map_err(|_| bad())?;
        Ok(Filter(octets))
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = &self.0;
        write!(f, "{a}.{b}.{c}.{d}")
    }
}

/// One list: its zone, the answers that count and its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The zone, lower case, without a final dot. Invariant: a valid host name.
    pub zone: String,
    /// The answers that count (`None`: the default rule of the module header).
    pub filter: Option<Filter>,
    /// Added to the score when listed; negative for an allow list.
    pub weight: i64,
}

impl Site {
    /// Whether an answer of this site lists the client.
    pub fn lists(&self, answer: &[Ipv4Addr]) -> bool {
        answer.iter().any(|a| match &self.filter {
            Some(f) => f.matches(*a),
            None => default_listing(*a),
        })
    }
}

/// The rule for a site without a filter (module header).
fn default_listing(a: Ipv4Addr) -> bool {
    let [first, second, third, _] = a.octets();
    first == 127 && a != Ipv4Addr::new(127, 0, 0, 1) && !(second == 255 && third == 255)
}

impl FromStr for Site {
    type Err = SiteError;

    fn from_str(text: &str) -> Result<Site, SiteError> {
        let text = text.trim();
        let (rest, weight) = match text.rsplit_once('*') {
            Some((rest, w)) => {
                let weight: i64 = w
                    .trim()
                    .parse()
                    .map_err(|_| SiteError::Weight(text.to_owned()))?;
                if !(-1000..=1000).contains(&weight) {
                    return Err(SiteError::Weight(text.to_owned()));
                }
                (rest, weight)
            }
            None => (text, 1),
        };
        let (zone, filter) = match rest.split_once('=') {
            Some((zone, filter)) => (zone, Some(filter.parse::<Filter>()?)),
            None => (rest, None),
        };
        let zone = zone.trim().trim_end_matches('.').to_ascii_lowercase();
        if !valid_zone(&zone) {
            return Err(SiteError::Zone(text.to_owned()));
        }
        Ok(Site {
            zone,
            filter,
            weight,
        })
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.zone)?;
        if let Some(filter) = &self.filter {
            write!(f, "={filter}")?;
        }
        if self.weight != 1 {
            write!(f, "*{}", self.weight)?;
        }
        Ok(())
    }
}

/// A host name of at least two labels, each 1 to 63 letters, digits, hyphens or
/// underscores, not starting or ending with a hyphen; at most 200 octets so a reversed
/// IPv6 address (64 octets) still fits in a DNS name.
fn valid_zone(zone: &str) -> bool {
    zone.len() <= 200
        && zone.split('.').count() >= 2
        && zone.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The name asked of a list for `client`: its IPv4 octets or its IPv6 nibbles in
/// reverse order, then the zone (`2.0.0.127.zen.example.`). An IPv4-mapped IPv6
/// address is asked as the IPv4 address it is.
pub fn query_name(client: IpAddr, zone: &str) -> String {
    match client {
        IpAddr::V4(v4) => reversed_v4(v4, zone),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => reversed_v4(v4, zone),
            None => {
                let mut name = String::with_capacity(64 + zone.len() + 1);
                for byte in v6.octets().iter().rev() {
                    for nibble in [byte & 0x0f, byte >> 4] {
                        name.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
                        name.push('.');
                    }
                }
                name.push_str(zone);
                name.push('.');
                name
            }
        },
    }
}

fn reversed_v4(v4: Ipv4Addr, zone: &str) -> String {
    let [a, b, c, d] = v4.octets();
    format!("{d}.{c}.{b}.{a}.{zone}.")
}

/// The outcome of the lists for one client.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Score {
    /// The sum of the weights of the sites that list the client.
    pub total: i64,
    /// The zones of the block lists (positive weight) that list the client, heaviest
    /// first (the reply names the first).
    pub blocked_by: Vec<String>,
    /// The zones of the allow lists (negative weight) that list the client.
    pub allowed_by: Vec<String>,
    /// The zones that did not answer in time (counted as not listing).
    pub unanswered: Vec<String>,
}

/// What one site answered for a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteAnswer {
    /// The addresses of the A records (empty: no such name or no A record).
    Addresses(Vec<Ipv4Addr>),
    /// No answer in time, or a failure: counted as not listed.
    Unanswered,
}

/// The score of the answers, one per site in the same order.
pub fn score(sites: &[Site], answers: &[SiteAnswer]) -> Score {
    let mut s = Score::default();
    let mut blocked: Vec<(i64, &str)> = Vec::new();
    for (site, answer) in sites.iter().zip(answers) {
        match answer {
            SiteAnswer::Unanswered => {
                if !s.unanswered.contains(&site.zone) {
                    s.unanswered.push(site.zone.clone());
                }
            }
            SiteAnswer::Addresses(addrs) if site.lists(addrs) => {
                s.total = s.total.saturating_add(site.weight);
                if site.weight > 0 {
                    blocked.push((site.weight, &site.zone));
                } else if site.weight < 0 && !s.allowed_by.contains(&site.zone) {
                    s.allowed_by.push(site.zone.clone());
                }
            }
            SiteAnswer::Addresses(_) => {}
        }
    }
    // Heaviest first; equal weights keep the configuration's order.
    blocked.sort_by_key(|b| std::cmp::Reverse(b.0));
    for (_, zone) in blocked {
        if !s.blocked_by.iter().any(|z| z == zone) {
            s.blocked_by.push(zone.to_owned());
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(s: &str) -> Site {
        s.parse().unwrap()
    }

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn sites_parse_in_postfix_syntax() {
        let s = site("zen.Example.org.=127.0.0.[2..11]*3");
        assert_eq!(s.zone, "zen.example.org");
        assert_eq!(s.weight, 3);
        assert_eq!(s.to_string(), "zen.example.org=127.0.0.[2..11]*3");
        let allow = site("list.dnswl.example=127.0.[0..255].[1;2;3]*-5");
        assert_eq!(allow.weight, -5);
        assert_eq!(
            allow.to_string(),
            "list.dnswl.example=127.0.[0..255].[1;2;3]*-5"
        );
        let plain = site("bl.example");
        assert_eq!((plain.filter.is_none(), plain.weight), (true, 1));
        for bad in [
            "",
            "localhost",
            "bl..example",
            "-bl.example",
            "bl.example=127.0.0",
            "bl.example=127.0.0.256",
            "bl.example=127.0.0.[5..2]",
            "bl.example=127.0.0.[2..]",
            "bl.example=127.0.0.2.9",
            "bl.example*x",
            "bl.example*1001",
            "bl.exa mple",
        ] {
            assert!(bad.parse::<Site>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn filters_match_octet_by_octet() {
        let f: Filter = "127.0.[0..3].[2;4;9..11]".parse().unwrap();
        for yes in ["127.0.0.2", "127.0.3.4", "127.0.1.10", "127.0.2.11"] {
            assert!(f.matches(v4(yes)), "{yes}");
        }
        for no in [
            "127.0.0.3",
            "127.0.4.2",
            "127.1.0.2",
            "128.0.0.2",
            "127.0.0.12",
        ] {
            assert!(!f.matches(v4(no)), "{no}");
        }
    }

    #[test]
    fn without_a_filter_only_listing_codes_count() {
        let s = site("zen.example");
        assert!(s.lists(&[v4("127.0.0.2")]));
        assert!(s.lists(&[v4("127.0.0.10"), v4("127.0.0.4")]));
        // 127.0.0.1, Spamhaus's "query refused" codes and anything outside 127/8: not.
        for no in [
            "127.0.0.1",
            "127.255.255.254",
            "127.255.255.252",
            "10.0.0.2",
        ] {
            assert!(!s.lists(&[v4(no)]), "{no}");
        }
        assert!(!s.lists(&[]));
    }

    #[test]
    fn the_score_adds_weights_and_names_the_heaviest_list() {
        let sites = vec![
            site("light.example"),
            site("heavy.example=127.0.0.[2..11]*3"),
            site("picky.example=127.0.0.4"),
            site("allow.example*-5"),
            site("slow.example*2"),
        ];
        let listed = |a: &str| SiteAnswer::Addresses(vec![v4(a)]);
        let answers = vec![
            listed("127.0.0.2"),
            SiteAnswer::Addresses(vec![v4("127.0.0.3"), v4("127.0.0.2")]),
            listed("127.0.0.2"),
            SiteAnswer::Addresses(vec![]),
            SiteAnswer::Unanswered,
        ];
        let s = score(&sites, &answers);
        assert_eq!(s.total, 4, "heavy counts once for two matching answers");
        assert_eq!(s.blocked_by, ["heavy.example", "light.example"]);
        assert_eq!(s.unanswered, ["slow.example"]);
        assert!(s.allowed_by.is_empty());
        // The allow list listing too brings the score below zero.
        let mut answers = answers;
        answers[3] = listed("127.0.0.2");
        let s = score(&sites, &answers);
        assert_eq!(s.total, -1);
        assert_eq!(s.allowed_by, ["allow.example"]);
        // Fewer answers than sites: the rest are not counted (never panics).
        assert_eq!(score(&sites, &[]).total, 0);
    }

    #[test]
    fn names_reverse_octets_and_nibbles() {
        assert_eq!(
            query_name("192.0.2.99".parse().unwrap(), "zen.example"),
            "99.2.0.192.zen.example."
        );
        assert_eq!(
            query_name("::ffff:127.0.0.2".parse().unwrap(), "zen.example"),
            "2.0.0.127.zen.example."
        );
        assert_eq!(
            query_name("2001:db8::1:abcd".parse().unwrap(), "bl.example"),
            "d.c.b.a.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.example."
        );
    }
}
