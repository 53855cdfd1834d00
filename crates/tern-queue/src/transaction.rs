//! One SMTP or LMTP transaction on an open session: the job's recipients as RCPTs
//! ([`Addressee`]), the content made fit for the peer (refused when over its SIZE or
//! needing SMTPUTF8 it lacks; converted to 7 bit when it lacks 8BITMIME: `conversion.rs`)
//! and streamed from the spool, and the peer's replies turned into one result per
//! recipient; the content is DKIM-signed when the rules say so (`signing.rs`: the
//! `DKIM-Signature` fields are sent before it), and forwarded mail is ARC-sealed last
//! (`sealing.rs`: the ARC set goes before everything). Used by the SMTP delivery workers (`attempt.rs`) and the LMTP delivery
//! (`local.rs`), which decide what to do when the transaction cannot finish here
//! ([`Sent::NextHost`]).
//!
//! Trust: the peer's replies come through `tern-deliver`'s bounded reply parser; the
//! content is checked as it is read, and a content that fails its check never gets its
//! final dot.

use std::borrow::Cow;

use tern_convert::Source;
use tern_deliver::{
    Body, DsnRet as OutRet, Incompatible, Notify as OutNotify, OutRecipient, RecipientResult,
    SessionError, SmtpSession, Transaction, check_compat,
};
use tern_events::{catalog, fields};
use tern_spool::{BodyType, DsnRet};
use tern_watchdog::Heartbeat;
use tokio::io::AsyncReadExt;

use crate::Context;
use crate::budget;
use crate::conversion::{ContentStream, Conversion, convert};
use crate::job::{Job, JobResult, RcptResult, SuccessNotice, local_reply, remote_reply};
use crate::signing::Signed;

/// One RCPT of a transaction and the job's recipients whose fate its reply decides:
/// one for SMTP; for LMTP, every recipient of the job that has this mailbox.
pub(crate) struct Addressee<'a> {
    /// The forward path sent.
    pub address: Cow<'a, str>,
    /// DSN NOTIFY and ORCPT of the first member.
    pub notify: Option<OutNotify>,
    pub orcpt: Option<&'a str>,
    /// Indices into the envelope's recipients; never empty.
    pub members: Vec<usize>,
}

