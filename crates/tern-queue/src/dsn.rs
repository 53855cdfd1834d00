//! Queueing delivery status notifications: bounces, delay notices, success notices.
//!
//! Rules (RFC 3461, RFC 3464):
//! - A failed recipient is reported unless its NOTIFY excludes FAILURE (NOTIFY=NEVER or a
//!   list without FAILURE); no NOTIFY means FAILURE.
//! - A delivered recipient with NOTIFY=SUCCESS gets a success notice from Tern when
//!   nobody after Tern will send one: "delivered" when Tern put the message in the
//!   mailbox itself (Maildir), "relayed" when the next hop lacked the DSN extension or
//!   was a connector directory. Otherwise the NOTIFY went along and the next hop
//!   reports.
//! - A message from the null sender never produces a DSN (no bounce loops): the failure
//!   is logged (event 4005) and the recipients are marked as reported.
//! - Each recipient is reported at most once (`RecipientRecord::dsn_sent`), and only
//!   after the DSN is committed to the spool; at most one delay notice per message.
//!
//! DSNs are queued as ordinary messages from the null sender through the queue's intake,
//! so they are delivered (and retried) like any other mail.

use std::time::{Duration, UNIX_EPOCH};

use tern_dsn::{Action, DsnInput, RecipientReport, ReportKind, Return};
use tern_events::{catalog, fields};
use tern_spool::{
    BodyType, ClientInfo, DeliveryRecord, DsnRet, Envelope, MailParams, MessageIntake, Recipient,
    RecipientStatus, SpoolError,
};
use tern_watchdog::clock::unix_micros;

use crate::Context;
use crate::apply;
use crate::job::{LoadedMessage, SuccessNotice};

fn to_time(micros: i64) -> time::OffsetDateTime {
    let d = Duration::from_micros(u64::try_from(micros).unwrap_or(0));
    time::OffsetDateTime::from(UNIX_EPOCH + d)
}

/// The enhanced status code in a reply (`550 5.1.1 ...` gives `5.1.1`), or the class
/// default (`5.0.0`, `4.0.0`, `2.0.0`) when the reply has none.
pub fn status_of(reply: &str) -> String {
    let mut words = reply.split_whitespace();
    let code = words.next().unwrap_or("");
    if let Some(w) = words.next() {
        let parts: Vec<&str> = w.split('.').collect();
        if parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
            && matches!(parts.first(), Some(&("2" | "4" | "5")))
        {
            return w.to_string();
        }
    }
    match code.as_bytes().first() {
        Some(b'2') => "2.0.0".into(),
        Some(b'4') => "4.0.0".into(),
        _ => "5.0.0".into(),
    }
}

/// A local reason without its leading 3-digit reply code (`554 5.4.6 loop` gives
/// `5.4.6 loop`).
fn local_reason(reply: &str) -> &str {
    match reply.split_once(' ') {
        Some((code, rest)) if code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => reply,
    }
}

/// `mx.example.com[192.0.2.1]` gives `mx.example.com`.
fn host_of(remote: &str) -> &str {
    remote.split('[').next().unwrap_or(remote)
}

fn reply_of(status: &RecipientStatus) -> &str {
    match status {
        RecipientStatus::Delivered { reply }
        | RecipientStatus::Deferred { reply }
        | RecipientStatus::Failed { reply } => reply,
        RecipientStatus::Pending => "",
    }
}

/// Queues the bounce for `failed` and the success notice for `delivered` (index, who
/// reports) where due, and marks the recipients reported.
pub(crate) async fn send_reports(
    ctx: &Context,
    msg: &LoadedMessage,
    record: &mut DeliveryRecord,
    failed: &[usize],
    delivered: &[(usize, SuccessNotice)],
) -> Result<(), SpoolError> {
    let env = &msg.envelope;
    let fail_list = apply::failure_reports(env, record, failed);
    let success_list = apply::success_reports(env, record, delivered);
    for (list, kind) in [
        (fail_list, ReportKind::Failure),
        (success_list, ReportKind::Success),
    ] {
        if list.is_empty() {
            continue;
        }
        if env.sender.is_empty() {
            ctx.events.emit(
                &catalog::DSN_SUPPRESSED,
                fields!("queue_id" => env.id, "reason" => "null sender", "recipients" => list.len()),
            );
        } else {
            let dsn_id = queue_report(ctx, msg, record, &list, kind, None).await?;
            ctx.events.emit(
                &catalog::DSN_QUEUED,
                fields!("queue_id" => env.id, "dsn_id" => dsn_id, "kind" => format!("{kind:?}").to_lowercase(), "recipients" => list.len()),
            );
        }
        for (i, _) in list {
            if let Some(r) = record.recipients.get_mut(i) {
                r.dsn_sent = true;
            }
        }
    }
    // Failures nobody is told about (NOTIFY excluded them) are still logged, by
    // event 4003 in the caller; mark them so they are never considered again.
    for i in failed {
        if let Some(r) = record.recipients.get_mut(*i) {
            r.dsn_sent = true;
        }
    }
    Ok(())
}

