//! The `[[route]]` configuration entries and the parsers for their values.
//!
//! Purpose: the serde shape of one route as the operator writes it, and the checks that
//! turn its strings (relay hosts, reject replies) into typed values.
//!
//! Invariants: parsing never panics; every parser returns a sentence for the operator
//! rather than an error type, because [`RoutingTable::new`](super::RoutingTable::new)
//! collects them into [`RouteProblem`](super::RouteProblem)s keyed by the config path.
//! No `deny_unknown_fields`: the binary reports unknown keys itself (serde_ignored).
//!
//! Trust: the configuration file is written by the operator and is not hostile, but it is
//! checked completely, because a reply text here is sent verbatim on the wire.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;

use serde::Deserialize;

use crate::name;

/// One `[[route]]` entry, as written in the configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct RouteConfig {
    /// Domain patterns: `example.com` (exactly that domain), `.example.com` (every
    /// subdomain, not the domain itself), `*` (everything not matched otherwise), or an
    /// address literal `[192.0.2.1]` / `[IPv6:2001:db8::1]`. Default `["*"]`.
    pub domains: Vec<String>,
    /// How mail for these domains leaves. Default `mx`.
    pub transport: TransportKind,
    /// Relay hosts (`host`, `host:port`, `192.0.2.1:25`, `[::1]:25`); only for `smtp`,
    /// tried in this order. Port 25 when omitted.
    pub hosts: Vec<String>,
    /// The reply given to recipients; only for `reject`. Must be `5xx x.y.z text`.
    pub reply: Option<String>,
    /// TLS policy towards the next hop; only for `mx` and `smtp`. Default `may`.
    pub tls: Option<TlsPolicy>,
    /// The port used at MX hosts; only for `mx`. Default 25.
    pub port: Option<u16>,
    /// The directory under which mailbox names are Maildirs (`<path>/<name>/Maildir`);
    /// only for `maildir`. The binary fills in `<data_dir>/mail` when it is missing.
    pub path: Option<PathBuf>,
    /// The LMTP server: `unix:/path/to/socket` or `host:port`; only for `lmtp`, which
    /// needs it.
    pub server: Option<String>,
    /// The directory messages are written into; only for `drop`, required there, absolute.
    pub dir: Option<PathBuf>,
}

impl Default for RouteConfig {
    fn default() -> Self {
        RouteConfig {
            domains: vec!["*".to_owned()],
            transport: TransportKind::Mx,
            hosts: Vec::new(),
            reply: None,
            tls: None,
            port: None,
            path: None,
            server: None,
            dir: None,
        }
    }
}

/// The `transport` key of a route.
///
/// Adding a transport means: a variant here, a variant of [`Transport`](super::Transport) and of
/// [`NextHop`](super::NextHop), and one arm in `build_transport` in `table.rs`, which is
/// where the keys each transport accepts are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum TransportKind {
    /// Look up the domain's MX records and deliver over SMTP to the best reachable host.
    #[default]
    Mx,
    /// Relay over SMTP to fixed hosts, tried in order, without an MX lookup.
    Smtp,
    /// Refuse recipients with a fixed permanent reply.
    Reject,
    /// Keep the mail in the queue until an operator releases it.
    Hold,
    /// Deliver into Maildirs on this machine (local domains; the mailbox comes from the
    /// local directory).
    Maildir,
    /// Deliver to an LMTP server (RFC 2033), such as Dovecot's, over TCP or a Unix socket.
    Lmtp,
    /// Write each message with its envelope into a directory for another system to
    /// collect (docs/CONNECTORS.md).
    Drop,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Mx => "mx",
            TransportKind::Smtp => "smtp",
            TransportKind::Reject => "reject",
            TransportKind::Hold => "hold",
            TransportKind::Maildir => "maildir",
            TransportKind::Lmtp => "lmtp",
            TransportKind::Drop => "drop",
        })
    }
}

/// What the SMTP client requires of TLS towards a next hop.
///
/// Shared by the routing table and, through a conversion in `tern-queue`, the SMTP client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsPolicy {
    /// Never use STARTTLS.
    None,
    /// Use STARTTLS when offered, without verifying the certificate; fall back to
    /// plain text when it is not offered or the handshake fails.
    #[default]
    May,
    /// Require STARTTLS; do not verify the certificate.
    Encrypt,
    /// Require STARTTLS and a certificate valid for the host name (WebPKI).
    Verify,
    /// DANE (RFC 7672) where the MX and TLSA records are DNSSEC-secure and usable: TLS
    /// required and the certificate matched against them; elsewhere the next policy
    /// (MTA-STS, then `may`). A bogus answer defers the mail.
    Dane,
    /// DANE required: a host without usable, secure TLSA records is not used.
    #[serde(rename = "dane-only")]
    DaneOnly,
}

