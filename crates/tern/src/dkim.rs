//! DKIM and ARC in the binary: loading the keys (`[dkim]`, and the `[arc]` sealing
//! key with the same rules) at the start (a key that fails stops the start)
//! and at a reload (a key that fails keeps the one loaded before, event 4102), the key
//! checks of `tern check-config`, and the `tern dkim generate|check` commands
//! (docs/DKIM.md).
//!
//! `generate` writes the new key with `O_CREAT | O_EXCL | O_NOFOLLOW` and mode 0600 set
//! at creation (whatever the umask, never over an existing file or through a link), in a
//! directory it creates 0700 when missing. `check` reads the configured keys (so it must
//! run as Tern's user) and asks the configured name servers (`dns.nameservers`, else the
//! system's) for each selector's TXT record.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hickory_resolver::proto::rr::{RData, RecordType};
use tern_dkim::arc::{ArcKeyLoad, Sealing};
use tern_dkim::keys::{self, RecordMatch};
use tern_dkim::{Algorithm, KeyLoad, Signing};
use tern_events::{EventLog, catalog, fields};
use tern_smtpd::ConfigProblem;

use crate::config::Config;

fn emit(events: &EventLog, loads: &[KeyLoad]) {
    for l in loads {
        match &l.result {
            Ok(bits) => events.emit(
                &catalog::DKIM_KEY_LOADED,
                fields!(
                    "domain" => l.domain,
                    "selector" => l.selector,
                    "algorithm" => l.algorithm.as_str(),
                    "bits" => bits,
                    "file" => l.path.display(),
                ),
            ),
            Err(e) => events.emit(
                &catalog::DKIM_KEY_FAILED,
                fields!(
                    "domain" => l.domain,
                    "selector" => l.selector,
                    "algorithm" => l.algorithm.as_str(),
                    "file" => l.path.display(),
                    "error" => e.to_string(),
                    "kept_previous" => l.kept_previous,
                ),
            ),
        }
    }
}

/// Loads the keys at the start; any key that cannot be loaded stops the start.
pub fn load_at_start(config: &Config, events: &EventLog) -> anyhow::Result<Arc<Signing>> {
    let (signing, loads) = Signing::load(&config.dkim, None);
    emit(events, &loads);
    let failed: Vec<String> = loads
        .iter()
        .filter_map(|l| l.result.as_ref().err().map(|e| e.to_string()))
        .collect();
    if !failed.is_empty() {
        anyhow::bail!("DKIM key(s) could not be loaded: {}", failed.join("; "));
    }
    Ok(Arc::new(signing))
}

/// Loads the keys at a reload: a key that fails keeps the one loaded before (4102).
pub fn load_at_reload(config: &Config, previous: &Signing, events: &EventLog) -> Arc<Signing> {
    let (signing, loads) = Signing::load(&config.dkim, Some(previous));
    emit(events, &loads);
    Arc::new(signing)
}

/// The key files' problems, for `tern check-config` (every key read and parsed).
pub fn key_problems(config: &Config) -> Vec<ConfigProblem> {
    let mut p = Vec::new();
    for (i, d) in config.dkim.domains.iter().enumerate() {
        for (j, k) in d.keys.iter().enumerate() {
            if let Err(e) = keys::load_key(&k.key_file, k.algorithm) {
                p.push(ConfigProblem::new(
                    format!("dkim.domain[{i}].key[{j}].key_file"),
                    e.to_string(),
                ));
            }
        }
    }
    if config.arc.seal
        && let Err(e) = keys::load_key(&config.arc.key_file, Algorithm::RsaSha256)
    {
        p.push(ConfigProblem::new("arc.key_file", e.to_string()));
    }
    p
}

fn emit_arc(events: &EventLog, load: Option<&ArcKeyLoad>) {
    let Some(l) = load else { return };
    match &l.result {
        Ok(bits) => events.emit(
            &catalog::ARC_KEY_LOADED,
            fields!(
                "domain" => l.domain,
                "selector" => l.selector,
                "bits" => bits,
                "file" => l.path.display(),
            ),
        ),
        Err(e) => events.emit(
            &catalog::ARC_KEY_FAILED,
            fields!(
                "domain" => l.domain,
                "selector" => l.selector,
                "file" => l.path.display(),
                "error" => e.to_string(),
                "kept_previous" => l.kept_previous,
            ),
        ),
    }
}

/// The authserv-id of Tern's own Authentication-Results, which the ARC sealer trusts on
/// top of a message: the server's host name (`[verify] authserv_id` once verification
/// is configured; issue 18).
fn authserv_id(config: &Config) -> &str {
    // The id the inbound verifier writes its Authentication-Results with (`[verify]
    // authserv_id`, default the host name), so the sealer recognises Tern's own field.
    config
        .verify
        .authserv_id
        .as_deref()
        .unwrap_or(&config.server.hostname)
}

/// Loads the `[arc]` key at the start; a key that cannot be loaded stops the start.
pub fn load_arc_at_start(config: &Config, events: &EventLog) -> anyhow::Result<Arc<Sealing>> {
    let (sealing, load) = Sealing::load(&config.arc, authserv_id(config), None);
    emit_arc(events, load.as_ref());
    if let Some(Err(e)) = load.as_ref().map(|l| &l.result) {
        anyhow::bail!("the ARC sealing key could not be loaded: {e}");
    }
    Ok(Arc::new(sealing))
}

