//! An administrator's actions on one message (admin API, `tern queue ...`), done by the
//! queue so that they never race with its own processing.
//!
//! Shape: [`QueueHandle::admin`] sends a command to the scheduler. The scheduler refuses
//! it (409) while a message task works on the message or while it waits in the backlog
//! to be loaded (`incoming/`, or a retry that just came due); otherwise it takes the
//! message out of its retry timers and marks it running, exactly like a message task, and
//! starts an **admin task** here. Nothing else can start on that message until the task
//! tells the scheduler it is done ([`Requeue`]: nothing more, try it now, or wait for a
//! retry again), so the action sees the spool as the queue left it.
//!
//! The actions, by state (every other combination answers [`AdminRefusal::Conflict`]):
//!
//! | action | from | what happens |
//! | --- | --- | --- |
//! | delete | deferred, hold, poison, corrupt | `Spool::delete` (event 7001, bounce no) |
//! | delete with bounce | deferred, hold, poison | as bounce, reply "deleted by the administrator" (7001, bounce yes) |
//! | hold | deferred | `Spool::hold` (7002) |
//! | bounce | deferred, hold, poison | see below (7003) |
//! | release | hold, poison | `Spool::release`, tried now (7004) |
//! | retry | deferred | tried now (7005) |
//! | resubmit | poison | `Spool::release`, tried now (7006) |
//!
//! Bounce, and its crash story (the same as the queue's own bounces): (1) every recipient
//! still pending or deferred is marked failed with `554 5.0.0 bounced by the
//! administrator` and the record is written: the decision is durable; (2) the bounce is
//! built and committed through the usual DSN path (`dsn::send_reports`: NOTIFY and the
//! null sender are respected, each recipient is reported once); (3) the record is written
//! again, saying the recipients were reported; (4) the message is removed. A crash after
//! (1) leaves failed, unreported recipients: the message task reports them the next time
//! it loads the message (at the next start for a deferred message), and a repeated
//! bounce or delete does it for a held or poisoned one. Only a crash between (2) and (3)
//! repeats the bounce: the at-least-once window of one step every DSN has.

use std::sync::Arc;
use std::time::Instant;

use tern_events::{catalog, fields};
use tern_spool::{
    DeliveryRecord, QueueId, QueueState, RecipientStatus, SpoolError, record::AttemptEntry,
};
use tern_watchdog::clock::unix_micros;
use tokio::task::AbortHandle;

use crate::Context;
use crate::channel::{AdminReply, Cmd, QueueHandle, Requeue};
use crate::dsn;
use crate::job::{LoadedMessage, local_reply};
pub use crate::requests::{AdminAction, AdminDone, AdminRefusal};

/// What the scheduler knew about the message: it waited for a retry.
#[derive(Debug)]
pub(crate) struct Tracked {
    pub(crate) due: Instant,
    pub(crate) state: QueueState,
    pub(crate) unsaved: Option<Box<DeliveryRecord>>,
    pub(crate) hops: Vec<(tern_route::NextHop, String)>,
}

impl Tracked {
    fn restore(self) -> Requeue {
        Requeue::At {
            due: self.due,
            state: self.state,
            record: self.unsaved,
            hops: self.hops,
        }
    }
}

/// Starts the admin task; the scheduler is told when it ends (also after a panic, then
/// the message waits for its retry as before).
pub(crate) fn spawn(
    ctx: Arc<Context>,
    handle: QueueHandle,
    id: QueueId,
    action: AdminAction,
    tracked: Option<Tracked>,
    reply: AdminReply,
) -> AbortHandle {
    let fallback = tracked.as_ref().map(|t| (t.due, t.state, t.hops.clone()));
    let inner = tokio::spawn(run(ctx, id, action, tracked));
    let abort = inner.abort_handle();
    tokio::spawn(async move {
        let (answer, requeue) = match inner.await {
            Ok(done) => done,
            Err(e) => {
                let requeue = match fallback {
                    Some((due, state, hops)) => Requeue::At {
                        due,
                        state,
                        record: None,
                        hops,
                    },
                    None => Requeue::Nothing,
                };
                let why = if e.is_cancelled() {
                    "the queue is stopping"
                } else {
                    "internal error (the action panicked)"
                };
                (Err(AdminRefusal::Failed(why.into())), requeue)
            }
        };
        let _ = reply.send(answer);
        handle.send(Cmd::AdminDone { id, requeue });
    });
    abort
}

