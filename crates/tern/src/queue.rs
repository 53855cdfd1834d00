//! `tern queue list` from the spool: read-only, safe beside a running server, and the
//! way the queue is listed when no server runs (`crate::cli_queue` asks the server's API
//! when one does).
//!
//! `--json` always comes from here, with or without a server: one JSON object per message
//! per line, like `postqueue -j`, with at least `id`, `state`, `sender`, `recipients`
//! (address, status, remote_mta), `size` and `arrival` (RFC 3339, UTC), plus `attempts`,
//! `next_attempt` and `last_error` from the delivery record and `destinations`. The
//! filters are the admin API's (`tern_admin::queue::filter`), so both answer alike.

use std::io::Write;
use tern_watchdog::clock::unix_ms;

use anyhow::Context;
use tern_admin::queue::filter::{self, Entry, Filter, Summary};
use tern_spool::Spool;

use crate::config::Config;

/// The messages `filter` matches, read from the spool read-only (safe beside a running
/// server), oldest first. An absent spool is an empty queue.
fn entries(config: &Config, filter: &Filter) -> anyhow::Result<Vec<Entry>> {
    let dir = config.spool_dir();
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let spool =
        Spool::open_read_only(&dir).with_context(|| format!("reading spool {}", dir.display()))?;
    filter::scan(&spool, filter, unix_ms()).context("listing the spool")
}

/// The summaries of the messages `filter` matches, from the spool (no server needed).
pub fn summaries(config: &Config, filter: &Filter) -> anyhow::Result<Vec<Summary>> {
    let now = unix_ms();
    Ok(entries(config, filter)?
        .iter()
        .map(|e| e.summary(now))
        .collect())
}

/// `tern queue list --json`: one JSON object per message per line, from the spool.
pub fn list_json(config: &Config, filter: &Filter) -> anyhow::Result<()> {
    let mut out = crate::term::stdout();
    for e in entries(config, filter)? {
        let m = &e.listed;
        let rec = &e.record;
        let (sender, recipients, arrival) = match &m.envelope {
            Some(env) => (
                Some(env.sender.clone()),
                env.recipients
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
                rfc3339(env.arrival_micros),
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
            "destinations": e.destinations(),
        });
        writeln!(out, "{obj}")?;
    }
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

pub(crate) fn short_time(micros: i64) -> String {
    let fmt = time::macros::format_description!(
        "[weekday repr:short] [month repr:short] [day] [hour]:[minute]:[second]"
    );
    datetime(micros).format(&fmt).unwrap_or_default()
}
