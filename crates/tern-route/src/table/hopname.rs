//! The names of next hops: what an operator sees in `tern dest`, the queue viewer, the
//! queue summary and every event's `next_hop` field.
//!
//! A name says what the destination is, never where its route sits in the file:
//!
//! | transport | name |
//! | --- | --- |
//! | `mx` | `mx:<recipient domain>` |
//! | `smtp` | `smtp:[<host>]:<port>`, the relay hosts in order, comma-separated (Postfix's `[host]:port`: no MX lookup) |
//! | `lmtp` | `lmtp:unix:<socket path>` or `lmtp:[<host>]:<port>` |
//! | `maildir` | `maildir:<mailbox root>` |
//! | `drop` | `drop:<directory>` |
//! | `reject`, `hold` | `reject:<first domain pattern of the route>`, `hold:<...>` |
//!
//! Invariants:
//! - A name is 1 to [`MAX_NAME`] octets of printable ASCII without spaces: any other
//!   octet of a path or domain is written `%XX` (and `%` itself `%25`), so a name is
//!   safe in a terminal, a URL path segment and a log line, and the admin API accepts
//!   it back as typed.
//! - Stable: a name depends only on the route's own settings, not on its position in
//!   the file nor on the process, so it survives reloads that reorder routes and
//!   restarts (the hash below is FNV-1a, fixed, not the process's random hasher).
//! - Unique per distinct transport: routes whose transports are equal share the name,
//!   and so one next hop (one concurrency limit, one connection cache, as Postfix keys
//!   its queues by transport and next hop). Two `smtp` routes with the same hosts but a
//!   different TLS policy get `(tls=<policy>)` appended. A description longer than the
//!   bound is cut and ends in `...#<8 hex digits>`, a hash of the whole description.
//!
//! Trust: paths and host names come from the operator's configuration, domains from
//! envelopes (remote peers): all are escaped and bounded here.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use super::{LmtpServer, RelayHost, Transport};

/// Longest name, octets (the prefix `smtp:` included).
pub const MAX_NAME: usize = 160;

/// Longest name [`bounded`] makes: room is left for a qualifier and a hash that
/// [`disambiguate`] may append (`(tls=encrypt)#xxxxxxxx`).
const MAX_BOUNDED: usize = MAX_NAME - 24;

/// FNV-1a, 32 bits: a fixed hash, so names do not change from one process to the next.
fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// `text` with every octet outside printable ASCII (and `%`, and space) as `%XX`.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `kind:body`, with `body` escaped and bounded (see the module header).
pub(crate) fn bounded(kind: &str, body: &str) -> String {
    let escaped = escape(body);
    let room = MAX_BOUNDED.saturating_sub(kind.len() + 1);
    if escaped.len() <= room {
        return format!("{kind}:{escaped}");
    }
    // Escaped text is ASCII: any index is a char boundary. Never cut inside a `%XX`.
    let mut cut = room.saturating_sub(12);
    while let Some(p) = escaped.get(..cut).and_then(|s| s.rfind('%')) {
        if p + 3 <= cut {
            break;
        }
        cut = p;
    }
    format!(
        "{kind}:{}...#{:08x}",
        escaped.get(..cut).unwrap_or_default(),
        fnv1a(body.as_bytes())
    )
}

/// A relay host as Postfix writes a host taken without MX lookup: `[host]:port`.
fn bracketed(h: &RelayHost) -> String {
    format!("[{}]:{}", h.host, h.port)
}

/// The name of a route's next hop before collisions are resolved; `first_pattern` is
/// the route's first domain pattern, normalised (for `reject` and `hold`). `None` for
/// `mx`, whose next hops are named by their recipient domain.
pub(crate) fn describe(transport: &Transport, first_pattern: &str) -> Option<String> {
    Some(match transport {
        Transport::Mx { .. } => return None,
        Transport::Smtp { hosts, .. } => {
            let list: Vec<String> = hosts.iter().map(bracketed).collect();
            bounded("smtp", &list.join(","))
        }
        Transport::Reject { .. } => bounded("reject", first_pattern),
        Transport::Hold => bounded("hold", first_pattern),
        Transport::Maildir { root } => bounded("maildir", &root.to_string_lossy()),
        Transport::Lmtp { server } => match server {
            LmtpServer::Unix(path) => bounded("lmtp", &format!("unix:{}", path.to_string_lossy())),
            LmtpServer::Tcp(h) => bounded("lmtp", &bracketed(h)),
        },
        Transport::Drop { dir } => bounded("drop", &dir.to_string_lossy()),
    })
}

