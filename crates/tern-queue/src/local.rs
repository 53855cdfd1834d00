//! Delivery of jobs for the local transports: `maildir` (files in Maildirs on this
//! machine) and `lmtp` (one LMTP transaction with a mailbox server such as Dovecot).
//!
//! Mailboxes: every recipient of such a job is a final address in a local domain (the
//! SMTP server expanded aliases at RCPT time). Its mailbox comes from the local
//! directory of the message task's moment ([`Job::local`]). A recipient that has no
//! mailbox any more (the maps were reloaded since the message was accepted) fails with
//! `550 5.1.1` (event 6006). Recipients of one job that share a mailbox (two addresses
//! mapped to one mailbox, or one address reached twice) get one copy: one file for a
//! Maildir, one RCPT for LMTP; they all share its result.
//!
//! Maildir results: written and synced -> delivered; over quota -> `452 4.2.2`
//! deferred or `552 5.2.2` failed (`[local] quota_exceeded`, event 6005); an unsafe
//! mailbox path (tern-local's `MaildirError::Unsafe`) -> deferred `451 4.3.0`, event
//! 6008; a Maildir that does not exist, once this job created
//! `local.max_new_mailboxes_per_message` of them -> deferred `452 4.5.3`, event 6009;
//! any I/O error -> deferred (`451 4.3.0`, `452 4.3.1` disk full, `452 4.2.2` filesystem
//! quota; event 6004). The file I/O runs on a blocking thread, its duration declared to
//! the watchdog ([`budget::local`]).
//!
//! LMTP results: one reply per mailbox after the data (RFC 2033), so one unknown user
//! fails alone. A server that cannot be reached or does not greet defers the job and
//! marks the next hop down, like an SMTP destination; a 4xx to MAIL defers it. The
//! session is kept for the next job to the same next hop, or in the connection cache
//! (keyed by the server's endpoint) when none waits.
//!
//! Trust: mailboxes come from the operator's maps; the message content is written as
//! stored and never interpreted.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tern_deliver::{Endpoint, SmtpSession};
use tern_events::{catalog, fields};
use tern_local::maildir::{Options, Streamed};
use tern_local::{Maildir, MaildirError, QuotaAction};
use tern_route::LmtpServer;
use tern_route::dns::plan as dns;
use tern_watchdog::Heartbeat;

use crate::Context;
use crate::budget;
use crate::channel::{QueueHandle, take_cached};
use crate::connection::{Conn, EndpointKey};
use crate::job::{Job, JobResult, RcptResult, SuccessNotice, local_reply};
use crate::transaction::{Addressee, Sent, out_notify, send_on};

/// The failure of a recipient without a mailbox at delivery time.
fn no_mailbox(ctx: &Context, job: &Job, address: &str) -> RcptResult {
    ctx.events.emit(
        &catalog::LOCAL_MAILBOX_MISSING,
        fields!("queue_id" => job.msg.envelope.id, "recipient" => address, "next_hop" => job.hop),
    );
    RcptResult::Failed {
        reply: local_reply(
            550,
            &format!("5.1.1 <{address}>: no such mailbox here any more"),
        ),
    }
}