impl TlsPolicy {
    /// `dane` or `dane-only`: the MX and TLSA records are looked up with DNSSEC
    /// validation.
    pub fn wants_dane(self) -> bool {
        matches!(self, TlsPolicy::Dane | TlsPolicy::DaneOnly)
    }
}

impl fmt::Display for TlsPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsPolicy::None => "none",
            TlsPolicy::May => "may",
            TlsPolicy::Encrypt => "encrypt",
            TlsPolicy::Verify => "verify",
            TlsPolicy::Dane => "dane",
            TlsPolicy::DaneOnly => "dane-only",
        })
    }
}

/// A relay host of the `smtp` transport.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelayHost {
    /// A lowercase host name, or an IP address in plain text (IPv6 without brackets).
    pub host: String,
    /// The TCP port; never 0.
    pub port: u16,
}

impl RelayHost {
    /// Parses `host`, `host:port`, `192.0.2.1:25`, `[2001:db8::1]:25` or `[2001:db8::1]`.
    /// The port defaults to 25. A bare IPv6 address (`::1`) is refused as ambiguous.
    pub fn parse(text: &str) -> Result<RelayHost, String> {
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let Some((inner, after)) = rest.split_once(']') else {
                return Err(format!("{text:?}: missing ']' after the IPv6 address"));
            };
            let ip: Ipv6Addr = inner
                .parse()
                .map_err(|_| format!("{text:?}: {inner:?} is not an IPv6 address"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| {
                    format!("{text:?}: expected ':port' after the bracketed address")
                })?),
            };
            (ip.to_string(), port)
        } else {
            if text.matches(':').count() > 1 {
                return Err(format!(
                    "{text:?}: write an IPv6 address in brackets, as [2001:db8::1]:25"
                ));
            }
            let (host, port) = match text.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (text, None),
            };
            let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
            if host.parse::<IpAddr>().is_err() {
                name::check_domain(&host).map_err(|why| format!("{text:?}: {why}"))?;
            }
            (host, port)
        };
        let port = match port {
            None => 25,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => {
                    return Err(format!(
                        "{text:?}: the port must be a number from 1 to 65535"
                    ));
                }
                Ok(n) => n,
            },
        };
        Ok(RelayHost { host, port })
    }

    /// The address when the host is an IP literal rather than a name.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for RelayHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Where the `lmtp` transport connects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LmtpServer {
    /// TCP to a host and an explicit port.
    Tcp(RelayHost),
    /// A Unix domain socket.
    Unix(PathBuf),
}

impl LmtpServer {
    /// Parses `unix:/absolute/path`, or `host:port` / `inet:host:port` (LMTP has no
    /// standard port, so it must be given).
    pub fn parse(text: &str) -> Result<LmtpServer, String> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(format!("{text:?}: the socket path must be absolute"));
            }
            return Ok(LmtpServer::Unix(PathBuf::from(path)));
        }
        let inet = text.strip_prefix("inet:").unwrap_or(text);
        let has_port = match inet.strip_prefix('[') {
            Some(rest) => rest.split_once("]:").is_some(),
            None => inet.contains(':'),
        };
        if !has_port {
            return Err(format!(
                "{text:?}: write unix:/path/to/socket or host:port (Dovecot listens on port 24)"
            ));
        }
        RelayHost::parse(inet).map(LmtpServer::Tcp)
    }
}

impl fmt::Display for LmtpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LmtpServer::Tcp(h) => write!(f, "{h}"),
            LmtpServer::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// The fixed reply of the `reject` transport.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RejectReply {
    /// The reply code; always 500 to 599.
    pub code: u16,
    /// The enhanced status code (RFC 3463), `5.x.y`, class matching `code`.
    pub enhanced: String,
    /// The text; printable ASCII only (it is sent on the wire), at most
    /// [`RejectReply::MAX_TEXT`] characters, never empty.
    pub text: String,
}

impl RejectReply {
    /// Longest accepted text, so the reply line stays well inside 512 octets.
    pub const MAX_TEXT: usize = 400;