/// What tells apart two transports that [`describe`] named alike: the TLS policy of
/// `smtp` routes (every other transport's name already covers all of its settings, or
/// is unique by its pattern).
pub(crate) fn qualifier(transport: &Transport) -> Option<String> {
    match transport {
        Transport::Smtp { tls, .. } => Some(format!("(tls={tls})")),
        _ => None,
    }
}

/// Makes the names of `routes` (one per route: its transport and its described name)
/// unique per distinct transport, in place: routes with equal transports keep one name;
/// among routes sharing a name with different transports, each gets its qualifier, and
/// if that is not enough, a hash of its position-free settings.
pub(crate) fn disambiguate(routes: &mut [(&Transport, Option<String>)]) {
    for pass in 0..2 {
        // Names given to two different transports.
        let mut first: HashMap<&str, &Transport> = HashMap::new();
        let mut clashing: HashSet<String> = HashSet::new();
        for (transport, name) in routes.iter() {
            let Some(name) = name.as_deref() else {
                continue;
            };
            match first.get(name) {
                Some(t) if *t != *transport => {
                    clashing.insert(name.to_owned());
                }
                Some(_) => {}
                None => {
                    first.insert(name, transport);
                }
            }
        }
        if clashing.is_empty() {
            return;
        }
        for (transport, name) in routes.iter_mut() {
            let Some(n) = name.as_mut().filter(|n| clashing.contains(n.as_str())) else {
                continue;
            };
            let extra = match (pass, qualifier(transport)) {
                (0, Some(q)) => q,
                _ => format!("#{:08x}", fnv1a(format!("{transport:?}").as_bytes())),
            };
            n.truncate(MAX_NAME.saturating_sub(extra.len()).min(n.len()));
            n.push_str(&extra);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::TlsPolicy;

    #[test]
    fn names_are_printable_ascii_and_bounded() {
        assert_eq!(escape("/srv/mail"), "/srv/mail");
        assert_eq!(escape("/srv/my mail/100%"), "/srv/my%20mail/100%25");
        assert_eq!(escape("/srv/bü\n"), "/srv/b%C3%BC%0A");
        let long = format!("/srv/{}", "ä".repeat(300));
        let a = bounded("maildir", &long);
        assert!(a.len() <= MAX_NAME, "{} octets: {a}", a.len());
        assert!(a.bytes().all(|b| b.is_ascii_graphic()), "{a}");
        assert!(a.starts_with("maildir:/srv/%C3%A4"), "{a}");
        // Never cut inside an escape.
        let body = a.split_once("...#").map(|(b, _)| b).unwrap_or_default();
        assert!(
            body.rsplit_once('%')
                .is_none_or(|(_, tail)| tail.len() >= 2),
            "{a}"
        );
        // Two long descriptions with the same beginning stay apart, and each is stable.
        let b = bounded("maildir", &format!("{long}x"));
        assert_ne!(a, b);
        assert_eq!(a, bounded("maildir", &long));
    }

    #[test]
    fn equal_transports_share_a_name_and_different_ones_never_do() {
        let hosts = vec![RelayHost::parse("10.0.0.5").unwrap_or_else(|e| panic!("{e}"))];
        let may = Transport::Smtp {
            hosts: hosts.clone(),
            tls: TlsPolicy::May,
        };
        let verify = Transport::Smtp {
            hosts,
            tls: TlsPolicy::Verify,
        };
        let name = describe(&may, "a.test");
        assert_eq!(name.as_deref(), Some("smtp:[10.0.0.5]:25"));
        let mut routes = vec![
            (&may, name.clone()),
            (&may, describe(&may, "b.test")),
            (&verify, describe(&verify, "c.test")),
        ];
        disambiguate(&mut routes);
        let names: Vec<&str> = routes.iter().filter_map(|(_, n)| n.as_deref()).collect();
        assert_eq!(
            names,
            [
                "smtp:[10.0.0.5]:25(tls=may)",
                "smtp:[10.0.0.5]:25(tls=may)",
                "smtp:[10.0.0.5]:25(tls=verify)"
            ]
        );
        // Alone, a route keeps the plain name.
        let mut alone = vec![(&verify, describe(&verify, "c.test"))];
        disambiguate(&mut alone);
        assert_eq!(alone[0].1.as_deref(), Some("smtp:[10.0.0.5]:25"));
    }
}
