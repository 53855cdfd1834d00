//! The routing table: which transport and which next hop a recipient domain gets.
//!
//! Purpose: built once from the `[[route]]` entries, then asked for every recipient.
//!
//! Matching: case-insensitive, one trailing dot ignored. An exact pattern (`example.com`,
//! or an address literal `[192.0.2.1]`) wins over the longest matching subdomain pattern
//! (`.example.com` matches `a.example.com` and `b.a.example.com`, not `example.com`),
//! which wins over `*`. Without a `*` entry, the implicit default is `mx`, TLS `may`,
//! port 25 (reported as pattern `(default)`).
//!
//! Invariants: the table is immutable once built; a reload builds a new one and the caller
//! swaps it atomically, so a lookup never waits. A lookup is one hash probe for the exact
//! match plus one per label of the domain, and allocates only the returned strings. Every
//! domain pattern belongs to exactly one route (duplicates are a build error), so a domain
//! always maps to one route.
//!
//! Trust: domains looked up come from envelopes (remote peers); any string is accepted and
//! routes somewhere (an unparsable domain falls to `*`/default; the MX planner refuses it).

mod config;
mod hopname;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

pub use config::{LmtpServer, RejectReply, RelayHost, RouteConfig, TlsPolicy, TransportKind};
pub use hopname::MAX_NAME as MAX_NEXT_HOP_NAME;

use crate::name;

/// Port used at MX hosts when a route does not say.
pub const DEFAULT_MX_PORT: u16 = 25;

/// How mail for a route leaves, resolved from a [`RouteConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// MX lookup for the recipient domain, SMTP to the hosts found. For an address-literal
    /// domain, SMTP to that address directly.
    Mx {
        /// Port at the MX hosts.
        port: u16,
        /// TLS requirement towards the hosts.
        tls: TlsPolicy,
    },
    /// SMTP to fixed relay hosts, in order; no MX lookup.
    Smtp {
        /// The relay hosts, in the configured order; never empty.
        hosts: Vec<RelayHost>,
        /// TLS requirement towards the relays.
        tls: TlsPolicy,
    },
    /// Refuse the recipient with this reply.
    Reject {
        /// The permanent reply.
        reply: RejectReply,
    },
    /// Keep the mail queued until released by the operator.
    Hold,
    /// Deliver into Maildirs: each recipient's mailbox comes from the local directory;
    /// a mailbox name is the Maildir `<root>/<name>/Maildir`.
    Maildir {
        /// The directory holding the named mailboxes.
        root: PathBuf,
    },
    /// Deliver to an LMTP server; each recipient's mailbox name is its RCPT TO.
    Lmtp {
        /// The server.
        server: LmtpServer,
    },
    /// Write each message and its envelope into a directory (`tern_local::dropdir`).
    Drop {
        /// The directory; absolute, and no other `drop` route names the same one.
        dir: PathBuf,
    },
}

impl Transport {
    /// Whether the transport delivers into mailboxes of local domains.
    pub fn is_local(&self) -> bool {
        matches!(self, Transport::Maildir { .. } | Transport::Lmtp { .. })
    }
}

/// The queue a recipient joins: recipients with equal next hops are delivered together.
///
/// Its name (`Display`) says what the destination is: `mx:<domain>`,
/// `smtp:[relay.example]:25,[10.0.0.5]:587`, `lmtp:unix:/run/dovecot/lmtp`,
/// `maildir:/var/mail`, `drop:/srv/legacy`, `reject:<pattern>`, `hold:<pattern>` (the
/// rules are in `table/hopname.rs`). Names are printable ASCII, at most
/// [`MAX_NEXT_HOP_NAME`] octets, independent of the route's position in the file, and
/// equal exactly when the next hops are: routes with equal transports share one next
/// hop, so a reload that reorders routes keeps every name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum NextHop {
    /// MX delivery to one domain (lowercase, no trailing dot; literals canonical).
    Mx {
        /// The recipient domain.
        domain: String,
    },
    /// The relay hosts of an `smtp` route, shared by all its domains (and by every other
    /// route with the same hosts and TLS policy).
    Relay {
        /// The whole name, `smtp:...`.
        name: Arc<str>,
    },
    /// A `reject` route.
    Reject {
        /// The whole name, `reject:<first pattern>`.
        name: Arc<str>,
    },
    /// A `hold` route.
    Hold {
        /// The whole name, `hold:<first pattern>`.
        name: Arc<str>,
    },
    /// A Maildir root: all its mailboxes share the concurrency limits of one destination.
    Maildir {
        /// The whole name, `maildir:<root>`.
        name: Arc<str>,
    },
    /// An LMTP server.
    Lmtp {
        /// The whole name, `lmtp:unix:<path>` or `lmtp:[host]:port`.
        name: Arc<str>,
    },
    /// A drop directory.
    Drop {
        /// The whole name, `drop:<directory>`.
        name: Arc<str>,
    },
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // A domain from an envelope: escaped and bounded like every other name.
            NextHop::Mx { domain } => {
                let printable = domain.len() <= hopname::MAX_NAME - 3
                    && domain.bytes().all(|b| b.is_ascii_graphic() && b != b'%');
                if printable {
                    write!(f, "mx:{domain}")
                } else {
                    f.write_str(&hopname::bounded("mx", domain))
                }
            }
            NextHop::Relay { name }
            | NextHop::Reject { name }
            | NextHop::Hold { name }
            | NextHop::Maildir { name }
            | NextHop::Lmtp { name }
            | NextHop::Drop { name } => f.write_str(name),
        }
    }
}

