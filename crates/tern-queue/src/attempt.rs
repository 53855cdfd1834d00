//! Delivery workers: one connection's worth of work for one next hop.
//!
//! A worker takes a job (one message's recipients for one next hop), finds the hosts (MX
//! plan or the route's relay hosts), walks them in order within the address and session
//! limits, and sends the transaction on the first host that greets. After the job it asks
//! the scheduler for another job for the same next hop and, while there is one, reuses its
//! connection. When there is none, it hands its connection to the scheduler's connection
//! cache (`conncache.rs`) and ends at once, so its slot is free for any destination.
//!
//! Connection reuse across next hops: before connecting to an address, the walk asks the
//! cache for an idle connection to the same [`EndpointKey`] (address and port, TLS
//! policy, and under `verify` the name the certificate was checked against), as
//! Postfix's client does with its cache. So every domain whose MX leads to the same host
//! and address shares connections, whatever its next hop. A reused connection starts its
//! transaction with RSET (`tern-deliver`); if it died while idle, it fails there, before
//! any content, and the walk connects to that address afresh. A connection is reused
//! while usable, for at most `delivery.max_messages_per_connection` transactions and
//! `delivery.max_connection_age_secs` after it was opened.
//!
//! How each failure moves the walk on (RFC 5321 §5.1, as Postfix does):
//! - connection refused or unreachable, a timeout before the greeting, a 4xx/5xx greeting,
//!   EHLO refused, a TLS failure: the next address;
//! - a 4xx reply to MAIL, or the connection lost before any recipient was accepted: the
//!   next address (another host may take it);
//! - a 5xx reply to MAIL: every recipient fails;
//! - replies to RCPT and to the data: final for that recipient on this attempt (4xx
//!   deferred, 5xx failed), no other host is tried;
//! - a greeting with this process's own banner mark (the host is this server, reached
//!   where the address check of the MX plan cannot see it: NAT, a port forward): QUIT,
//!   event 4035, and no later address (they are of the same preference or worse, RFC
//!   5321 §5.1); the recipients are deferred (4.4.6), never relayed to ourselves. The
//!   check runs in `SmtpSession::connect`, on every connection opened; a connection
//!   from the cache or handed over between jobs passed it when it was opened (a
//!   [`Conn`] is only ever made from a session `connect` returned);
//! - the connection lost or timing out during the data: the next address too. The
//!   recipients have no result yet; if the peer had in fact committed the message before
//!   the connection broke, it is delivered twice (the duplicate window; a deferral would
//!   resend it just the same, later).
//!   When the list is exhausted, every recipient without a result is deferred; nothing is
//!   dropped.
//!
//! If no address could even be greeted, the worker reports the destination down, and the
//! scheduler stops trying it until its retry time.
//!
//! Content the peer cannot take as stored: a message over the peer's SIZE, or needing
//! SMTPUTF8 it lacks, fails. 8-bit content for a peer without 8BITMIME (and BINARYMIME
//! content for any peer: this client sends DATA only) is converted to 7 bit by
//! `tern-convert` on the blocking pool and the copy is sent (event 6041, SIZE checked
//! again), or deferred with 4.6.3 when it cannot be converted (event 4007). The stored
//! message is never changed; each attempt converts afresh.
//!
//! Invariants: the worker's slot (total and per-destination concurrency) is returned by
//! [`Slot`]'s `Drop`, so a panic anywhere here returns it. A job's result is sent once;
//! if the worker dies first, the message task sees the channel closed and defers the
//! job's recipients.
//!
//! Local transports: a job for a `maildir` next hop is written into its mailboxes and a
//! job for an `lmtp` next hop is one LMTP transaction; both are in [`crate::local`].
//! They run in the same workers, under the same limits and slot guard.
//!
//! Watchdog: each worker has a heartbeat `delivery#<n>@<next hop>`, busy while it holds
//! a job, with one item of progress per step (host lookup, connection set-up,
//! transaction, QUIT, job) and that step's budget in force while it runs (`budget`). Its
//! restart hook aborts the worker's task: the same path as a panic, so the invariants
//! above return its slot and defer its job. A worker blocked inside a synchronous call
//! cannot be aborted (tokio cancels at an `.await`); its stall is still reported.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tern_deliver::{SessionError, SmtpSession};
use tern_events::{catalog, fields};
use tern_metrics::Attempt;
use tern_route::dns::plan::{self as dns, MxHost};
use tern_route::{NextHop, Transport};
use tern_watchdog::{Heartbeat, Kind};
use tokio::sync::{oneshot, watch};

