//! Rate limits of the SMTP server: the `[limits]` section and the checks a session makes
//! at each step, over a [`tern_limits::RateLimiter`] (docs/LIMITS.md).
//!
//! - At a new connection (before the greeting): connections per window of the client
//!   network (`421 4.7.0`, then close).
//! - At MAIL FROM: messages per window of the client network, of the authenticated user
//!   and of the sender domain, in one all-or-nothing check (`451 4.7.1`).
//! - At each RCPT that would be accepted: recipients per window of the client network,
//!   of the user and of the sender domain (`451 4.7.1`). Recipients per message are the listener's
//!   `max_recipients` (`452 4.5.3`), not a key of this section.
//!
//! Clients in `relay.networks` skip the per-client limits while
//! `exempt_relay_networks` holds (Postfix's `smtpd_client_event_limit_exceptions =
//! $mynetworks`); the user and sender-domain limits apply to every client. The null
//! sender (`<>`) has no domain and so no sender-domain limit.
//!
//! The configuration is read through an `ArcSwap` (a reload replaces it; the limiter's
//! table, with what each key has spent, stays). Nothing here holds a lock; the limiter's
//! own is never held across an `.await`.
//!
//! Trust: the client address, the sender domain (already checked by
//! `relay::check_sender`) and the authenticated name come from the peer. They reach
//! replies and events only through [`Limited`], which shows a user name with its control
//! and non-ASCII characters replaced.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Deserialize;
use tern_events::EventDef;
use tern_events::catalog;
use tern_limits::{Charge, ClientNet, Decision, Key, LimitKind, MemoryLimiter, Rate, RateLimiter};
use tern_metrics::RateLimited;
use tern_proto::Reply;

use crate::config::ConfigProblem;

/// `[limits]`: rate limits, all off by default (as Postfix's anvil limits are).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct LimitsConfig {
    /// Connections per window from one client network (Postfix
    /// `smtpd_client_connection_rate_limit`).
    pub client_connections: Option<Rate>,
    /// Messages (MAIL FROM) per window from one client network (Postfix
    /// `smtpd_client_message_rate_limit`).
    pub client_messages: Option<Rate>,
    /// Recipients (RCPT TO accepted) per window from one client network (Postfix
    /// `smtpd_client_recipient_rate_limit`).
    pub client_recipients: Option<Rate>,
    /// Messages per window from one authenticated user.
    pub user_messages: Option<Rate>,
    /// Recipients per window from one authenticated user.
    pub user_recipients: Option<Rate>,
    /// Messages per window from one sender domain.
    pub sender_domain_messages: Option<Rate>,
    /// Recipients per window of mail from one sender domain.
    pub sender_domain_recipients: Option<Rate>,
    /// Prefix length that makes an IPv4 client network for the per-client limits.
    pub client_prefix_v4: u8,
    /// Prefix length that makes an IPv6 client network for the per-client limits.
    pub client_prefix_v6: u8,
    /// Clients in `relay.networks` skip the per-client limits.
    pub exempt_relay_networks: bool,
    /// Most keys the limiter tracks (restart to change); past it the key nearest to a
    /// full bucket is forgotten.
    pub max_tracked_keys: usize,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            client_connections: None,
            client_messages: None,
            client_recipients: None,
            user_messages: None,
            user_recipients: None,
            sender_domain_messages: None,
            sender_domain_recipients: None,
            client_prefix_v4: 32,
            client_prefix_v6: 64,
            exempt_relay_networks: true,
            max_tracked_keys: 100_000,
        }
    }
}

impl LimitsConfig {
    /// Every semantic problem, keyed under `limits` (rates are checked when parsed).
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if !(8..=32).contains(&self.client_prefix_v4) {
            p.push(ConfigProblem::new(
                "limits.client_prefix_v4",
                "must be between 8 and 32",
            ));
        }
        if !(16..=128).contains(&self.client_prefix_v6) {
            p.push(ConfigProblem::new(
                "limits.client_prefix_v6",
                "must be between 16 and 128",
            ));
        }
        if !(1000..=10_000_000).contains(&self.max_tracked_keys) {
            p.push(ConfigProblem::new(
                "limits.max_tracked_keys",
                "must be between 1000 and 10000000",
            ));
        }
        p
    }

    fn rate(&self, kind: LimitKind) -> Option<Rate> {
        match kind {
            LimitKind::ClientConnections => self.client_connections,
            LimitKind::ClientMessages => self.client_messages,
            LimitKind::ClientRecipients => self.client_recipients,
            LimitKind::UserMessages => self.user_messages,
            LimitKind::UserRecipients => self.user_recipients,
            LimitKind::SenderDomainMessages => self.sender_domain_messages,
            LimitKind::SenderDomainRecipients => self.sender_domain_recipients,
            _ => None,
        }
    }

    fn client_net(&self, ip: IpAddr) -> ClientNet {
        ClientNet::of(ip, self.client_prefix_v4, self.client_prefix_v6)
    }
}

