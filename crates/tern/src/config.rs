//! Tern's configuration file: one TOML document, every key documented in docs/CONFIG.md.
//!
//! Loading is two-phase so `tern check-config` can report every problem at once:
//! 1. TOML is deserialised with `serde_ignored`, which collects every unknown key with its
//!    full path instead of stopping at the first (a type error still stops parsing, and
//!    toml's message names the key and line). For this to work no config struct may use
//!    `deny_unknown_fields`: that would turn the first unknown key into a hard error;
//! 2. each section's `problems()` checks values and cross-field rules.
//!
//! 3. the `[local]` section's map files are read and compiled into the
//!    [`LocalDirectory`] (every map error as `file:line`), and local domains are checked
//!    against the routes (a domain with mailboxes needs a `maildir` or `lmtp` route, and
//!    those routes take local domains only).
//!
//! Relative paths (`data_dir`, map files, a maildir route's `path`) are relative to the
//! working directory. A `maildir` route without `path` gets `<data_dir>/mail`.
//!
//! With no file, [`Config::embedded_default`] is used: one listener on 127.0.0.1:2525,
//! data under `./tern-data`, the system host name, mail accepted for `localhost` and, from
//! loopback clients only, for any domain; `localhost` is a local domain whose every
//! address is the Maildir `./tern-data/mail/<local part>/Maildir`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tern_local::{LocalConfig, LocalDirectory};
use tern_queue::{DeliveryConfig, QueueConfig};
use tern_route::dns::DnsConfig;
use tern_route::{RouteConfig, RoutingTable, TransportKind};
use tern_smtpd::{ConfigProblem, ListenerConfig, RelayConfig};
use tern_spool::backpressure::BackPressureConfig;

/// The embedded default configuration (also shipped as docs/tern.example.toml).
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Names Tern's own ways in write as the envelope's listener (the pickup directory and
/// `tern sendmail`: `pickup`; delivery status notifications: `dsn`; DMARC aggregate
/// reports: `dmarc-reports`; TLS reports: `tls-reports`); an SMTP listener may not take one.
pub const RESERVED_LISTENER_NAMES: &[&str] = &["pickup", "dsn", "dmarc-reports", "tls-reports"];

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, serde::Serialize, Default)]
#[serde(default)]
pub struct Config {
    /// `[server]`.
    pub server: ServerSection,
    /// `[relay]`.
    pub relay: RelayConfig,
    /// `[dns]`.
    pub dns: DnsSection,
    /// `[dane]`: DNSSEC validation for DANE routes (docs/TLS.md, "DANE").
    pub dane: DaneSection,
    /// `[back_pressure]`.
    pub back_pressure: BackPressureConfig,
    /// `[[listener]]`.
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// `[queue]`.
    pub queue: QueueSection,
    /// `[delivery]`.
    pub delivery: DeliveryConfig,
    /// `[[route]]`, in order.
    #[serde(rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// `[watchdog]`.
    pub watchdog: WatchdogSection,
    /// `[local]`: local domains, mailbox and alias maps (docs/LOCAL.md).
    pub local: LocalConfig,
    /// The `[local]` section compiled, with its map files read: filled by
    /// [`Config::parse`], swapped with the routes on reload.
    #[serde(skip)]
    pub local_directory: Arc<LocalDirectory>,
    /// `[spool]`.
    pub spool: SpoolSection,
    /// `[pickup]`.
    pub pickup: PickupSection,
    /// `[admin]`: the admin API, web viewer, metrics and health listener (docs/ADMIN.md).
    pub admin: tern_admin::AdminConfig,
    /// `[tracking]`: the message tracking log (docs/ADMIN.md#message-tracking).
    pub tracking: TrackingSection,
    /// `[limits]`: rate limits per client network, user and sender domain
    /// (docs/LIMITS.md).
    pub limits: tern_smtpd::rate::LimitsConfig,
    /// `[dkim]`: DKIM signing domains, keys and rules (docs/DKIM.md). Its key files are
    /// read by the server at start and reload, and by `check-config`, not here.
    pub dkim: tern_dkim::DkimConfig,
    /// `[arc]`: ARC sealing of forwarded mail (docs/DKIM.md, "ARC sealing"). Its key
    /// file is read by the server at start and reload, and by `check-config`.
    pub arc: tern_dkim::arc::ArcConfig,
    /// `[auth]`: SMTP AUTH for submission listeners (docs/SUBMISSION.md).
    pub auth: tern_auth::AuthConfig,
    /// `[screen]`: screening before the first command and greylisting
    /// (docs/SCREENING.md).
    pub screen: tern_screen::ScreenConfig,
    /// `[verify]`: inbound SPF, DKIM, DMARC and ARC verification and policy
    /// (docs/FILTERING.md).
    pub verify: tern_authcheck::VerifyConfig,
    /// `[dmarc_reports]`: DMARC aggregate reports (docs/REPORTS.md).
    pub dmarc_reports: tern_reports::DmarcReportsConfig,
    /// `[mta_sts]`: MTA-STS policies of destination domains (docs/TLS.md, "MTA-STS").
    pub mta_sts: MtaStsSection,
    /// `[tls_reports]`: SMTP TLS reports, RFC 8460 (docs/TLS.md).
    pub tls_reports: tern_reports::tlsrpt::TlsReportsConfig,
    /// `[cluster]`: several nodes sharing limits, destination state and membership
    /// through Redis (docs/CLUSTER.md).
    pub cluster: tern_cluster::ClusterConfig,
}

/// `[tracking]`: the message tracking log in `<data_dir>/tracking/`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct TrackingSection {
    /// Write the tracking log in `tern serve`.
    pub enabled: bool,
    /// The current file is rotated before it would pass this size, 4096 to 2^40.
    pub max_file_bytes: u64,
    /// The current file is rotated when its first record is this old, 60 to 31622400.
    pub max_file_age_secs: u64,
    /// Rotated files kept (the newest), 1 to 10000.
    pub keep_files: usize,
}

impl Default for TrackingSection {
    fn default() -> TrackingSection {
        TrackingSection {
            enabled: true,
            max_file_bytes: 64 * 1024 * 1024,
            max_file_age_secs: 86_400,
            keep_files: 14,
        }
    }
}

/// `[pickup]`: the pickup directory, the way in for other systems and `tern sendmail`
/// (docs/CONNECTORS.md).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct PickupSection {
    /// Run the pickup service in `tern serve`.
    pub enabled: bool,
    /// The directory; empty means `<data_dir>/pickup`.
    pub dir: PathBuf,
    /// Milliseconds between scans, 10 to 60000.
    pub interval_ms: u64,
    /// Files (or pairs) claimed per scan, 1 to 10000.
    pub max_files_per_scan: usize,
    /// Sender of a file without Sender or From; empty means `postmaster@<hostname>`.
    pub default_sender: String,
    /// Seconds half a pair may wait before it goes to badmail, 0 to 604800.
    pub orphan_after_secs: u64,
}

impl Default for PickupSection {
    fn default() -> PickupSection {
        PickupSection {
            enabled: true,
            dir: PathBuf::new(),
            interval_ms: 1000,
            max_files_per_scan: 100,
            default_sender: String::new(),
            orphan_after_secs: 3600,
        }
    }
}