/// The answer of [`RoutingTable::route`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The pattern that matched, normalised (`example.com`, `.example.com`, `*`), or
    /// `(default)` for the implicit default route.
    pub pattern: String,
    /// How the mail leaves.
    pub transport: Arc<Transport>,
    /// The queue the recipient joins.
    pub next_hop: NextHop,
}

/// One thing wrong with the `[[route]]` configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteProblem {
    /// Where: `route[2]`, `route[2].hosts[0]`, `route[0].domains`.
    pub key: String,
    /// What is wrong, as a sentence for the operator.
    pub message: String,
}

impl fmt::Display for RouteProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// A domain pattern after parsing.
enum Pattern {
    /// The domain itself (or an address literal), normalised.
    Exact(String),
    /// Strict subdomains of this domain (stored without the leading dot).
    Suffix(String),
    /// `*`.
    Any,
}

impl Pattern {
    fn parse(text: &str) -> Result<Pattern, String> {
        let text = text.trim();
        if text == "*" {
            return Ok(Pattern::Any);
        }
        if text.starts_with('[') {
            return match name::parse_address_literal(text) {
                Some(ip) => Ok(Pattern::Exact(name::canonical_literal(ip))),
                None => Err(format!(
                    "{text:?} is not an address literal ([192.0.2.1] or [IPv6:2001:db8::1])"
                )),
            };
        }
        if text.starts_with("*.") {
            return Err(format!(
                "{text:?}: wildcards are written as a leading dot, {:?}",
                text.get(1..).unwrap_or_default()
            ));
        }
        let (suffix, domain) = match text.strip_prefix('.') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let domain = name::normalize(domain).into_owned();
        name::check_domain(&domain).map_err(|why| format!("{text:?}: {why}"))?;
        Ok(if suffix {
            Pattern::Suffix(domain)
        } else {
            Pattern::Exact(domain)
        })
    }

    fn text(&self) -> String {
        match self {
            Pattern::Exact(d) => d.clone(),
            Pattern::Suffix(d) => format!(".{d}"),
            Pattern::Any => "*".to_owned(),
        }
    }
}

/// One built route.
#[derive(Debug)]
struct Entry {
    transport: Arc<Transport>,
    /// The name of its next hop (`None` for `mx`, named by each recipient domain).
    hop_name: Option<Arc<str>>,
}

/// The routing table. Cheap to query, immutable after [`RoutingTable::new`].
#[derive(Debug)]
pub struct RoutingTable {
    entries: Vec<Entry>,
    /// Exact domain -> route index.
    exact: HashMap<String, usize>,
    /// Parent domain (without the leading dot) -> route index.
    suffix: HashMap<String, usize>,
    /// Route index of `*`.
    wildcard: Option<usize>,
    /// Used when nothing matches and there is no `*`.
    default: Arc<Transport>,
}

