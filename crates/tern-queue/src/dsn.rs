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
use tern_spool::record::Reply;
use tern_spool::{
    BodyType, ClientInfo, DeliveryRecord, DsnRet, Envelope, MailParams, MessageIntake, Recipient,
    RecipientRecord, RecipientStatus, SpoolError,
};
use tern_watchdog::clock::unix_micros;

use crate::Context;
use crate::apply;
use crate::job::{LoadedMessage, SuccessNotice};

fn to_time(micros: i64) -> time::OffsetDateTime {
    let d = Duration::from_micros(u64::try_from(micros).unwrap_or(0));
    time::OffsetDateTime::from(UNIX_EPOCH + d)
}

/// The DSN fields of one recipient (RFC 3464 §2.3): Status, Diagnostic-Code and the
/// host for Remote-MTA, from its record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fields {
    status: String,
    /// A remote reply is quoted whole (typed `smtp;`); Tern's own reason is given
    /// without a reply code, so it is typed as Tern's own.
    diagnostic: String,
    /// `host[address]` of the server whose reply it was.
    remote: Option<String>,
}

/// The DSN fields of a recipient: from its typed reply, taken apart where it was made
/// (the delivery worker, or Tern's own decision), never parsed back here. A record
/// written before typed replies existed (or by a writer that set the status without
/// one) has only the status text: then, and only then, the text is read the old way
/// ([`legacy_fields`]).
fn fields_of(rr: &RecipientRecord) -> Fields {
    let text = reply_of(&rr.status);
    match &rr.reply {
        // The typed reply must be the one behind the status, not an older one.
        Some(reply) if tern_spool::record::bounded_reply(&reply.to_string()) == text => {
            typed_fields(reply)
        }
        _ => legacy_fields(text, rr.remote_mta.as_deref()),
    }
}

/// The DSN fields of a typed reply.
fn typed_fields(reply: &Reply) -> Fields {
    let diagnostic = match (&reply.remote, reply.enhanced) {
        (Some(_), _) => reply.to_string(),
        (None, Some((c, s, d))) if reply.text.is_empty() => format!("{c}.{s}.{d}"),
        (None, Some((c, s, d))) => format!("{c}.{s}.{d} {}", reply.text),
        (None, None) => reply.text.clone(),
    };
    Fields {
        status: reply.status(),
        diagnostic,
        remote: reply.remote.clone(),
    }
}

/// The DSN fields of a status text without its typed reply (records written before
/// typed replies): the enhanced status code is read from the text.
fn legacy_fields(reply: &str, remote: Option<&str>) -> Fields {
    Fields {
        status: status_of(reply),
        diagnostic: match remote {
            Some(_) => reply.to_owned(),
            None => local_reason(reply).to_owned(),
        },
        remote: remote.map(str::to_owned),
    }
}

/// The enhanced status code in a reply text (`550 5.1.1 ...` gives `5.1.1`), or the
/// class default (`5.0.0`, `4.0.0`, `2.0.0`) when the reply has none. Only for records
/// without a typed reply.
fn status_of(reply: &str) -> String {
    let mut words = reply.split_whitespace();
    let code = words.next().unwrap_or("");
    if let Some(w) = words.next()
        && tern_spool::record::parse_enhanced(w).is_some()
    {
        return w.to_string();
    }
    match code.as_bytes().first() {
        Some(b'2') => "2.0.0".into(),
        Some(b'4') => "4.0.0".into(),
        _ => "5.0.0".into(),
    }
}