pub(crate) fn members(plan: &[Addressee<'_>]) -> Vec<usize> {
    plan.iter()
        .flat_map(|a| a.members.iter().copied())
        .collect()
}

/// What one transaction on one session came to.
pub(crate) enum Sent {
    /// Every recipient has its result for this attempt.
    Final(JobResult),
    /// Try the next host (temporary failure before any recipient was taken).
    NextHost(String),
}

pub(crate) fn out_notify(n: &tern_spool::Notify) -> OutNotify {
    OutNotify {
        success: n.success,
        failure: n.failure,
        delay: n.delay,
        never: n.never,
    }
}

/// One transaction on an open session, one RCPT per addressee of `plan`; the results
/// cover every member of the plan.
pub(crate) async fn send_on(
    ctx: &Context,
    job: &Job,
    plan: &[Addressee<'_>],
    s: &mut SmtpSession,
    remote: &str,
    beat: &Heartbeat,
) -> Result<Sent, SessionError> {
    #[cfg(feature = "fault-injection")]
    crate::fault_injection::maybe_panic("transaction", &job.msg.facts.head);
    let env = &job.msg.envelope;
    let body = match env.params.body {
        BodyType::SevenBit => Body::SevenBit,
        BodyType::EightBitMime => Body::EightBitMime,
        BodyType::BinaryMime => Body::BinaryMime,
    };
    let all = members(plan);
    let fail_all = |text: &str| {
        Sent::Final(JobResult::each(
            &all,
            &RcptResult::Failed {
                reply: local_reply(554, text).with_remote(remote),
            },
        ))
    };
    let size = job.msg.facts.len;
    let converted = match check_compat(s.capabilities(), size, body, env.params.smtputf8) {
        Ok(())
            if body == Body::SevenBit
                && !s.capabilities().eightbitmime
                && !job.msg.facts.seven_bit =>
        {
            // 8-bit octets without BODY=8BITMIME: never sent as they are either.
            Some(Source::EightBit)
        }
        Ok(()) => None,
        Err(Incompatible::TooBig { limit }) => {
            return Ok(fail_all(&format!(
                "5.3.4 message size {size} exceeds the limit of {limit} octets at {remote}"
            )));
        }
        Err(Incompatible::NoSmtpUtf8) => {
            return Ok(fail_all(&format!(
                "5.6.7 {remote} does not support SMTPUTF8, which this message needs"
            )));
        }
        Err(Incompatible::NoEightBitMime) => Some(Source::EightBit),
        // This client sends DATA only: binary content always goes converted.
        Err(Incompatible::NoBinaryMime) => Some(Source::Binary),
        Err(other) => {
            return Ok(Sent::Final(JobResult::deferred(
                &all,
                &format!("4.3.0 {remote}: {other}"),
            )));
        }
    };
    let converted = match converted {
        None => None,
        Some(source) => match convert(ctx, job, source, remote).await {
            Conversion::Unneeded => None,
            Conversion::Copy(copy) => {
                if let Some(limit) = s.capabilities().size
                    && copy.len() > limit
                {
                    return Ok(fail_all(&format!(
                        "5.3.4 message size {} after conversion to 7 bit exceeds the limit of {limit} octets at {remote}",
                        copy.len()
                    )));
                }
                Some(copy)
            }
            Conversion::Failed(e) => {
                return Ok(Sent::Final(JobResult::deferred(
                    &all,
                    &format!("4.3.0 reading the message for conversion: {e}"),
                )));
            }
            Conversion::Refused(reason) => {
                ctx.events.emit(
                    &catalog::DELIVERY_DEFERRED_8BIT,
                    fields!(
                        "queue_id" => env.id,
                        "next_hop" => job.hop,
                        "host" => remote,
                        "reason" => reason,
                    ),
                );
                return Ok(Sent::Final(JobResult::deferred(
                    &all,
                    &format!(
                        "4.6.3 {remote} does not offer 8BITMIME and the message cannot be converted to 7 bit: {reason}; the message is kept"
                    ),
                )));
            }
        },
    };
    let body = match &converted {
        Some(_) => Body::SevenBit,
        // 8BITMIME declared, 7-bit content, a peer without 8BITMIME: sent as 7BIT.
        None if body == Body::EightBitMime && !s.capabilities().eightbitmime => Body::SevenBit,
        None => body,
    };
    // DKIM: signed last, over the octets sent (`signing.rs`); the fields go first.
    let (converted, signed) = crate::signing::sign(ctx, job, converted, remote).await;
    let signature = match signed {
        Signed::Unsigned => Vec::new(),
        Signed::Fields(fields) => fields,
        Signed::Defer(text) => return Ok(Sent::Final(JobResult::deferred(&all, &text))),
    };
    // ARC: forwarded mail is sealed after that, over the DKIM fields and the octets
    // sent (`sealing.rs`); the set goes first. Never holds the message up.
    let (converted, seal) =
        match crate::sealing::seal(ctx, job, converted, &signature, remote).await {
            (c, Ok(fields)) => (c, fields),
            (_, Err(true)) => {
                return Ok(Sent::Final(JobResult::deferred(
                    &all,
                    "4.3.0 sealing the message failed inside Tern",
                )));
            }
            (c, Err(false)) => (c, Vec::new()),
        };
    let signature = if seal.is_empty() {
        signature
    } else {
        let mut fields = seal;
        fields.extend_from_slice(&signature);
        fields
    };
    // The content is streamed: the stored file (checked as it is read), or the
    // converted copy from memory or its spill file.
    let mut stream = match converted {
        Some(copy) => copy.into_stream(),
        None => match crate::content::open_async(&ctx.spool, job.msg.state, env.id).await {
            Ok(r) => ContentStream::Stored(r),
            Err(e) => {
                return Ok(Sent::Final(JobResult::deferred(
                    &all,
                    &format!("4.3.0 reading the queued message: {e}"),
                )));
            }
        },
    };
    let content_len = stream.len(size).saturating_add(signature.len() as u64);
    let recipients: Vec<OutRecipient<'_>> = plan
        .iter()
        .map(|a| OutRecipient {
            address: &a.address,
            notify: a.notify,
            orcpt: a.orcpt,
        })
        .collect();
    let tx = Transaction {
        sender: &env.sender,
        recipients: &recipients,
        size: content_len,
        body,
        smtputf8: env.params.smtputf8,
        dsn_ret: env.params.dsn_ret.map(|r| match r {
            DsnRet::Full => OutRet::Full,
            DsnRet::Hdrs => OutRet::Hdrs,
        }),
        dsn_envid: env.params.dsn_envid.as_deref(),
    };
    // Any session error, including a connection lost during the data, moves on to the
    // next host: the recipients have no result yet, and a retry would send the message
    // again anyway (if the peer had committed it before the connection broke, that is
    // the duplicate window; Postfix behaves the same way).
    #[cfg(feature = "fault-injection")]
    crate::fault_injection::maybe_freeze(&job.msg.facts.head).await;
    let budget = budget::send(ctx, job, usize::try_from(content_len).unwrap_or(usize::MAX));
    let mut reader = std::io::Cursor::new(signature).chain(stream.reader());
    let outcome = match beat.bounded(budget, s.send(&tx, &mut reader)).await {
        // The stored content failed its check (or could not be read) while it was sent:
        // the transaction stopped before the final dot, so nothing was delivered. Another
        // host would read the same file: every recipient waits, and the message task
        // quarantines the file at its next load. The session is unusable (closed).
        Err(SessionError::Content(e)) => {
            return Ok(Sent::Final(JobResult::deferred(
                &all,
                &format!(
                    "4.3.0 the queued message could not be read while it was sent to {remote} ({e}); nothing was delivered"
                ),
            )));
        }
        other => other?,
    };
    if outcome.mail.is_transient() {
        return Ok(Sent::NextHost(format!("{remote} said: {}", outcome.mail)));
    }
    let notice = if s.capabilities().dsn {
        SuccessNotice::NextHop
    } else {
        SuccessNotice::Relayed
    };
    let tls = s.tls().map(str::to_string);
    let mut results = Vec::with_capacity(all.len());
    let mut delivered = 0usize;
    for (a, r) in plan.iter().zip(outcome.recipients.iter()) {
        let res = match r.result() {
            RecipientResult::Delivered(reply) => {
                delivered += a.members.len();
                RcptResult::Delivered {
                    reply: remote_reply(&reply, remote),
                    notice,
                }
            }
            RecipientResult::Transient(reply) => RcptResult::Deferred {
                reply: remote_reply(&reply, remote),
            },
            RecipientResult::Permanent(reply) => RcptResult::Failed {
                reply: remote_reply(&reply, remote),
            },
        };
        results.extend(a.members.iter().map(|i| (*i, res.clone())));
    }
    if delivered > 0 {
        let reply = outcome
            .data
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        ctx.events.emit(
            &catalog::DELIVERY_DELIVERED,
            fields!(
                "queue_id" => env.id,
                "next_hop" => job.hop,
                "host" => remote,
                "recipients" => delivered,
                "tls" => tls.as_deref().unwrap_or("none"),
                "reply" => reply,
            ),
        );
    }
    Ok(Sent::Final(JobResult { outcomes: results }))
}