use crate::Context;
use crate::budget;
use crate::channel::{Cmd, Handoff, QueueHandle, Slot, take_cached};
use crate::connection::{Conn, EndpointKey};
use crate::job::{Job, JobResult, RcptResult, local_reply};
use crate::security::{self, DaneState, HostTls, Refusal, StsState};
use crate::transaction::{Addressee, Sent, out_notify, send_on};
use tern_reports::tlsrpt::{TlsResultType, TlsSessionObservation, TlsSessionResult};
use tern_route::TlsPolicy as RouteTls;

/// Counts one delivery attempt that gave every recipient of the job a result
/// (`tern_delivery_attempts_total`), and passes the result on.
fn counted(r: JobResult) -> JobResult {
    let (mut delivered, mut deferred, mut failed) = (0, 0, 0);
    for (_, o) in &r.outcomes {
        match o {
            RcptResult::Delivered { .. } => delivered += 1,
            RcptResult::Deferred { .. } => deferred += 1,
            RcptResult::Failed { .. } => failed += 1,
        }
    }
    tern_metrics::get().attempt(Attempt::of_counts(delivered, deferred, failed));
    r
}

/// Every recipient of the job as its own RCPT (SMTP).
fn addressees(job: &Job) -> Vec<Addressee<'_>> {
    job.rcpts
        .iter()
        .filter_map(|i| job.msg.envelope.recipients.get(*i).map(|r| (*i, r)))
        .map(|(i, r)| Addressee {
            address: Cow::Borrowed(r.address.as_str()),
            notify: r.notify.as_ref().map(out_notify),
            orcpt: r.orcpt.as_deref(),
            members: vec![i],
        })
        .collect()
}

/// Starts worker number `n` for `hop` with its first job. The scheduler has counted the
/// slot.
pub(crate) fn spawn_worker(
    ctx: Arc<Context>,
    handle: QueueHandle,
    hop: NextHop,
    first: Job,
    stop: watch::Receiver<bool>,
    n: u64,
) {
    let name = format!("delivery#{n}@{hop}");
    let beat = match &ctx.watchdog {
        Some(w) => w.register(name, Kind::Delivery),
        None => Heartbeat::detached(name, Kind::Delivery),
    };
    beat.busy(true);
    let slot = Slot::new(handle.clone(), hop.clone());
    let task = tokio::spawn(worker(ctx, handle, slot, first, stop, beat.clone()));
    let abort = task.abort_handle();
    beat.on_restart(move || abort.abort());
}

async fn worker(
    ctx: Arc<Context>,
    handle: QueueHandle,
    mut slot: Slot,
    first: Job,
    stop: watch::Receiver<bool>,
    beat: Heartbeat,
) {
    let mut job = first;
    let mut conn: Option<Conn> = None;
    loop {
        #[cfg(feature = "fault-injection")]
        crate::fault_injection::maybe_panic("connect", &job.msg.facts.head);
        beat.busy(true);
        // A fatal signal while the job is worked on names its message (`last_gasp`).
        let id = job.msg.envelope.id;
        let delivery = deliver_job(&ctx, &handle, &job, &mut conn, &beat);
        let (result, down) = crate::last_gasp::processing(id, delivery).await;
        job.answer(result);
        beat.progress();
        if down.is_some() {
            slot.set_down(down);
            break;
        }
        if *stop.borrow() {
            break;
        }
        if let Some(c) = conn.take_if(|c| !c.reusable(&ctx, Instant::now())) {
            beat.bounded(budget::quit(&ctx), c.session.quit()).await;
        }
        // The scheduler answers at once: another job for this next hop, or nothing
        // (then the connection stays in its cache and the slot is free at once: the
        // scheduler releases it as it answers).
        let (tx, rx) = oneshot::channel();
        handle.send(Cmd::NextJob {
            slot,
            conn: conn.take(),
            reply: tx,
        });
        beat.busy(false);
        match rx.await {
            Ok(Handoff::Job(next, back, kept)) => {
                job = next;
                conn = back;
                slot = kept;
            }
            Ok(Handoff::Done { close, slot }) => {
                if let Some(c) = close {
                    beat.busy(true);
                    beat.bounded(budget::quit(&ctx), c.session.quit()).await;
                }
                drop(slot);
                return;
            }
            // The scheduler is gone; the slot went with the command.
            Err(_) => return,
        }
    }
    if let Some(c) = conn.take() {
        beat.busy(true);
        beat.bounded(budget::quit(&ctx), c.session.quit()).await;
    }
    drop(slot);
}