/// Loads the `[arc]` key at a reload: a key that fails keeps the one loaded before
/// (same domain and selector; event 4112).
pub fn load_arc_at_reload(config: &Config, previous: &Sealing, events: &EventLog) -> Arc<Sealing> {
    let (sealing, load) = Sealing::load(&config.arc, authserv_id(config), Some(previous));
    emit_arc(events, load.as_ref());
    Arc::new(sealing)
}

/// `tern dkim generate`: writes a new key and prints its DNS record.
pub fn generate(
    domain: &str,
    selector: &str,
    algorithm: Algorithm,
    bits: usize,
    out: &Path,
) -> anyhow::Result<()> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if !tern_dkim::config::valid_dns_name(&domain) {
        anyhow::bail!("{domain:?} is not a domain name");
    }
    if !tern_dkim::config::valid_dns_name(selector) {
        anyhow::bail!("{selector:?} is not a selector (DNS labels)");
    }
    if !out.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(out)
            .with_context(|| format!("creating {}", out.display()))?;
    }
    let out = out
        .canonicalize()
        .with_context(|| format!("resolving {}", out.display()))?;
    let path = out.join(format!("{domain}.{selector}.pem"));
    let key = keys::generate(algorithm, bits)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .with_context(|| {
            format!(
                "creating {} (an existing file is never replaced)",
                path.display()
            )
        })?;
    // The mode given at creation is reduced by the umask: set it again, explicitly.
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .with_context(|| format!("chmod 600 {}", path.display()))?;
    file.write_all(key.pem.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    let text = keys::record_text(algorithm, &key.public);
    crate::term::outln!("# private key: {} (mode 0600)", path.display());
    crate::term::outln!("# publish this TXT record, then add the key to [dkim] and reload:");
    crate::term::outln!("{}", keys::zone_line(selector, &domain, &text));
    crate::term::outln!("#");
    crate::term::outln!("# [[dkim.domain]]");
    crate::term::outln!("# name = \"{domain}\"");
    crate::term::outln!("# [[dkim.domain.key]]");
    crate::term::outln!("# selector = \"{selector}\"");
    crate::term::outln!("# algorithm = \"{}\"", algorithm.as_str());
    crate::term::outln!("# key_file = \"{}\"", path.display());
    Ok(())
}

/// What `tern dkim check` found for one selector.
struct Checked {
    selector: String,
    outcome: Result<RecordMatch, String>,
}

/// `tern dkim check`: compares each configured selector of `domain` with its published
/// record; `Ok(true)` when all match.
pub fn check(config: &Config, domain: &str) -> anyhow::Result<bool> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let Some(d) = config
        .dkim
        .domains
        .iter()
        .find(|d| d.name.eq_ignore_ascii_case(&domain))
    else {
        anyhow::bail!("{domain} is not a signing domain in [dkim]");
    };
    let mut keys_loaded = Vec::new();
    for k in &d.keys {
        let key = keys::load_key(&k.key_file, k.algorithm)?;
        keys_loaded.push((k.selector.clone(), k.algorithm, key.public));
    }
    let builder = tern_route::dns::resolver_builder(&config.dns.nameservers)
        .map_err(|e| anyhow::anyhow!("setting up the DNS resolver: {e}"))?;
    let timeout = Duration::from_millis(config.dns.timeout_ms.max(100));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let results: Vec<Checked> = rt.block_on(async {
        let mut builder = builder;
        builder.options_mut().timeout = timeout;
        builder.options_mut().attempts = 2;
        // The answer itself, never a cached or stale one.
        builder.options_mut().cache_size = 0;
        let resolver = builder.build();
        let mut out = Vec::new();
        for (selector, algorithm, public) in &keys_loaded {
            let name = format!("{selector}._domainkey.{domain}.");
            let outcome = match &resolver {
                Err(e) => Err(e.to_string()),
                Ok(r) => lookup_txt(r, &name, timeout)
                    .await
                    .map(|records| keys::compare_records(&records, *algorithm, public)),
            };
            out.push(Checked {
                selector: selector.clone(),
                outcome,
            });
        }
        out
    });
    let mut all = true;
    for c in &results {
        let line = match &c.outcome {
            Ok(RecordMatch::Matches) => "matches".to_string(),
            Ok(RecordMatch::Differs(why)) => {
                all = false;
                format!("differs ({why})")
            }
            Ok(RecordMatch::Missing) => {
                all = false;
                "missing".to_string()
            }
            Err(e) => {
                all = false;
                format!("lookup failed ({e})")
            }
        };
        crate::term::outln!("{}._domainkey.{domain}: {line}", c.selector);
    }
    Ok(all)
}

/// The TXT records at `name`, each one's strings joined; none for NXDOMAIN or NODATA.
async fn lookup_txt(
    resolver: &hickory_resolver::TokioResolver,
    name: &str,
    timeout: Duration,
) -> Result<Vec<String>, String> {
    use hickory_resolver::net::{DnsError, NetError};
    let lookup = tokio::time::timeout(
        timeout.saturating_mul(3),
        resolver.lookup(name, RecordType::TXT),
    )
    .await
    .map_err(|_| "timed out".to_string())?;
    match lookup {
        Ok(l) => Ok(l
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(t) => Some(
                    t.txt_data
                        .iter()
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect()),
        Err(NetError::Dns(DnsError::NoRecordsFound(_))) => Ok(Vec::new()),
        Err(e) => Err(e.to_string()),
    }
}