/// `[spool]`: how the spool makes new messages durable (docs/SPOOL.md).
#[derive(Debug, Clone, Deserialize, serde::Serialize, Default)]
#[serde(default)]
pub struct SpoolSection {
    /// `file` (each message synced on its own, the default) or `batch` (messages
    /// committed together share two `syncfs` calls; for a spool on a filesystem of its
    /// own).
    pub commit: tern_spool::CommitMode,
}

/// `[watchdog]`: the supervisor that notices stalled workers (docs/RELIABILITY.md).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct WatchdogSection {
    /// Watch the workers, report stalls (events 5001 to 5003), restart delivery workers
    /// and write `status.json` for `tern status`.
    pub enabled: bool,
    /// Seconds a worker with work waiting may go without progress before it is stalled
    /// (longer while it waits on network I/O with a longer timeout), 1 to 3600.
    pub stall_after_secs: u64,
}

impl Default for WatchdogSection {
    fn default() -> WatchdogSection {
        WatchdogSection {
            enabled: true,
            stall_after_secs: 60,
        }
    }
}

/// Unknown keys of `[queue]`, which serde_ignored cannot see: the section flattens
/// `QueueConfig` into it, and a flattened struct takes every key it is offered. The known
/// keys are `deliver` and the fields of `QueueConfig` (read from its serialized default,
/// so a new field is known without a list to keep in step).
fn unknown_queue_keys(text: &str) -> Vec<ConfigProblem> {
    let Ok(doc) = text.parse::<toml::Table>() else {
        return Vec::new(); // a syntax error is reported by the parse itself
    };
    let Some(toml::Value::Table(queue)) = doc.get("queue") else {
        return Vec::new();
    };
    let known = match serde_json::to_value(QueueConfig::default()) {
        Ok(serde_json::Value::Object(fields)) => fields,
        _ => return Vec::new(),
    };
    queue
        .keys()
        .filter(|k| k.as_str() != "deliver" && !known.contains_key(k.as_str()))
        .map(|k| ConfigProblem::new(format!("queue.{k}"), "unknown key"))
        .collect()
}

/// `[queue]`: the scheduling settings plus the switch that turns delivery off.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct QueueSection {
    /// Run the queue manager. `false` keeps every received message in `incoming/`
    /// untouched (maintenance mode, like stopping Postfix's qmgr or suspending an
    /// Exchange queue); nothing is delivered until it is turned on again.
    pub deliver: bool,
    /// The scheduling settings.
    #[serde(flatten)]
    pub settings: QueueConfig,
}

