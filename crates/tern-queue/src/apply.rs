//! The message task's last decisions, sans-I/O: an attempt's results applied to the
//! delivery record, which recipients are reported (bounce, success notice, delay
//! notice), and where the message goes next (removed, held, deferred until when).
//!
//! `message.rs` calls these in this order: [`apply`] (statuses, counts, history), then
//! queues the reports [`failure_reports`] and [`success_reports`] name (`dsn.rs`), then
//! [`step`] (remove, hold or defer), [`count_crash`] when a worker died holding a job,
//! and for a deferral [`defer`] (backoff, next attempt, last error) and
//! [`delay_notice_due`]. Each of them changes only the record it is given; the I/O (the
//! spool, DSNs, events, metrics) stays in the message task.
//!
//! Invariants kept here: a recipient's status changes only through a result of this
//! attempt; a failed recipient is reported at most once (`dsn_sent`), and earlier
//! failures never reported (a crash between the record and the bounce) are reported now;
//! crash counts change only through [`count_crash`]; at most one delay notice per
//! message.
//!
//! No I/O, no tokio, no clock of its own: times are parameters (`now_micros`), and the
//! jitter of the backoff comes from the `rng` passed in, so tests fix both.

use std::time::Duration;

use tern_dsn::Action;
use tern_spool::{AttemptEntry, DeliveryRecord, Envelope, Recipient, RecipientStatus};

use crate::config::{DelayNotices, QueueConfig};
use crate::job::{RcptResult, SuccessNotice};
use crate::plan::open_recipients;

/// What [`apply`] learned, for the reports and the events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    /// Recipients to report as failed: failed in this attempt, and earlier failures
    /// never reported (an administrator's bounce cut short by a crash, a DSN that could
    /// not be queued). Earlier ones first.
    pub newly_failed: Vec<usize>,
    /// Recipients delivered in this attempt, with who answers a success notice.
    pub newly_delivered: Vec<(usize, SuccessNotice)>,
    /// The first deferral reply of this attempt.
    pub first_deferral: Option<String>,
}

/// Applies one attempt's `results` to `record`: each recipient's status, remote host,
/// attempt count and history, and the message's attempt count and times (when anything
/// was tried). `started_micros` is when the attempt started, `now_micros` when it ended.
pub(crate) fn apply(
    record: &mut DeliveryRecord,
    results: Vec<(usize, RcptResult)>,
    started_micros: i64,
    now_micros: i64,
) -> Applied {
    let tried = !results.is_empty();
    let n = record.recipients.len();
    let mut out = Applied {
        newly_failed: record
            .recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r.status, RecipientStatus::Failed { .. }) && !r.dsn_sent)
            .map(|(i, _)| i)
            .collect(),
        ..Applied::default()
    };
    for (i, res) in results {
        let Some(rr) = record.recipients.get_mut(i) else {
            continue;
        };
        rr.attempts = rr.attempts.saturating_add(1);
        let reply = res.reply();
        // The status keeps the reply as text too, for every reader of the record.
        let full = reply.to_string();
        rr.remember(
            n,
            AttemptEntry {
                at_micros: now_micros,
                result: res.name().into(),
                remote: reply.remote.clone(),
                reply: Some(full.clone()),
            },
        );
        let text = tern_spool::record::bounded_reply(&full);
        rr.remote_mta = reply.remote.clone();
        rr.reply = Some(reply.clone());
        match res {
            RcptResult::Delivered { notice, .. } => {
                rr.status = RecipientStatus::Delivered { reply: text };
                out.newly_delivered.push((i, notice));
            }
            RcptResult::Deferred { .. } => {
                out.first_deferral.get_or_insert(full);
                rr.status = RecipientStatus::Deferred { reply: text };
            }
            RcptResult::Failed { .. } => {
                rr.status = RecipientStatus::Failed { reply: text };
                out.newly_failed.push(i);
            }
        }
    }
    if tried {
        record.attempts = record.attempts.saturating_add(1);
        record.first_attempt_micros.get_or_insert(started_micros);
        record.last_attempt_micros = Some(now_micros);
    }
    out
}