/// The server's rate limits: the configuration in force and the limiter.
pub struct RateLimits {
    config: ArcSwap<LimitsConfig>,
    limiter: Arc<dyn RateLimiter>,
}

impl RateLimits {
    /// Limits from `config` over the in-memory limiter.
    pub fn in_memory(config: &LimitsConfig) -> RateLimits {
        let limiter = Arc::new(MemoryLimiter::new(config.max_tracked_keys));
        RateLimits::new(config, limiter)
    }

    /// Limits from `config` over any limiter.
    pub fn new(config: &LimitsConfig, limiter: Arc<dyn RateLimiter>) -> RateLimits {
        RateLimits {
            config: ArcSwap::from_pointee(config.clone()),
            limiter,
        }
    }

    /// No limit at all (`tern sendmail -bs`, tests).
    pub fn disabled() -> RateLimits {
        RateLimits::in_memory(&LimitsConfig {
            max_tracked_keys: 1,
            ..LimitsConfig::default()
        })
    }

    /// Puts `config` in force (a reload); what keys have spent is kept.
    pub fn reload(&self, config: &LimitsConfig) {
        self.config.store(Arc::new(config.clone()));
    }

    /// A new connection from `client` (`relay_client`: in a relay network).
    pub async fn connection(
        &self,
        client: IpAddr,
        relay_client: bool,
        now_ms: u64,
    ) -> Result<(), Limited> {
        let config = self.config.load();
        let mut charges = Vec::new();
        if !(relay_client && config.exempt_relay_networks)
            && let Some(rate) = config.rate(LimitKind::ClientConnections)
        {
            charges.push(Charge {
                key: Key::client_connections(config.client_net(client)),
                rate,
                cost: 1,
            });
        }
        self.check(&charges, now_ms).await
    }

    /// MAIL FROM `sender` (canonical form, empty for `<>`) from `client`, authenticated
    /// as `user` (`None`: not authenticated).
    pub async fn message(
        &self,
        client: IpAddr,
        relay_client: bool,
        user: Option<&str>,
        sender: &str,
        now_ms: u64,
    ) -> Result<(), Limited> {
        let config = self.config.load();
        let charges = charges_of(&MESSAGE, &config, client, relay_client, user, sender, 1);
        self.check(&charges, now_ms).await
    }

    /// [`message`](RateLimits::message), setting aside in the same call up to
    /// `recipients()` units of each recipient limit the transaction's RCPTs will spend
    /// (the RCPT commands the client pipelined after MAIL FROM, at least 1; counted only
    /// when a recipient limit is set): with a shared limiter, one round trip for the
    /// message and its recipients. The
    /// [`Allowance`] goes with the transaction; [`recipient`](RateLimits::recipient)
    /// spends from it first, and it gives back what is left when dropped.
    #[allow(clippy::too_many_arguments)]
    pub async fn message_ahead(
        &self,
        client: IpAddr,
        relay_client: bool,
        user: Option<&str>,
        sender: &str,
        recipients: impl FnOnce() -> u32,
        now_ms: u64,
    ) -> Result<Allowance, Limited> {
        let config = self.config.load();
        let charges = charges_of(&MESSAGE, &config, client, relay_client, user, sender, 1);
        let mut ahead = charges_of(&RECIPIENT, &config, client, relay_client, user, sender, 1);
        if ahead.is_empty() {
            self.check(&charges, now_ms).await?;
            return Ok(Allowance::default());
        }
        let want = recipients().max(1);
        for c in &mut ahead {
            c.cost = want;
        }
        let (decision, aside) = self.limiter.check_ahead(&charges, &ahead, now_ms).await;
        let units: Vec<Charge> = ahead
            .into_iter()
            .zip(aside)
            .filter(|(_, n)| *n > 0)
            .map(|(c, n)| Charge { cost: n, ..c })
            .collect();
        let allowance = Allowance {
            units,
            limiter: Some(Arc::clone(&self.limiter)),
        };
        refusal(&charges, decision)?;
        Ok(allowance)
    }