/// Delivers a `maildir` job.
pub(crate) async fn deliver_maildir(
    ctx: &Context,
    job: &Job,
    root: &Path,
    beat: &Heartbeat,
) -> JobResult {
    let env = &job.msg.envelope;
    let mut outcomes = Vec::with_capacity(job.rcpts.len());
    // Maildir path -> (quota, members), in the order first reached.
    let mut groups: Vec<(PathBuf, Option<u64>, Vec<usize>)> = Vec::new();
    for &i in &job.rcpts {
        let Some(r) = env.recipients.get(i) else {
            continue;
        };
        match job.local.mailbox(&r.address) {
            None => outcomes.push((i, no_mailbox(ctx, job, &r.address))),
            Some(m) => {
                let path = m.maildir_path(root);
                match groups.iter_mut().find(|(p, _, _)| *p == path) {
                    Some((_, _, members)) => members.push(i),
                    None => groups.push((path, m.quota, vec![i])),
                }
            }
        }
    }
    let action = job.local.quota_exceeded();
    // Maildirs this job created, against `local.max_new_mailboxes_per_message`.
    let max_new = job.local.max_new_mailboxes_per_message();
    let mut created = 0usize;
    for (path, quota, members) in groups {
        let delivered_to = members
            .first()
            .and_then(|i| env.recipients.get(*i))
            .map(|r| r.address.clone())
            .unwrap_or_default();
        let msg = Arc::clone(&job.msg);
        let dir = path.clone();
        let to = delivered_to.clone();
        let local = Arc::clone(&job.local);
        let may_create = created < max_new;
        let spool = ctx.spool.clone();
        let write = crate::last_gasp::spawn_blocking(move || {
            let m = Streamed {
                return_path: &msg.envelope.sender,
                delivered_to: &to,
                shape: msg.facts.shape,
            };
            let options = Options {
                quota,
                may_create,
                guard: local.guard(),
            };
            // Streamed from the spool, checked as it is read: a content that fails its
            // check never gets a name in new/.
            let mut content =
                spool
                    .open_body(msg.state, msg.envelope.id)
                    .map_err(|e| MaildirError::Io {
                        step: "open the queued message",
                        path: spool.path_of(msg.state, msg.envelope.id),
                        source: std::io::Error::other(e.to_string()),
                    })?;
            Maildir::new(dir).deliver_from(&m, &mut content, &options)
        });
        let result = match beat.bounded(budget::local(ctx), write).await {
            Ok(Ok(done)) => {
                let file = done.file;
                created += usize::from(done.created);
                ctx.events.emit(
                    &catalog::LOCAL_MAILDIR_DELIVERED,
                    fields!(
                        "queue_id" => env.id,
                        "recipient" => delivered_to,
                        "recipients" => members.len(),
                        "maildir" => path.display(),
                        "file" => file,
                    ),
                );
                RcptResult::Delivered {
                    reply: local_reply(250, "2.0.0 Ok: delivered to mailbox")
                        .with_remote(&ctx.hostname),
                    // Tern is the last MTA: a requested success notice comes from it.
                    notice: SuccessNotice::Delivered,
                }
            }
            Ok(Err(e @ MaildirError::OverQuota { .. })) => {
                ctx.events.emit(
                    &catalog::LOCAL_QUOTA_EXCEEDED,
                    fields!(
                        "queue_id" => env.id,
                        "recipient" => delivered_to,
                        "maildir" => path.display(),
                        "action" => if action == QuotaAction::Bounce { "bounce" } else { "defer" },
                        "error" => e,
                    ),
                );
                let text = format!("<{delivered_to}>: mailbox is full");
                match action {
                    QuotaAction::Defer => RcptResult::Deferred {
                        reply: local_reply(452, &format!("4.2.2 {text}")),
                    },
                    QuotaAction::Bounce => RcptResult::Failed {
                        reply: local_reply(552, &format!("5.2.2 {text}")),
                    },
                }
            }
            Ok(Err(e @ MaildirError::NewMailboxLimit { .. })) => {
                ctx.events.emit(
                    &catalog::LOCAL_MAILBOX_CREATION_DEFERRED,
                    fields!("queue_id" => env.id, "recipient" => delivered_to, "maildir" => path.display(), "limit" => max_new, "error" => e),
                );
                let (code, status) = e.temporary_status();
                RcptResult::Deferred {
                    reply: local_reply(
                        code,
                        &format!(
                            "{status} <{delivered_to}>: too many new mailboxes for one message, the mailbox is created at a later attempt"
                        ),
                    ),
                }
            }
            Ok(Err(MaildirError::Unsafe {
                maildir,
                component,
                reason,
            })) => {
                ctx.events.emit(
                    &catalog::LOCAL_MAILDIR_UNSAFE,
                    fields!("queue_id" => env.id, "recipient" => delivered_to, "maildir" => maildir.display(), "component" => component.display(), "reason" => reason),
                );
                RcptResult::Deferred {
                    reply: local_reply(
                        451,
                        &format!(
                            "4.3.0 <{delivered_to}>: the mailbox path is unsafe, delivery refused for now"
                        ),
                    ),
                }
            }
            Ok(Err(e)) => {
                ctx.events.emit(
                    &catalog::LOCAL_MAILDIR_FAILED,
                    fields!("queue_id" => env.id, "recipient" => delivered_to, "maildir" => path.display(), "error" => e),
                );
                let (code, status) = e.temporary_status();
                RcptResult::Deferred {
                    reply: local_reply(
                        code,
                        &format!("{status} <{delivered_to}>: cannot write the mailbox now"),
                    ),
                }
            }
            Err(e) => RcptResult::Deferred {
                reply: local_reply(
                    451,
                    &format!("4.3.0 internal error writing the mailbox: {e}"),
                ),
            },
        };
        outcomes.extend(members.iter().map(|i| (*i, result.clone())));
    }
    JobResult { outcomes }
}