/// Where the message goes after its reports were queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing left to deliver: remove it.
    Remove,
    /// Every recipient left is parked by a `hold` route: to `hold/`.
    Hold,
    /// Recipients wait for a retry: to `deferred/`. `open`: those recipients.
    Defer { open: Vec<usize> },
}

/// Where the message goes: removed when no recipient is pending or deferred, held when
/// every one left was parked by a hold route in this attempt (`held`), else deferred.
pub(crate) fn step(record: &DeliveryRecord, held: &[usize]) -> Step {
    let open = open_recipients(record, record.recipients.len());
    if open.is_empty() {
        Step::Remove
    } else if open.iter().all(|i| held.contains(i)) {
        Step::Hold
    } else {
        Step::Defer { open }
    }
}

/// Counts one internal failure (a panic, a delivery worker lost with its job) against
/// the message, like a crash, with its reason as the last error. Returns whether the
/// poison threshold is reached.
pub(crate) fn count_crash(
    record: &mut DeliveryRecord,
    stage: &str,
    error: &str,
    threshold: u32,
) -> bool {
    record.crashes = record.crashes.saturating_add(1);
    let reason = format!("451 4.3.0 internal error in {stage}: {error}; will retry");
    record.last_error = Some(tern_spool::record::bounded_reply(&reason));
    record.crashes >= threshold
}

/// Defers the message: the wait before the next attempt (the backoff for its attempt
/// count, jittered by `rng`), written to the record as the next attempt's time, with
/// `reason` (the first deferral of the attempt) as its last error. Returns the wait.
pub(crate) fn defer(
    record: &mut DeliveryRecord,
    cfg: &QueueConfig,
    reason: Option<&str>,
    now_micros: i64,
    rng: &mut impl rand::Rng,
) -> Duration {
    let wait = cfg.backoff(record.attempts.max(1), rng);
    record.next_attempt_micros = Some(now_micros.saturating_add(micros(wait)));
    record.last_error = Some(tern_spool::record::bounded_reply(reason.unwrap_or("")));
    wait
}

/// A duration in microseconds, saturating.
pub(crate) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// The failed recipients (of `failed`) the sender gets a bounce for: not yet reported,
/// and whose NOTIFY does not exclude FAILURE (none means FAILURE). The null sender is
/// the caller's concern (never a DSN, but the recipients are marked reported).
pub(crate) fn failure_reports(
    envelope: &Envelope,
    record: &DeliveryRecord,
    failed: &[usize],
) -> Vec<(usize, Action)> {
    failed
        .iter()
        .copied()
        .filter(|i| record.recipients.get(*i).is_some_and(|r| !r.dsn_sent))
        .filter(|i| envelope.recipients.get(*i).is_some_and(wants_failure))
        .map(|i| (i, Action::Failed))
        .collect()
}

/// The delivered recipients (of `delivered`) Tern sends a success notice for: not yet
/// reported, NOTIFY=SUCCESS asked for, and nobody after Tern reports it (RFC 3461 §4.1):
/// `relayed` when the next hop cannot, `delivered` when Tern put it in the mailbox.
pub(crate) fn success_reports(
    envelope: &Envelope,
    record: &DeliveryRecord,
    delivered: &[(usize, SuccessNotice)],
) -> Vec<(usize, Action)> {
    delivered
        .iter()
        .filter_map(|(i, notice)| match notice {
            // The next hop took NOTIFY on with the message and reports itself.
            SuccessNotice::NextHop => None,
            SuccessNotice::Relayed => Some((*i, Action::Relayed)),
            SuccessNotice::Delivered => Some((*i, Action::Delivered)),
        })
        .filter(|(i, _)| record.recipients.get(*i).is_some_and(|r| !r.dsn_sent))
        .filter(|(i, _)| {
            envelope
                .recipients
                .get(*i)
                .and_then(|r| r.notify.as_ref())
                .is_some_and(|n| n.success && !n.never)
        })
        .collect()
}

fn wants_failure(r: &Recipient) -> bool {
    r.notify.as_ref().is_none_or(|n| n.failure && !n.never)
}

