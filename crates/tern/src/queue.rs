//! `tern queue list`: reads the spool directly, read-only, without the server.
//!
//! The plain form imitates Postfix's `mailq`; `--json` prints one JSON object per message
//! per line, like `postqueue -j`, with at least `id`, `state`, `sender`, `recipients`,
//! `size` and `arrival` (RFC 3339, UTC).

use std::io::Write;

use anyhow::Context;
use tern_spool::{QueueState, Spool};

use crate::config::Config;

/// Prints the queue.
pub fn list(config: &Config, json: bool, state: Option<&str>) -> anyhow::Result<()> {
    let state = match state {
        Some(s) => Some(QueueState::parse(s).with_context(|| {
            format!("unknown state {s:?}; use incoming, active, deferred, hold, poison or corrupt")
        })?),
        None => None,
    };
    let dir = config.spool_dir();
    if !dir.exists() {
        if !json {
            println!("Mail queue is empty");
        }
        return Ok(());
    }
    let spool =
        Spool::open_read_only(&dir).with_context(|| format!("reading spool {}", dir.display()))?;
    let messages = spool.list(state).context("listing the spool")?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if json {
        for m in &messages {
            let (sender, recipients, arrival) = match &m.envelope {
                Some(e) => (
                    Some(e.sender.clone()),
                    e.recipients
                        .iter()
                        .map(|r| serde_json::json!({"address": r.address, "status": r.status}))
                        .collect(),
                    rfc3339(e.arrival_micros),
                ),
                None => (None, Vec::new(), rfc3339(m.id.arrival_micros())),
            };
            let obj = serde_json::json!({
                "id": m.id.to_string(),
                "state": m.state.as_str(),
                "sender": sender,
                "recipients": recipients,
                "size": m.envelope.as_ref().map(|e| e.size).unwrap_or(m.file_size),
                "arrival": arrival,
            });
            writeln!(out, "{obj}")?;
        }
        return Ok(());
    }
    if messages.is_empty() {
        writeln!(out, "Mail queue is empty")?;
        return Ok(());
    }
    writeln!(
        out,
        "-Queue ID-       -State-- --Size-- ----Arrival Time---- -Sender/Recipient-------"
    )?;
    let mut total = 0u64;
    for m in &messages {
        let size = m.envelope.as_ref().map(|e| e.size).unwrap_or(m.file_size);
        total += size;
        let when = m
            .envelope
            .as_ref()
            .map(|e| e.arrival_micros)
            .unwrap_or(m.id.arrival_micros());
        let sender = match &m.envelope {
            Some(e) if e.sender.is_empty() => "MAILER-DAEMON".to_string(),
            Some(e) => e.sender.clone(),
            None => "(unreadable: quarantined)".to_string(),
        };
        writeln!(
            out,
            "{:<16} {:<8} {:>8} {:<20} {}",
            m.id,
            m.state.as_str(),
            size,
            short_time(when),
            sender
        )?;
        if let Some(e) = &m.envelope {
            for r in &e.recipients {
                writeln!(out, "{:56}{}", "", r.address)?;
            }
        }
        writeln!(out)?;
    }
    writeln!(
        out,
        "-- {} Kbytes in {} Requests.",
        total.div_ceil(1024),
        messages.len()
    )?;
    Ok(())
}

fn datetime(micros: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn rfc3339(micros: i64) -> String {
    datetime(micros)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn short_time(micros: i64) -> String {
    let fmt = time::macros::format_description!(
        "[weekday repr:short] [month repr:short] [day] [hour]:[minute]:[second]"
    );
    datetime(micros).format(&fmt).unwrap_or_default()
}
