//! `tern queue list`: reads the spool directly, read-only, without the server.
//!
//! The plain form imitates Postfix's `mailq`; `--json` prints one JSON object per message
//! per line, like `postqueue -j`, with at least `id`, `state`, `sender`, `recipients`,
//! `size` and `arrival` (RFC 3339, UTC), plus `attempts`, `next_attempt` and `last_error`
//! from the delivery record, and each recipient's status from it.

use std::io::Write;

use anyhow::Context;
use tern_spool::{DeliveryRecord, QueueState, RecipientStatus, Spool};

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
    // Each message's delivery record, when it has one (per-recipient status, attempts).
    // A record that cannot be read is shown as absent; the server quarantines it when it
    // next loads the message.
    let records: Vec<Option<DeliveryRecord>> = messages
        .iter()
        .map(|m| {
            if m.state == QueueState::Corrupt {
                None
            } else {
                spool.read_record(m.id).ok().flatten()
            }
        })
        .collect();
    if json {
        for (m, rec) in messages.iter().zip(&records) {
            let (sender, recipients, arrival) = match &m.envelope {
                Some(e) => (
                    Some(e.sender.clone()),
                    e.recipients
                        .iter()
                        .enumerate()
                        .map(|(i, r)| {
                            let rr = rec.as_ref().and_then(|rec| rec.recipients.get(i));
                            let status = rr.map_or(&r.status, |rr| &rr.status);
                            serde_json::json!({
                                "address": r.address,
                                "status": status,
                                "remote_mta": rr.and_then(|rr| rr.remote_mta.clone()),
                            })
                        })
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
                "attempts": rec.as_ref().map_or(0, |r| r.attempts),
                "next_attempt": rec.as_ref().and_then(|r| r.next_attempt_micros).map(rfc3339),
                "last_error": rec.as_ref().and_then(|r| r.last_error.clone()),
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
    for (m, rec) in messages.iter().zip(&records) {
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
        if let Some(err) = rec.as_ref().and_then(|r| r.last_error.as_deref()) {
            // Like mailq: the reason a deferred message waits, in parentheses.
            writeln!(out, "{:>10}({err})", "")?;
        }
        if let Some(e) = &m.envelope {
            for (i, r) in e.recipients.iter().enumerate() {
                let done = rec
                    .as_ref()
                    .and_then(|rec| rec.recipients.get(i))
                    .map(|rr| match rr.status {
                        RecipientStatus::Delivered { .. } => " (delivered)",
                        RecipientStatus::Failed { .. } => " (failed)",
                        _ => "",
                    })
                    .unwrap_or("");
                writeln!(out, "{:56}{}{done}", "", r.address)?;
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

pub(crate) fn rfc3339(micros: i64) -> String {
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
