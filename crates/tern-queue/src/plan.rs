//! The message task's first decision, sans-I/O: given a loaded message (envelope, header
//! section), its delivery record, the queue settings, the routing table of this moment
//! and the time, what this attempt does with each recipient still to deliver.
//!
//! In order, as `message.rs` always decided it:
//! 1. more `Received:` fields in the header section than `queue.hop_limit`: every
//!    pending recipient fails (554 5.4.6, a mail loop);
//! 2. else, a message at least `queue.max_lifetime_secs` old that had at least one
//!    attempt: every pending recipient fails (554 4.4.7, with its last deferral);
//! 3. else each pending recipient is routed by its domain: a `reject` route fails it with
//!    the route's reply, a `hold` route parks it, any other route puts it in the group of
//!    its next hop (one job per next hop).
//!
//! "Pending" means pending or deferred in the record: a delivered or failed recipient is
//! never tried again (the crate's invariant).
//!
//! No I/O, no tokio, no clock of its own: the time is a parameter (`now_micros`), so the
//! tests replace the clock; the message task passes `tern_watchdog::clock::unix_micros()`.
//! Trust: the envelope was validated by the spool; the header section is bounded by the
//! load (`content::HEAD_MAX`) and only scanned for `Received:` names.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tern_route::{NextHop, RoutingTable, Transport};
use tern_spool::{DeliveryRecord, Envelope, RecipientStatus};

use crate::config::QueueConfig;
use tern_spool::record::parse_enhanced;

use crate::job::{RcptResult, Reply, local_reply};

/// One next hop's share of the attempt: the recipients that go there together.
#[derive(Debug, Clone)]
pub(crate) struct HopGroup {
    pub hop: NextHop,
    pub transport: Arc<Transport>,
    /// The first recipient's domain (for the MX lookup).
    pub domain: String,
    /// Indices into the envelope's recipients, in envelope order; never empty.
    pub rcpts: Vec<usize>,
}

/// What an attempt does with the message's recipients.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    /// The recipients still to deliver when the attempt started (pending or deferred).
    pub pending: Vec<usize>,
    /// Recipients failed without a delivery: hop limit, expiry, `reject` routes.
    pub failed: Vec<(usize, RcptResult)>,
    /// Recipients parked by `hold` routes.
    pub held: Vec<usize>,
    /// One group per next hop, by the next hop's name.
    pub jobs: BTreeMap<String, HopGroup>,
    /// The message's age when it expired (step 2), for the event.
    pub expired: Option<Duration>,
    /// Every pending recipient was parked by the envelope's quarantine hold (step 3a):
    /// the record must say so, so a release delivers it.
    pub quarantine_hold: bool,
}

/// Decides the attempt (see the module header). `head` is the header section as the load
/// kept it; `now_micros` the time, microseconds since the Unix epoch.
pub(crate) fn plan(
    envelope: &Envelope,
    head: &[u8],
    record: &DeliveryRecord,
    cfg: &QueueConfig,
    routes: &RoutingTable,
    now_micros: i64,
) -> Plan {
    let pending = open_recipients(record, envelope.recipients.len());
    let mut plan = Plan {
        pending,
        ..Plan::default()
    };
    let hops = received_count(head);
    if hops > cfg.hop_limit {
        let reply = local_reply(
            554,
            &format!(
                "5.4.6 too many hops ({hops} Received headers, limit {}): mail loop?",
                cfg.hop_limit
            ),
        );
        plan.failed = fail_each(&plan.pending, |_| reply.clone());
        return plan;
    }
    let age = age_of(envelope, now_micros);
    if age >= Duration::from_secs(cfg.max_lifetime_secs) && record.attempts > 0 {
        let days = age.as_secs() / 86_400;
        plan.failed = fail_each(&plan.pending, |i| {
            let last = match record.recipients.get(i).map(|r| &r.status) {
                Some(RecipientStatus::Deferred { reply }) => reply.as_str(),
                _ => "",
            };
            local_reply(
                554,
                &format!(
                    "4.4.7 message expired after {days} days in the queue; last error: {last}"
                ),
            )
        });
        plan.expired = Some(age);
        return plan;
    }
    // 3a. Quarantined by inbound verification (docs/FILTERING.md): held once, or routed
    // by the quarantine route's key.
    let quarantine_route = match envelope.quarantine.as_deref() {
        Some("hold") if !record.quarantine_held => {
            plan.held = plan.pending.clone();
            plan.quarantine_hold = true;
            return plan;
        }
        Some(q) => q.strip_prefix("route:").map(str::to_string),
        None => None,
    };
    for &i in &plan.pending {
        let Some(r) = envelope.recipients.get(i) else {
            continue;
        };
        let domain = domain_of(&r.address);
        let route = routes.route(quarantine_route.as_deref().unwrap_or(&domain));
        match &*route.transport {
            Transport::Reject { reply } => {
                // The enhanced code was checked when the routes were loaded.
                let reply = Reply::new(
                    reply.code,
                    parse_enhanced(&reply.enhanced),
                    &reply.text,
                    None,
                );
                plan.failed.push((i, RcptResult::Failed { reply }));
            }
            Transport::Hold => plan.held.push(i),
            _ => {
                plan.jobs
                    .entry(route.next_hop.to_string())
                    .or_insert_with(|| HopGroup {
                        hop: route.next_hop.clone(),
                        transport: Arc::clone(&route.transport),
                        domain: domain.clone(),
                        rcpts: Vec::new(),
                    })
                    .rcpts
                    .push(i);
            }
        }
    }
    plan
}