    /// One recipient about to be accepted, in a transaction from `sender` by `user`,
    /// from `client`: spent from `allowance` where it holds units of a limit, from the
    /// limiter for the others (all or nothing).
    pub async fn recipient(
        &self,
        client: IpAddr,
        relay_client: bool,
        user: Option<&str>,
        sender: &str,
        allowance: &mut Allowance,
        now_ms: u64,
    ) -> Result<(), Limited> {
        let config = self.config.load();
        let charges = charges_of(&RECIPIENT, &config, client, relay_client, user, sender, 1);
        let taken = allowance.take(&charges);
        let rest: Vec<Charge> = charges
            .iter()
            .zip(&taken)
            .filter(|(_, t)| !**t)
            .map(|(c, _)| c.clone())
            .collect();
        let out = self.check(&rest, now_ms).await;
        if out.is_err() {
            allowance.put_back(&charges, &taken);
        }
        out
    }

    async fn check(&self, charges: &[Charge], now_ms: u64) -> Result<(), Limited> {
        if charges.is_empty() {
            return Ok(());
        }
        refusal(charges, self.limiter.check(charges, now_ms).await)
    }
}

/// The answer of a check of `charges` as the session sees it.
fn refusal(charges: &[Charge], decision: Decision) -> Result<(), Limited> {
    match decision {
        Decision::Allowed => Ok(()),
        Decision::Refused(r) => {
            let Some(c) = charges.get(r.charge) else {
                // A backend naming no charge of ours: refuse on the first.
                return Err(Limited::of(charges.first(), None, true));
            };
            Err(Limited::of(Some(c), r.retry_after_ms, r.first_in_window))
        }
    }
}

/// Units of the recipient limits set aside for one transaction at MAIL FROM
/// ([`RateLimits::message_ahead`]): its RCPTs spend them without asking the limiter. What
/// is left when the transaction ends (the message accepted, RSET, a new MAIL, the
/// session gone) is given back to the limiter by `Drop`.
#[derive(Default)]
pub struct Allowance {
    /// Units left per bucket (`cost`: the units).
    units: Vec<Charge>,
    limiter: Option<Arc<dyn RateLimiter>>,
}

impl std::fmt::Debug for Allowance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Allowance")
            .field("units", &self.units)
            .finish_non_exhaustive()
    }
}

impl Allowance {
    /// Units left of the bucket of `charge` (its key and rate).
    pub fn left(&self, charge: &Charge) -> u32 {
        self.units
            .iter()
            .find(|u| u.key == charge.key && u.rate == charge.rate)
            .map_or(0, |u| u.cost)
    }

    /// Takes one charge's cost from the units of its bucket where there are enough; says
    /// which charges it took.
    fn take(&mut self, charges: &[Charge]) -> Vec<bool> {
        charges
            .iter()
            .map(|c| {
                match self
                    .units
                    .iter_mut()
                    .find(|u| u.key == c.key && u.rate == c.rate && u.cost >= c.cost)
                {
                    Some(u) => {
                        u.cost -= c.cost;
                        true
                    }
                    None => false,
                }
            })
            .collect()
    }

    /// Returns what [`take`](Allowance::take) took.
    fn put_back(&mut self, charges: &[Charge], taken: &[bool]) {
        for (c, _) in charges.iter().zip(taken).filter(|(_, t)| **t) {
            if let Some(u) = self
                .units
                .iter_mut()
                .find(|u| u.key == c.key && u.rate == c.rate)
            {
                u.cost = u.cost.saturating_add(c.cost);
            }
        }
    }
}

impl Drop for Allowance {
    fn drop(&mut self) {
        let unspent: Vec<Charge> = self.units.drain(..).filter(|u| u.cost > 0).collect();
        if let (Some(limiter), false) = (&self.limiter, unspent.is_empty()) {
            limiter.give_back(&unspent);
        }
    }
}

/// The keys a message (or a recipient) is charged to: one constructor per who.
struct Event {
    client: fn(ClientNet) -> Key,
    user: fn(&str) -> Key,
    sender_domain: fn(&str) -> Key,
}

const MESSAGE: Event = Event {
    client: Key::client_messages,
    user: Key::user_messages,
    sender_domain: Key::sender_domain_messages,
};

