//! How long a delivery worker may legitimately go without progress in each step, for
//! its watchdog heartbeat.
//!
//! A worker reports progress after each step of a delivery (the host lookup, the
//! connection set-up, each transaction, each QUIT) and, while a step runs, declares that
//! step's budget: an upper bound of the sum of the timeouts of every stage the step can go
//! through (`[delivery]` and `[dns]` settings). The watchdog calls the worker stalled only
//! past the larger of that budget and `stall_after`, so a worker waiting on a slow but
//! live peer, within its SMTP timeouts, is never called stalled; a worker that is past
//! every timeout its own I/O could impose is stuck somewhere else.
//!
//! The steps are coarser than the SMTP stages because the stages are inside
//! `tern-deliver`, which knows nothing of the watchdog; the bounds stay exact sums.

use std::time::Duration;

use tern_route::Transport;
use tern_route::dns::plan::{LOOKUP_CONCURRENCY, MAX_MX_HOSTS};

use crate::Context;
use crate::job::Job;

/// Finding the hosts: one MX query, then the hosts' addresses in rounds of
/// `LOOKUP_CONCURRENCY` parallel lookups, each bounded by the lookup timeout.
pub(crate) fn lookup(ctx: &Context, job: &Job) -> Duration {
    let hosts = match &*job.transport {
        Transport::Smtp { hosts, .. } => hosts.len(),
        _ => MAX_MX_HOSTS,
    };
    let rounds = hosts.div_ceil(LOOKUP_CONCURRENCY).max(1);
    let plan = ctx
        .resolver
        .lookup_timeout()
        .saturating_mul(u32::try_from(rounds + 1).unwrap_or(u32::MAX));
    // The MTA-STS lookup runs alongside the MX plan (`attempt.rs`).
    let sts = ctx
        .mta_sts
        .as_ref()
        .map(|s| s.time_bound())
        .unwrap_or_default();
    plan.max(sts)
}

/// Connecting: TCP, greeting, EHLO (and HELO after a refused EHLO), STARTTLS and the
/// EHLO after it, and the QUIT sent when set-up fails.
/// Waiting for a destination limit's lease or message (`destlimits.rs`): the
/// configured wait, plus a margin for the last poll.
pub(crate) fn limit_wait(ctx: &Context) -> Duration {
    Duration::from_secs(ctx.delivery.destination_limit_wait_secs)
        .saturating_add(Duration::from_secs(5))
}

pub(crate) fn connect(ctx: &Context) -> Duration {
    let t = &ctx.client.config().timeouts;
    t.connect
        .saturating_add(t.greeting)
        .saturating_add(t.ehlo.saturating_mul(4))
        .saturating_add(t.starttls)
        .saturating_add(t.quit)
}

/// One transaction: the RSET that starts a transaction on a reused connection, MAIL,
/// each RCPT reply (and the write of each pipelined group, timed like MAIL), DATA, each
/// block of the `content_len` octets sent (the stored content, or its 7-bit conversion),
/// the final reply, and a RSET after a refusal.
pub(crate) fn send(ctx: &Context, job: &Job, content_len: usize) -> Duration {
    let t = &ctx.client.config().timeouts;
    let rcpts = u32::try_from(job.rcpts.len()).unwrap_or(u32::MAX);
    let blocks = u32::try_from(content_len / (64 * 1024) + 2).unwrap_or(u32::MAX);
    t.mail
        .saturating_add(t.rcpt.saturating_add(t.mail).saturating_mul(rcpts))
        .saturating_add(t.data_start)
        .saturating_add(t.data_block.saturating_mul(blocks))
        .saturating_add(t.data_end)
        .saturating_add(t.rset.saturating_mul(2))
}

/// QUIT: its write and reply, then the connection's shutdown, each bounded by the QUIT
/// timeout.
pub(crate) fn quit(ctx: &Context) -> Duration {
    ctx.client.config().timeouts.quit.saturating_mul(2)
}

/// A Maildir delivery (blocking file I/O on a worker thread): given as long as a server
/// is given to store a message after its final dot.
pub(crate) fn local(ctx: &Context) -> Duration {
    ctx.client.config().timeouts.data_end
}