/// The recipients of a record of `n` recipients still to deliver: pending or deferred.
pub(crate) fn open_recipients(record: &DeliveryRecord, n: usize) -> Vec<usize> {
    (0..n)
        .filter(|i| {
            matches!(
                record.recipients.get(*i).map(|r| &r.status),
                Some(RecipientStatus::Pending | RecipientStatus::Deferred { .. })
            )
        })
        .collect()
}

/// How long the message has been in the queue at `now_micros` (zero for an arrival in
/// the future: a clock set back).
pub(crate) fn age_of(envelope: &Envelope, now_micros: i64) -> Duration {
    Duration::from_micros(
        u64::try_from(now_micros.saturating_sub(envelope.arrival_micros)).unwrap_or(0),
    )
}

fn fail_each(rcpts: &[usize], reply: impl Fn(usize) -> Reply) -> Vec<(usize, RcptResult)> {
    rcpts
        .iter()
        .map(|&i| (i, RcptResult::Failed { reply: reply(i) }))
        .collect()
}

/// Counts `Received:` header fields in the header section.
pub(crate) fn received_count(content: &[u8]) -> usize {
    let mut n = 0;
    for line in content.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line
            .get(..9)
            .is_some_and(|name| name.eq_ignore_ascii_case(b"received:"))
        {
            n += 1;
        }
    }
    n
}