/// One host address to try, and the TLS policy it is tried under (or why it must not
/// be: `security.rs`).
struct Target {
    name: String,
    addr: SocketAddr,
    tls: Arc<Result<HostTls, Refusal>>,
}

fn remote_of(t: &Target) -> String {
    format!("{}[{}]", t.name, t.addr.ip())
}

/// The hosts for a job, or the result that ends it (no route).
async fn targets(ctx: &Context, job: &Job) -> Result<Vec<Target>, RcptResult> {
    let max = ctx.delivery.max_addresses;
    let domain = job.domain.as_str();
    let flatten = |hosts: Vec<(MxHost, DaneState)>,
                   port: u16,
                   route: RouteTls,
                   sts: &StsState|
     -> Vec<Target> {
        hosts
            .into_iter()
            .flat_map(|(h, dane)| {
                let name = h.name;
                let tls = Arc::new(security::decide(route, domain, &name, &dane, sts));
                h.addrs.into_iter().map(move |ip| Target {
                    name: name.clone(),
                    addr: SocketAddr::new(ip, port),
                    tls: tls.clone(),
                })
            })
            .take(max)
            .collect()
    };
    match &*job.transport {
        Transport::Mx { port, tls, .. } => {
            let me = ctx
                .own_addrs
                .identity(vec![ctx.hostname.to_ascii_lowercase()], *port);
            // MTA-STS is asked for on top of `may`, `dane` and `dane-only` only
            // (`security.rs`); its lookup runs alongside the MX plan.
            let wants_sts = matches!(tls, RouteTls::May | RouteTls::Dane | RouteTls::DaneOnly);
            let sts = async {
                if wants_sts {
                    crate::mtasts::domain_state(ctx, domain).await
                } else {
                    StsState::None
                }
            };
            let (plan, sts) = tokio::join!(
                crate::dane::mx_plan(ctx, domain, &me, max, *tls, *port),
                sts
            );
            match plan {
                Ok(hosts) => Ok(flatten(hosts, *port, *tls, &sts)),
                Err(e) => {
                    let text = format!("{} {}", e.enhanced_status(), e.describe());
                    if e == dns::PlanError::MxLoop {
                        loop_self(ctx, job, &job.domain, "address", &text);
                    }
                    Err(if e.is_permanent() {
                        RcptResult::Failed {
                            reply: local_reply(550, &text),
                        }
                    } else {
                        RcptResult::Deferred {
                            reply: local_reply(451, &text),
                        }
                    })
                }
            }
        }
        Transport::Smtp { hosts, tls, .. } => {
            match dns::resolve_relay_hosts(&ctx.resolver, hosts, max).await {
                Ok(list) => Ok(list
                    .into_iter()
                    .flat_map(|h| {
                        let name = h.host.host;
                        let port = h.host.port;
                        // A relay host is not the domain's MX: MTA-STS does not apply.
                        let dane = if tls.wants_dane() {
                            DaneState::NotUsable("DANE applies to MX routes only".into())
                        } else {
                            DaneState::NotAsked
                        };
                        let tls = Arc::new(security::decide(
                            *tls,
                            domain,
                            &name,
                            &dane,
                            &StsState::None,
                        ));
                        h.addrs.into_iter().map(move |ip: IpAddr| Target {
                            name: name.clone(),
                            addr: SocketAddr::new(ip, port),
                            tls: tls.clone(),
                        })
                    })
                    .take(max)
                    .collect()),
                Err(e) => Err(RcptResult::Deferred {
                    reply: local_reply(
                        451,
                        &format!("4.4.3 relay host lookup failed: {}", e.describe()),
                    ),
                }),
            }
        }
        _ => Err(RcptResult::Deferred {
            reply: local_reply(451, "4.3.5 transport cannot deliver over SMTP"),
        }),
    }
}

