//! The local directory: local domains, mailboxes, aliases and catch-alls, compiled from
//! the `[local]` section and its two map files.
//!
//! Two questions are answered here:
//! - at RCPT time, [`LocalDirectory::resolve`]: what an address becomes. An address in
//!   a domain that is not local is [`Resolution::NotLocal`] (relay policy and routing
//!   decide). A local address expands through the alias map (recursively, see
//!   `expand.rs`) into final recipients, each either a local address that has a mailbox
//!   or an address elsewhere; or it is refused ([`Refusal`]: unknown user, alias loop,
//!   expansion too deep or too large), so Tern never accepts mail it would have to
//!   bounce later.
//! - at delivery time, [`LocalDirectory::mailbox`]: which mailbox a final local address
//!   is (its mailbox map entry, else its domain's catch-all).
//!
//! Precedence for one address: alias map (full address, then the bare local part that
//! applies to every local domain), then mailbox map, then the domain's catch-all. With a
//! `recipient_delimiter`, `user+ext@domain` is looked up as itself first and then as
//! `user@domain` in each map in turn (Postfix's order): an alias of `user` beats a
//! mailbox of `user+ext`, a mailbox of `user` beats the catch-all. The address keeps its
//! extension as the final recipient (it is the Delivered-To); the extension is not
//! carried over to an alias's members.
//!
//! Invariants: immutable once built; [`LocalDirectory::load`] reports every problem of
//! the section and both files at once and builds nothing when there is one. Lookups are
//! hash probes; expansion is bounded by [`MAX_DEPTH`], [`MAX_EXPANSION`] and a step
//! budget, whatever the maps hold.
//!
//! Trust: see the crate header. The catch-all `{local}` placeholder is filled only with
//! a local part that is a safe name ([`crate::address::is_safe_name`]).

mod expand;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::address::{LocalAddress, is_safe_name, normalize_domain};
use crate::maildir::Guard;
use crate::maps::{self, MapError};

/// Deepest alias nesting followed (Postfix's `virtual_alias_recursion_limit` is 1000;
/// 20 is plenty for people and stops loops early).
pub const MAX_DEPTH: usize = 20;
/// Most final recipients one address may expand to.
pub const MAX_EXPANSION: usize = 1000;

/// Default of [`LocalConfig::max_new_mailboxes_per_message`].
pub const DEFAULT_MAX_NEW_MAILBOXES: usize = 100;

/// The `[local]` configuration section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct LocalConfig {
    /// Domains whose mail ends here: exact names, no patterns.
    pub domains: Vec<String>,
    /// The mailbox map file (address to mailbox), if any.
    pub mailbox_map: Option<PathBuf>,
    /// The alias map file (address to addresses), if any.
    pub alias_map: Option<PathBuf>,
    /// Per local domain, the mailbox of every address that has neither an alias nor a
    /// mailbox; `{local}` stands for the local part (ASCII letters lower-cased).
    pub catch_all: BTreeMap<String, String>,
    /// Quota of every Maildir mailbox without its own `quota=`, in bytes; 0: none.
    pub quota_bytes: u64,
    /// What a delivery over quota does.
    pub quota_exceeded: QuotaAction,
    /// Characters that start an address extension (`user+ext@domain` is delivered to
    /// `user`), as Postfix's `recipient_delimiter`; empty: none.
    pub recipient_delimiter: String,
    /// Most Maildirs one message may create (on one route); recipients whose Maildir
    /// does not exist yet beyond it are deferred with `452 4.5.3` and get theirs at a
    /// later attempt. At least 1.
    pub max_new_mailboxes_per_message: usize,
}

impl Default for LocalConfig {
    fn default() -> LocalConfig {
        LocalConfig {
            domains: Vec::new(),
            mailbox_map: None,
            alias_map: None,
            catch_all: BTreeMap::new(),
            quota_bytes: 0,
            quota_exceeded: QuotaAction::default(),
            recipient_delimiter: String::new(),
            max_new_mailboxes_per_message: DEFAULT_MAX_NEW_MAILBOXES,
        }
    }
}

/// What a Maildir delivery over quota does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaAction {
    /// Defer with `452 4.2.2`: the mail waits until the owner makes room or it expires.
    #[default]
    Defer,
    /// Fail with `552 5.2.2`: the sender gets a bounce.
    Bounce,
}

/// Where a mailbox is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MailboxTarget {
    /// A name: `<root>/<name>/Maildir` for a `maildir` route, the user name given to the
    /// server in RCPT TO for an `lmtp` route. Always a safe name.
    Name(String),
    /// An absolute path of a Maildir (never holds `..`); `maildir` routes only.
    Path(PathBuf),
}

