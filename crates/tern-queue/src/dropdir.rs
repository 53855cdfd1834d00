//! Delivery through the `drop` transport: the job's recipients and the message are
//! written into the route's directory by `tern_local::dropdir`, on the blocking pool.
//!
//! A job's result is all-or-nothing: every recipient is delivered once both files and
//! the directory are synced (reply `250 2.0.0 written to <dir>/<queue id>.eml`, remote
//! `drop:<dir>`, marked `relayed` so that a requested success notice comes from Tern, as
//! for a peer without DSN), or every recipient is deferred with `451 4.3.0` and the error
//! (event 6031), to be tried again after the backoff. The worker holds its concurrency
//! slot meanwhile like an SMTP delivery; there is no connection to keep.
//!
//! Duplicates: a crash after the files were published and before the result reached the
//! delivery record writes the message again at the retry (the files are replaced under
//! the same names); see `tern_local::dropdir`.

use std::path::Path;
use std::sync::Arc;

use tern_events::{catalog, fields};

use crate::Context;
use crate::job::{Job, JobResult, RcptResult, SuccessNotice, local_reply};

/// Writes the job's message into `dir` and answers for every recipient.
pub(crate) async fn deliver(ctx: &Context, job: &Job, dir: &Path) -> JobResult {
    let msg = Arc::clone(&job.msg);
    let rcpts = job.rcpts.clone();
    let target = dir.to_path_buf();
    let spool = ctx.spool.clone();
    let written = crate::last_gasp::spawn_blocking(move || {
        // Streamed from the spool, checked as it is read.
        let mut content = spool.open_body(msg.state, msg.envelope.id).map_err(|e| {
            tern_local::dropdir::DropError::Io {
                op: "open the queued message",
                path: spool.path_of(msg.state, msg.envelope.id),
                source: std::io::Error::other(e.to_string()),
            }
        })?;
        tern_local::dropdir::write_message_from(&target, &msg.envelope, &rcpts, &mut content)
    })
    .await;
    let id = job.msg.envelope.id;
    let remote = format!("drop:{}", dir.display());
    match written {
        Ok(Ok(paths)) => {
            ctx.events.emit(
                &catalog::DROP_WRITTEN,
                fields!(
                    "queue_id" => id,
                    "dir" => dir.display(),
                    "file" => paths.message.display(),
                    "recipients" => job.rcpts.len(),
                ),
            );
            JobResult::all(
                job,
                &RcptResult::Delivered {
                    reply: local_reply(
                        250,
                        &format!("2.0.0 written to {}", paths.message.display()),
                    )
                    .with_remote(&remote),
                    notice: SuccessNotice::Relayed,
                },
            )
        }
        Ok(Err(e)) => failed(ctx, job, dir, &e.to_string()),
        Err(e) => failed(ctx, job, dir, &format!("the writer task failed: {e}")),
    }
}

fn failed(ctx: &Context, job: &Job, dir: &Path, error: &str) -> JobResult {
    ctx.events.emit(
        &catalog::DROP_FAILED,
        fields!("dir" => dir.display(), "queue_id" => job.msg.envelope.id, "error" => error),
    );
    JobResult::deferred_all(
        job,
        &format!("4.3.0 drop directory {}: {error}", dir.display()),
    )
}