/// The SMTP client's policy name for a reused connection's check: what the route alone
/// asks (`dane` routes reuse only what their own walk opened: the key carries the name).
fn tls_policy(t: &Transport) -> tern_deliver::TlsPolicy {
    let p = match t {
        Transport::Mx { tls, .. } | Transport::Smtp { tls, .. } => *tls,
        _ => RouteTls::May,
    };
    match p {
        RouteTls::None => tern_deliver::TlsPolicy::None,
        RouteTls::May | RouteTls::Dane | RouteTls::DaneOnly => tern_deliver::TlsPolicy::May,
        RouteTls::Encrypt => tern_deliver::TlsPolicy::Encrypt,
        RouteTls::Verify => tern_deliver::TlsPolicy::Verify,
    }
}

/// Hands one session's TLS outcome to the reports (RFC 8460), when its policy is
/// reported.
fn report_tls(
    ctx: &Context,
    policy: Option<&tern_reports::tlsrpt::TlsPolicyInForce>,
    result: TlsSessionResult,
) {
    if let Some(p) = policy {
        ctx.tls_reports.record(TlsSessionObservation {
            policy: p.clone(),
            result,
            at: tern_watchdog::clock::unix_ms() / 1000,
        });
    }
}

fn tls_failure(
    host: &str,
    addr: SocketAddr,
    result_type: TlsResultType,
    why: &str,
) -> TlsSessionResult {
    TlsSessionResult::Failure {
        result_type,
        receiving_mx_hostname: Some(host.to_string()),
        receiving_ip: Some(addr.ip()),
        sending_mta_ip: None,
        failure_reason_code: Some(why.chars().take(200).collect()),
    }
}