/// A mailbox with its quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// Where it is.
    pub target: MailboxTarget,
    /// Quota in bytes; `None`: no quota.
    pub quota: Option<u64>,
}

impl Mailbox {
    /// The Maildir of this mailbox under a `maildir` route's root.
    pub fn maildir_path(&self, root: &Path) -> PathBuf {
        match &self.target {
            MailboxTarget::Name(name) => root.join(name).join("Maildir"),
            MailboxTarget::Path(path) => path.clone(),
        }
    }

    /// The user name for LMTP's RCPT TO; `None` for a path.
    pub fn lmtp_user(&self) -> Option<&str> {
        match &self.target {
            MailboxTarget::Name(name) => Some(name),
            MailboxTarget::Path(_) => None,
        }
    }
}

/// What [`LocalDirectory::resolve`] found for an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The domain is not local: relay policy and routing decide.
    NotLocal,
    /// The final recipients, without duplicates, in the order first reached; never
    /// empty. Local ones have a mailbox; the others are addresses elsewhere.
    Local(Vec<String>),
}

/// Why a local address is refused at RCPT time. Each maps to one SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No alias, no mailbox, no catch-all: `550 5.1.1`.
    #[error("<{address}>: Recipient address rejected: user unknown")]
    Unknown {
        /// The address.
        address: String,
    },
    /// An alias leads to a local address that has no mailbox: `550 5.1.1`.
    #[error("<{address}>: Recipient address rejected: alias member <{member}> is unknown")]
    UnknownMember {
        /// The address given.
        address: String,
        /// The member without a mailbox.
        member: String,
    },
    /// The alias expansion comes back to an address it is expanding: `550 5.4.6`.
    #[error("<{address}>: alias loop: {}", chain.join(" -> "))]
    Loop {
        /// The address given.
        address: String,
        /// The path of the loop, ending with the repeated address.
        chain: Vec<String>,
    },
    /// Aliases nested deeper than [`MAX_DEPTH`]: `550 5.4.6`.
    #[error("<{address}>: alias expansion deeper than {MAX_DEPTH} levels")]
    TooDeep {
        /// The address given.
        address: String,
    },
    /// More than [`MAX_EXPANSION`] final recipients: `550 5.5.3`.
    #[error("<{address}>: alias expands to more than {MAX_EXPANSION} recipients")]
    TooMany {
        /// The address given.
        address: String,
    },
}

impl Refusal {
    /// The SMTP reply code.
    pub fn code(&self) -> u16 {
        550
    }

    /// The enhanced status code (RFC 3463).
    pub fn enhanced(&self) -> &'static str {
        match self {
            Refusal::Unknown { .. } | Refusal::UnknownMember { .. } => "5.1.1",
            Refusal::Loop { .. } | Refusal::TooDeep { .. } => "5.4.6",
            Refusal::TooMany { .. } => "5.5.3",
        }
    }

    /// Whether the alias map is at fault (an operator should look), not the sender.
    pub fn is_alias_problem(&self) -> bool {
        !matches!(self, Refusal::Unknown { .. })
    }
}

/// One problem of the `[local]` section or its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalProblem {
    /// The key: `local.domains[1]`, `local.mailbox_map`, `local.catch_all.example.com`.
    pub key: String,
    /// What is wrong; map problems start with `file:line:`.
    pub message: String,
}

impl fmt::Display for LocalProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// A catch-all mailbox, `{local}` to be filled in.
#[derive(Debug, Clone)]
struct CatchAll {
    template: String,
    quota: Option<u64>,
}

/// The compiled `[local]` section. Cheap to query; immutable.
#[derive(Debug, Clone, Default)]
pub struct LocalDirectory {
    domains: HashSet<String>,
    /// Normalised address -> mailbox.
    mailboxes: HashMap<String, Mailbox>,
    /// Normalised key (`local@domain`, or a bare `local` for every domain) -> members
    /// as written (a bare member takes the domain of the address being expanded).
    aliases: HashMap<String, Vec<String>>,
    catch_all: HashMap<String, CatchAll>,
    quota_exceeded: QuotaAction,
    /// `recipient_delimiter`'s characters.
    delimiters: Vec<char>,
    /// Tern's own directories, which no Maildir may be or lie in.
    guard: Guard,
    /// `max_new_mailboxes_per_message`.
    max_new_mailboxes: usize,
    /// The mailbox map's path targets, with the address and line (for the static check
    /// against Tern's own directories).
    paths: Vec<(String, String, PathBuf)>,
}

