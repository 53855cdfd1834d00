//! `tern queue release` and `tern queue delete`: an administrator's actions on single
//! messages, with or without the server running.
//!
//! Only the process that holds the spool lock changes the spool. So:
//! - With no server running, the command opens the spool itself (taking the lock, running
//!   recovery like a start) and acts.
//! - With a server running, the command leaves one request file per message in
//!   `<data_dir>/requests/` (written under a temporary name, then renamed, so the server
//!   never sees half a request), sends SIGHUP, and waits (bounded) for the server's answer
//!   file beside it. The server acts on requests at every SIGHUP (see [`serve_requests`])
//!   through the same `Spool` methods and tells its queue, so a released message is tried
//!   at once. The admin API (issue 6) will replace this file exchange; the actions stay.
//!
//! Which states allow which action is the spool's rule (`tern_spool::RELEASABLE`,
//! `tern_spool::DELETABLE`): release from poison or hold; delete from deferred, hold,
//! poison or corrupt: never from `incoming/` or `active/`, where a commit or a delivery
//! may be in progress.
//!
//! Trust: request file names are parsed strictly (action, then a queue id that
//! `QueueId::parse` accepts); anything else in the directory is ignored, never acted on.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use tern_events::EventLog;
use tern_queue::QueueHandle;
use tern_spool::{QueueId, Spool, SpoolError};

use crate::config::Config;

/// How long the command waits for a running server to answer.
const ANSWER_DEADLINE: Duration = Duration::from_secs(15);
/// Suffix of the server's answer to a request.
const ANSWER_SUFFIX: &str = ".answer";

/// An administrator's action on one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Poison or hold → deferred, crash count reset, tried at once.
    Release,
    /// Removed from the spool with its record, no bounce.
    Delete,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Release => "release",
            Action::Delete => "delete",
        }
    }

    fn parse(s: &str) -> Option<Action> {
        match s {
            "release" => Some(Action::Release),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }
}

/// The directory of requests to a running server.
fn requests_dir(config: &Config) -> PathBuf {
    config.server.data_dir.join("requests")
}

/// Runs `action` on each id; prints one line per message. `Ok(false)` when any failed.
pub fn run(config: &Config, action: Action, ids: &[String]) -> anyhow::Result<bool> {
    let mut parsed = Vec::new();
    for s in ids {
        parsed.push(QueueId::parse(s).with_context(|| format!("{s:?} is not a queue id"))?);
    }
    let dir = config.spool_dir();
    if !dir.exists() {
        anyhow::bail!("no spool at {}", dir.display());
    }
    let holder = Spool::lock_holder(&dir)
        .with_context(|| format!("reading the spool lock in {}", dir.display()))?;
    let answers = match holder {
        Some(pid) => via_server(config, pid, action, &parsed)?,
        None => directly(config, action, &parsed)?,
    };
    let mut all_ok = true;
    for (id, answer) in parsed.iter().zip(answers) {
        match answer {
            Ok(text) => println!("{id}: {text}"),
            Err(text) => {
                all_ok = false;
                println!("{id}: {text}");
            }
        }
    }
    Ok(all_ok)
}

/// No server: open the spool (taking its lock) and act.
fn directly(
    config: &Config,
    action: Action,
    ids: &[QueueId],
) -> anyhow::Result<Vec<Result<String, String>>> {
    let dir = config.spool_dir();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    rt.block_on(async {
        let (spool, _) = Spool::open(&dir, EventLog::discard())
            .with_context(|| format!("opening spool {}", dir.display()))?;
        let mut out = Vec::new();
        for id in ids {
            out.push(act(&spool, None, action, *id).await);
        }
        Ok(out)
    })
}

/// Performs one action; the text says what happened, for the operator.
async fn act(
    spool: &Spool,
    queue: Option<&QueueHandle>,
    action: Action,
    id: QueueId,
) -> Result<String, String> {
    let result = match action {
        Action::Release => spool.release(id).await.map(|from| {
            if let Some(q) = queue {
                q.released(id);
            }
            format!("released from {} (tried now)", from.as_str())
        }),
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

/// A server runs: leave requests, signal it, wait for its answers.
fn via_server(
    config: &Config,
    pid: u32,
    action: Action,
    ids: &[QueueId],
) -> anyhow::Result<Vec<Result<String, String>>> {
    let dir = requests_dir(config);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for id in ids {
        let name = format!("{}.{id}", action.as_str());
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, b"").with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join(&name))
            .with_context(|| format!("writing request {name}"))?;
    }
    crate::signal_server(pid, libc::SIGHUP)?;
    let deadline = Instant::now() + ANSWER_DEADLINE;
    let mut answers = Vec::new();
    for id in ids {
        let answer = dir.join(format!("{}.{id}{ANSWER_SUFFIX}", action.as_str()));
        loop {
            match std::fs::read_to_string(&answer) {
                Ok(text) => {
                    let _ = std::fs::remove_file(&answer);
                    answers.push(match text.strip_prefix("ok ") {
                        Some(t) => Ok(t.trim_end().to_owned()),
                        None => Err(text.trim_end().to_owned()),
                    });
                    break;
                }
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(_) => {
                    answers.push(Err(format!(
                        "no answer from the server (pid {pid}) within {} s; the request stays in {}",
                        ANSWER_DEADLINE.as_secs(),
                        dir.display()
                    )));
                    break;
                }
            }
        }
    }
    Ok(answers)
}

/// Server side, at every SIGHUP: acts on each request in `<data_dir>/requests/` and
/// writes its answer beside it. A name that is not `<action>.<queue id>` is left alone.
pub async fn serve_requests(data_dir: &Path, spool: &Spool, queue: Option<&QueueHandle>) {
    let dir = data_dir.join("requests");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    // Bounded: a directory flooded with names is served a batch per signal.
    let names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .take(10_000)
        .collect();
    for name in names {
        let Some((action, id)) = name.split_once('.') else {
            continue;
        };
        let (Some(action), Ok(id)) = (Action::parse(action), QueueId::parse(id)) else {
            continue;
        };
        let text = match act(spool, queue, action, id).await {
            Ok(t) => format!("ok {t}\n"),
            Err(t) => format!("{t}\n"),
        };
        let tmp = dir.join(format!(".{name}.answer.tmp"));
        let answer = dir.join(format!("{name}{ANSWER_SUFFIX}"));
        if std::fs::write(&tmp, text).is_ok() && std::fs::rename(&tmp, &answer).is_ok() {
            let _ = std::fs::remove_file(dir.join(&name));
        }
    }
}