fn conflict(action: AdminAction, state: QueueState) -> AdminRefusal {
    let why = match state {
        QueueState::Incoming | QueueState::Active => {
            "it is being processed; try again when it waits in deferred".to_owned()
        }
        QueueState::Corrupt => {
            "it is quarantined as corrupt: it can only be deleted (without a bounce)".to_owned()
        }
        QueueState::Hold if action == AdminAction::Retry => {
            "it is held: release it instead".to_owned()
        }
        QueueState::Poison if action == AdminAction::Retry => {
            "it is poisoned: resubmit or release it instead".to_owned()
        }
        s => format!("it is already {s}"),
    };
    AdminRefusal::Conflict(format!(
        "cannot {} a message in {state}: {why}",
        action.as_str()
    ))
}

async fn run(
    ctx: Arc<Context>,
    id: QueueId,
    action: AdminAction,
    tracked: Option<Tracked>,
) -> (Result<AdminDone, AdminRefusal>, Requeue) {
    let spool = ctx.spool.clone();
    let found = tokio::task::spawn_blocking(move || spool.find(id, &QueueState::ALL))
        .await
        .ok()
        .flatten();
    let Some(state) = found else {
        return (Err(AdminRefusal::NotFound(id)), Requeue::Nothing);
    };
    if !action.allowed_in(state) {
        let requeue = tracked.map_or(Requeue::Nothing, Tracked::restore);
        return (Err(conflict(action, state)), requeue);
    }
    let done = |result: String| AdminDone {
        from: state,
        result,
    };
    let emit = |def: &'static tern_events::EventDef, extra: &[(&'static str, String)]| {
        let mut f = fields!(
            "queue_id" => id,
            "action" => action.as_str(),
            "from_state" => state,
        );
        f.extend_from_slice(extra);
        ctx.events.emit(def, f);
    };
    let outcome: Result<(String, Requeue), SpoolError> = match action {
        AdminAction::Retry => {
            emit(&catalog::QUEUE_ADMIN_RETRIED, &[]);
            Ok(("tried now".into(), Requeue::Now(QueueState::Deferred)))
        }
        AdminAction::Hold => ctx.spool.hold(id).await.map(|_| {
            emit(&catalog::QUEUE_ADMIN_HELD, &[]);
            ("held".into(), Requeue::Nothing)
        }),
        AdminAction::Release | AdminAction::Resubmit => ctx.spool.release(id).await.map(|_| {
            let def = if action == AdminAction::Release {
                &catalog::QUEUE_ADMIN_RELEASED
            } else {
                &catalog::QUEUE_ADMIN_RESUBMITTED
            };
            emit(def, &[]);
            (
                format!("released from {state} (tried now)"),
                Requeue::Now(QueueState::Deferred),
            )
        }),
        AdminAction::Delete { bounce: false } => ctx.spool.delete(id).await.map(|_| {
            emit(&catalog::QUEUE_ADMIN_DELETED, &[("bounce", "no".into())]);
            (format!("deleted from {state}"), Requeue::Nothing)
        }),
        AdminAction::Delete { bounce: true } | AdminAction::Bounce => {
            let text = if action == AdminAction::Bounce {
                "5.0.0 bounced by the administrator"
            } else {
                "5.0.0 deleted by the administrator"
            };
            let unsaved = tracked.as_ref().and_then(|t| t.unsaved.clone());
            match bounce(&ctx, id, state, text, unsaved).await {
                Ok(report) => {
                    let extra = [("bounce", "yes".to_owned()), ("recipients", report.clone())];
                    if action == AdminAction::Bounce {
                        emit(&catalog::QUEUE_ADMIN_BOUNCED, &extra[1..]);
                        Ok((format!("bounced ({report})"), Requeue::Nothing))
                    } else {
                        emit(&catalog::QUEUE_ADMIN_DELETED, &extra);
                        Ok((
                            format!("deleted from {state} with a bounce ({report})"),
                            Requeue::Nothing,
                        ))
                    }
                }
                Err(e) => Err(e),
            }
        }
    };
    match outcome {
        Ok((text, requeue)) => (Ok(done(text)), requeue),
        Err(SpoolError::NotFound) => (
            Err(AdminRefusal::NotFound(id)),
            tracked.map_or(Requeue::Nothing, Tracked::restore),
        ),
        Err(e) => {
            ctx.events.emit(
                &catalog::QUEUE_ADMIN_FAILED,
                fields!(
                    "queue_id" => id,
                    "action" => action.as_str(),
                    "from_state" => state,
                    "error" => e,
                ),
            );
            // A deferred message keeps waiting for its retry (from now on, when the
            // scheduler did not know it), so it is never stranded.
            let requeue = match tracked {
                Some(t) => t.restore(),
                None if state == QueueState::Deferred => Requeue::At {
                    due: Instant::now()
                        + std::time::Duration::from_secs(ctx.runtime.load().queue.min_backoff_secs),
                    state,
                    record: None,
                    hops: Vec::new(),
                },
                None => Requeue::Nothing,
            };
            (Err(AdminRefusal::Failed(e.to_string())), requeue)
        }
    }
}