impl Default for QueueSection {
    fn default() -> QueueSection {
        QueueSection {
            deliver: true,
            settings: QueueConfig::default(),
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct ServerSection {
    /// Host name in the greeting and Received headers; empty = the system's.
    pub hostname: String,
    /// Directory for the spool, the event log and other state.
    pub data_dir: PathBuf,
    /// Lowest event severity written (debug, info, notice, warning, error).
    pub log_level: String,
    /// Copy events to stderr in readable form.
    pub log_stderr: bool,
    /// Seconds sessions in the middle of a message may take to finish at shutdown.
    pub shutdown_grace_secs: u64,
}

impl Default for ServerSection {
    fn default() -> ServerSection {
        ServerSection {
            hostname: String::new(),
            data_dir: PathBuf::from("./tern-data"),
            log_level: "info".into(),
            log_stderr: true,
            shutdown_grace_secs: 30,
        }
    }
}

/// `[dns]`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct DnsSection {
    /// Name servers as `address:port`; empty = the system's (/etc/resolv.conf).
    pub nameservers: Vec<SocketAddr>,
    /// Look up and confirm each client's reverse-DNS name.
    pub reverse_lookups: bool,
    /// Milliseconds allowed for a client's reverse lookup plus forward confirmation.
    pub client_lookup_timeout_ms: u64,
    /// Milliseconds allowed for each outbound lookup (MX, A, AAAA).
    pub timeout_ms: u64,
    /// Shortest time an answer is cached, seconds (a smaller TTL is raised to it).
    pub min_ttl_secs: u64,
    /// Longest time an answer is cached, seconds (a larger TTL is cut to it).
    pub max_ttl_secs: u64,
    /// How long a failed lookup (SERVFAIL, timeout) is remembered, seconds.
    pub failure_ttl_secs: u64,
    /// Longest time a "no such domain" or "no such record" answer is cached, seconds.
    pub negative_ttl_max_secs: u64,
}

impl DnsSection {
    /// The outbound resolver's settings.
    pub fn resolver_config(&self) -> DnsConfig {
        DnsConfig {
            nameservers: self.nameservers.clone(),
            timeout: Duration::from_millis(self.timeout_ms),
            min_ttl: Duration::from_secs(self.min_ttl_secs),
            max_ttl: Duration::from_secs(self.max_ttl_secs),
            failure_ttl: Duration::from_secs(self.failure_ttl_secs),
            negative_ttl_max: Duration::from_secs(self.negative_ttl_max_secs),
            cache_entries: 10_000,
        }
    }
}

/// `[dane]`: the DNSSEC-validating resolver used for routes with `tls = "dane"` or
/// `"dane-only"` (RFC 7672). Read at start; a change needs a restart.
#[derive(Debug, Clone, Deserialize, serde::Serialize, Default)]
#[serde(default)]
pub struct DaneSection {
    /// A file of DNSKEY records (presentation form) validation starts from; `None`: the
    /// IANA root zone's keys built into hickory.
    pub trust_anchor: Option<PathBuf>,
    /// Name servers for validated lookups (`address:port`); empty: the `[dns]` ones. They
    /// must pass DNSSEC records (RRSIG, DNSKEY, DS, NSEC) through.
    pub nameservers: Vec<SocketAddr>,
}

impl DaneSection {
    /// The validating resolver's settings: `[dns]`'s, with this section's servers.
    pub fn resolver_config(&self, dns: &DnsSection) -> DnsConfig {
        let mut c = dns.resolver_config();
        if !self.nameservers.is_empty() {
            c.nameservers = self.nameservers.clone();
        }
        c
    }

    /// The trust anchor to validate from.
    pub fn trust_anchor(
        &self,
    ) -> Result<tern_route::dns::dnssec::TrustAnchor, tern_route::dns::TrustAnchorError> {
        match &self.trust_anchor {
            Some(path) => tern_route::dns::dnssec::TrustAnchor::from_file(path),
            None => Ok(tern_route::dns::dnssec::TrustAnchor::iana_root()),
        }
    }
}

impl Default for DnsSection {
    fn default() -> DnsSection {
        DnsSection {
            nameservers: Vec::new(),
            reverse_lookups: true,
            client_lookup_timeout_ms: 3000,
            timeout_ms: 5000,
            min_ttl_secs: 0,
            max_ttl_secs: 86_400,
            failure_ttl_secs: 30,
            negative_ttl_max_secs: 3600,
        }
    }
}

/// `[mta_sts]`: MTA-STS (RFC 8461) for `mx` routes whose `tls` is `may`, `dane` or
/// `dane-only` (docs/TLS.md, "MTA-STS").
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct MtaStsSection {
    /// Look up and apply destination domains' policies.
    pub enabled: bool,
    /// Bound on one policy fetch (resolution, connection, TLS, response), 1 to 60 s.
    pub fetch_timeout_secs: u64,
    /// The largest policy file accepted, 1024 to 1048576 octets.
    pub max_policy_bytes: usize,
    /// The most domains whose policy is cached (memory and `<data_dir>/mta-sts/`),
    /// 1 to 1000000.
    pub cache_max_domains: usize,
    /// How long a failed fetch is not tried again for its domain, 1 to 86400 s.
    pub retry_failed_secs: u64,
    /// Extra trust anchors (PEM) for the policy hosts' certificates, added to the
    /// webpki roots (a private PKI; the tests' CA).
    pub ca_file: Option<PathBuf>,
    /// Fetch policies from hosts that resolve to loopback, private, link-local, CGNAT and
    /// other non-public addresses too (off: a destination's DNS must not aim Tern's
    /// requests at internal hosts; docs/SECURITY.md).
    pub allow_private_addresses: bool,
}

impl Default for MtaStsSection {
    fn default() -> MtaStsSection {
        MtaStsSection {
            enabled: true,
            fetch_timeout_secs: 10,
            max_policy_bytes: 65_536,
            cache_max_domains: 10_000,
            retry_failed_secs: 300,
            ca_file: None,
            allow_private_addresses: false,
        }
    }
}

/// Why a configuration could not be used; lists every problem found.
#[derive(Debug)]
pub struct ConfigErrors {
    /// File the problems are in (`<embedded>` for the default).
    pub file: String,
    /// Problems, each with its key.
    pub problems: Vec<ConfigProblem>,
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}: {} problem(s)", self.file, self.problems.len())?;
        for p in &self.problems {
            writeln!(f, "  {}: {}", p.key, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// The built-in configuration used when no file is given.
    pub fn embedded_default() -> Result<Config, ConfigErrors> {
        Config::parse(DEFAULT_TOML, "<embedded>")
    }

    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            file: path.display().to_string(),
            problems: vec![ConfigProblem::new("(file)", e.to_string())],
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        let fail = |problems| ConfigErrors {
            file: file.to_string(),
            problems,
        };
        let de = toml::Deserializer::parse(text)
            .map_err(|e| fail(vec![ConfigProblem::new("(syntax)", e.to_string())]))?;
        let mut unknown = Vec::new();
        let parsed: Result<Config, _> = serde_ignored::deserialize(de, |path| {
            unknown.push(ConfigProblem::new(path.to_string(), "unknown key"));
        });
        unknown.extend(unknown_queue_keys(text));
        let mut config = match parsed {
            Ok(c) => c,
            Err(e) => {
                let mut problems = unknown;
                problems.push(ConfigProblem::new(
                    "(value)",
                    e.to_string().trim().to_string(),
                ));
                return Err(fail(problems));
            }
        };
        for route in &mut config.routes {
            if route.transport == TransportKind::Maildir && route.path.is_none() {
                route.path = Some(config.server.data_dir.join("mail"));
            }
        }
        let mut problems = unknown;
        problems.extend(config.problems());
        match LocalDirectory::load(&config.local) {
            Ok(directory) => {
                let directory = directory.with_guard(config.protected_dirs());
                problems.extend(config.local_problems(&directory));
                config.local_directory = Arc::new(directory);
            }
            Err(local) => problems.extend(
                local
                    .into_iter()
                    .map(|p| ConfigProblem::new(p.key, p.message)),
            ),
        }
        if !problems.is_empty() {
            return Err(fail(problems));
        }
        if config.server.hostname.is_empty() {
            config.server.hostname = system_hostname();
        }
        Ok(config)
    }

    /// Every semantic problem.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        p.extend(
            self.verify
                .problems()
                .into_iter()
                .map(|(k, m)| ConfigProblem::new(k, m)),
        );
        p.extend(
            self.dmarc_reports
                .problems()
                .into_iter()
                .map(|x| ConfigProblem::new(x.key, x.message)),
        );
        p.extend(
            self.tls_reports
                .problems()
                .into_iter()
                .map(|x| ConfigProblem::new(x.key, x.message)),
        );
        p.extend(
            self.cluster
                .problems()
                .into_iter()
                .map(|x| ConfigProblem::new(x.key, x.message)),
        );
        if self.cluster.enabled
            && self.cluster.admin_url.is_empty()
            && self.admin.enabled
            && self.admin.listen.is_none_or(|a| a.ip().is_unspecified())
        {
            p.push(ConfigProblem::new(
                "cluster.admin_url",
                "required when [admin] listen is a wildcard address or unset: how other nodes reach this one",
            ));
        }
        p.extend(
            self.dkim
                .problems()
                .into_iter()
                .map(|x| ConfigProblem::new(x.key, x.message)),
        );
        p.extend(
            self.arc
                .problems()
                .into_iter()
                .map(|x| ConfigProblem::new(x.key, x.message)),
        );
        if !self.server.hostname.is_empty()
            && !tern_proto::address::valid_domain(&self.server.hostname.to_lowercase())
        {
            p.push(ConfigProblem::new(
                "server.hostname",
                "not a valid host name",
            ));
        }
        if self.admin.enabled && self.admin.listen.is_none() && self.admin.unix_socket.is_none() {
            p.push(ConfigProblem::new(
                "admin.listen",
                "the admin listener is enabled: set admin.listen or admin.unix_socket (or admin.enabled = false)",
            ));
        }
        if self.admin.token.len() > 256 || self.admin.token.chars().any(|c| c.is_whitespace()) {
            p.push(ConfigProblem::new(
                "admin.token",
                "at most 256 characters, no white space",
            ));
        }
        if tern_events::Severity::parse(&self.server.log_level).is_none() {
            p.push(ConfigProblem::new(
                "server.log_level",
                "must be one of debug, info, notice, warning, error",
            ));
        }
        if self.server.data_dir.as_os_str().is_empty() {
            p.push(ConfigProblem::new("server.data_dir", "must not be empty"));
        }
        let t = &self.tracking;
        if !(4096..=1 << 40).contains(&t.max_file_bytes) {
            p.push(ConfigProblem::new(
                "tracking.max_file_bytes",
                "must be 4096 to 1099511627776",
            ));
        }
        if !(60..=31_622_400).contains(&t.max_file_age_secs) {
            p.push(ConfigProblem::new(
                "tracking.max_file_age_secs",
                "must be 60 to 31622400 (366 days)",
            ));
        }
        if !(1..=10_000).contains(&t.keep_files) {
            p.push(ConfigProblem::new(
                "tracking.keep_files",
                "must be 1 to 10000",
            ));
        }
        if self.listeners.is_empty() {
            p.push(ConfigProblem::new(
                "listener",
                "at least one [[listener]] is needed",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            p.extend(l.problems(&format!("listener[{i}]")));
            if !names.insert(&l.name) {
                p.push(ConfigProblem::new(
                    format!("listener[{i}].name"),
                    "duplicate listener name",
                ));
            }
            // Tern's own ways in carry these names in the envelope; mail from them is
            // Tern's own (DKIM-signed as local mail), so no SMTP listener may pass for one.
            if RESERVED_LISTENER_NAMES.contains(&l.name.as_str()) {
                p.push(ConfigProblem::new(
                    format!("listener[{i}].name"),
                    format!(
                        "\"{}\" is reserved for Tern's own mail (reserved: {})",
                        l.name,
                        RESERVED_LISTENER_NAMES.join(", ")
                    ),
                ));
            }
        }
        p.extend(self.relay.problems());
        p.extend(self.limits.problems());
        p.extend(
            self.screen
                .problems()
                .into_iter()
                .map(|x| ConfigProblem::new(x.key, x.message)),
        );
        // [auth] (issue 17): the section's own rules, and a source for every listener
        // that offers AUTH.
        p.extend(
            self.auth
                .problems()
                .into_iter()
                .map(|(k, m)| ConfigProblem::new(k, m)),
        );
        for (i, l) in self.listeners.iter().enumerate() {
            if l.auth != tern_smtpd::AuthMode::None && !self.auth.has_backend() {
                p.push(ConfigProblem::new(
                    format!("listener[{i}].auth"),
                    "needs auth.passwd_file or auth.dovecot_socket",
                ));
            }
        }
        let bp = &self.back_pressure;
        if !(0.0..100.0).contains(&bp.min_free_percent) {
            p.push(ConfigProblem::new(
                "back_pressure.min_free_percent",
                "must be at least 0 and below 100",
            ));
        }
        if bp.max_queued_messages == 0 {
            p.push(ConfigProblem::new(
                "back_pressure.max_queued_messages",
                "must be at least 1",
            ));
        }
        if bp.check_interval_ms == 0 {
            p.push(ConfigProblem::new(
                "back_pressure.check_interval_ms",
                "must be at least 1",
            ));
        }
        for q in self
            .queue
            .settings
            .problems()
            .into_iter()
            .chain(self.delivery.problems())
        {
            p.push(ConfigProblem::new(q.key, q.message));
        }
        match RoutingTable::new(&self.routes) {
            Err(route_problems) => {
                for r in route_problems {
                    p.push(ConfigProblem::new(r.key, r.message));
                }
            }
            Ok(table) => {
                // The DMARC quarantine route must be an entry of its own, never the
                // default MX route (docs/FILTERING.md).
                if self.verify.dmarc_quarantine == tern_authcheck::QuarantineMode::Route
                    && let Some(key) = &self.verify.dmarc_quarantine_route
                    && matches!(table.route(key).pattern.as_str(), "*" | "(default)")
                {
                    p.push(ConfigProblem::new(
                        "verify.dmarc_quarantine_route",
                        format!("no [[route]] lists {key:?} (add one with the transport that takes quarantined mail)"),
                    ));
                }
            }
        }
        if self.dns.timeout_ms == 0 {
            p.push(ConfigProblem::new("dns.timeout_ms", "must be at least 1"));
        }
        if self.dns.max_ttl_secs < self.dns.min_ttl_secs {
            p.push(ConfigProblem::new(
                "dns.max_ttl_secs",
                "must be at least dns.min_ttl_secs",
            ));
        }
        let m = &self.mta_sts;
        for (key, ok, range) in [
            (
                "mta_sts.fetch_timeout_secs",
                (1..=60).contains(&m.fetch_timeout_secs),
                "1 to 60",
            ),
            (
                "mta_sts.max_policy_bytes",
                (1024..=1_048_576).contains(&m.max_policy_bytes),
                "1024 to 1048576",
            ),
            (
                "mta_sts.cache_max_domains",
                (1..=1_000_000).contains(&m.cache_max_domains),
                "1 to 1000000",
            ),
            (
                "mta_sts.retry_failed_secs",
                (1..=86_400).contains(&m.retry_failed_secs),
                "1 to 86400",
            ),
        ] {
            if !ok {
                p.push(ConfigProblem::new(key, format!("must be from {range}")));
            }
        }
        if self.dns.client_lookup_timeout_ms == 0 {
            p.push(ConfigProblem::new(
                "dns.client_lookup_timeout_ms",
                "must be at least 1",
            ));
        }
        p.extend(self.pickup_problems());
        if !(1..=3600).contains(&self.watchdog.stall_after_secs) {
            p.push(ConfigProblem::new(
                "watchdog.stall_after_secs",
                "must be from 1 to 3600",
            ));
        }
        p
    }

    /// Local domains against the routes: a domain with mailboxes (or a catch-all) must
    /// be routed by `maildir` or `lmtp`, and those routes take exact local domains only.
    fn local_problems(&self, directory: &LocalDirectory) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let Ok(table) = RoutingTable::new(&self.routes) else {
            return p; // Already reported by `problems`.
        };
        let mut domains: Vec<&str> = directory.domains().collect();
        domains.sort_unstable();
        for d in domains {
            let route = table.route(d);
            if directory.has_mailboxes(d) && !route.transport.is_local() {
                p.push(ConfigProblem::new(
                    "local.domains",
                    format!(
                        "{d:?} has mailboxes but its route ({}) does not deliver into mailboxes; route it with transport \"maildir\" or \"lmtp\"",
                        route.pattern
                    ),
                ));
            }
        }
        for (i, route) in self.routes.iter().enumerate() {
            if !matches!(
                route.transport,
                TransportKind::Maildir | TransportKind::Lmtp
            ) {
                continue;
            }
            for (j, d) in route.domains.iter().enumerate() {
                if !directory.is_local_domain(d) {
                    p.push(ConfigProblem::new(
                        format!("route[{i}].domains[{j}]"),
                        format!(
                            "{d:?}: transport \"{}\" delivers only to local domains; \
                             list exact names that are in local.domains",
                            route.transport
                        ),
                    ));
                }
            }
        }
        // No Maildir in Tern's own directories (as far as the paths show now; the
        // deliveries check the real directories again).
        let roots: Vec<(String, PathBuf)> = self
            .routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.transport == TransportKind::Maildir)
            .filter_map(|(i, r)| {
                r.path
                    .clone()
                    .map(|path| (format!("route[{i}].path"), path))
            })
            .collect();
        p.extend(
            directory
                .guard_problems(&roots)
                .into_iter()
                .map(|l| ConfigProblem::new(l.key, l.message)),
        );
        p
    }