impl LocalDirectory {
    /// An empty directory: no local domain.
    pub fn empty() -> LocalDirectory {
        LocalDirectory::default()
    }

    /// Builds the directory, reading the map files; returns every problem found.
    pub fn load(config: &LocalConfig) -> Result<LocalDirectory, Vec<LocalProblem>> {
        let mut problems = Vec::new();
        let mut dir = LocalDirectory {
            quota_exceeded: config.quota_exceeded,
            max_new_mailboxes: config.max_new_mailboxes_per_message,
            ..LocalDirectory::default()
        };
        if config.max_new_mailboxes_per_message == 0 {
            problems.push(problem(
                "local.max_new_mailboxes_per_message".to_owned(),
                "must be at least 1",
            ));
        }
        let default_quota = (config.quota_bytes > 0).then_some(config.quota_bytes);
        for c in config.recipient_delimiter.chars() {
            if !c.is_ascii_graphic() || matches!(c, '@' | '"' | '\\') {
                problems.push(problem(
                    "local.recipient_delimiter".to_owned(),
                    format!("{c:?} cannot start an extension (use printable ASCII other than @, \" and \\)"),
                ));
            } else if !dir.delimiters.contains(&c) {
                dir.delimiters.push(c);
            }
        }
        for (i, d) in config.domains.iter().enumerate() {
            let domain = normalize_domain(d.trim());
            match check_domain(&domain) {
                Err(why) => problems.push(problem(
                    format!("local.domains[{i}]"),
                    format!("{d:?}: {why}"),
                )),
                Ok(()) if !dir.domains.insert(domain) => problems.push(problem(
                    format!("local.domains[{i}]"),
                    format!("{d:?} is listed twice"),
                )),
                Ok(()) => {}
            }
        }
        for (domain, template) in &config.catch_all {
            let key = format!("local.catch_all.{domain}");
            if !dir.domains.contains(&normalize_domain(domain)) {
                problems.push(problem(key, format!("{domain:?} is not in local.domains")));
                continue;
            }
            let sample = template.replace("{local}", "x");
            if let Err(why) = parse_target(&sample) {
                problems.push(problem(key, format!("{template:?}: {why}")));
                continue;
            }
            dir.catch_all.insert(
                normalize_domain(domain),
                CatchAll {
                    template: template.clone(),
                    quota: default_quota,
                },
            );
        }
        if let Some(file) = &config.mailbox_map {
            let errors = dir.load_mailboxes(file, default_quota);
            problems.extend(map_problems("local.mailbox_map", errors));
        }
        if let Some(file) = &config.alias_map {
            let errors = dir.load_aliases(file);
            problems.extend(map_problems("local.alias_map", errors));
        }
        if problems.is_empty() {
            Ok(dir)
        } else {
            Err(problems)
        }
    }

    fn load_mailboxes(&mut self, file: &Path, default_quota: Option<u64>) -> Vec<MapError> {
        let text = match maps::read_map(file) {
            Ok(t) => t,
            Err(e) => return vec![e],
        };
        let (entries, mut errors) = maps::parse_mailbox_map(file, &text);
        let mut first: HashMap<String, usize> = HashMap::new();
        for e in entries {
            let Some(addr) = LocalAddress::parse(&e.address) else {
                errors.push(MapError::at(
                    file,
                    e.line,
                    format!("{:?} is not an address (local@domain)", e.address),
                ));
                continue;
            };
            if !self.domains.contains(&addr.domain) {
                errors.push(MapError::at(
                    file,
                    e.line,
                    format!("{:?}: {} is not in local.domains", e.address, addr.domain),
                ));
                continue;
            }
            let target = match parse_target(&e.mailbox) {
                Ok(t) => t,
                Err(why) => {
                    errors.push(MapError::at(
                        file,
                        e.line,
                        format!("mailbox {:?}: {why}", e.mailbox),
                    ));
                    continue;
                }
            };
            let key = addr.key();
            if let Some(line) = first.get(&key) {
                errors.push(MapError::at(
                    file,
                    e.line,
                    format!("{:?} is already mapped at line {line}", e.address),
                ));
                continue;
            }
            first.insert(key.clone(), e.line);
            if let MailboxTarget::Path(p) = &target {
                self.paths.push((
                    e.address.clone(),
                    format!("{}:{}", file.display(), e.line),
                    p.clone(),
                ));
            }
            let quota = match e.quota {
                Some(0) => None,
                Some(q) => Some(q),
                None => default_quota,
            };
            self.mailboxes.insert(key, Mailbox { target, quota });
        }
        errors
    }