/// A local reason without its leading 3-digit reply code (`554 5.4.6 loop` gives
/// `5.4.6 loop`). Only for records without a typed reply.
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
    let fields: Vec<Fields> = pairs.iter().map(|(_, rr, _)| fields_of(rr)).collect();
    let reports: Vec<RecipientReport<'_>> = pairs
        .iter()
        .zip(&fields)
        .map(|((r, _, action), f)| RecipientReport {
            final_recipient: &r.address,
            original_recipient: r.orcpt.as_deref(),
            action: *action,
            status: &f.status,
            remote_mta: f.remote.as_deref().map(host_of),
            diagnostic: Some(&f.diagnostic),
            last_attempt: record.last_attempt_micros.map(to_time),
            will_retry_until: give_up.map(to_time),
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
        quarantine: None,
        id,
        sender: String::new(),
        recipients: vec![Recipient::new(env.sender.clone())],
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
            ..Default::default()
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
    use crate::job::{local_reply, remote_reply};

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

    /// A failed recipient's record as the queue writes it for `reply` (typed, with the
    /// status text), or as records written before typed replies were (`typed` false).
    fn failed(reply: &Reply, typed: bool) -> RecipientRecord {
        RecipientRecord {
            status: RecipientStatus::Failed {
                reply: tern_spool::record::bounded_reply(&reply.to_string()),
            },
            remote_mta: reply.remote.clone(),
            reply: typed.then(|| reply.clone()),
            ..RecipientRecord::default()
        }
    }

    /// The per-recipient part of the DSN built for `rr`, as the sender gets it.
    fn dsn_for(rr: &RecipientRecord) -> String {
        let f = fields_of(rr);
        let reports = [RecipientReport {
            final_recipient: "bob@example.net",
            original_recipient: None,
            action: Action::Failed,
            status: &f.status,
            remote_mta: f.remote.as_deref().map(host_of),
            diagnostic: Some(&f.diagnostic),
            last_attempt: None,
            will_retry_until: None,
        }];
        let at = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let input = DsnInput {
            reporting_mta: "tern.example.org",
            postmaster: "MAILER-DAEMON@tern.example.org",
            original_sender: "alice@example.org",
            envid: None,
            arrival: at,
            queue_id: "4Xk2mQ9ZbC",
            kind: ReportKind::Failure,
            give_up_at: None,
            recipients: &reports,
            original: b"Subject: x\r\n\r\nbody\r\n",
            ret: Return::Headers,
            max_full_size: tern_dsn::DEFAULT_MAX_FULL_SIZE,
            date: at,
            message_id_domain: "tern.example.org",
        };
        String::from_utf8_lossy(&tern_dsn::build(&input).unwrap()).into_owned()
    }

    #[test]
    fn a_remote_5xx_with_an_enhanced_code_is_reported_as_given() {
        let wire = tern_deliver::Reply::new(550, Some((5, 1, 1)), vec!["no such user".into()]);
        let rr = failed(&remote_reply(&wire, "mx.example.net[192.0.2.1]"), true);
        let f = fields_of(&rr);
        assert_eq!(f.status, "5.1.1");
        assert_eq!(f.diagnostic, "550 5.1.1 no such user");
        let dsn = dsn_for(&rr);
        assert!(dsn.contains("Status: 5.1.1\r\n"), "{dsn}");
        assert!(
            dsn.contains("Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n"),
            "{dsn}"
        );
        assert!(dsn.contains("Remote-MTA: dns; mx.example.net\r\n"), "{dsn}");
    }

    #[test]
    fn a_remote_5xx_without_an_enhanced_code_gets_its_class_status() {
        let wire = tern_deliver::Reply::new(554, None, vec!["go away".into()]);
        let rr = failed(&remote_reply(&wire, "mx.example.net[192.0.2.1]"), true);
        let dsn = dsn_for(&rr);
        assert!(dsn.contains("Status: 5.0.0\r\n"), "{dsn}");
        assert!(
            dsn.contains("Diagnostic-Code: smtp; 554 go away\r\n"),
            "{dsn}"
        );
        assert!(dsn.contains("Remote-MTA: dns; mx.example.net\r\n"), "{dsn}");
    }

    #[test]
    fn a_remote_reply_whose_text_looks_like_another_status_keeps_its_own() {
        // The peer's enhanced code disagrees with its class: tern-deliver left it in the
        // text, and the typed reply says what the reply code says.
        let wire = tern_deliver::Reply::new(550, None, vec!["4.1.1 odd".into()]);
        let rr = failed(&remote_reply(&wire, "mx.example.net[192.0.2.1]"), true);
        assert_eq!(fields_of(&rr).status, "5.0.0");
    }

    #[test]
    fn a_local_failure_is_reported_as_terns_own() {
        let rr = failed(
            &local_reply(
                554,
                "5.4.6 too many hops (51 Received headers, limit 50): mail loop?",
            ),
            true,
        );
        let f = fields_of(&rr);
        assert_eq!(f.status, "5.4.6");
        assert_eq!(f.remote, None);
        let dsn = dsn_for(&rr);
        assert!(dsn.contains("Status: 5.4.6\r\n"), "{dsn}");
        assert!(
            dsn.contains("Diagnostic-Code: X-Tern; 5.4.6 too many hops (51 Received headers, limit 50): mail loop?\r\n"),
            "{dsn}"
        );
        assert!(!dsn.contains("Remote-MTA"), "{dsn}");
        // Expiry keeps the transient status of the last deferral, as before.
        let expired = failed(
            &local_reply(
                554,
                "4.4.7 message expired after 5 days in the queue; last error: 451 4.4.1 no answer",
            ),
            true,
        );
        assert_eq!(fields_of(&expired).status, "4.4.7");
    }

    #[test]
    fn a_record_without_typed_replies_gives_the_same_fields() {
        let cases = [
            remote_reply(
                &tern_deliver::Reply::new(550, Some((5, 1, 1)), vec!["no such user".into()]),
                "mx.example.net[192.0.2.1]",
            ),
            remote_reply(
                &tern_deliver::Reply::new(554, None, vec!["go away".into()]),
                "mx.example.net[192.0.2.1]",
            ),
            local_reply(554, "5.4.6 loop"),
            local_reply(550, "5.7.1 not here"),
            local_reply(
                554,
                "5.3.4 message size 9 exceeds the limit of 1 octets at mx",
            )
            .with_remote("mx[192.0.2.9]"),
        ];
        for reply in &cases {
            assert_eq!(
                fields_of(&failed(reply, false)),
                fields_of(&failed(reply, true)),
                "{reply}"
            );
        }
    }

    #[test]
    fn a_typed_reply_older_than_the_status_is_not_used() {
        // An administrator's bounce of a recipient whose typed reply is an older
        // deferral, written by code that sets only the status: the status wins.
        let mut rr = failed(&local_reply(451, "4.4.1 no answer"), true);
        rr.status = RecipientStatus::Failed {
            reply: "554 5.0.0 bounced by the administrator".into(),
        };
        let f = fields_of(&rr);
        assert_eq!(f.status, "5.0.0");
        assert_eq!(f.diagnostic, "5.0.0 bounced by the administrator");
    }
}
