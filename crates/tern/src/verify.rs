//! Builds the inbound verifier (`[verify]`, tern-authcheck, docs/FILTERING.md) from the
//! configuration: a hickory resolver on the `[dns]` name servers with the outbound lookup
//! timeout per query and hickory's own cache off (mail-auth's bounded TTL caches in the
//! verifier take its place).

use std::sync::Arc;
use std::time::Duration;

use tern_authcheck::Verifier;

use crate::config::Config;

/// The verifier, or `None` when `[verify] enabled` is false.
pub fn build(config: &Config, hostname: &str) -> Result<Option<Arc<Verifier>>, String> {
    if !config.verify.enabled {
        return Ok(None);
    }
    let mut builder = tern_route::dns::resolver_builder(&config.dns.nameservers)
        .map_err(|e| format!("resolver: {e}"))?;
    let per_query = Duration::from_millis(config.dns.timeout_ms)
        .min(Duration::from_secs(config.verify.timeout));
    builder.options_mut().timeout = per_query;
    builder.options_mut().attempts = 1;
    builder.options_mut().cache_size = 0;
    let resolver = builder.build().map_err(|e| format!("resolver: {e}"))?;
    Verifier::new(config.verify.clone(), hostname, resolver)
        .map(|v| Some(Arc::new(v)))
        .map_err(|e| e.to_string())
}
