//! `tern track` (reads the tracking files directly, so it works with or without a running
//! server) and `tern log-level` (over the admin API).

use std::io::Write;

use anyhow::Context;
use tern_events::tracking;

use crate::client::Client;
use crate::config::Config;

/// Prints the timeline of `query`, or its records as JSON. `Ok(false)` when nothing
/// matched (exit status 1, like `grep`).
pub fn track(config: &Config, query: &str, limit: usize, json: bool) -> anyhow::Result<bool> {
    if !(1..=tracking::MAX_LIMIT).contains(&limit) {
        anyhow::bail!("--limit must be 1 to {}", tracking::MAX_LIMIT);
    }
    let q = query.trim();
    if q.is_empty() {
        anyhow::bail!("give a queue id, a Message-ID or an address");
    }
    let dir = config.tracking_dir();
    let found = tracking::search(&dir, q, limit)
        .with_context(|| format!("reading the tracking log in {}", dir.display()))?;
    let mut out = crate::term::stdout();
    if json {
        let body = serde_json::json!({
            "query": query,
            "records": found.records,
            "truncated": found.truncated,
            "ids": found.ids,
        });
        writeln!(out, "{body}")?;
    } else if found.records.is_empty() {
        writeln!(
            out,
            "tern: nothing in the tracking log ({}) matches {q}",
            dir.display()
        )?;
    } else {
        if found.truncated {
            writeln!(
                out,
                "(only the newest {limit} records are shown; raise --limit for more)"
            )?;
        }
        write!(out, "{}", tracking::timeline(&found.records))?;
    }
    out.flush()?;
    Ok(!found.records.is_empty())
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Level {
    level: String,
}

/// Shows or sets the running server's log level.
pub fn log_level(config: &Config, level: Option<&str>) -> anyhow::Result<()> {
    let client = Client::from_config(config)?;
    let now: Level = match level {
        None => client.get("/api/v1/log-level")?,
        Some(l) => {
            if tern_events::Severity::parse(l).is_none() {
                anyhow::bail!("{l:?} is not a level: debug, info, notice, warning, error");
            }
            client.put(
                "/api/v1/log-level",
                &Level {
                    level: l.to_owned(),
                },
            )?
        }
    };
    crate::term::outln!("{}", now.level);
    Ok(())
}