/// Delivers one job, on `conn` when the worker holds one (another job of its next hop,
/// handed over with it), else on a cached or new connection. Returns the result and,
/// when no host could be greeted, the reason the destination is down. `conn` is left
/// with the connection the job ended on, when it may be reused.
async fn deliver_job(
    ctx: &Context,
    handle: &QueueHandle,
    job: &Job,
    conn: &mut Option<Conn>,
    beat: &Heartbeat,
) -> (JobResult, Option<String>) {
    match &*job.transport {
        Transport::Maildir { root } => {
            return (
                counted(crate::local::deliver_maildir(ctx, job, root, beat).await),
                None,
            );
        }
        Transport::Lmtp { server } => {
            let (r, down) = crate::local::deliver_lmtp(ctx, handle, job, server, conn, beat).await;
            return (counted(r), down);
        }
        Transport::Drop { dir } => {
            return (counted(crate::dropdir::deliver(ctx, job, dir).await), None);
        }
        _ => {}
    }
    let plan = addressees(job);
    let policy = tls_policy(&job.transport);
    if let Some(mut c) = conn.take() {
        // Handed over for the same next hop; a reload may have changed its TLS policy.
        // A connection authenticated under `verify` or `dane` (the policy the walk
        // decided for its host) serves any job of the same next hop.
        if matches!(&c.key, EndpointKey::Smtp { tls, .. }
            if *tls == policy || matches!(tls, tern_deliver::TlsPolicy::Verify | tern_deliver::TlsPolicy::Dane))
        {
            let remote = c.remote();
            if let Err(w) = message_turn(ctx, job, &c.host, beat).await {
                // Not a failure of the connection: it stays open for later jobs.
                *conn = Some(c);
                return (counted(JobResult::deferred(&job.rcpts, &w.reason)), None);
            }
            match send_on(ctx, job, &plan, &mut c.session, &remote, beat).await {
                Ok(Sent::Final(r)) => {
                    *conn = Some(c);
                    return (counted(r), None);
                }
                Ok(Sent::NextHost(_)) | Err(_) => {
                    // The reused connection went bad between messages: start afresh.
                    tern_metrics::get().attempt(Attempt::SessionError);
                }
            }
        }
        beat.bounded(budget::quit(ctx), c.session.quit()).await;
    }
    let targets = match beat
        .bounded(budget::lookup(ctx, job), targets(ctx, job))
        .await
    {
        Ok(t) => t,
        Err(r) => {
            tern_metrics::get().attempt(Attempt::LookupError);
            return (JobResult::all(job, &r), None);
        }
    };
    ctx.tls_book.note(
        &job.hop.to_string(),
        tern_watchdog::clock::unix_ms(),
        targets.iter().map(|t| (t.name.as_str(), &*t.tls)),
    );
    let plan = &plan;
    let end = walk(
        &targets,
        ctx.delivery.max_sessions,
        &job.rcpts,
        |t: &Target| {
            let (addr, name, remote) = (t.addr, t.name.clone(), remote_of(t));
            let decided = t.tls.clone();
            async move {
                let metrics = tern_metrics::get();
                let host_tls = match &*decided {
                    Ok(h) => h,
                    Err(refusal) => {
                        if let Some((result_type, policy)) = &refusal.report {
                            report_tls(ctx, Some(policy), tls_failure(&name, addr, *result_type, &refusal.reason));
                        }
                        tls_refused(ctx, job, &remote, &refusal.reason);
                        return HostOutcome::Unreachable(format!("{} ({remote})", refusal.reason));
                    }
                };
                // A destination limit's message rate, before any connection is used.
                if let Err(w) = message_turn(ctx, job, &name, beat).await {
                    return HostOutcome::Limited(w.reason);
                }
                let key = EndpointKey::for_request(addr, &host_tls.request, &name);
                let cached = match take_cached(handle, &key).await {
                    Some(c) if c.reusable(ctx, Instant::now()) => Some(c),
                    // Past its age limit while it waited: closed, not used.
                    Some(c) => {
                        beat.bounded(budget::quit(ctx), c.session.quit()).await;
                        None
                    }
                    None => None,
                };
                if let Some(mut c) = cached {
                    c.host.clone_from(&name);
                    let event = &catalog::DELIVERY_CONNECTION_REUSED;
                    // A debug event on the hot path: its fields are only built when logged.
                    if event.severity >= ctx.events.min_severity() {
                        ctx.events.emit(
                            event,
                            fields!(
                                "queue_id" => job.msg.envelope.id,
                                "next_hop" => job.hop,
                                "host" => remote,
                                "endpoint" => key,
                                "transactions" => c.session.transactions(),
                                "age_ms" => u64::try_from(c.opened.elapsed().as_millis()).unwrap_or(u64::MAX),
                            ),
                        );
                    }
                    match send_on(ctx, job, plan, &mut c.session, &remote, beat).await {
                        Ok(Sent::Final(r)) => {
                            tls_policy_used(ctx, job, &remote, host_tls);
                            return HostOutcome::Final(counted(r), c);
                        }
                        Ok(Sent::NextHost(why)) => {
                            metrics.attempt(Attempt::SessionError);
                            beat.bounded(budget::quit(ctx), c.session.quit()).await;
                            return HostOutcome::Moved(why);
                        }
                        // Died while idle (it fails at the RSET, before any content):
                        // connect to this address afresh.
                        Err(_) => beat.bounded(budget::quit(ctx), c.session.quit()).await,
                    }
                }
                // A new connection takes its destination limits' leases first (a cached
                // one holds its own); they go with the connection, or are released here
                // when it cannot be opened.
                let leases = if ctx.destinations.is_empty() {
                    Vec::new()
                } else {
                    let wait = ctx.destinations.connection_leases(&ctx.events, &job.hop, &name);
                    match beat.bounded(budget::limit_wait(ctx), wait).await {
                        Ok(l) => l,
                        Err(w) => return HostOutcome::Limited(w.reason),
                    }
                };
                let connect = SmtpSession::connect_with(&ctx.client, addr, &name, &host_tls.request);
                let s = match beat.bounded(budget::connect(ctx), connect).await {
                    Ok(s) => {
                        let result = match s.tls_audit() {
                            Some(Err(f)) => tls_failure(&name, addr, security::result_type(f), "certificate audit (MTA-STS testing) failed"),
                            _ if s.tls().is_none() && host_tls.report.is_some() => tls_failure(&name, addr, TlsResultType::StarttlsNotSupported, "no STARTTLS"),
                            _ => host_tls.known_failure.map_or(TlsSessionResult::Success, |t| tls_failure(&name, addr, t, "MX host not in the MTA-STS policy (testing)")),
                        };
                        report_tls(ctx, host_tls.report.as_ref(), result);
                        s
                    }
                    Err(SessionError::LoopsBack) => {
                        let why = format!("4.4.6 mail for {} loops back to myself: {remote} greeted with this server's own banner, so no host of its preference or worse is tried", job.domain);
                        loop_self(ctx, job, &remote, "greeting", &why);
                        return HostOutcome::Myself(why);
                    }
                    Err(e) => {
                        metrics.attempt(Attempt::ConnectError);
                        if let Some(f) = e.tls_failure() {
                            report_tls(ctx, host_tls.report.as_ref(), tls_failure(&name, addr, security::result_type(f), &e.to_string()));
                            let why = format!("4.7.5 {remote}: TLS as {} requires: {e}", host_tls.source.as_str());
                            tls_refused(ctx, job, &remote, &why);
                            return HostOutcome::Unreachable(why);
                        }
                        return HostOutcome::Unreachable(format!("4.4.1 {remote}: {e}"));
                    }
                };
                let mut c = Conn::new(key, s, &name);
                c.leases = leases;
                match send_on(ctx, job, plan, &mut c.session, &remote, beat).await {
                    Ok(Sent::Final(r)) => {
                        tls_policy_used(ctx, job, &remote, host_tls);
                        HostOutcome::Final(counted(r), c)
                    }
                    Ok(Sent::NextHost(why)) => {
                        metrics.attempt(Attempt::SessionError);
                        beat.bounded(budget::quit(ctx), c.session.quit()).await;
                        HostOutcome::Moved(why)
                    }
                    Err(e) => {
                        metrics.attempt(Attempt::SessionError);
                        HostOutcome::Moved(format!("4.4.2 {remote}: {e}"))
                    }
                }
            }
        },
    )
    .await;
    *conn = end.session;
    (end.result, end.down)
}