    /// Tern's own directories, which no Maildir may be or lie in (docs/LOCAL.md): the
    /// pickup directory, the spool and the tracking log's directory.
    pub fn protected_dirs(&self) -> Vec<PathBuf> {
        vec![self.pickup_dir(), self.spool_dir(), self.tracking_dir()]
    }

    /// `[pickup]` values in range.
    fn pickup_problems(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let k = &self.pickup;
        if !(10..=60_000).contains(&k.interval_ms) {
            p.push(ConfigProblem::new(
                "pickup.interval_ms",
                "must be from 10 to 60000",
            ));
        }
        if !(1..=10_000).contains(&k.max_files_per_scan) {
            p.push(ConfigProblem::new(
                "pickup.max_files_per_scan",
                "must be from 1 to 10000",
            ));
        }
        if k.orphan_after_secs > 604_800 {
            p.push(ConfigProblem::new(
                "pickup.orphan_after_secs",
                "must be at most 604800 (a week)",
            ));
        }
        if !k.default_sender.is_empty()
            && let Err(e) = tern_local::submit::qualify(&k.default_sender, "localhost", "pickup")
        {
            p.push(ConfigProblem::new("pickup.default_sender", e.to_string()));
        }
        p
    }

    /// The pickup directory (also where `tern sendmail` submits).
    pub fn pickup_dir(&self) -> PathBuf {
        if self.pickup.dir.as_os_str().is_empty() {
            self.server.data_dir.join("pickup")
        } else {
            self.pickup.dir.clone()
        }
    }

