//! `tern queue release` and `tern queue delete` with no server running: the command
//! opens the spool itself (taking its lock, running recovery like a start) and acts
//! through the same `Spool` methods the queue uses. With a server running, every action
//! goes through its admin API instead (`crate::cli_queue`), since only the process that
//! holds the spool lock changes the spool.
//!
//! Which states allow which action is the spool's rule (`tern_spool::RELEASABLE`,
//! `tern_spool::DELETABLE`): release from poison or hold; delete from deferred, hold,
//! poison or corrupt.
//!
//! The command writes the same events as the server would (7004 released, 7001 deleted,
//! 7008 failed, with `server = "none"`) to the server's event log and tracking log, so
//! `tern track` and the log show who removed what whether a server ran or not; the
//! spool's own events while it opens (recovery, quarantine) go there too. The command
//! holds the spool lock, so no server writes to those files at the same time.

use std::time::Duration;

use anyhow::Context;
use tern_events::{EventLog, catalog, fields};
use tern_spool::{QueueId, QueueState, Spool, SpoolError};

use crate::config::Config;

/// An administrator's action on one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Poison or hold → deferred, crash count reset, tried at once.
    Release,
    /// Removed from the spool with its record, no bounce.
    Delete,
}

/// No server: open the spool (taking its lock) and act.
pub fn directly(
    config: &Config,
    action: Action,
    ids: &[QueueId],
) -> anyhow::Result<Vec<Result<String, String>>> {
    let dir = config.spool_dir();
    if !dir.exists() {
        anyhow::bail!("no spool at {}", dir.display());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    let data_dir = &config.server.data_dir;
    let events = EventLog::open_with_tracking(
        Some(&data_dir.join("events.jsonl")),
        false,
        config.tracking_config(),
    )
    .with_context(|| format!("opening event log in {}", data_dir.display()))?;
    let out = rt.block_on(async {
        let (spool, _) = Spool::open(&dir, events.clone())
            .with_context(|| format!("opening spool {}", dir.display()))?;
        let mut out = Vec::new();
        for id in ids {
            out.push(act(&spool, &events, action, *id).await);
        }
        anyhow::Ok(out)
    })?;
    if !events.flush(Duration::from_secs(10)) {
        crate::term::errln!(
            "warning: the event log could not be written in time; the actions were done"
        );
    }
    Ok(out)
}

/// Performs one action; the text says what happened, for the operator.
async fn act(
    spool: &Spool,
    events: &EventLog,
    action: Action,
    id: QueueId,
) -> Result<String, String> {
    let name = match action {
        Action::Release => "release",
        Action::Delete => "delete",
    };
    let emit = |def: &'static tern_events::EventDef,
                from: QueueState,
                extra: Option<(&'static str, String)>| {
        let mut f = fields!(
            "queue_id" => id,
            "action" => name,
            "from_state" => from,
            "server" => "none",
        );
        f.extend(extra);
        events.emit(def, f);
    };
    let result = match action {
        Action::Release => spool.release(id).await.map(|from| {
            emit(&catalog::QUEUE_ADMIN_RELEASED, from, None);
            format!("released from {} (tried at the next start)", from.as_str())
        }),
        Action::Delete => spool.delete(id).await.map(|from| {
            emit(
                &catalog::QUEUE_ADMIN_DELETED,
                from,
                Some(("bounce", "no".into())),
            );
            format!("deleted from {}", from.as_str())
        }),
    };
    if let Err(e) = &result
        && !matches!(e, SpoolError::NotFound)
    {
        events.emit(
            &catalog::QUEUE_ADMIN_FAILED,
            fields!("queue_id" => id, "action" => name, "server" => "none", "error" => e),
        );
    }
    result.map_err(|e| match e {
        SpoolError::NotFound => match action {
            Action::Release => "not found in poison or hold".to_owned(),
            Action::Delete => "not found in deferred, hold, poison or corrupt (messages in incoming or active cannot be deleted while they are processed)".to_owned(),
        },
        e => format!("error: {e}"),
    })
}