/// Waits (bounded) for the job's turn under the destination limits' message rates for
/// a transaction to `host`.
async fn message_turn(
    ctx: &Context,
    job: &Job,
    host: &str,
    beat: &Heartbeat,
) -> Result<(), crate::destlimits::WaitExpired> {
    if ctx.destinations.is_empty() {
        return Ok(());
    }
    let turn = ctx.destinations.message(&ctx.events, &job.hop, host);
    beat.bounded(budget::limit_wait(ctx), turn).await
}

/// Event 4035: the job's next host is this server itself (`how`: `address` or
/// `greeting`); nothing is sent to it.
fn loop_self(ctx: &Context, job: &Job, host: &str, how: &str, reason: &str) {
    ctx.events.emit(
        &catalog::DELIVERY_LOOP_SELF,
        fields!("queue_id" => job.msg.envelope.id, "next_hop" => job.hop, "host" => host, "how" => how, "reason" => reason),
    );
}

/// Event 4181: a host was not used, or its session not kept, because TLS could not be
/// had as the policy in force requires (DANE, MTA-STS, the route).
fn tls_refused(ctx: &Context, job: &Job, host: &str, reason: &str) {
    ctx.events.emit(
        &catalog::DELIVERY_TLS_POLICY_REFUSED,
        fields!("queue_id" => job.msg.envelope.id, "next_hop" => job.hop, "domain" => job.domain, "host" => host, "reason" => reason),
    );
}

/// Event 4182 (tracked): the host that took the job was held to a policy other than the
/// route's own (DANE, MTA-STS), so `tern track` shows which and why.
fn tls_policy_used(ctx: &Context, job: &Job, host: &str, tls: &HostTls) {
    if tls.source == security::Source::Route {
        return;
    }
    ctx.events.emit(
        &catalog::DELIVERY_TLS_POLICY,
        fields!("queue_id" => job.msg.envelope.id, "next_hop" => job.hop, "host" => host, "policy" => tls.source.as_str(), "reason" => tls.reason),
    );
}

/// What trying one address came to.
pub(crate) enum HostOutcome<S> {
    /// No session: refused, unreachable, no or a bad greeting, EHLO or TLS failure.
    Unreachable(String),
    /// The host greeted as this very server: it and every later target (of its
    /// preference or worse, RFC 5321 §5.1) are skipped; the recipients wait.
    Myself(String),
    /// Greeted, but this host could not take the job now (4xx to MAIL, connection lost):
    /// try the next one.
    Moved(String),
    /// Every recipient has its result; the session can be reused.
    Final(JobResult, S),
    /// A destination limit kept this job waiting past its bound: the walk ends, the
    /// recipients are deferred, and the destination is not down (it was not tried).
    Limited(String),
}

/// The end of a walk.
pub(crate) struct WalkEnd<S> {
    pub result: JobResult,
    pub session: Option<S>,
    /// Set when no address could even be greeted (the destination is down).
    pub down: Option<String>,
}