    /// The largest message any listener accepts: the bound for locally submitted files.
    pub fn max_message_size(&self) -> u64 {
        self.listeners
            .iter()
            .map(|l| l.max_message_size)
            .max()
            .unwrap_or(ListenerConfig::default().max_message_size)
    }

    /// The pickup service's settings.
    pub fn pickup_config(&self) -> tern_local::pickup::PickupConfig {
        let k = &self.pickup;
        let hostname = self.server.hostname.clone();
        tern_local::pickup::PickupConfig {
            dir: self.pickup_dir(),
            interval: Duration::from_millis(k.interval_ms),
            max_files_per_scan: k.max_files_per_scan,
            max_message_size: self.max_message_size(),
            max_recipients: self
                .listeners
                .iter()
                .map(|l| l.max_recipients)
                .max()
                .unwrap_or(ListenerConfig::default().max_recipients),
            default_sender: if k.default_sender.is_empty() {
                format!("postmaster@{hostname}")
            } else {
                k.default_sender.clone()
            },
            hostname,
            orphan_after: Duration::from_secs(k.orphan_after_secs),
        }
    }

    /// The watchdog's status snapshot, read by `tern status`.
    pub fn status_path(&self) -> PathBuf {
        self.server.data_dir.join("status.json")
    }

    /// The message tracking log's directory.
    pub fn tracking_dir(&self) -> PathBuf {
        self.server.data_dir.join("tracking")
    }

    /// The tracking log's settings for the event writer; `None` when it is off.
    pub fn tracking_config(&self) -> Option<tern_events::tracking::TrackingConfig> {
        self.tracking
            .enabled
            .then(|| tern_events::tracking::TrackingConfig {
                dir: self.tracking_dir(),
                max_file_bytes: self.tracking.max_file_bytes,
                max_file_age: Duration::from_secs(self.tracking.max_file_age_secs),
                keep_files: self.tracking.keep_files,
            })
    }

    /// Where the running server writes its admin listener's address, for the CLI.
    pub fn admin_addr_path(&self) -> PathBuf {
        self.server.data_dir.join("admin.addr")
    }

    /// Directory of the spool.
    pub fn spool_dir(&self) -> PathBuf {
        self.server.data_dir.join("spool")
    }
}

/// What a secret's value is shown as by [`Config::effective_json`].
pub const REDACTED: &str = "<redacted>";

/// Key names whose values are secrets (also as the suffix `_<name>`): tokens, passwords,
/// private key material. Paths to key files (`private_key`) are not secrets.
const SECRET_KEYS: &[&str] = &["token", "password", "passphrase", "secret", "key_pem"];

fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_KEYS
        .iter()
        .any(|s| k == *s || k.strip_suffix(s).is_some_and(|p| p.ends_with('_')))
}