    /// Parses `550 5.7.1 Some text`.
    pub fn parse(reply: &str) -> Result<RejectReply, String> {
        let mut parts = reply.trim().splitn(3, ' ');
        let code = parts.next().unwrap_or_default();
        let enhanced = parts.next().unwrap_or_default();
        let text = parts.next().unwrap_or_default().trim();
        let code: u16 = match code.parse() {
            Ok(c) if (500..=599).contains(&c) && code.len() == 3 => c,
            _ => {
                return Err(format!(
                    "{reply:?}: must start with a permanent reply code 500 to 599"
                ));
            }
        };
        let fields: Vec<&str> = enhanced.split('.').collect();
        let enhanced_ok = matches!(
            fields.as_slice(),
            ["5", subject, detail]
                if [subject, detail].iter().all(|n| {
                    (1..=3).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit())
                })
        );
        if !enhanced_ok {
            return Err(format!(
                "{reply:?}: the code must be followed by an enhanced status code 5.x.y"
            ));
        }
        if text.is_empty() {
            return Err(format!("{reply:?}: the reply needs a text after the codes"));
        }
        if text.len() > Self::MAX_TEXT {
            return Err(format!(
                "{reply:?}: the text is longer than {} characters",
                Self::MAX_TEXT
            ));
        }
        if !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(format!(
                "{reply:?}: the text may hold only printable ASCII characters"
            ));
        }
        Ok(RejectReply {
            code,
            enhanced: enhanced.to_owned(),
            text: text.to_owned(),
        })
    }
}

impl Default for RejectReply {
    /// `550 5.1.2 Mail for this domain is not accepted`.
    fn default() -> Self {
        RejectReply {
            code: 550,
            enhanced: "5.1.2".to_owned(),
            text: "Mail for this domain is not accepted".to_owned(),
        }
    }
}

impl fmt::Display for RejectReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.code, self.enhanced, self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_hosts_parse() {
        let ok = |s: &str, host: &str, port: u16| {
            assert_eq!(
                RelayHost::parse(s).unwrap(),
                RelayHost {
                    host: host.to_owned(),
                    port
                },
                "{s}"
            );
        };
        ok("10.0.0.1:25", "10.0.0.1", 25);
        ok("Relay.Example:587", "relay.example", 587);
        ok("relay.example.", "relay.example", 25);
        ok("[::1]:2525", "::1", 2525);
        ok("[2001:db8::1]", "2001:db8::1", 25);
        for bad in [
            "",
            "::1",
            "relay:0",
            "relay:99999",
            "relay:x",
            "[::1",
            "[nope]:25",
            "[::1]x",
            "bad_host:25",
            "10.0.0.1:",
        ] {
            assert!(RelayHost::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            RelayHost::parse("[::1]:25").unwrap().to_string(),
            "[::1]:25"
        );
        assert_eq!(
            RelayHost::parse("[::1]:25").unwrap().ip(),
            Some("::1".parse().unwrap())
        );
        assert_eq!(RelayHost::parse("relay").unwrap().ip(), None);
    }

    #[test]
    fn lmtp_servers_parse() {
        assert_eq!(
            LmtpServer::parse("unix:/run/dovecot/lmtp").unwrap(),
            LmtpServer::Unix(PathBuf::from("/run/dovecot/lmtp"))
        );
        let tcp = LmtpServer::parse("inet:127.0.0.1:24").unwrap();
        assert_eq!(tcp.to_string(), "127.0.0.1:24");
        assert_eq!(
            LmtpServer::parse("[::1]:24").unwrap().to_string(),
            "[::1]:24"
        );
        for bad in [
            "unix:relative",
            "127.0.0.1",
            "lmtp.example",
            "[::1]",
            "host:0",
            "",
        ] {
            assert!(LmtpServer::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn reject_replies_parse() {
        let r = RejectReply::parse("550 5.7.1 We do not accept mail").unwrap();
        assert_eq!((r.code, r.enhanced.as_str()), (550, "5.7.1"));
        assert_eq!(r.text, "We do not accept mail");
        assert_eq!(r.to_string(), "550 5.7.1 We do not accept mail");
        for bad in [
            "450 4.7.1 Later",
            "550 4.7.1 Mismatch",
            "550 Text without enhanced code",
            "550 5.7.1",
            "5500 5.7.1 text",
            "550 5.1234.1 text",
            "550 5.7.1 bad\r\ntext",
            "",
        ] {
            assert!(RejectReply::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("550 5.7.1 {}", "x".repeat(RejectReply::MAX_TEXT + 1));
        assert!(RejectReply::parse(&long).is_err());
        assert_eq!(
            RejectReply::default().to_string(),
            "550 5.1.2 Mail for this domain is not accepted"
        );
    }
}
