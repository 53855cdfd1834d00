//! `tern queue release` and `tern queue delete` with no server running: the command
//! opens the spool itself (taking its lock, running recovery like a start) and acts
//! through the same `Spool` methods the queue uses. With a server running, every action
//! goes through its admin API instead (`crate::cli_queue`), since only the process that
//! holds the spool lock changes the spool.
//!
//! Which states allow which action is the spool's rule (`tern_spool::RELEASABLE`,
//! `tern_spool::DELETABLE`): release from poison or hold; delete from deferred, hold,
//! poison or corrupt.

use anyhow::Context;
use tern_events::EventLog;
use tern_spool::{QueueId, Spool, SpoolError};

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
    rt.block_on(async {
        let (spool, _) = Spool::open(&dir, EventLog::discard())
            .with_context(|| format!("opening spool {}", dir.display()))?;
        let mut out = Vec::new();
        for id in ids {
            out.push(act(&spool, action, *id).await);
        }
        Ok(out)
    })
}

/// Performs one action; the text says what happened, for the operator.
async fn act(spool: &Spool, action: Action, id: QueueId) -> Result<String, String> {
    let result = match action {
        Action::Release => spool
            .release(id)
            .await
            .map(|from| format!("released from {} (tried at the next start)", from.as_str())),
        Action::Delete => spool
            .delete(id)
            .await
            .map(|from| format!("deleted from {}", from.as_str())),
    };
    result.map_err(|e| match e {
        SpoolError::NotFound => match action {
            Action::Release => "not found in poison or hold".to_owned(),
            Action::Delete => "not found in deferred, hold, poison or corrupt (messages in incoming or active cannot be deleted while they are processed)".to_owned(),
        },
        e => format!("error: {e}"),
    })
}