/// Replaces the value of every secret key (see [`SECRET_KEYS`]), at any depth, by
/// [`REDACTED`]; an empty string stays empty (nothing configured: `admin.token` then
/// comes from `<data_dir>/admin.token`, which is not shown either).
pub fn redact(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_secret_key(k) {
                    let empty = v.is_null() || v.as_str().is_some_and(str::is_empty);
                    if !empty {
                        *v = serde_json::Value::String(REDACTED.into());
                    }
                } else {
                    redact(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

impl Config {
    /// The configuration as JSON (defaults filled in), secrets redacted ([`redact`]).
    pub fn effective_json(&self) -> serde_json::Value {
        let mut v = match serde_json::to_value(self) {
            Ok(v) => v,
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        redact(&mut v);
        v
    }

    /// What runs after a reload to `new`: this configuration with the parts a reload
    /// swaps (relay policy, rate limits, routes, local maps, queue settings, DKIM signing,
    /// `[screen]`)
    /// taken from `new`; the
    /// rest (listeners, data directory, DNS, delivery, admin, ...) needs a restart and
    /// keeps its running value.
    pub fn with_reloaded(&self, new: &Config) -> Config {
        let mut c = self.clone();
        c.relay = new.relay.clone();
        c.limits = new.limits.clone();
        c.routes = new.routes.clone();
        c.local = new.local.clone();
        c.local_directory = Arc::clone(&new.local_directory);
        c.queue.settings = new.queue.settings.clone();
        c.dkim = new.dkim.clone();
        c.arc = new.arc.clone();
        c.auth = new.auth.clone();
        c.screen = new.screen.clone();
        c.verify = new.verify.clone();
        c
    }

    /// Loads the `[auth]` files (passwd-file, sender-login map) and the `[dane]` trust
    /// anchor to report their problems
    /// (`tern check-config`); they are loaded again by the server itself.
    pub fn auth_file_problems(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if let Some(path) = &self.auth.passwd_file
            && let Err(e) = tern_auth::passwd::PasswdFile::load(path)
        {
            p.push(ConfigProblem::new("auth.passwd_file", e.to_string()));
        }
        if let Err(e) = self.dane.trust_anchor() {
            p.push(ConfigProblem::new("dane.trust_anchor", e.to_string()));
        }
        if let Some(path) = &self.auth.sender_login_map
            && let Err(e) = tern_auth::sender_map::SenderLoginMap::load(path)
        {
            p.push(ConfigProblem::new("auth.sender_login_map", e.to_string()));
        }
        p
    }
}

/// The system host name, lower-cased; `localhost` if it cannot be read or is not a valid
/// host name.
pub fn system_hostname() -> String {
    let name = gethostname::gethostname().to_string_lossy().to_lowercase();
    if tern_proto::address::valid_domain(&name) {
        name
    } else {
        "localhost".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_queue_keys_are_reported_despite_the_flattened_settings() {
        let listener = "[[listener]]\nname = \"in\"\naddress = \"127.0.0.1:2525\"\n";
        let text = format!(
            "[queue]\ndeliver = false\nmax_concurrency = 5\nmax_concurency = 7\n{listener}"
        );
        let e = Config::parse(&text, "test").unwrap_err();
        let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["queue.max_concurency"], "{e}");
        let good = format!("[queue]\ndeliver = false\nmax_concurrency = 5\n{listener}");
        assert!(Config::parse(&good, "test").is_ok());
    }

    #[test]
    fn mta_sts_private_addresses_are_refused_unless_allowed() {
        let listener = "[[listener]]\nname = \"in\"\naddress = \"127.0.0.1:2525\"\n";
        let c = Config::parse(listener, "test").unwrap();
        assert!(!c.mta_sts.allow_private_addresses);
        let c = Config::parse(
            &format!("{listener}[mta_sts]\nallow_private_addresses = true\n"),
            "test",
        )
        .unwrap();
        assert!(c.mta_sts.allow_private_addresses);
    }

    #[test]
    fn a_listener_with_auth_needs_a_credential_source() {
        let listener = "[[listener]]\nname = \"sub\"\naddress = \"127.0.0.1:2587\"\nauth = \"required\"\nallow_plaintext_loopback = true\n";
        let e = Config::parse(listener, "test").unwrap_err();
        let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["listener[0].auth"], "{e}");
        let with = format!(
            "{listener}[auth]\ndovecot_socket = \"/run/dovecot/auth-client\"\nsender_check = \"envelope\"\n"
        );
        let e = Config::parse(&with, "test").unwrap_err();
        let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["auth.sender_check"], "{e}");
        let good = format!(
            "{listener}[auth]\ndovecot_socket = \"/run/dovecot/auth-client\"\nmechanisms = [\"PLAIN\"]\n"
        );
        let c = Config::parse(&good, "test").unwrap();
        assert_eq!(c.auth.mechanisms, [tern_auth::Mechanism::Plain]);
        let bad_mech =
            format!("{listener}[auth]\ndovecot_socket = \"/x\"\nmechanisms = [\"CRAM-MD5\"]\n");
        assert!(Config::parse(&bad_mech, "test").is_err());
    }

    #[test]
    fn effective_json_has_defaults_and_no_secrets() {
        let text = "[server]\ndata_dir = \"/tmp/x\"\n[admin]\ntoken = \"s3cr3t-token\"\n[[listener]]\nname = \"in\"\naddress = \"127.0.0.1:2525\"\n[[route]]\ndomains = [\"*\"]\ntransport = \"mx\"\n";
        let c = Config::parse(text, "test").unwrap();
        let v = c.effective_json();
        let all = v.to_string();
        assert!(!all.contains("s3cr3t"), "{all}");
        assert_eq!(v["admin"]["token"], REDACTED);
        assert_eq!(v["admin"]["listen"], "127.0.0.1:8025");
        assert_eq!(v["queue"]["deliver"], true);
        assert_eq!(
            v["queue"]["max_concurrency"], 100,
            "flattened with its default"
        );
        assert_eq!(v["listener"][0]["max_connections"], 1000);
        assert_eq!(v["listener"][0]["private_key"], serde_json::Value::Null);
        assert_eq!(v["relay"]["networks"][0], "127.0.0.0/8");
        assert_eq!(v["route"][0]["transport"], "mx");
        assert!(v.get("local_directory").is_none());
        // No token configured: shown empty (it comes from the token file).
        let d = Config::embedded_default().unwrap().effective_json();
        assert_eq!(d["admin"]["token"], "");
    }

    #[test]
    fn redaction_finds_secrets_at_any_depth_and_keeps_key_paths() {
        let mut v = serde_json::json!({
            "token": "t",
            "a": [{"smtp_password": "p", "private_key": "/etc/tern/key.pem", "Secret": "x"}],
            "b": {"api_token": "t2", "tokens_seen": 3, "password": "", "keyword": "k"},
        });
        redact(&mut v);
        assert_eq!(v["token"], REDACTED);
        assert_eq!(v["a"][0]["smtp_password"], REDACTED);
        assert_eq!(v["a"][0]["Secret"], REDACTED);
        assert_eq!(v["a"][0]["private_key"], "/etc/tern/key.pem");
        assert_eq!(v["b"]["api_token"], REDACTED);
        assert_eq!(v["b"]["tokens_seen"], 3);
        assert_eq!(v["b"]["password"], "");
        assert_eq!(v["b"]["keyword"], "k");
    }

    #[test]
    fn a_reload_changes_only_what_it_swaps() {
        let listener = "[[listener]]\nname = \"in\"\naddress = \"127.0.0.1:2525\"\n";
        let old = Config::parse(
            &format!("{listener}[server]\ndata_dir = \"/tmp/a\"\n[queue]\nmax_concurrency = 7\n"),
            "old",
        )
        .unwrap();
        let new = Config::parse(&format!("{listener}[server]\ndata_dir = \"/tmp/b\"\n[queue]\nmax_concurrency = 9\n[relay]\ndomains = [\"example.test\"]\n"), "new").unwrap();
        let eff = old.with_reloaded(&new);
        assert_eq!(
            eff.server.data_dir,
            PathBuf::from("/tmp/a"),
            "needs a restart"
        );
        assert_eq!(eff.queue.settings.max_concurrency, 9);
        assert_eq!(eff.relay.domains, vec!["example.test".to_string()]);
    }

    #[test]
    fn embedded_default_is_valid_and_safe() {
        let c = Config::embedded_default().unwrap();
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.listeners[0].address.to_string(), "127.0.0.1:2525");
        assert_eq!(c.server.data_dir, PathBuf::from("./tern-data"));
        assert_eq!(c.relay.domains, vec!["localhost".to_string()]);
        assert!(c.relay.networks.iter().all(|n| n.addr().is_loopback()));
        assert!(!c.server.hostname.is_empty());
        // localhost is local: every local part is its own Maildir under the data dir.
        let d = &c.local_directory;
        assert!(d.is_local_domain("localhost"));
        let you = d.mailbox("you@localhost").unwrap();
        assert_eq!(
            you.maildir_path(&PathBuf::from("./tern-data/mail")),
            PathBuf::from("./tern-data/mail/you/Maildir")
        );
        let routes = RoutingTable::new(&c.routes).unwrap();
        assert_eq!(
            *routes.route("localhost").transport,
            tern_route::Transport::Maildir {
                root: PathBuf::from("./tern-data/mail")
            }
        );
    }

    #[test]
    fn local_domains_and_their_routes_are_checked_together() {
        let dir = tempfile::tempdir().unwrap();
        let maps = dir.path().join("mailboxes");
        std::fs::write(&maps, "a@x.test a\nb@x.test\n").unwrap();
        let text = format!(
            "[local]\ndomains = [\"x.test\", \"y.test\"]\nmailbox_map = {maps:?}\n\
             [local.catch_all]\n\"y.test\" = \"{{local}}\"\n\
             [[route]]\ndomains = [\"z.test\"]\ntransport = \"maildir\"\n\
             [[listener]]\n"
        );
        let err = Config::parse(&text, "t.toml").unwrap_err();
        let shown: Vec<String> = err
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect();
        let has = |what: &str| {
            assert!(
                shown.iter().any(|s| s.contains(what)),
                "{what:?} not in {shown:#?}"
            )
        };
        // A map with errors builds no directory: its errors come alone, with file:line.
        has(&format!("local.mailbox_map: {}:2:", maps.display()));
        assert_eq!(shown.len(), 1, "{shown:#?}");
        std::fs::write(&maps, "a@x.test a\n").unwrap();
        let err = Config::parse(&text, "t.toml").unwrap_err();
        let shown: Vec<String> = err
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect();
        let has = |what: &str| {
            assert!(
                shown.iter().any(|s| s.contains(what)),
                "{what:?} not in {shown:#?}"
            )
        };
        has(
            "route[0].domains[0]: \"z.test\": transport \"maildir\" delivers only to local domains",
        );
        has("local.domains: \"x.test\" has mailboxes");
        has("local.domains: \"y.test\" has mailboxes");
        assert_eq!(shown.len(), 3, "{shown:#?}");
    }

    #[test]
    fn mailboxes_in_terns_own_directories_are_refused_with_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let maps = dir.path().join("mailboxes");
        std::fs::write(
            &maps,
            format!(
                "ok@x.test {}\nbob@x.test {}\n",
                dir.path().join("home/ok/Maildir").display(),
                data.join("pickup/bob").display()
            ),
        )
        .unwrap();
        // The pickup directory exists and is reached through a link: still caught.
        std::fs::create_dir_all(data.join("pickup")).unwrap();
        std::os::unix::fs::symlink(&data, dir.path().join("via")).unwrap();
        let text = format!(
            "[server]\ndata_dir = {data:?}\n\
             [local]\ndomains = [\"x.test\", \"y.test\"]\nmailbox_map = {maps:?}\n\
             [local.catch_all]\n\"y.test\" = \"{}/{{local}}\"\n\
             [[route]]\ndomains = [\"x.test\"]\ntransport = \"maildir\"\npath = {:?}\n\
             [[route]]\ndomains = [\"y.test\"]\ntransport = \"maildir\"\n\
             [[listener]]\n",
            dir.path().join("via/pickup/.claimed").display(),
            data.join("spool/x"),
        );
        let err = Config::parse(&text, "t.toml").unwrap_err();
        let shown: Vec<String> = err
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect();
        let has = |what: &str| {
            assert!(
                shown.iter().any(|s| s.contains(what)),
                "{what:?} not in {shown:#?}"
            )
        };
        has(&format!(
            "local.mailbox_map: {}:2: bob@x.test: mailbox",
            maps.display()
        ));
        has("local.catch_all.y.test:");
        has("route[0].path:");
        assert!(
            shown
                .iter()
                .all(|s| s.contains("one of Tern's own directories"))
        );
        // <data_dir>/mail, the default root of a maildir route (route[1]), is fine.
        assert_eq!(shown.len(), 3, "{shown:#?}");
    }

    #[test]
    fn tracking_defaults_and_bounds() {
        let c = Config::parse("[[listener]]\n", "t.toml").unwrap();
        let t = c.tracking_config().unwrap();
        assert_eq!(t.dir, PathBuf::from("./tern-data/tracking"));
        assert_eq!(t.max_file_bytes, 64 * 1024 * 1024);
        assert_eq!(t.max_file_age, Duration::from_secs(86_400));
        assert_eq!(t.keep_files, 14);
        let off = Config::parse("[tracking]\nenabled = false\n[[listener]]\n", "t.toml").unwrap();
        assert!(off.tracking_config().is_none());
        let err = Config::parse(
            "[tracking]\nmax_file_bytes = 10\nmax_file_age_secs = 0\nkeep_files = 0\n[[listener]]\n",
            "t.toml",
        )
        .unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "tracking.max_file_bytes",
                "tracking.max_file_age_secs",
                "tracking.keep_files"
            ]
        );
    }

    #[test]
    fn every_unknown_key_is_reported_with_its_path() {
        let err = Config::parse(
            "[server]\nhostnme = \"x\"\n[relay]\ndomains = []\nnetwork = []\n[[listener]]\naddress = \"127.0.0.1:25\"\nmax_conn = 3\n",
            "t.toml",
        )
        .unwrap_err();
        let keys: Vec<_> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"server.hostnme"), "{keys:?}");
        assert!(keys.contains(&"relay.network"), "{keys:?}");
        assert!(
            keys.iter()
                .any(|k| k.starts_with("listener") && k.ends_with("max_conn")),
            "{keys:?}"
        );
    }

    #[test]
    fn rate_limits_are_read_checked_and_reloaded() {
        let c = Config::parse(
            "[limits]\nclient_connections = \"30/1m\"\nuser_recipients = \"500/1h\"\nclient_prefix_v6 = 48\n[[listener]]\n",
            "t.toml",
        )
        .unwrap();
        let l = &c.limits;
        assert_eq!(
            l.client_connections.map(|r| r.to_string()).as_deref(),
            Some("30/1m")
        );
        assert_eq!(
            l.user_recipients.map(|r| r.to_string()).as_deref(),
            Some("500/1h")
        );
        assert!(l.client_messages.is_none() && l.exempt_relay_networks);
        assert_eq!((l.client_prefix_v4, l.client_prefix_v6), (32, 48));
        // A rate that does not parse names its key.
        let e = Config::parse(
            "[limits]\nclient_messages = \"30 per minute\"\n[[listener]]\n",
            "t.toml",
        )
        .unwrap_err();
        let text = format!("{e:?}");
        assert!(text.contains("client_messages"), "{text}");
        let e = Config::parse(
            "[limits]\nclient_prefix_v4 = 40\nmax_tracked_keys = 5\n[[listener]]\n",
            "t.toml",
        )
        .unwrap_err();
        let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"limits.client_prefix_v4"), "{keys:?}");
        assert!(keys.contains(&"limits.max_tracked_keys"), "{keys:?}");
        // A reload takes the new limits.
        let new = Config::parse(
            "[limits]\nclient_messages = \"5/1s\"\n[[listener]]\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            c.with_reloaded(&new)
                .limits
                .client_messages
                .map(|r| r.to_string())
                .as_deref(),
            Some("5/1s")
        );
        // The embedded default parses with every limit off.
        let d = Config::embedded_default().unwrap();
        assert!(d.limits.client_connections.is_none() && d.limits.sender_domain_messages.is_none());
    }

    #[test]
    fn screen_section_is_read_checked_and_reloaded() {
        let c = Config::parse(
            "[screen]\nenabled = true\ngreet_wait = \"3s\"\npregreet = \"enforce\"\ndnsbl = [\"zen.example*3\", \"wl.example=127.0.[0..255].[1;2]*-5\"]\ngreylist = true\ngreylist_delay = 120\n[[listener]]\nscreen = false\n",
            "t.toml",
        )
        .unwrap();
        let s = &c.screen;
        assert!(s.enabled && s.greylist);
        assert_eq!(s.greet_wait.as_secs(), 3);
        assert_eq!(s.greylist_delay.as_secs(), 120);
        assert_eq!(s.pregreet, tern_screen::Action::Enforce);
        assert_eq!(s.sites().len(), 2);
        assert_eq!(c.listeners[0].screen, Some(false));
        // Every bad value names its key; an unknown action stops the parse.
        let e = Config::parse(
            "[screen]\ngreet_wait = \"2m\"\ndnsbl = [\"ok.example\", \"bad.example=1.2.3\"]\ngreylist_window = \"1s\"\n[[listener]]\n",
            "t.toml",
        )
        .unwrap_err();
        let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "screen.greet_wait",
            "screen.dnsbl[1]",
            "screen.greylist_window",
        ] {
            assert!(keys.contains(&k), "{k}: {keys:?}");
        }
        let e =
            Config::parse("[screen]\npregreet = \"reject\"\n[[listener]]\n", "t.toml").unwrap_err();
        assert!(format!("{e:?}").contains("pregreet"), "{e:?}");
        // A reload takes the new section; the default has screening off.
        let new = Config::parse("[screen]\ndnsbl_threshold = 4\n[[listener]]\n", "t.toml").unwrap();
        assert_eq!(c.with_reloaded(&new).screen.dnsbl_threshold, 4);
        let d = Config::embedded_default().unwrap();
        assert!(!d.screen.enabled && !d.screen.greylist);
    }

    #[test]
    fn listener_flood_limits_are_read_and_checked() {
        let c = Config::parse(
            "[[listener]]\nmax_connections = 40\nclient_prefix_v6 = 56\nrelay_reserve_percent = 25\nmax_junk_commands = 7\nmin_data_rate = 1000\n[listener.timeouts]\nsession = 900\n[listener.stress]\nenter_percent = 90\nleave_percent = 70\ncommand_timeout = 5\n",
            "t.toml",
        )
        .unwrap();
        let l = &c.listeners[0];
        assert_eq!(
            (
                l.client_prefix_v4,
                l.client_prefix_v6,
                l.relay_reserve_percent
            ),
            (32, 56, 25)
        );
        assert_eq!((l.max_junk_commands, l.min_data_rate), (7, 1000));
        assert_eq!((l.timeouts.session, l.timeouts.command), (900, 300));
        assert_eq!(
            (
                l.stress.enter_percent,
                l.stress.leave_percent,
                l.stress.command_timeout
            ),
            (90, 70, 5)
        );
        assert_eq!((l.stress.data_timeout, l.stress.max_errors), (10, 3));
        let limits = l.limiter_config();
        assert_eq!(
            (limits.reserved, limits.stress_enter, limits.stress_leave),
            (10, 36, 28)
        );

        let err = Config::parse(
            "[[listener]]\nrelay_reserve_percent = 95\n[listener.stress]\nenter_percent = 50\nleave_percent = 60\ncomand_timeout = 5\n",
            "t.toml",
        )
        .unwrap_err();
        let keys: Vec<_> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert!(
            keys.iter().any(|k| k.ends_with("stress.comand_timeout")),
            "{keys:?}"
        );
        let err = Config::parse(
            "[[listener]]\nrelay_reserve_percent = 95\n[listener.stress]\nenter_percent = 50\nleave_percent = 60\n",
            "t.toml",
        )
        .unwrap_err();
        let keys: Vec<_> = err.problems.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "listener[0].relay_reserve_percent",
            "listener[0].stress.leave_percent",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn semantic_problems_are_all_reported() {
        let err = Config::parse(
            "[server]\nlog_level = \"loud\"\n[relay]\nnetworks = [\"0.0.0.0/0\"]\n[[listener]]\nname = \"a\"\nmax_recipients = 0\ntls = \"implicit\"\n",
            "t.toml",
        )
        .unwrap_err();
        let keys: Vec<_> = err.problems.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "server.log_level",
            "relay.networks[0]",
            "listener[0].max_recipients",
            "listener[0].certificate",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn listeners_may_not_take_the_names_of_terns_own_ways_in() {
        for name in RESERVED_LISTENER_NAMES {
            let err = Config::parse(
                &format!("[[listener]]\nname = \"{name}\"\naddress = \"127.0.0.1:2525\"\n"),
                "t.toml",
            )
            .unwrap_err();
            let keys: Vec<_> = err.problems.iter().map(|p| p.key.as_str()).collect();
            assert_eq!(keys, ["listener[0].name"], "{name}");
        }
        Config::parse(
            "[[listener]]\nname = \"pickup2\"\naddress = \"127.0.0.1:2525\"\n",
            "t.toml",
        )
        .unwrap();
    }

    #[test]
    fn the_dmarc_reports_section_is_off_by_default_and_checked() {
        let c = Config::embedded_default().unwrap();
        assert!(!c.dmarc_reports.enabled);
        let c = Config::parse(
            "[dmarc_reports]\nenabled = true\nemail = \"dmarc@example.net\"\ninterval = \"6h\"\n[[listener]]\n",
            "t.toml",
        )
        .unwrap();
        assert!(c.dmarc_reports.enabled);
        assert_eq!(c.dmarc_reports.interval_secs(), 6 * 3600);
        let err = Config::parse(
            "[dmarc_reports]\ninterval = \"5h\"\nmax_rows = 0\nbogus = 1\n[[listener]]\n",
            "t.toml",
        )
        .unwrap_err();
        let mut keys: Vec<_> = err.problems.iter().map(|p| p.key.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "dmarc_reports.bogus",
                "dmarc_reports.interval",
                "dmarc_reports.max_rows"
            ]
        );
    }

    #[test]
    fn the_tls_reports_section_is_off_by_default_and_checked() {
        let c = Config::embedded_default().unwrap();
        assert!(!c.tls_reports.enabled && !c.tls_reports.records());
        assert!(!c.tls_reports.inbound_events);
        let c = Config::parse(
            "[tls_reports]\nenabled = true\nfrom = \"tlsrpt@example.net\"\ninbound_events = true\n[[listener]]\n",
            "t.toml",
        )
        .unwrap();
        assert!(c.tls_reports.records() && c.tls_reports.inbound_events);
        let err = Config::parse(
            "[tls_reports]\ninterval = \"7h\"\nmax_rua = 0\nbogus = 1\n[[listener]]\nname = \"tls-reports\"\n",
            "t.toml",
        )
        .unwrap_err();
        let keys: Vec<_> = err.problems.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "tls_reports.bogus",
            "tls_reports.interval",
            "tls_reports.max_rua",
        ] {
            assert!(keys.contains(&k), "{k}: {keys:?}");
        }
        assert!(keys.iter().any(|k| k.contains("name")), "{keys:?}");
    }

    #[test]
    fn the_watchdog_section_is_checked() {
        let c = Config::embedded_default().unwrap();
        assert!(c.watchdog.enabled);
        assert_eq!(c.watchdog.stall_after_secs, 60);
        let c = Config::parse(
            "[watchdog]\nstall_after_secs = 2\nenabled = false\n[[listener]]\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.watchdog.stall_after_secs, 2);
        assert!(!c.watchdog.enabled);
        for bad in ["stall_after_secs = 0", "stall_after_secs = 3601"] {
            let err =
                Config::parse(&format!("[watchdog]\n{bad}\n[[listener]]\n"), "t.toml").unwrap_err();
            let keys: Vec<_> = err.problems.iter().map(|p| p.key.as_str()).collect();
            assert_eq!(keys, ["watchdog.stall_after_secs"], "{bad}");
        }
        let err =
            Config::parse("[watchdog]\nstall_after = 5\n[[listener]]\n", "t.toml").unwrap_err();
        let keys: Vec<_> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["watchdog.stall_after"]);
    }

    #[test]
    fn the_pickup_section_is_checked() {
        let c = Config::embedded_default().unwrap();
        assert!(c.pickup.enabled);
        assert_eq!(c.pickup_dir(), PathBuf::from("./tern-data/pickup"));
        let p = c.pickup_config();
        assert_eq!(p.interval, Duration::from_secs(1));
        assert_eq!(p.max_files_per_scan, 100);
        assert_eq!(p.max_message_size, 52_428_800);
        assert_eq!(
            p.default_sender,
            format!("postmaster@{}", c.server.hostname)
        );
        let c = Config::parse(
            "[pickup]\ndir = \"/srv/in\"\ninterval_ms = 50\ndefault_sender = \"robot@example.com\"\n[[listener]]\nmax_message_size = 2000\n[[listener]]\nname = \"b\"\naddress = \"127.0.0.1:2526\"\nmax_message_size = 5000\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.pickup_dir(), PathBuf::from("/srv/in"));
        assert_eq!(c.pickup_config().max_message_size, 5000);
        assert_eq!(c.pickup_config().default_sender, "robot@example.com");
        let err = Config::parse(
            "[pickup]\ninterval_ms = 1\nmax_files_per_scan = 0\norphan_after_secs = 9999999\ndefault_sender = \"a@@b\"\nwatch = true\n[[listener]]\n",
            "t.toml",
        )
        .unwrap_err();
        let keys: Vec<_> = err.problems.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "pickup.watch",
            "pickup.interval_ms",
            "pickup.max_files_per_scan",
            "pickup.orphan_after_secs",
            "pickup.default_sender",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn type_errors_name_the_key() {
        let err =
            Config::parse("[[listener]]\nmax_connections = \"many\"\n", "t.toml").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("max_connections"), "{text}");
    }
}