const RECIPIENT: Event = Event {
    client: Key::client_recipients,
    user: Key::user_recipients,
    sender_domain: Key::sender_domain_recipients,
};

/// The charges of `cost` units of one `event` to the client network (unless exempt), the
/// user and the sender domain, for the limits configured.
fn charges_of(
    event: &Event,
    config: &LimitsConfig,
    client: IpAddr,
    relay_client: bool,
    user: Option<&str>,
    sender: &str,
    cost: u32,
) -> Vec<Charge> {
    let mut charges = Vec::new();
    let mut add = |key: Key| {
        if let Some(rate) = config.rate(key.kind()) {
            charges.push(Charge { key, rate, cost });
        }
    };
    if !(relay_client && config.exempt_relay_networks) {
        add((event.client)(config.client_net(client)));
    }
    if let Some(user) = user {
        add((event.user)(user));
    }
    if let Some(domain) = sender_domain(sender) {
        add((event.sender_domain)(domain));
    }
    charges
}

fn sender_domain(sender: &str) -> Option<&str> {
    let domain = tern_proto::address::domain_of(sender);
    (!sender.is_empty() && !domain.is_empty()).then_some(domain)
}

/// A limit that refused a step: what the reply, the event and the metrics say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// Which limit.
    pub kind: LimitKind,
    /// Whom it counts, printable (`192.0.2.1/32`, a user, a domain).
    pub subject: String,
    /// The limit.
    pub rate: Option<Rate>,
    /// Seconds until the step would pass (rounded up); `None`: unknown or never.
    pub retry_after_secs: Option<u64>,
    /// The first refusal of this key in its window: log it (once per key and window).
    pub first_in_window: bool,
}

impl Limited {
    fn of(charge: Option<&Charge>, retry_after_ms: Option<u64>, first: bool) -> Limited {
        Limited {
            kind: charge.map_or(LimitKind::ClientMessages, |c| c.key.kind()),
            subject: charge.map_or_else(String::new, |c| printable(&c.key.to_string())),
            rate: charge.map(|c| c.rate),
            retry_after_secs: retry_after_ms.map(|ms| ms.div_ceil(1000)),
            first_in_window: first,
        }
    }

    /// The reply: `421 4.7.0` for connections (the caller closes), else `451 4.7.1`,
    /// saying in plain text which limit.
    pub fn reply(&self, hostname: &str) -> Reply {
        let (what, whom) = match self.kind {
            LimitKind::ClientConnections => ("Connection", "client network"),
            LimitKind::ClientMessages => ("Message", "client network"),
            LimitKind::ClientRecipients => ("Recipient", "client network"),
            LimitKind::UserMessages => ("Message", "user"),
            LimitKind::UserRecipients => ("Recipient", "user"),
            LimitKind::SenderDomainMessages => ("Message", "sender domain"),
            LimitKind::SenderDomainRecipients => ("Recipient", "sender domain"),
            _ => ("Rate", "client"),
        };
        let limit = self
            .rate
            .map(|r| format!(" ({} per {})", r.count(), period_text(&r)))
            .unwrap_or_default();
        let when = match self.retry_after_secs {
            Some(s) => format!("try again in {s} s"),
            None => "try again later".into(),
        };
        let text = format!(
            "{what} rate limit exceeded for {whom} {}{limit}, {when}",
            self.subject
        );
        if self.kind == LimitKind::ClientConnections {
            Reply::new(421, "4.7.0", format!("{hostname} {text}"))
        } else {
            Reply::new(451, "4.7.1", text)
        }
    }