/// The MX walk: addresses in order until one gives a final result, at most
/// `max_sessions` greeted sessions. When the list is exhausted every recipient is
/// deferred with the last error: never dropped.
pub(crate) async fn walk<T, S, F, Fut>(
    targets: &[T],
    max_sessions: usize,
    rcpts: &[usize],
    mut try_one: F,
) -> WalkEnd<S>
where
    F: FnMut(&T) -> Fut,
    Fut: std::future::Future<Output = HostOutcome<S>>,
{
    let mut sessions = 0usize;
    let mut last_error = String::from("4.4.1 no host to try");
    for (i, t) in targets.iter().enumerate() {
        let tried_other = i > 0;
        if sessions >= max_sessions {
            break;
        }
        match try_one(t).await {
            HostOutcome::Unreachable(why) => last_error = why,
            HostOutcome::Myself(why) => {
                // A better host's failure stays first: it is what the mail waits for.
                last_error = if tried_other {
                    format!("{last_error}; {why}")
                } else {
                    why
                };
                break;
            }
            HostOutcome::Moved(why) => {
                sessions += 1;
                last_error = why;
            }
            HostOutcome::Limited(why) => {
                let result = JobResult::deferred(rcpts, &why);
                return WalkEnd {
                    result,
                    session: None,
                    down: None,
                };
            }
            HostOutcome::Final(result, s) => {
                return WalkEnd {
                    result,
                    session: Some(s),
                    down: None,
                };
            }
        }
    }
    let result = JobResult::deferred(rcpts, &last_error);
    let down = (sessions == 0 && !targets.is_empty()).then_some(last_error);
    WalkEnd {
        result,
        session: None,
        down,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::SuccessNotice;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Fate {
        Refused,
        Moves,
        Takes,
        /// Greets with our own loop mark.
        Myself,
    }

    fn fate() -> impl Strategy<Value = Fate> {
        prop_oneof![
            Just(Fate::Refused),
            Just(Fate::Moves),
            Just(Fate::Takes),
            Just(Fate::Myself)
        ]
    }

    /// Runs the walk; returns its end and the fates of the hosts it actually tried.
    fn run_walk(
        fates: &[Fate],
        max_sessions: usize,
        rcpts: &[usize],
    ) -> (WalkEnd<usize>, Vec<Fate>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let mut tried = Vec::new();
        let end = rt.block_on(walk(fates, max_sessions, rcpts, |f: &Fate| {
            tried.push(f.clone());
            let n = tried.len();
            let f = f.clone();
            let rcpts = rcpts.to_vec();
            async move {
                match f {
                    Fate::Refused => HostOutcome::Unreachable(format!("refused {n}")),
                    Fate::Myself => HostOutcome::Myself(format!("myself {n}")),
                    Fate::Moves => HostOutcome::Moved(format!("moved {n}")),
                    Fate::Takes => HostOutcome::Final(
                        JobResult {
                            outcomes: rcpts
                                .iter()
                                .map(|i| {
                                    (
                                        *i,
                                        RcptResult::Delivered {
                                            reply: crate::job::local_reply(250, "ok")
                                                .with_remote(&format!("host{n}")),
                                            notice: SuccessNotice::NextHop,
                                        },
                                    )
                                })
                                .collect(),
                        },
                        n,
                    ),
                }
            }
        }));
        (end, tried)
    }

    /// Issue 16: a host that greets as this very server ends the walk: neither it nor
    /// any later (same or worse preference) host takes the mail, the recipients are
    /// deferred with the better host's failure first, and the destination is down.
    #[test]
    fn a_host_that_is_myself_ends_the_walk_and_the_mail_waits() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let targets = ["primary", "me", "after"];
        let mut tried = Vec::new();
        let end: WalkEnd<()> = rt.block_on(walk(&targets, 5, &[0, 1], |t: &&str| {
            tried.push(*t);
            let t = *t;
            async move {
                match t {
                    "primary" => HostOutcome::Unreachable("4.4.1 primary refused".into()),
                    "me" => HostOutcome::Myself("4.4.6 loops back to myself".into()),
                    _ => HostOutcome::Final(JobResult { outcomes: vec![] }, ()),
                }
            }
        }));
        assert_eq!(tried, ["primary", "me"], "nothing after myself");
        assert!(end.session.is_none());
        assert_eq!(end.result.outcomes.len(), 2);
        for (_, r) in &end.result.outcomes {
            let RcptResult::Deferred { reply, .. } = r else {
                panic!("not deferred: {r:?}");
            };
            assert!(
                reply
                    .to_string()
                    .contains("4.4.1 primary refused; 4.4.6 loops back"),
                "{reply}"
            );
        }
        assert!(end.down.is_some(), "no host took a session: down");
    }

    #[test]
    fn endpoint_keys_share_only_what_the_tls_policy_allows() {
        use tern_deliver::TlsPolicy::{Encrypt, May, None as Plain, Verify};
        let a: SocketAddr = "192.0.2.1:25".parse().expect("address");
        let other_port: SocketAddr = "192.0.2.1:2525".parse().expect("address");
        // Any certificate is accepted: the MX host's name does not matter.
        for tls in [Plain, May, Encrypt] {
            assert_eq!(
                EndpointKey::smtp(a, tls, "aspmx.example.com"),
                EndpointKey::smtp(a, tls, "alt1.example.net")
            );
        }
        assert_ne!(
            EndpointKey::smtp(a, Plain, "mx"),
            EndpointKey::smtp(a, May, "mx")
        );
        assert_ne!(
            EndpointKey::smtp(a, May, "mx"),
            EndpointKey::smtp(a, Encrypt, "mx")
        );
        assert_ne!(
            EndpointKey::smtp(a, Encrypt, "mx"),
            EndpointKey::smtp(a, Verify, "mx")
        );
        assert_ne!(
            EndpointKey::smtp(a, May, "mx"),
            EndpointKey::smtp(other_port, May, "mx")
        );
        // Under verify the certificate was checked for one name: another needs its own.
        assert_ne!(
            EndpointKey::smtp(a, Verify, "aspmx.example.com"),
            EndpointKey::smtp(a, Verify, "alt1.example.net")
        );
        assert_eq!(
            EndpointKey::smtp(a, Verify, "ASPMX.example.com"),
            EndpointKey::smtp(a, Verify, "aspmx.example.com")
        );
    }

    proptest! {
        /// Random per-host outcomes over random host lists and limits: every recipient
        /// gets exactly one result, the first host that takes the job (within the session
        /// limit) is the one that delivers, the session limit holds, no host after one
        /// that greets as ourselves is tried, and the destination is down exactly when
        /// no host greeted.
        #[test]
        fn the_walk_never_drops_a_recipient(
            fates in proptest::collection::vec(fate(), 0..40),
            max_sessions in 1usize..5,
            n_rcpts in 1usize..6,
        ) {
            let rcpts: Vec<usize> = (0..n_rcpts).map(|i| i * 3).collect();
            let (end, tried) = run_walk(&fates, max_sessions, &rcpts);
            let mut got: Vec<usize> = end.result.outcomes.iter().map(|(i, _)| *i).collect();
            got.sort_unstable();
            prop_assert_eq!(&got, &rcpts);
            let greeted = tried
                .iter()
                .filter(|f| !matches!(f, Fate::Refused | Fate::Myself))
                .count();
            if let Some(me) = tried.iter().position(|f| matches!(f, Fate::Myself)) {
                prop_assert_eq!(me + 1, tried.len(), "a host tried after myself");
            }
            prop_assert!(greeted <= max_sessions, "{} sessions, limit {}", greeted, max_sessions);
            // The model: walk the list, counting greeted sessions.
            let mut sessions = 0;
            let mut winner = None;
            for (i, f) in fates.iter().enumerate() {
                if sessions >= max_sessions { break; }
                match f {
                    Fate::Refused => {}
                    Fate::Moves => sessions += 1,
                    Fate::Takes => { winner = Some(i + 1); sessions += 1; break; }
                    Fate::Myself => break,
                }
            }
            prop_assert_eq!(end.session, winner);
            prop_assert_eq!(greeted, sessions);
            match winner {
                Some(_) => {
                    let delivered = end.result.outcomes.iter().all(|(_, r)| matches!(r, RcptResult::Delivered { .. }));
                    prop_assert!(delivered);
                    prop_assert!(end.down.is_none());
                }
                None => {
                    let deferred = end.result.outcomes.iter().all(|(_, r)| matches!(r, RcptResult::Deferred { .. }));
                    prop_assert!(deferred);
                    prop_assert_eq!(end.down.is_some(), sessions == 0 && !fates.is_empty());
                }
            }
            prop_assert!(tried.len() <= fates.len());
        }
    }
}