    fn load_aliases(&mut self, file: &Path) -> Vec<MapError> {
        let text = match maps::read_map(file) {
            Ok(t) => t,
            Err(e) => return vec![e],
        };
        let (entries, mut errors) = maps::parse_alias_map(file, &text);
        let mut first: HashMap<String, usize> = HashMap::new();
        for e in entries {
            let key = if e.key.contains('@') {
                match LocalAddress::parse(&e.key) {
                    Some(a) if self.domains.contains(&a.domain) => a.key(),
                    Some(a) => {
                        errors.push(MapError::at(
                            file,
                            e.line,
                            format!("alias {:?}: {} is not in local.domains", e.key, a.domain),
                        ));
                        continue;
                    }
                    None => {
                        errors.push(MapError::at(
                            file,
                            e.line,
                            format!("alias {:?} is not an address", e.key),
                        ));
                        continue;
                    }
                }
            } else {
                e.key.to_ascii_lowercase()
            };
            if let Some(line) = first.get(&key) {
                errors.push(MapError::at(
                    file,
                    e.line,
                    format!("alias {:?} is already defined at line {line}", e.key),
                ));
                continue;
            }
            first.insert(key.clone(), e.line);
            self.aliases.insert(key, e.members);
        }
        errors
    }

    /// Whether mail for `domain` (any case, optional trailing dot) ends here.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        !self.domains.is_empty() && self.domains.contains(&normalize_domain(domain))
    }

    /// The local domains, in no particular order.
    pub fn domains(&self) -> impl Iterator<Item = &str> {
        self.domains.iter().map(String::as_str)
    }

    /// Whether the domain has a catch-all or at least one mailbox (a route must deliver
    /// its mail into mailboxes).
    pub fn has_mailboxes(&self, domain: &str) -> bool {
        let domain = normalize_domain(domain);
        self.catch_all.contains_key(&domain)
            || self
                .mailboxes
                .keys()
                .any(|k| k.rsplit_once('@').is_some_and(|(_, d)| d == domain))
    }

    /// Number of mailbox map entries and of aliases.
    pub fn counts(&self) -> (usize, usize) {
        (self.mailboxes.len(), self.aliases.len())
    }

    /// What a Maildir delivery over quota does.
    pub fn quota_exceeded(&self) -> QuotaAction {
        self.quota_exceeded
    }

    /// The directory with Tern's own directories protected (`protected`: the pickup
    /// directory, the spool, ...): no Maildir delivery goes into them (docs/LOCAL.md).
    pub fn with_guard(mut self, protected: Vec<PathBuf>) -> LocalDirectory {
        self.guard = Guard { protected };
        self
    }

    /// Tern's own directories, for Maildir deliveries.
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// Most Maildirs one message may create on one route.
    pub fn max_new_mailboxes_per_message(&self) -> usize {
        self.max_new_mailboxes.max(1)
    }

    /// Mailbox paths known now (the mailbox map's paths, catch-all paths up to their
    /// `{local}`, and the given Maildir roots with their keys) that lie in one of the
    /// guard's directories, as problems (`tern check-config` reports them). The same
    /// rule is applied at each delivery, through the real directories; this check sees
    /// the paths as they are now.
    pub fn guard_problems(&self, roots: &[(String, PathBuf)]) -> Vec<LocalProblem> {
        let protected: Vec<(PathBuf, PathBuf)> = self
            .guard
            .protected
            .iter()
            .map(|p| (p.clone(), resolve_existing(p)))
            .collect();
        let inside = |path: &Path| -> Option<&PathBuf> {
            let path = resolve_existing(path);
            protected
                .iter()
                .find(|(_, r)| path.starts_with(r))
                .map(|(p, _)| p)
        };
        let mut out = Vec::new();
        for (address, place, path) in &self.paths {
            if let Some(p) = inside(path) {
                out.push(problem(
                    "local.mailbox_map".to_owned(),
                    format!(
                        "{place}: {address}: mailbox {} lies in {}, one of Tern's own directories",
                        path.display(),
                        p.display()
                    ),
                ));
            }
        }
        let mut catch_alls: Vec<(&String, &CatchAll)> = self.catch_all.iter().collect();
        catch_alls.sort_by_key(|(d, _)| *d);
        for (domain, c) in catch_alls {
            if !c.template.starts_with('/') {
                continue;
            }
            let fixed: PathBuf = Path::new(&c.template)
                .components()
                .take_while(|comp| !comp.as_os_str().to_string_lossy().contains("{local}"))
                .collect();
            if let Some(p) = inside(&fixed) {
                out.push(problem(
                    format!("local.catch_all.{domain}"),
                    format!(
                        "{:?} lies in {}, one of Tern's own directories",
                        c.template,
                        p.display()
                    ),
                ));
            }
        }
        for (key, root) in roots {
            if let Some(p) = inside(root) {
                out.push(problem(
                    key.clone(),
                    format!(
                        "{} lies in {}, one of Tern's own directories",
                        root.display(),
                        p.display()
                    ),
                ));
            }
        }
        out
    }

    /// The mailbox of a final local address: its mailbox map entry, else its domain's
    /// catch-all. `None` when it has none (or the domain is not local).
    pub fn mailbox(&self, address: &str) -> Option<Mailbox> {
        let full = LocalAddress::parse(address)?;
        let base = self.base(&full);
        if let Some(m) = std::iter::once(&full)
            .chain(base.as_ref())
            .find_map(|a| self.mailboxes.get(&a.key()))
        {
            return Some(m.clone());
        }
        let addr = base.unwrap_or(full);
        let catch = self.catch_all.get(&addr.domain)?;
        if catch.template.contains("{local}") && !is_safe_name(&addr.local) {
            return None;
        }
        let target = parse_target(&catch.template.replace("{local}", &addr.local)).ok()?;
        Some(Mailbox {
            target,
            quota: catch.quota,
        })
    }

    /// Resolves a recipient at RCPT time (see the module header).
    pub fn resolve(&self, address: &str) -> Result<Resolution, Refusal> {
        match LocalAddress::parse(address) {
            Some(a) if self.domains.contains(&a.domain) => {
                expand::expand(self, address).map(Resolution::Local)
            }
            _ => Ok(Resolution::NotLocal),
        }
    }

    /// The members of the alias for `addr`, if it is one.
    fn alias(&self, addr: &LocalAddress) -> Option<&[String]> {
        let base = self.base(addr);
        std::iter::once(addr)
            .chain(base.as_ref())
            .find_map(|a| {
                self.aliases
                    .get(&a.key())
                    .or_else(|| self.aliases.get(&a.local))
            })
            .map(Vec::as_slice)
    }

    /// `addr` without its extension (from the first delimiter on), when it has one. A
    /// local part that starts with a delimiter has none: `+x` stays `+x`.
    fn base(&self, addr: &LocalAddress) -> Option<LocalAddress> {
        if self.delimiters.is_empty() {
            return None;
        }
        let at = addr.local.find(|c| self.delimiters.contains(&c))?;
        (at > 0).then(|| LocalAddress {
            local: addr.local[..at].to_owned(),
            domain: addr.domain.clone(),
        })
    }
}