    /// The event logged (once per key and window).
    pub fn event(&self) -> &'static EventDef {
        match self.kind {
            LimitKind::ClientConnections => &catalog::LIMIT_CLIENT_CONNECTIONS,
            LimitKind::ClientRecipients => &catalog::LIMIT_CLIENT_RECIPIENTS,
            LimitKind::UserMessages => &catalog::LIMIT_USER_MESSAGES,
            LimitKind::UserRecipients => &catalog::LIMIT_USER_RECIPIENTS,
            LimitKind::SenderDomainMessages => &catalog::LIMIT_SENDER_DOMAIN_MESSAGES,
            LimitKind::SenderDomainRecipients => &catalog::LIMIT_SENDER_DOMAIN_RECIPIENTS,
            _ => &catalog::LIMIT_CLIENT_MESSAGES,
        }
    }

    /// The metrics label.
    pub fn metric(&self) -> RateLimited {
        match self.kind {
            LimitKind::ClientConnections => RateLimited::ClientConnections,
            LimitKind::ClientRecipients => RateLimited::ClientRecipients,
            LimitKind::UserMessages => RateLimited::UserMessages,
            LimitKind::UserRecipients => RateLimited::UserRecipients,
            LimitKind::SenderDomainMessages => RateLimited::SenderDomainMessages,
            LimitKind::SenderDomainRecipients => RateLimited::SenderDomainRecipients,
            _ => RateLimited::ClientMessages,
        }
    }

    /// Counts the refusal and, the first time in the window, logs it.
    pub fn record(&self, events: &tern_events::EventLog, client: std::net::SocketAddr) {
        let m = tern_metrics::get();
        m.rate_limited(self.metric());
        m.reject(tern_metrics::Reject::Limits);
        if self.first_in_window {
            events.emit(
                self.event(),
                tern_events::fields!(
                    "client" => client,
                    "limit" => self.kind.as_str(),
                    "key" => self.subject,
                    "rate" => self.rate.map(|r| r.to_string()).unwrap_or_default(),
                    "retry_after_secs" => self.retry_after_secs.unwrap_or(0),
                ),
            );
        }
    }
}

/// `1m`, `2s`, `1h`: the period of a rate as its configuration writes it.
fn period_text(rate: &Rate) -> String {
    let text = rate.to_string();
    match text.split_once('/') {
        Some((_, period)) => period.to_string(),
        None => text,
    }
}