/// The RCPTs of an LMTP job (one per mailbox user) and the recipients failed at once.
fn lmtp_plan<'a>(ctx: &Context, job: &'a Job) -> (Vec<Addressee<'a>>, Vec<(usize, RcptResult)>) {
    let env = &job.msg.envelope;
    let mut plan: Vec<Addressee<'a>> = Vec::new();
    let mut by_user: HashMap<String, usize> = HashMap::new();
    let mut failed = Vec::new();
    for &i in &job.rcpts {
        let Some(r) = env.recipients.get(i) else {
            continue;
        };
        let Some(mailbox) = job.local.mailbox(&r.address) else {
            failed.push((i, no_mailbox(ctx, job, &r.address)));
            continue;
        };
        let Some(user) = mailbox.lmtp_user() else {
            failed.push((
                i,
                RcptResult::Failed {
                    reply: local_reply(
                        554,
                        &format!(
                            "5.3.5 <{}>: the mailbox is a path, but its route delivers by LMTP",
                            r.address
                        ),
                    ),
                },
            ));
            continue;
        };
        match by_user.get(user).and_then(|k| plan.get_mut(*k)) {
            Some(a) => a.members.push(i),
            None => {
                by_user.insert(user.to_owned(), plan.len());
                plan.push(Addressee {
                    address: Cow::Owned(user.to_owned()),
                    notify: r.notify.as_ref().map(out_notify),
                    orcpt: r.orcpt.as_deref(),
                    members: vec![i],
                });
            }
        }
    }
    (plan, failed)
}

/// The address to connect to.
async fn endpoint(ctx: &Context, server: &LmtpServer) -> Result<Endpoint, String> {
    match server {
        LmtpServer::Unix(path) => Ok(Endpoint::Unix(path.clone())),
        LmtpServer::Tcp(host) => {
            if let Some(ip) = host.ip() {
                return Ok(Endpoint::Tcp(SocketAddr::new(ip, host.port)));
            }
            let found = dns::resolve_relay_hosts(&ctx.resolver, std::slice::from_ref(host), 1)
                .await
                .map_err(|e| format!("4.4.3 LMTP server lookup failed: {}", e.describe()))?;
            found
                .into_iter()
                .flat_map(|h| h.addrs)
                .next()
                .map(|ip| Endpoint::Tcp(SocketAddr::new(ip, host.port)))
                .ok_or_else(|| format!("4.4.3 LMTP server {host} has no address"))
        }
    }
}

/// Delivers an `lmtp` job, on `conn` when the worker holds one (another job of this next
/// hop, handed over with it), else on a connection from the cache or a new one. Returns
/// the result and, when the server could not be reached or greeted, why the next hop is
/// down. `conn` is left with the connection, when it may be reused.
pub(crate) async fn deliver_lmtp(
    ctx: &Context,
    handle: &QueueHandle,
    job: &Job,
    server: &LmtpServer,
    conn: &mut Option<Conn>,
    beat: &Heartbeat,
) -> (JobResult, Option<String>) {
    let (plan, mut outcomes) = lmtp_plan(ctx, job);
    let all: Vec<usize> = plan
        .iter()
        .flat_map(|a| a.members.iter().copied())
        .collect();
    if plan.is_empty() {
        return (JobResult { outcomes }, None);
    }
    let remote = format!("lmtp[{server}]");
    let mut finish = |r: JobResult| {
        outcomes.extend(r.outcomes);
        JobResult {
            outcomes: std::mem::take(&mut outcomes),
        }
    };
    if let Some(mut c) = conn.take() {
        if let Ok(Sent::Final(r)) = send_on(ctx, job, &plan, &mut c.session, &remote, beat).await {
            *conn = Some(c);
            return (finish(r), None);
        }
        // The kept connection went bad between messages: start afresh.
        beat.bounded(budget::quit(ctx), c.session.quit()).await;
    }
    let target = match beat
        .bounded(budget::lookup(ctx, job), endpoint(ctx, server))
        .await
    {
        Ok(t) => t,
        Err(why) => return (finish(JobResult::deferred(&all, &why)), None),
    };
    let key = EndpointKey::Lmtp(target.clone());
    if let Some(mut c) = take_cached(handle, &key).await {
        if let Ok(Sent::Final(r)) = send_on(ctx, job, &plan, &mut c.session, &remote, beat).await {
            *conn = Some(c);
            return (finish(r), None);
        }
        // Died while idle: connect afresh.
        beat.bounded(budget::quit(ctx), c.session.quit()).await;
    }
    let name = server.to_string();
    let connect = SmtpSession::connect_lmtp(&ctx.client, &target, &name);
    let s = match beat.bounded(budget::connect(ctx), connect).await {
        Ok(s) => s,
        Err(e) => {
            let why = format!("4.4.1 {remote}: {e}");
            return (finish(JobResult::deferred(&all, &why)), Some(why));
        }
    };
    let mut c = Conn::new(key, s, &name);
    match send_on(ctx, job, &plan, &mut c.session, &remote, beat).await {
        Ok(Sent::Final(r)) => {
            *conn = Some(c);
            (finish(r), None)
        }
        Ok(Sent::NextHost(why)) => {
            beat.bounded(budget::quit(ctx), c.session.quit()).await;
            (
                finish(JobResult::deferred(&all, &format!("4.4.2 {why}"))),
                None,
            )
        }
        Err(e) => (
            finish(JobResult::deferred(&all, &format!("4.4.2 {remote}: {e}"))),
            None,
        ),
    }
}