/// The domain of an address (after the last `@`, `""` without one), lower-cased.
pub(crate) fn domain_of(address: &str) -> String {
    tern_proto::address::domain_of(address).to_ascii_lowercase()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tern_route::{RouteConfig, TransportKind};
    use tern_spool::{BodyType, ClientInfo, MailParams, QueueId, Recipient};

    /// Arrival time of the test messages: 2024-01-01.
    pub(crate) const T0: i64 = 1_704_067_200_000_000;
    pub(crate) const DAY: i64 = 86_400_000_000;

    /// A message from `sender` to `rcpts`, arrived at [`T0`].
    pub(crate) fn envelope(sender: &str, rcpts: &[&str]) -> Envelope {
        Envelope {
            quarantine: None,
            id: QueueId::generate(),
            sender: sender.into(),
            recipients: rcpts.iter().map(|a| Recipient::new(*a)).collect(),
            params: MailParams {
                declared_size: None,
                body: BodyType::SevenBit,
                smtputf8: false,
                dsn_ret: None,
                dsn_envid: None,
            },
            client: ClientInfo {
                address: "127.0.0.1:1".into(),
                verified_name: None,
                helo: "client.test".into(),
                esmtp: true,
                tls: None,
                listener: "test".into(),
                ..Default::default()
            },
            arrival_micros: T0,
            size: 10,
        }
    }

    fn route(domains: &[&str], transport: TransportKind, reply: Option<&str>) -> RouteConfig {
        RouteConfig {
            domains: domains.iter().map(|d| (*d).to_owned()).collect(),
            transport,
            reply: reply.map(str::to_owned),
            ..RouteConfig::default()
        }
    }

    /// `held.test` held, `reject.test` rejected with 550 5.7.1, `relay.test` to a relay
    /// host, everything else by MX.
    fn routes() -> RoutingTable {
        let relay = RouteConfig {
            hosts: vec!["smarthost.test".into()],
            ..route(&["relay.test", "relay2.test"], TransportKind::Smtp, None)
        };
        match RoutingTable::new(&[
            route(&["held.test"], TransportKind::Hold, None),
            route(
                &["reject.test"],
                TransportKind::Reject,
                Some("550 5.7.1 not here"),
            ),
            relay,
            route(&["*"], TransportKind::Mx, None),
        ]) {
            Ok(t) => t,
            Err(p) => panic!("routes: {p:?}"),
        }
    }

    const HEAD: &[u8] = b"Received: one\r\nSubject: hi\r\n\r\n";

    fn plan_at(env: &Envelope, head: &[u8], record: &DeliveryRecord, now: i64) -> Plan {
        plan(env, head, record, &QueueConfig::default(), &routes(), now)
    }

    fn reply_of(r: &RcptResult) -> String {
        r.reply().to_string()
    }

    #[test]
    fn recipients_are_grouped_by_next_hop() {
        let env = envelope(
            "s@x.test",
            &[
                "a@A.test",
                "b@b.test",
                "c@a.test",
                "d@relay.test",
                "e@relay2.test",
            ],
        );
        let rec = DeliveryRecord::new(env.id, 5);
        let p = plan_at(&env, HEAD, &rec, T0);
        let groups: Vec<(&str, &[usize])> = p
            .jobs
            .iter()
            .map(|(k, g)| (k.as_str(), g.rcpts.as_slice()))
            .collect();
        assert_eq!(
            groups,
            vec![
                ("mx:a.test", &[0, 2][..]),
                ("mx:b.test", &[1][..]),
                ("smtp:[smarthost.test]:25", &[3, 4][..]),
            ]
        );
        assert_eq!(p.jobs["mx:a.test"].domain, "a.test");
        assert!(p.failed.is_empty() && p.held.is_empty() && p.expired.is_none());
        assert_eq!(p.pending, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn delivered_and_failed_recipients_are_never_planned_again() {
        let env = envelope(
            "s@x.test",
            &["a@a.test", "b@a.test", "c@a.test", "d@a.test"],
        );
        let mut rec = DeliveryRecord::new(env.id, 4);
        rec.recipients[0].status = RecipientStatus::Delivered {
            reply: "250 ok".into(),
        };
        rec.recipients[1].status = RecipientStatus::Failed {
            reply: "550 no".into(),
        };
        rec.recipients[2].status = RecipientStatus::Deferred {
            reply: "451 later".into(),
        };
        let p = plan_at(&env, HEAD, &rec, T0);
        assert_eq!(p.pending, vec![2, 3]);
        assert_eq!(p.jobs["mx:a.test"].rcpts, vec![2, 3]);
    }

    #[test]
    fn a_quarantine_hold_parks_every_recipient_once_and_a_quarantine_route_routes_them() {
        let mut env = envelope("s@x.test", &["a@a.test", "b@b.test"]);
        env.quarantine = Some("hold".into());
        let mut record = DeliveryRecord::new(env.id, 2);
        let p = plan_at(&env, HEAD, &record, T0);
        assert_eq!((p.held.as_slice(), p.quarantine_hold), (&[0, 1][..], true));
        assert!(p.jobs.is_empty());
        // Released: routed as usual.
        record.quarantine_held = true;
        let p = plan_at(&env, HEAD, &record, T0);
        assert!(!p.quarantine_hold && p.held.is_empty());
        assert_eq!(p.jobs.len(), 2);
        // A route of its own: every recipient goes by the key's route (here a hold).
        env.quarantine = Some("route:held.test".into());
        let p = plan_at(&env, HEAD, &DeliveryRecord::new(env.id, 2), T0);
        assert_eq!(p.held, [0, 1]);
        assert!(!p.quarantine_hold);
    }

    #[test]
    fn a_reject_route_fails_with_its_reply_and_a_hold_route_parks() {
        let env = envelope("s@x.test", &["a@reject.test", "b@held.test", "c@a.test"]);
        let rec = DeliveryRecord::new(env.id, 3);
        let p = plan_at(&env, HEAD, &rec, T0);
        assert_eq!(p.failed.len(), 1);
        assert_eq!(p.failed[0].0, 0);
        assert_eq!(reply_of(&p.failed[0].1), "550 5.7.1 not here");
        let RcptResult::Failed { reply } = &p.failed[0].1 else {
            panic!("not failed: {:?}", p.failed[0].1);
        };
        assert_eq!(
            (
                reply.code,
                reply.enhanced,
                reply.text.as_str(),
                reply.remote.as_deref()
            ),
            (550, Some((5, 7, 1)), "not here", None)
        );
        assert_eq!(p.held, vec![1]);
        assert_eq!(p.jobs.keys().collect::<Vec<_>>(), vec!["mx:a.test"]);
    }

    #[test]
    fn the_hop_limit_fails_every_pending_recipient_before_routing() {
        let cfg = QueueConfig::default();
        let head: Vec<u8> = "Received: x\r\n".repeat(cfg.hop_limit + 1).into_bytes();
        let env = envelope("s@x.test", &["a@a.test", "b@held.test"]);
        let rec = DeliveryRecord::new(env.id, 2);
        let p = plan_at(&env, &head, &rec, T0);
        assert_eq!(p.failed.iter().map(|f| f.0).collect::<Vec<_>>(), vec![0, 1]);
        let want = format!(
            "554 5.4.6 too many hops ({} Received headers, limit {}): mail loop?",
            cfg.hop_limit + 1,
            cfg.hop_limit
        );
        assert_eq!(reply_of(&p.failed[0].1), want);
        assert!(p.jobs.is_empty() && p.held.is_empty());
    }

    #[test]
    fn exactly_the_hop_limit_is_still_delivered() {
        let cfg = QueueConfig::default();
        let head: Vec<u8> = "Received: x\r\n".repeat(cfg.hop_limit).into_bytes();
        let env = envelope("s@x.test", &["a@a.test"]);
        let rec = DeliveryRecord::new(env.id, 1);
        let p = plan_at(&env, &head, &rec, T0);
        assert!(p.failed.is_empty());
        assert_eq!(p.jobs.len(), 1);
    }

    #[test]
    fn an_expired_message_fails_with_its_last_error() {
        let cfg = QueueConfig::default();
        let env = envelope("s@x.test", &["a@a.test", "b@a.test"]);
        let mut rec = DeliveryRecord::new(env.id, 2);
        rec.attempts = 3;
        rec.recipients[0].status = RecipientStatus::Deferred {
            reply: "451 4.4.1 no answer".into(),
        };
        let life = i64::try_from(cfg.max_lifetime_secs).unwrap() * 1_000_000;
        let p = plan_at(&env, HEAD, &rec, T0 + life);
        let days = cfg.max_lifetime_secs / 86_400;
        assert_eq!(
            reply_of(&p.failed[0].1),
            format!(
                "554 4.4.7 message expired after {days} days in the queue; last error: 451 4.4.1 no answer"
            )
        );
        assert!(reply_of(&p.failed[1].1).ends_with("last error: "));
        assert_eq!(p.expired, Some(Duration::from_secs(cfg.max_lifetime_secs)));
        assert!(p.jobs.is_empty());
    }

    #[test]
    fn a_message_just_under_its_lifetime_is_still_tried() {
        let cfg = QueueConfig::default();
        let env = envelope("s@x.test", &["a@a.test"]);
        let mut rec = DeliveryRecord::new(env.id, 1);
        rec.attempts = 3;
        let life = i64::try_from(cfg.max_lifetime_secs).unwrap() * 1_000_000;
        let p = plan_at(&env, HEAD, &rec, T0 + life - 1);
        assert!(p.expired.is_none() && p.failed.is_empty());
        assert_eq!(p.jobs.len(), 1);
    }

    #[test]
    fn an_old_message_never_tried_gets_its_first_attempt() {
        // Expiry needs one attempt: a message that waited (a long outage, a backlog)
        // is tried once before it is given up.
        let env = envelope("s@x.test", &["a@a.test"]);
        let rec = DeliveryRecord::new(env.id, 1);
        let p = plan_at(&env, HEAD, &rec, T0 + 365 * DAY);
        assert!(p.expired.is_none() && p.failed.is_empty());
        assert_eq!(p.jobs.len(), 1);
    }

    #[test]
    fn an_arrival_in_the_future_is_age_zero() {
        let env = envelope("s@x.test", &["a@a.test"]);
        assert_eq!(age_of(&env, T0 - DAY), Duration::ZERO);
        assert_eq!(age_of(&env, T0 + DAY), Duration::from_secs(86_400));
    }

    #[test]
    fn received_lines_are_counted_in_the_header_only() {
        let m = b"Received: a\r\nreceived: b\r\nSubject: x\r\n\r\nReceived: not a header\r\n";
        assert_eq!(received_count(m), 2);
        assert_eq!(received_count(b""), 0);
        assert_eq!(received_count(b"Received:\n\n"), 1);
        assert_eq!(received_count(b"Receive\r\n"), 0);
    }

    #[test]
    fn domains_are_lower_cased_after_the_last_at() {
        assert_eq!(domain_of("\"a@b\"@Example.COM"), "example.com");
        assert_eq!(domain_of("postmaster"), "");
    }
}