/// The `open` recipients a delay notice goes to at `now_micros`, if one is due: none was
/// sent for this message yet, notices are on (`queue.delay_notice_secs` > 0), the
/// sender is not null, the message is at least that old, and the recipient asked for
/// it (NOTIFY=DELAY) or, without NOTIFY, `queue.delay_notices` is `always`.
pub(crate) fn delay_notice_due(
    envelope: &Envelope,
    record: &DeliveryRecord,
    cfg: &QueueConfig,
    open: &[usize],
    now_micros: i64,
) -> Vec<(usize, Action)> {
    if record.delay_notice_sent || cfg.delay_notice_secs == 0 || envelope.sender.is_empty() {
        return Vec::new();
    }
    let age = now_micros.saturating_sub(envelope.arrival_micros);
    if age < i64::try_from(cfg.delay_notice_secs.saturating_mul(1_000_000)).unwrap_or(i64::MAX) {
        return Vec::new();
    }
    open.iter()
        .copied()
        .filter(|i| {
            let Some(r) = envelope.recipients.get(*i) else {
                return false;
            };
            match (cfg.delay_notices, &r.notify) {
                (DelayNotices::Never, _) => false,
                (_, Some(n)) => n.delay && !n.never,
                (DelayNotices::Always, None) => true,
                (DelayNotices::Requested, None) => false,
            }
        })
        .map(|i| (i, Action::Delayed))
        .collect()
}