impl RoutingTable {
    /// Builds the table, or returns every problem found (never just the first).
    pub fn new(routes: &[RouteConfig]) -> Result<RoutingTable, Vec<RouteProblem>> {
        let mut problems = Vec::new();
        let mut entries = Vec::with_capacity(routes.len());
        let mut exact = HashMap::new();
        let mut suffix = HashMap::new();
        let mut wildcard = None;
        // Normalised pattern text -> the key where it was first seen.
        let mut seen: HashMap<String, String> = HashMap::new();
        // Drop directory -> the route that writes into it: two routes sharing one would
        // write the same `<queue id>` names.
        let mut drop_dirs: HashMap<PathBuf, usize> = HashMap::new();

        for (i, route) in routes.iter().enumerate() {
            let transport = build_transport(i, route, &mut problems);
            if let Some(Transport::Drop { dir }) = &transport {
                if let Some(first) = drop_dirs.get(dir) {
                    problems.push(problem(
                        format!("route[{i}].dir"),
                        format!("route[{first}] already drops into {}", dir.display()),
                    ));
                } else {
                    drop_dirs.insert(dir.clone(), i);
                }
            }
            if route.domains.is_empty() {
                problems.push(problem(
                    format!("route[{i}].domains"),
                    "the route lists no domains; write domains = [\"*\"] for everything",
                ));
            }
            for (j, text) in route.domains.iter().enumerate() {
                let key = format!("route[{i}].domains[{j}]");
                let pattern = match Pattern::parse(text) {
                    Ok(p) => p,
                    Err(message) => {
                        problems.push(problem(key, message));
                        continue;
                    }
                };
                let normalised = pattern.text();
                if let Some(first) = seen.get(&normalised) {
                    problems.push(problem(
                        key,
                        format!("{normalised:?} is already routed by {first}"),
                    ));
                    continue;
                }
                seen.insert(normalised, key);
                match pattern {
                    Pattern::Exact(d) => {
                        exact.insert(d, i);
                    }
                    Pattern::Suffix(d) => {
                        suffix.insert(d, i);
                    }
                    Pattern::Any => wildcard = Some(i),
                }
            }
            entries.push(Entry {
                transport: Arc::new(transport.unwrap_or(Transport::Hold)),
                hop_name: None,
            });
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        name_next_hops(&mut entries, routes);
        Ok(RoutingTable {
            entries,
            exact,
            suffix,
            wildcard,
            default: Arc::new(Transport::Mx {
                port: DEFAULT_MX_PORT,
                tls: TlsPolicy::May,
            }),
        })
    }

    /// Routes a recipient domain (any case, optional trailing dot).
    pub fn route(&self, domain: &str) -> Route {
        let domain = name::normalize(domain);
        let domain = domain.as_ref();
        if let Some(&i) = self.exact.get(domain) {
            return self.matched(i, domain.to_owned(), domain);
        }
        // Longest suffix first: walk from the full domain's parent towards the root.
        let mut rest = domain;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(&i) = self.suffix.get(parent) {
                return self.matched(i, format!(".{parent}"), domain);
            }
            rest = parent;
        }
        if let Some(i) = self.wildcard {
            return self.matched(i, "*".to_owned(), domain);
        }
        Route {
            pattern: "(default)".to_owned(),
            transport: Arc::clone(&self.default),
            next_hop: NextHop::Mx {
                domain: domain.to_owned(),
            },
        }
    }

    /// Number of configured routes (the implicit default not counted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no route is configured (everything takes the implicit default).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn matched(&self, index: usize, pattern: String, domain: &str) -> Route {
        let transport = match self.entries.get(index) {
            Some(entry) => Arc::clone(&entry.transport),
            // Indexes come from `new` and always exist; fall back rather than panic.
            None => Arc::clone(&self.default),
        };
        // Every non-mx entry has its name (`name_next_hops`); an empty one never shows.
        let name = self
            .entries
            .get(index)
            .and_then(|e| e.hop_name.clone())
            .unwrap_or_else(|| Arc::from(""));
        let next_hop = match transport.as_ref() {
            Transport::Mx { .. } => NextHop::Mx {
                domain: domain.to_owned(),
            },
            Transport::Smtp { .. } => NextHop::Relay { name },
            Transport::Reject { .. } => NextHop::Reject { name },
            Transport::Hold => NextHop::Hold { name },
            Transport::Maildir { .. } => NextHop::Maildir { name },
            Transport::Lmtp { .. } => NextHop::Lmtp { name },
            Transport::Drop { .. } => NextHop::Drop { name },
        };
        Route {
            pattern,
            transport,
            next_hop,
        }
    }
}

/// Names the next hop of every entry (see `hopname`): described from its transport,
/// then made unique per distinct transport.
fn name_next_hops(entries: &mut [Entry], routes: &[RouteConfig]) {
    let described: Vec<Option<String>> = entries
        .iter()
        .zip(routes)
        .map(|(e, r)| {
            let first = r
                .domains
                .first()
                .and_then(|d| Pattern::parse(d).ok())
                .map(|p| p.text())
                .unwrap_or_default();
            hopname::describe(&e.transport, &first)
        })
        .collect();
    let mut named: Vec<(&Transport, Option<String>)> = entries
        .iter()
        .map(|e| e.transport.as_ref())
        .zip(described)
        .collect();
    hopname::disambiguate(&mut named);
    let names: Vec<Option<Arc<str>>> = named.into_iter().map(|(_, n)| n.map(Arc::from)).collect();
    for (e, n) in entries.iter_mut().zip(names) {
        e.hop_name = n;
    }
}

fn problem(key: String, message: impl Into<String>) -> RouteProblem {
    RouteProblem {
        key,
        message: message.into(),
    }
}