/// `path` made absolute with its longest existing ancestor canonicalised (links
/// resolved), the rest appended as written.
fn resolve_existing(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut head = abs.clone();
    let mut tail = Vec::new();
    loop {
        if let Ok(real) = head.canonicalize() {
            let mut out = real;
            out.extend(tail.iter().rev());
            return out;
        }
        match (head.file_name().map(ToOwned::to_owned), head.parent()) {
            (Some(name), Some(parent)) => {
                tail.push(name);
                head = parent.to_path_buf();
            }
            _ => return abs,
        }
    }
}

fn problem(key: String, message: impl Into<String>) -> LocalProblem {
    LocalProblem {
        key,
        message: message.into(),
    }
}

fn map_problems(key: &str, errors: Vec<MapError>) -> impl Iterator<Item = LocalProblem> + '_ {
    errors
        .into_iter()
        .map(move |e| problem(key.to_owned(), e.to_string()))
}

/// A mailbox as written: an absolute path without `..`, or a safe name.
fn parse_target(text: &str) -> Result<MailboxTarget, String> {
    if text.starts_with('/') {
        let path = Path::new(text);
        if path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err("a mailbox path may not contain \"..\"".into());
        }
        if text.chars().any(char::is_control) {
            return Err("a mailbox path may not contain control characters".into());
        }
        return Ok(MailboxTarget::Path(path.to_path_buf()));
    }
    if is_safe_name(text) {
        Ok(MailboxTarget::Name(text.to_owned()))
    } else {
        Err(
            "a mailbox is an absolute path or a name of letters, digits and . _ + - = @ \
             (not starting with a dot)"
                .into(),
        )
    }
}

/// An exact host name: labels of letters, digits and inner hyphens.
fn check_domain(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("not a domain name");
    }
    if name.starts_with('.') || name.contains('*') {
        return Err("local domains are exact names, without patterns");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err("not a valid domain name")
    }
}