/// Queues a delay notice for the `open` recipients when one is due (see `[queue]`).
pub(crate) async fn maybe_delay_notice(
    ctx: &Context,
    msg: &LoadedMessage,
    record: &mut DeliveryRecord,
    open: &[usize],
) -> Result<(), SpoolError> {
    let runtime = ctx.runtime.load_full();
    let cfg = &runtime.queue;
    let env = &msg.envelope;
    let list = apply::delay_notice_due(env, record, cfg, open, unix_micros());
    if list.is_empty() {
        return Ok(());
    }
    let give_up = apply::give_up_micros(env, cfg);
    let dsn_id = queue_report(ctx, msg, record, &list, ReportKind::Delay, Some(give_up)).await?;
    ctx.events.emit(
        &catalog::DSN_QUEUED,
        fields!("queue_id" => env.id, "dsn_id" => dsn_id, "kind" => "delay", "recipients" => list.len()),
    );
    record.delay_notice_sent = true;
    Ok(())
}

async fn queue_report(
    ctx: &Context,
    msg: &LoadedMessage,
    record: &DeliveryRecord,
    list: &[(usize, Action)],
    kind: ReportKind,
    give_up: Option<i64>,
) -> Result<tern_spool::QueueId, SpoolError> {
    let env = &msg.envelope;
    let runtime = ctx.runtime.load_full();
    let pairs: Vec<_> = list
        .iter()
        .filter_map(|(i, action)| {
            Some((env.recipients.get(*i)?, record.recipients.get(*i)?, *action))
        })
        .collect();
    let statuses: Vec<String> = pairs
        .iter()
        .map(|(_, rr, _)| status_of(reply_of(&rr.status)))
        .collect();
    let reports: Vec<RecipientReport<'_>> = pairs
        .iter()
        .zip(&statuses)
        .map(|((r, rr, action), status)| {
            let reply = reply_of(&rr.status);
            RecipientReport {
                final_recipient: &r.address,
                original_recipient: r.orcpt.as_deref(),
                action: *action,
                status,
                remote_mta: rr.remote_mta.as_deref().map(host_of),
                // A remote reply is quoted as it came (typed `smtp;`); a local reason
                // loses its synthetic reply code so it is typed as Tern's own.
                diagnostic: Some(if rr.remote_mta.is_some() {
                    reply
                } else {
                    local_reason(reply)
                }),
                last_attempt: record.last_attempt_micros.map(to_time),
                will_retry_until: give_up.map(to_time),
            }
        })
        .collect();
    let postmaster = format!("MAILER-DAEMON@{}", ctx.hostname);
    let max_full = runtime.queue.bounce_max_full_size;
    let full_wanted = env.params.dsn_ret == Some(DsnRet::Full);
    // Bounded: the whole original only when it may be returned whole, else the start
    // the load kept, which holds its header section (`content.rs`).
    let (spool, state, facts) = (ctx.spool.clone(), msg.state, msg.facts.clone());
    let id = env.id;
    let (original, whole) = crate::last_gasp::spawn_blocking(move || {
        crate::content::read_for_dsn(&spool, state, id, &facts, full_wanted, max_full)
    })
    .await
    .map_err(|e| SpoolError::BlockingTask(e.to_string()))??;
    let ret = match env.params.dsn_ret {
        // Larger than `max_full`: headers only, as tern-dsn would decide.
        Some(DsnRet::Full) if whole => Return::Full,
        _ => Return::Headers,
    };
    let now = time::OffsetDateTime::now_utc();
    let input = DsnInput {
        reporting_mta: &ctx.hostname,
        postmaster: &postmaster,
        original_sender: &env.sender,
        envid: env.params.dsn_envid.as_deref(),
        arrival: to_time(env.arrival_micros),
        queue_id: &env.id.to_string(),
        kind,
        give_up_at: give_up.map(to_time),
        recipients: &reports,
        original: &original,
        ret,
        max_full_size: max_full,
        date: now,
        message_id_domain: &ctx.hostname,
    };
    #[cfg(feature = "fault-injection")]
    crate::fault_injection::maybe_panic("dsn", &msg.facts.head);
    let bytes = tern_dsn::build(&input)
        .map_err(|e| SpoolError::BlockingTask(format!("building a DSN: {e}")))?;
    let mut draft = ctx.intake.begin();
    let id = draft.id();
    draft.write(&bytes).await?;
    let eight_bit = bytes.iter().any(|b| *b >= 0x80);
    let envelope = Envelope {
        id,
        sender: String::new(),
        recipients: vec![Recipient {
            address: env.sender.clone(),
            orcpt: None,
            notify: None,
            status: RecipientStatus::Pending,
        }],
        params: MailParams {
            declared_size: None,
            body: if eight_bit {
                BodyType::EightBitMime
            } else {
                BodyType::SevenBit
            },
            smtputf8: !env.sender.is_ascii(),
            dsn_ret: None,
            dsn_envid: None,
        },
        client: ClientInfo {
            address: "127.0.0.1:0".into(),
            verified_name: None,
            helo: ctx.hostname.clone(),
            esmtp: true,
            tls: None,
            listener: "dsn".into(),
        },
        arrival_micros: unix_micros(),
        size: bytes.len() as u64,
    };
    draft.commit(envelope).await?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_comes_from_the_reply_or_its_class() {
        assert_eq!(status_of("550 5.1.1 no such user"), "5.1.1");
        assert_eq!(status_of("451 4.4.1 later"), "4.4.1");
        assert_eq!(status_of("550 no such user"), "5.0.0");
        assert_eq!(status_of("421 try later"), "4.0.0");
        assert_eq!(status_of("554 5.a.1 odd"), "5.0.0");
        assert_eq!(status_of(""), "5.0.0");
    }

    #[test]
    fn remote_host_is_the_name_before_the_address() {
        assert_eq!(host_of("mx.example.com[192.0.2.1]"), "mx.example.com");
        assert_eq!(host_of("plain"), "plain");
    }
}