/// `s` with anything but printable ASCII replaced by `?` (a user name in a reply).
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000_000;

    fn rate(s: &str) -> Option<Rate> {
        s.parse().ok()
    }

    fn block<F: std::future::Future>(f: F) -> F::Output {
        // The in-memory limiter's future is ready at its first poll.
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the in-memory limiter must not wait"),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn per_user_limits_count_the_user_across_addresses_and_domains() {
        let limits = RateLimits::in_memory(&LimitsConfig {
            user_messages: rate("2/1h"),
            user_recipients: rate("3/1h"),
            ..LimitsConfig::default()
        });
        let alice = Some("alice");
        for (client, sender) in [("192.0.2.1", "a@one.test"), ("198.51.100.9", "a@two.test")] {
            assert_eq!(
                block(limits.message(ip(client), false, alice, sender, T0)),
                Ok(())
            );
        }
        let refused = block(limits.message(ip("203.0.113.5"), true, alice, "a@three.test", T0));
        let Err(l) = refused else {
            panic!("a third message in the hour allowed");
        };
        assert_eq!(
            (l.kind, l.subject.as_str()),
            (LimitKind::UserMessages, "alice")
        );
        assert!(l.first_in_window);
        let reply = l.reply("mx.test");
        assert_eq!((reply.code, reply.status.as_deref()), (451, Some("4.7.1")));
        let text = reply.lines.join(" ");
        assert!(
            text.contains("Message rate limit exceeded for user alice (2 per 1h)"),
            "{text}"
        );
        assert!(text.contains("try again in 1800 s"), "{text}");
        // Another user, or none, is not held back.
        assert_eq!(
            block(limits.message(ip("192.0.2.1"), false, Some("bob"), "b@one.test", T0)),
            Ok(())
        );
        assert_eq!(
            block(limits.message(ip("192.0.2.1"), false, None, "c@one.test", T0)),
            Ok(())
        );
        // Recipients: three, then refused, logged once.
        for _ in 0..3 {
            assert_eq!(
                block(limits.recipient(
                    ip("192.0.2.1"),
                    false,
                    alice,
                    "a@one.test",
                    &mut Allowance::default(),
                    T0
                )),
                Ok(())
            );
        }
        let first = block(limits.recipient(
            ip("192.0.2.1"),
            false,
            alice,
            "a@one.test",
            &mut Allowance::default(),
            T0,
        ));
        let second = block(limits.recipient(
            ip("192.0.2.1"),
            false,
            alice,
            "a@one.test",
            &mut Allowance::default(),
            T0 + 1000,
        ));
        assert!(
            matches!(&first, Err(l) if l.kind == LimitKind::UserRecipients && l.first_in_window)
        );
        assert!(matches!(&second, Err(l) if !l.first_in_window));
    }

    /// A limiter that answers every check Allowed, sets aside what is asked, and
    /// records what it was asked.
    #[derive(Default)]
    struct Recording {
        checks: std::sync::Mutex<Vec<(Vec<Charge>, Vec<Charge>)>>,
        given_back: std::sync::Mutex<Vec<Charge>>,
    }

    impl RateLimiter for Recording {
        fn check<'a>(
            &'a self,
            charges: &'a [Charge],
            _now_ms: u64,
        ) -> tern_limits::PendingDecision<'a> {
            if let Ok(mut c) = self.checks.lock() {
                c.push((charges.to_vec(), Vec::new()));
            }
            Box::pin(std::future::ready(Decision::Allowed))
        }

        fn check_ahead<'a>(
            &'a self,
            charges: &'a [Charge],
            ahead: &'a [Charge],
            _now_ms: u64,
        ) -> tern_limits::PendingAhead<'a> {
            if let Ok(mut c) = self.checks.lock() {
                c.push((charges.to_vec(), ahead.to_vec()));
            }
            let aside = ahead.iter().map(|c| c.cost).collect();
            Box::pin(std::future::ready((Decision::Allowed, aside)))
        }

        fn give_back(&self, unspent: &[Charge]) {
            if let Ok(mut g) = self.given_back.lock() {
                g.extend_from_slice(unspent);
            }
        }
    }

    #[test]
    fn pipelined_recipients_are_set_aside_at_mail_and_the_rest_given_back() {
        let config = LimitsConfig {
            client_messages: rate("100/1h"),
            client_recipients: rate("500/1h"),
            sender_domain_recipients: rate("500/1h"),
            ..LimitsConfig::default()
        };
        let recording = Arc::new(Recording::default());
        let limits = RateLimits::new(&config, recording.clone());
        let client = ip("192.0.2.1");
        // MAIL FROM with 3 RCPTs pipelined: one call, 3 units of each recipient limit.
        let mut allowance = block(limits.message_ahead(client, false, None, "s@a.test", || 3, T0))
            .expect("allowed");
        let calls = |r: &Recording| r.checks.lock().map(|c| c.len()).unwrap_or(0);
        assert_eq!(calls(&recording), 1);
        {
            let checks = recording.checks.lock().expect("lock");
            let (charges, ahead) = &checks[0];
            assert_eq!(charges.len(), 1, "the client's message limit");
            assert_eq!(
                ahead.len(),
                2,
                "the client's and the domain's recipient limits"
            );
            assert!(ahead.iter().all(|c| c.cost == 3));
        }
        // Two RCPTs spend from it: no call.
        for _ in 0..2 {
            assert_eq!(
                block(limits.recipient(client, false, None, "s@a.test", &mut allowance, T0)),
                Ok(())
            );
        }
        assert_eq!(calls(&recording), 1, "recipients spent from the allowance");
        // The transaction ends with one unit of each left: given back.
        drop(allowance);
        let back = recording.given_back.lock().expect("lock").clone();
        assert_eq!(back.len(), 2);
        assert!(back.iter().all(|c| c.cost == 1), "{back:?}");
        // Without an allowance, each RCPT is a call.
        let mut none = Allowance::default();
        assert_eq!(
            block(limits.recipient(client, false, None, "s@a.test", &mut none, T0)),
            Ok(())
        );
        assert_eq!(calls(&recording), 2);
    }

    #[test]
    fn a_refused_recipient_spends_nothing_of_the_allowance() {
        // The in-memory limiter sets nothing aside: the allowance below is built by
        // hand, for the client's limit only; the user's limit is checked and refuses.
        let config = LimitsConfig {
            client_recipients: rate("500/1h"),
            user_recipients: rate("1/1h"),
            ..LimitsConfig::default()
        };
        let limits = RateLimits::in_memory(&config);
        let client = ip("192.0.2.1");
        let own = charges_of(&RECIPIENT, &config, client, false, Some("u"), "", 1);
        let mut allowance = Allowance {
            units: vec![Charge {
                cost: 2,
                ..own[0].clone()
            }],
            limiter: None,
        };
        assert_eq!(
            block(limits.recipient(client, false, Some("u"), "", &mut allowance, T0)),
            Ok(())
        );
        assert_eq!(allowance.left(&own[0]), 1);
        let Err(l) = block(limits.recipient(client, false, Some("u"), "", &mut allowance, T0))
        else {
            panic!("the user's second recipient allowed");
        };
        assert_eq!(l.kind, LimitKind::UserRecipients);
        assert_eq!(allowance.left(&own[0]), 1, "put back");
    }

    #[test]
    fn relay_networks_skip_only_the_per_client_limits() {
        let config = LimitsConfig {
            client_connections: rate("1/1m"),
            client_messages: rate("1/1m"),
            sender_domain_messages: rate("1/1m"),
            ..LimitsConfig::default()
        };
        let limits = RateLimits::in_memory(&config);
        let lan = ip("10.0.0.1");
        for _ in 0..5 {
            assert_eq!(block(limits.connection(lan, true, T0)), Ok(()));
        }
        assert_eq!(
            block(limits.message(lan, true, None, "x@a.test", T0)),
            Ok(())
        );
        let Err(l) = block(limits.message(lan, true, None, "y@A.test", T0)) else {
            panic!("the sender domain limit does not apply to relay networks");
        };
        assert_eq!(
            (l.kind, l.subject.as_str()),
            (LimitKind::SenderDomainMessages, "a.test")
        );
        // Not exempt: the client's own limits apply.
        limits.reload(&LimitsConfig {
            exempt_relay_networks: false,
            ..config
        });
        assert_eq!(block(limits.connection(lan, true, T0)), Ok(()));
        let Err(l) = block(limits.connection(lan, true, T0)) else {
            panic!("second connection in the minute allowed");
        };
        let reply = l.reply("mx.test");
        assert_eq!((reply.code, reply.status.as_deref()), (421, Some("4.7.0")));
        assert!(
            reply.lines.join(" ").contains(
                "Connection rate limit exceeded for client network 10.0.0.1/32 (1 per 1m)"
            )
        );
        // The null sender has no domain limit.
        assert_eq!(
            block(limits.message(ip("192.0.2.1"), false, None, "", T0)),
            Ok(())
        );
    }

    #[test]
    fn client_recipients_count_per_network_and_name_it() {
        let limits = RateLimits::in_memory(&LimitsConfig {
            client_recipients: rate("2/1m"),
            client_prefix_v4: 24,
            ..LimitsConfig::default()
        });
        for client in ["192.0.2.1", "192.0.2.200"] {
            assert_eq!(
                block(limits.recipient(ip(client), false, None, "", &mut Allowance::default(), T0)),
                Ok(())
            );
        }
        // Same /24: refused; a relay-network client is exempt.
        let Err(l) = block(limits.recipient(
            ip("192.0.2.9"),
            false,
            None,
            "",
            &mut Allowance::default(),
            T0,
        )) else {
            panic!("a third recipient from the /24 allowed");
        };
        assert_eq!(l.kind, LimitKind::ClientRecipients);
        assert_eq!(l.metric(), RateLimited::ClientRecipients);
        assert_eq!(l.event().id, 2138);
        let text = l.reply("mx.test").lines.join(" ");
        assert!(
            text.contains(
                "Recipient rate limit exceeded for client network 192.0.2.0/24 (2 per 1m)"
            ),
            "{text}"
        );
        assert_eq!(
            block(limits.recipient(
                ip("192.0.2.9"),
                true,
                None,
                "",
                &mut Allowance::default(),
                T0
            )),
            Ok(())
        );
        assert_eq!(
            block(limits.recipient(
                ip("198.51.100.1"),
                false,
                None,
                "",
                &mut Allowance::default(),
                T0
            )),
            Ok(())
        );
    }

    #[test]
    fn a_user_name_is_shown_printable() {
        let limits = RateLimits::in_memory(&LimitsConfig {
            user_messages: rate("1/1m"),
            ..LimitsConfig::default()
        });
        let user = Some("ev il\r\nname\u{e9}");
        let _ = block(limits.message(ip("192.0.2.1"), false, user, "", T0));
        let Err(l) = block(limits.message(ip("192.0.2.1"), false, user, "", T0)) else {
            panic!("allowed");
        };
        assert_eq!(l.subject, "ev?il??name?");
    }

    #[test]
    fn problems_name_their_keys() {
        let bad = LimitsConfig {
            client_prefix_v4: 7,
            client_prefix_v6: 129,
            max_tracked_keys: 10,
            ..LimitsConfig::default()
        };
        let keys: Vec<String> = bad.problems().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "limits.client_prefix_v4",
                "limits.client_prefix_v6",
                "limits.max_tracked_keys"
            ]
        );
        assert!(LimitsConfig::default().problems().is_empty());
    }
}