/// When the queue gives up on the message (arrival plus `queue.max_lifetime_secs`), for
/// a delay notice's Will-Retry-Until.
pub(crate) fn give_up_micros(envelope: &Envelope, cfg: &QueueConfig) -> i64 {
    envelope.arrival_micros.saturating_add(
        i64::try_from(cfg.max_lifetime_secs.saturating_mul(1_000_000)).unwrap_or(i64::MAX),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::{DAY, T0, envelope};
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use tern_spool::Notify;

    fn failed(reply: &str) -> RcptResult {
        RcptResult::Failed {
            reply: local_reply(reply).with_remote("mx.test[192.0.2.1]"),
        }
    }

    fn deferred(reply: &str) -> RcptResult {
        RcptResult::Deferred {
            reply: local_reply(reply),
        }
    }

    fn delivered(notice: SuccessNotice) -> RcptResult {
        RcptResult::Delivered {
            reply: local_reply("250 2.0.0 ok").with_remote("mx.test[192.0.2.1]"),
            notice,
        }
    }

    /// `"550 5.1.1 text"` as Tern would make it.
    fn local_reply(reply: &str) -> crate::job::Reply {
        let (code, reason) = reply.split_once(' ').unwrap_or((reply, ""));
        crate::job::local_reply(code.parse().unwrap(), reason)
    }

    fn notify(success: bool, failure: bool, delay: bool, never: bool) -> Option<Notify> {
        Some(Notify {
            success,
            failure,
            delay,
            never,
        })
    }

    #[test]
    fn mixed_results_set_each_status_and_what_to_report() {
        let env = envelope("s@x.test", &["a@a.test", "b@a.test", "c@a.test"]);
        let mut rec = DeliveryRecord::new(env.id, 3);
        let got = apply(
            &mut rec,
            vec![
                (0, delivered(SuccessNotice::Relayed)),
                (1, deferred("451 4.4.1 later")),
                (2, failed("550 5.1.1 unknown")),
            ],
            T0,
            T0 + 5,
        );
        assert_eq!(
            got,
            Applied {
                newly_failed: vec![2],
                newly_delivered: vec![(0, SuccessNotice::Relayed)],
                first_deferral: Some("451 4.4.1 later".into()),
            }
        );
        assert_eq!(
            rec.recipients[0].status,
            RecipientStatus::Delivered {
                reply: "250 2.0.0 ok".into()
            }
        );
        assert_eq!(
            rec.recipients[1].status,
            RecipientStatus::Deferred {
                reply: "451 4.4.1 later".into()
            }
        );
        assert_eq!(
            rec.recipients[2].status,
            RecipientStatus::Failed {
                reply: "550 5.1.1 unknown".into()
            }
        );
        assert_eq!(
            rec.recipients[0].remote_mta.as_deref(),
            Some("mx.test[192.0.2.1]")
        );
        assert_eq!(rec.recipients[1].remote_mta, None);
        // The typed replies are kept beside the status texts.
        let typed = rec.recipients[2].reply.as_ref().unwrap();
        assert_eq!(
            (typed.code, typed.enhanced, typed.text.as_str()),
            (550, Some((5, 1, 1)), "unknown")
        );
        assert_eq!(typed.remote.as_deref(), Some("mx.test[192.0.2.1]"));
        assert_eq!(rec.recipients[1].reply.as_ref().unwrap().remote, None);
        assert!(rec.recipients.iter().all(|r| r.attempts == 1));
        assert_eq!(rec.recipients[2].history.len(), 1);
        assert_eq!(rec.recipients[2].history[0].result, "failed");
        assert_eq!(rec.recipients[2].history[0].at_micros, T0 + 5);
        assert_eq!(rec.attempts, 1);
        assert_eq!(rec.first_attempt_micros, Some(T0));
        assert_eq!(rec.last_attempt_micros, Some(T0 + 5));
        assert_eq!(step(&rec, &[]), Step::Defer { open: vec![1] });
    }

    #[test]
    fn all_delivered_removes_the_message() {
        let env = envelope("s@x.test", &["a@a.test", "b@b.test"]);
        let mut rec = DeliveryRecord::new(env.id, 2);
        apply(
            &mut rec,
            vec![
                (0, delivered(SuccessNotice::NextHop)),
                (1, delivered(SuccessNotice::NextHop)),
            ],
            T0,
            T0,
        );
        assert_eq!(step(&rec, &[]), Step::Remove);
    }

    #[test]
    fn failed_and_delivered_leave_nothing_to_retry() {
        let env = envelope("s@x.test", &["a@a.test", "b@b.test"]);
        let mut rec = DeliveryRecord::new(env.id, 2);
        apply(
            &mut rec,
            vec![
                (0, delivered(SuccessNotice::NextHop)),
                (1, failed("550 5.1.1 no")),
            ],
            T0,
            T0,
        );
        assert_eq!(step(&rec, &[]), Step::Remove);
    }

    #[test]
    fn only_held_recipients_left_hold_the_message() {
        let env = envelope("s@x.test", &["a@held.test", "b@b.test", "c@held.test"]);
        let mut rec = DeliveryRecord::new(env.id, 3);
        apply(
            &mut rec,
            vec![(1, delivered(SuccessNotice::NextHop))],
            T0,
            T0,
        );
        assert_eq!(step(&rec, &[0, 2]), Step::Hold);
        // One of them deferred instead: the message waits in `deferred/`.
        apply(&mut rec, vec![(2, deferred("451 later"))], T0, T0);
        assert_eq!(step(&rec, &[0]), Step::Defer { open: vec![0, 2] });
    }

    #[test]
    fn an_attempt_that_tried_nobody_is_not_counted() {
        let env = envelope("s@x.test", &["a@held.test"]);
        let mut rec = DeliveryRecord::new(env.id, 1);
        let got = apply(&mut rec, Vec::new(), T0, T0 + 1);
        assert_eq!(got, Applied::default());
        assert_eq!(rec.attempts, 0);
        assert_eq!(rec.first_attempt_micros, None);
        assert_eq!(rec.last_attempt_micros, None);
    }

    #[test]
    fn the_first_attempt_time_is_kept_across_attempts() {
        let env = envelope("s@x.test", &["a@a.test"]);
        let mut rec = DeliveryRecord::new(env.id, 1);
        apply(&mut rec, vec![(0, deferred("451 a"))], T0, T0 + 1);
        apply(
            &mut rec,
            vec![(0, deferred("451 b"))],
            T0 + DAY,
            T0 + DAY + 1,
        );
        assert_eq!(rec.attempts, 2);
        assert_eq!(rec.recipients[0].attempts, 2);
        assert_eq!(rec.first_attempt_micros, Some(T0));
        assert_eq!(rec.last_attempt_micros, Some(T0 + DAY + 1));
    }

    #[test]
    fn earlier_unreported_failures_are_reported_now_and_reported_ones_never_again() {
        let env = envelope("s@x.test", &["a@a.test", "b@a.test", "c@a.test"]);
        let mut rec = DeliveryRecord::new(env.id, 3);
        rec.recipients[0].status = RecipientStatus::Failed {
            reply: "554 5.0.0 bounced by the administrator".into(),
        };
        rec.recipients[1].status = RecipientStatus::Failed {
            reply: "550 old".into(),
        };
        rec.recipients[1].dsn_sent = true;
        let got = apply(&mut rec, vec![(2, failed("550 5.1.1 no"))], T0, T0);
        assert_eq!(got.newly_failed, vec![0, 2]);
        assert_eq!(
            failure_reports(&env, &rec, &[0, 1, 2]),
            vec![(0, Action::Failed), (2, Action::Failed)]
        );
    }

    #[test]
    fn an_out_of_range_result_is_ignored() {
        let env = envelope("s@x.test", &["a@a.test"]);
        let mut rec = DeliveryRecord::new(env.id, 1);
        let got = apply(&mut rec, vec![(7, failed("550 x"))], T0, T0);
        assert!(got.newly_failed.is_empty());
        assert_eq!(rec.recipients[0].status, RecipientStatus::Pending);
    }

    #[test]
    fn notify_decides_who_gets_a_bounce() {
        let mut env = envelope(
            "s@x.test",
            &["a@a.test", "b@a.test", "c@a.test", "d@a.test"],
        );
        env.recipients[1].notify = notify(false, false, false, true);
        env.recipients[2].notify = notify(true, false, true, false);
        env.recipients[3].notify = notify(false, true, false, false);
        let rec = DeliveryRecord::new(env.id, 4);
        assert_eq!(
            failure_reports(&env, &rec, &[0, 1, 2, 3]),
            vec![(0, Action::Failed), (3, Action::Failed)]
        );
    }

    #[test]
    fn success_notices_only_when_asked_and_nobody_else_reports() {
        let mut env = envelope(
            "s@x.test",
            &["a@a.test", "b@a.test", "c@a.test", "d@a.test"],
        );
        for r in &mut env.recipients {
            r.notify = notify(true, true, false, false);
        }
        env.recipients[3].notify = None;
        let rec = DeliveryRecord::new(env.id, 4);
        let delivered = [
            (0, SuccessNotice::NextHop),
            (1, SuccessNotice::Relayed),
            (2, SuccessNotice::Delivered),
            (3, SuccessNotice::Delivered),
        ];
        assert_eq!(
            success_reports(&env, &rec, &delivered),
            vec![(1, Action::Relayed), (2, Action::Delivered)]
        );
    }

    #[test]
    fn the_backoff_doubles_per_attempt_and_is_written_to_the_record() {
        let cfg = QueueConfig::default();
        let env = envelope("s@x.test", &["a@a.test"]);
        let mut rec = DeliveryRecord::new(env.id, 1);
        let mut rng = StdRng::seed_from_u64(7);
        let mut waits = Vec::new();
        for attempts in [1, 2, 3, 10] {
            rec.attempts = attempts;
            let wait = defer(&mut rec, &cfg, Some("451 4.4.1 later"), T0, &mut rng);
            assert_eq!(rec.next_attempt_micros, Some(T0 + micros(wait)));
            waits.push(wait.as_secs_f64());
        }
        let near = |got: f64, want: f64| (got - want).abs() <= want / 10.0;
        assert!(near(waits[0], 300.0), "{waits:?}");
        assert!(near(waits[1], 600.0), "{waits:?}");
        assert!(near(waits[2], 1200.0), "{waits:?}");
        assert!(near(waits[3], 4000.0), "capped: {waits:?}");
        assert_eq!(rec.last_error.as_deref(), Some("451 4.4.1 later"));
    }

    #[test]
    fn a_deferral_before_any_attempt_waits_the_first_backoff() {
        let cfg = QueueConfig::default();
        let env = envelope("s@x.test", &["a@a.test"]);
        let mut rec = DeliveryRecord::new(env.id, 1);
        let wait = defer(&mut rec, &cfg, None, T0, &mut StdRng::seed_from_u64(1));
        assert!((270..=330).contains(&wait.as_secs()), "{wait:?}");
        assert_eq!(rec.last_error.as_deref(), Some(""));
    }

    #[test]
    fn crashes_are_counted_only_by_count_crash_up_to_the_threshold() {
        let env = envelope("s@x.test", &["a@a.test"]);
        let mut rec = DeliveryRecord::new(env.id, 1);
        rec.crashes = 0;
        apply(&mut rec, vec![(0, deferred("451 x"))], T0, T0);
        defer(
            &mut rec,
            &QueueConfig::default(),
            None,
            T0,
            &mut StdRng::seed_from_u64(1),
        );
        assert_eq!(rec.crashes, 0, "a normal attempt counts no crash");
        assert!(!count_crash(&mut rec, "delivery worker", "gone", 2));
        assert_eq!(rec.crashes, 1);
        assert_eq!(
            rec.last_error.as_deref(),
            Some("451 4.3.0 internal error in delivery worker: gone; will retry")
        );
        assert!(count_crash(&mut rec, "delivery worker", "gone", 2));
        assert_eq!(rec.crashes, 2);
    }

    #[test]
    fn a_delay_notice_is_due_once_after_the_delay_for_those_who_asked() {
        let cfg = QueueConfig::default();
        let mut env = envelope("s@x.test", &["a@a.test", "b@a.test", "c@a.test"]);
        env.recipients[0].notify = notify(false, true, true, false);
        env.recipients[1].notify = notify(false, true, false, false);
        let mut rec = DeliveryRecord::new(env.id, 3);
        let delay = i64::try_from(cfg.delay_notice_secs).unwrap() * 1_000_000;
        let open = [0, 1, 2];
        assert!(delay_notice_due(&env, &rec, &cfg, &open, T0 + delay - 1).is_empty());
        assert_eq!(
            delay_notice_due(&env, &rec, &cfg, &open, T0 + delay),
            vec![(0, Action::Delayed)],
            "NOTIFY=DELAY only, under `requested`"
        );
        let always = QueueConfig {
            delay_notices: DelayNotices::Always,
            ..cfg.clone()
        };
        assert_eq!(
            delay_notice_due(&env, &rec, &always, &open, T0 + delay),
            vec![(0, Action::Delayed), (2, Action::Delayed)],
            "and no NOTIFY at all under `always`"
        );
        let never = QueueConfig {
            delay_notices: DelayNotices::Never,
            ..cfg.clone()
        };
        assert!(delay_notice_due(&env, &rec, &never, &open, T0 + delay).is_empty());
        rec.delay_notice_sent = true;
        assert!(delay_notice_due(&env, &rec, &always, &open, T0 + delay).is_empty());
    }

    #[test]
    fn no_delay_notice_to_the_null_sender_or_when_turned_off() {
        let cfg = QueueConfig {
            delay_notices: DelayNotices::Always,
            ..QueueConfig::default()
        };
        let env = envelope("", &["a@a.test"]);
        let rec = DeliveryRecord::new(env.id, 1);
        assert!(delay_notice_due(&env, &rec, &cfg, &[0], T0 + 30 * DAY).is_empty());
        let env = envelope("s@x.test", &["a@a.test"]);
        let off = QueueConfig {
            delay_notice_secs: 0,
            ..cfg.clone()
        };
        assert!(delay_notice_due(&env, &rec, &off, &[0], T0 + 30 * DAY).is_empty());
        assert_eq!(
            delay_notice_due(&env, &rec, &cfg, &[0], T0 + 30 * DAY),
            vec![(0, Action::Delayed)]
        );
        assert_eq!(
            give_up_micros(&env, &cfg),
            T0 + i64::try_from(cfg.max_lifetime_secs).unwrap() * 1_000_000
        );
    }
}