/// Checks the transport-specific keys of route `i` and builds its transport. Returns
/// `None` (with problems pushed) when the route is unusable.
fn build_transport(
    i: usize,
    route: &RouteConfig,
    problems: &mut Vec<RouteProblem>,
) -> Option<Transport> {
    let before = problems.len();
    let kind = route.transport;
    if kind != TransportKind::Smtp && !route.hosts.is_empty() {
        problems.push(problem(
            format!("route[{i}].hosts"),
            format!("hosts are only for transport \"smtp\", not \"{kind}\""),
        ));
    }
    if kind != TransportKind::Reject && route.reply.is_some() {
        problems.push(problem(
            format!("route[{i}].reply"),
            format!("reply is only for transport \"reject\", not \"{kind}\""),
        ));
    }
    if kind != TransportKind::Mx && route.port.is_some() {
        problems.push(problem(
            format!("route[{i}].port"),
            format!(
                "port is only for transport \"mx\", not \"{kind}\"; \
                 relay hosts carry their own port (host:port)"
            ),
        ));
    }
    if kind != TransportKind::Maildir && route.path.is_some() {
        problems.push(problem(
            format!("route[{i}].path"),
            format!("path is only for transport \"maildir\", not \"{kind}\""),
        ));
    }
    if kind != TransportKind::Lmtp && route.server.is_some() {
        problems.push(problem(
            format!("route[{i}].server"),
            format!("server is only for transport \"lmtp\", not \"{kind}\""),
        ));
    }
    if kind != TransportKind::Drop && route.dir.is_some() {
        problems.push(problem(
            format!("route[{i}].dir"),
            format!("dir is only for transport \"drop\", not \"{kind}\""),
        ));
    }
    if matches!(
        kind,
        TransportKind::Reject
            | TransportKind::Hold
            | TransportKind::Maildir
            | TransportKind::Lmtp
            | TransportKind::Drop
    ) && route.tls.is_some()
    {
        problems.push(problem(
            format!("route[{i}].tls"),
            format!("tls has no effect on transport \"{kind}\""),
        ));
    }
    let tls = route.tls.unwrap_or_default();
    let transport = match kind {
        TransportKind::Mx => {
            let port = route.port.unwrap_or(DEFAULT_MX_PORT);
            if port == 0 {
                problems.push(problem(
                    format!("route[{i}].port"),
                    "the port must be from 1 to 65535",
                ));
            }
            Transport::Mx { port, tls }
        }
        TransportKind::Smtp => {
            if route.hosts.is_empty() {
                problems.push(problem(
                    format!("route[{i}].hosts"),
                    "transport \"smtp\" needs at least one relay host",
                ));
            }
            let mut hosts = Vec::with_capacity(route.hosts.len());
            for (j, text) in route.hosts.iter().enumerate() {
                match RelayHost::parse(text) {
                    Ok(h) => hosts.push(h),
                    Err(message) => {
                        problems.push(problem(format!("route[{i}].hosts[{j}]"), message))
                    }
                }
            }
            Transport::Smtp { hosts, tls }
        }
        TransportKind::Reject => {
            let reply = match &route.reply {
                None => RejectReply::default(),
                Some(text) => match RejectReply::parse(text) {
                    Ok(r) => r,
                    Err(message) => {
                        problems.push(problem(format!("route[{i}].reply"), message));
                        RejectReply::default()
                    }
                },
            };
            Transport::Reject { reply }
        }
        TransportKind::Hold => Transport::Hold,
        TransportKind::Maildir => match &route.path {
            Some(root) if !root.as_os_str().is_empty() => Transport::Maildir { root: root.clone() },
            _ => {
                problems.push(problem(
                    format!("route[{i}].path"),
                    "transport \"maildir\" needs the directory of its mailboxes",
                ));
                Transport::Hold
            }
        },
        TransportKind::Lmtp => match route.server.as_deref().map(LmtpServer::parse) {
            Some(Ok(server)) => Transport::Lmtp { server },
            Some(Err(message)) => {
                problems.push(problem(format!("route[{i}].server"), message));
                Transport::Hold
            }
            None => {
                problems.push(problem(
                    format!("route[{i}].server"),
                    "transport \"lmtp\" needs server = \"unix:/path\" or \"host:port\"",
                ));
                Transport::Hold
            }
        },
        TransportKind::Drop => match &route.dir {
            None => {
                problems.push(problem(
                    format!("route[{i}].dir"),
                    "transport \"drop\" needs dir, the directory messages are written into",
                ));
                Transport::Hold
            }
            Some(dir) if !dir.is_absolute() => {
                problems.push(problem(
                    format!("route[{i}].dir"),
                    format!("{:?} must be an absolute path", dir.display().to_string()),
                ));
                Transport::Hold
            }
            Some(dir) => Transport::Drop { dir: dir.clone() },
        },
    };
    (problems.len() == before).then_some(transport)
}