/// Steps (1) to (4) of the module header. Returns what was reported, for people.
async fn bounce(
    ctx: &Context,
    id: QueueId,
    state: QueueState,
    text: &str,
    unsaved: Option<Box<DeliveryRecord>>,
) -> Result<String, SpoolError> {
    let spool = ctx.spool.clone();
    // Streamed: the bounce reads what it returns itself, bounded (`content.rs`).
    let stored = tokio::task::spawn_blocking(move || crate::content::scan(&spool, state, id))
        .await
        .map_err(|e| SpoolError::BlockingTask(e.to_string()))??;
    let n = stored.envelope.recipients.len();
    let mut record = match unsaved {
        Some(r) => *r,
        None => ctx
            .spool
            .read_record(id)?
            .unwrap_or_else(|| DeliveryRecord::new(id, n)),
    };
    if record.recipients.len() != n {
        return Err(SpoolError::Corrupt(tern_spool::CorruptReason::BadRecord(
            "record and envelope disagree on the recipients".into(),
        )));
    }
    let typed = local_reply(554, text);
    let reply = typed.to_string();
    let now = unix_micros();
    let mut report = Vec::new();
    let mut marked = 0usize;
    for (i, rr) in record.recipients.iter_mut().enumerate() {
        match rr.status {
            RecipientStatus::Pending | RecipientStatus::Deferred { .. } => {
                rr.status = RecipientStatus::Failed {
                    reply: reply.clone(),
                };
                rr.reply = Some(typed.clone());
                rr.remote_mta = None;
                rr.remember(
                    n,
                    AttemptEntry {
                        at_micros: now,
                        result: "failed".into(),
                        remote: None,
                        reply: Some(reply.clone()),
                    },
                );
                marked += 1;
                report.push(i);
            }
            // Failed by an earlier bounce cut short: reported now.
            RecipientStatus::Failed { .. } if !rr.dsn_sent => report.push(i),
            _ => {}
        }
    }
    record.last_error = Some(reply.clone());
    record.next_attempt_micros = None;
    ctx.spool.write_record(&record).await?;
    #[cfg(feature = "fault-injection")]
    crate::fault_injection::maybe_abort_at("admin-bounce", &stored.facts.head);
    let msg = LoadedMessage {
        envelope: stored.envelope,
        state,
        facts: stored.facts,
    };
    dsn::send_reports(ctx, &msg, &mut record, &report, &[]).await?;
    ctx.spool.write_record(&record).await?;
    ctx.spool.remove(state, id).await?;
    let to = if msg.envelope.sender.is_empty() {
        "no bounce: null sender".to_owned()
    } else {
        format!("bounce to {}", msg.envelope.sender)
    };
    Ok(format!(
        "{marked} recipient(s) failed, {} reported, {to}",
        report.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse_and_apply_only_in_their_states() {
        use QueueState as S;
        for name in ["delete", "hold", "release", "retry", "bounce", "resubmit"] {
            let a = AdminAction::parse(name, false).unwrap();
            assert_eq!(a.as_str(), name);
            assert!(!a.allowed_in(S::Incoming), "{name} in incoming");
            assert!(!a.allowed_in(S::Active), "{name} in active");
        }
        assert_eq!(AdminAction::parse("expunge", false), None);
        let del = AdminAction::Delete { bounce: false };
        let del_b = AdminAction::Delete { bounce: true };
        assert!(del.allowed_in(S::Corrupt) && !del_b.allowed_in(S::Corrupt));
        assert!(AdminAction::Hold.allowed_in(S::Deferred));
        assert!(!AdminAction::Hold.allowed_in(S::Hold));
        assert!(AdminAction::Release.allowed_in(S::Poison));
        assert!(!AdminAction::Release.allowed_in(S::Deferred));
        assert!(AdminAction::Resubmit.allowed_in(S::Poison));
        assert!(!AdminAction::Resubmit.allowed_in(S::Hold));
        assert!(AdminAction::Retry.allowed_in(S::Deferred));
        assert!(!AdminAction::Retry.allowed_in(S::Hold));
        assert!(AdminAction::Bounce.allowed_in(S::Hold));
        assert!(!AdminAction::Bounce.allowed_in(S::Corrupt));
        let text = conflict(AdminAction::Retry, S::Hold).to_string();
        assert!(text.contains("release it instead"), "{text}");
    }
}
