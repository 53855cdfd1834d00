//! ESMTP capabilities from an EHLO reply (RFC 5321 §4.1.1.1).
//!
//! The first reply line is the server's name and greeting; each further line is a
//! keyword with optional parameters. Keywords are matched without regard to case;
//! unknown keywords are ignored. Trust: the reply comes from the peer and was already
//! bounded by the reply parser; a malformed `SIZE` parameter is read as "no limit
//! advertised" rather than as an error, because refusing to deliver over it would
//! help nobody.

use crate::reply::Reply;

/// What the server advertised in its EHLO reply. All false after a HELO fallback.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// 8BITMIME (RFC 6152).
    pub eightbitmime: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// DSN (RFC 3461).
    pub dsn: bool,
    /// CHUNKING (RFC 3030); recorded only, this client sends DATA.
    pub chunking: bool,
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034).
    pub enhanced_status: bool,
    /// SIZE (RFC 1870) with a positive limit. `None` when SIZE was not advertised, had no
    /// number, was `0`, or was not a number.
    pub size: Option<u64>,
}

impl Capabilities {
    /// Reads the capabilities from a positive EHLO reply.
    pub fn from_ehlo(reply: &Reply) -> Capabilities {
        let mut caps = Capabilities::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            let keyword = keyword.to_ascii_uppercase();
            match keyword.as_str() {
                "PIPELINING" => caps.pipelining = true,
                "8BITMIME" => caps.eightbitmime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "DSN" => caps.dsn = true,
                "CHUNKING" => caps.chunking = true,
                "STARTTLS" => caps.starttls = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status = true,
                "SIZE" => {
                    caps.size = words
                        .next()
                        .and_then(|n| n.parse::<u64>().ok())
                        .filter(|&n| n > 0);
                }
                _ => {}
            }
        }
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ehlo(lines: &[&str]) -> Reply {
        Reply::new(250, None, lines.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn typical_postfix_reply() {
        let caps = Capabilities::from_ehlo(&ehlo(&[
            "mx.example.org",
            "PIPELINING",
            "SIZE 10240000",
            "VRFY",
            "ETRN",
            "STARTTLS",
            "ENHANCEDSTATUSCODES",
            "8BITMIME",
            "DSN",
            "SMTPUTF8",
            "CHUNKING",
        ]));
        assert_eq!(
            caps,
            Capabilities {
                pipelining: true,
                eightbitmime: true,
                smtputf8: true,
                dsn: true,
                chunking: true,
                starttls: true,
                enhanced_status: true,
                size: Some(10_240_000),
            }
        );
    }

    #[test]
    fn keywords_are_case_insensitive_and_greeting_line_is_skipped() {
        let caps =
            Capabilities::from_ehlo(&ehlo(&["PIPELINING is my name", "starttls", "8bitMime"]));
        assert!(!caps.pipelining);
        assert!(caps.starttls);
        assert!(caps.eightbitmime);
    }

    #[test]
    fn size_variants() {
        for (line, want) in [
            ("SIZE", None),
            ("SIZE 0", None),
            ("SIZE x", None),
            ("SIZE -5", None),
            ("SIZE 99999999999999999999999", None),
            ("SIZE 52428800", Some(52_428_800)),
            ("size 1", Some(1)),
        ] {
            let caps = Capabilities::from_ehlo(&ehlo(&["mx", line]));
            assert_eq!(caps.size, want, "{line}");
        }
    }

    #[test]
    fn empty_and_odd_lines_are_ignored() {
        let caps =
            Capabilities::from_ehlo(&ehlo(&["mx", "", "   ", "X-UNKNOWN foo", "AUTH PLAIN"]));
        assert_eq!(caps, Capabilities::default());
        assert_eq!(Capabilities::from_ehlo(&ehlo(&[])), Capabilities::default());
    }
}
