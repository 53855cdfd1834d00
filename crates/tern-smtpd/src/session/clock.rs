//! A session's time limits, without I/O: which deadline the next read has, and the
//! progress budget of message content.
//!
//! Three limits bound every wait for the client (docs/SMTP.md, "Connection limits under
//! attack"):
//!
//! - **Command**: a whole command line must arrive within `command` of the moment the
//!   server began waiting for it. Bytes arriving do not restart it, so a client sending a
//!   command one byte at a time is cut at the same moment as a silent one.
//! - **Content** ([`ContentBudget`]): DATA and BDAT content must keep arriving. The
//!   budget starts at `data`; time spent waiting for the client is taken from it, and
//!   every octet received gives back `1 / min_data_rate` seconds, never more than `data`
//!   in all. A client that stops is cut after `data`; one that trickles slower than
//!   `min_data_rate` is cut a little later; one faster never is. Time Tern spends itself
//!   (writing to the spool) is not charged.
//! - **Session**: the whole session ends `session` after it started. A message still
//!   arriving then gets `data` more to finish (under the same content budget).
//!
//! [`InForce`] is the set of limits of one moment: stress mode (see `crate::limits`)
//! lowers each to its stress value, and sessions recompute it at every wait.
//!
//! Invariant: no computation here panics or overflows, whatever the configured values
//! (an instant too far in the future is clamped to ten years from now).

use std::time::{Duration, Instant};

use crate::config::ListenerConfig;

/// Which limit ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// A command line did not arrive in time.
    Command,
    /// Message content stopped progressing.
    Content,
    /// The whole session lasted too long.
    Session,
}

/// The limits a session works under at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InForce {
    /// `timeouts.command`.
    pub command: Duration,
    /// `timeouts.data`: the content budget's cap.
    pub data: Duration,
    /// `timeouts.session`.
    pub session: Duration,
    /// `timeouts.tls_handshake`.
    pub tls_handshake: Duration,
    /// `timeouts.write`.
    pub write: Duration,
    /// `max_errors`.
    pub max_errors: u32,
    /// `max_junk_commands`.
    pub max_junk: u32,
    /// `min_data_rate`, octets per second (at least 1).
    pub min_data_rate: u64,
}

impl InForce {
    /// The limits of `config`, lowered to the stress values when `stress` is set (the
    /// stress command timeout also bounds writes and TLS handshakes).
    pub fn of(config: &ListenerConfig, stress: bool) -> InForce {
        let t = &config.timeouts;
        let s = &config.stress;
        let secs = Duration::from_secs;
        let normal = InForce {
            command: secs(t.command),
            data: secs(t.data),
            session: secs(t.session),
            tls_handshake: secs(t.tls_handshake),
            write: secs(t.write),
            max_errors: config.max_errors,
            max_junk: config.max_junk_commands,
            min_data_rate: config.min_data_rate.max(1),
        };
        if !stress {
            return normal;
        }
        let command = normal.command.min(secs(s.command_timeout));
        InForce {
            command,
            data: normal.data.min(secs(s.data_timeout)),
            tls_handshake: normal.tls_handshake.min(command),
            write: normal.write.min(command),
            max_errors: normal.max_errors.min(s.max_errors),
            max_junk: normal.max_junk.min(s.max_junk_commands),
            ..normal
        }
    }
}

/// `t + d`, clamped so it never overflows.
pub fn after(t: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
    t.checked_add(d.min(FAR)).unwrap_or(t)
}

/// How long message content may still go without progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentBudget {
    left: Duration,
}

impl ContentBudget {
    /// A full budget of `cap` (the `data` timeout in force).
    pub fn new(cap: Duration) -> ContentBudget {
        ContentBudget { left: cap }
    }

    /// What is left, under the cap in force now (stress may have lowered it).
    pub fn remaining(&self, cap: Duration) -> Duration {
        self.left.min(cap)
    }

    /// The client was waited for `waited` and sent `octets` octets meanwhile.
    pub fn spend(&mut self, waited: Duration, octets: usize, rate: u64, cap: Duration) {
        let nanos = (octets as u128).saturating_mul(1_000_000_000) / u128::from(rate.max(1));
        let credit = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.left = self
            .remaining(cap)
            .saturating_sub(waited)
            .saturating_add(credit)
            .min(cap);
    }
}

/// The deadline of a read starting `now`, and which limit it is.
///
/// `session_end` is when the session must end (its grace included, if a message is in
/// transfer); `command_since` is when the server began waiting for the command being
/// read (`None` when reading content); `content` is the budget of the message in
/// transfer, if any (it also bounds waiting for the next BDAT command).
pub fn deadline(
    now: Instant,
    session_end: Instant,
    command_since: Option<Instant>,
    content: Option<&ContentBudget>,
    limits: &InForce,
) -> (Instant, Expiry) {
    let mut best = (session_end, Expiry::Session);
    let mut consider = |at: Instant, why: Expiry| {
        if at < best.0 {
            best = (at, why);
        }
    };
    if let Some(since) = command_since {
        consider(after(since, limits.command), Expiry::Command);
    }
    if let Some(budget) = content {
        consider(after(now, budget.remaining(limits.data)), Expiry::Content);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn limits() -> InForce {
        InForce::of(&ListenerConfig::default(), false)
    }

    #[test]
    fn a_trickling_command_keeps_its_first_deadline() {
        let l = InForce {
            command: S(5),
            ..limits()
        };
        let start = Instant::now();
        let end = start + S(600);
        // The wait began at `start`; later reads (bytes trickling in) keep its deadline.
        for later in [0, 1, 4] {
            let now = start + S(later);
            assert_eq!(
                deadline(now, end, Some(start), None, &l),
                (start + S(5), Expiry::Command)
            );
        }
    }

    #[test]
    fn the_session_limit_wins_when_nearer() {
        let start = Instant::now();
        let l = limits();
        assert_eq!(
            deadline(start, start + S(2), Some(start), None, &l),
            (start + S(2), Expiry::Session)
        );
        let budget = ContentBudget::new(S(180));
        assert_eq!(
            deadline(start, start + S(2), None, Some(&budget), &l),
            (start + S(2), Expiry::Session)
        );
        assert_eq!(
            deadline(start, start + S(1000), None, Some(&budget), &l),
            (start + S(180), Expiry::Content)
        );
    }

    #[test]
    fn content_budget_is_spent_by_waiting_and_earned_by_octets() {
        let cap = S(10);
        let mut b = ContentBudget::new(cap);
        // 2 s of waiting for 500 octets at 500 octets/s: net loss of 1 s.
        b.spend(S(2), 500, 500, cap);
        assert_eq!(b.remaining(cap), S(9));
        // A burst never raises the budget above the cap.
        b.spend(Duration::ZERO, 1_000_000, 500, cap);
        assert_eq!(b.remaining(cap), cap);
        // One octet every second at a 500 octets/s floor: the budget runs out after
        // about ten seconds instead of never.
        let mut t = ContentBudget::new(cap);
        let mut seconds = 0;
        while t.remaining(cap) >= S(1) {
            t.spend(S(1), 1, 500, cap);
            seconds += 1;
        }
        assert_eq!(seconds, 10);
        // A lower cap (stress) applies at once.
        let b = ContentBudget::new(S(180));
        assert_eq!(b.remaining(S(10)), S(10));
    }

    #[test]
    fn stress_lowers_every_limit() {
        let config = ListenerConfig::default();
        let s = InForce::of(&config, true);
        assert_eq!(s.command, S(10));
        assert_eq!(s.data, S(10));
        assert_eq!(s.write, S(10));
        assert_eq!(s.tls_handshake, S(10));
        assert_eq!(s.max_errors, 3);
        assert_eq!(s.max_junk, 10);
        assert_eq!(s.session, S(600));
        // A stress value above the normal one does not raise it.
        let mut low = ListenerConfig::default();
        low.timeouts.command = 2;
        low.max_errors = 1;
        let s = InForce::of(&low, true);
        assert_eq!((s.command, s.max_errors), (S(2), 1));
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let now = Instant::now();
        let l = InForce {
            command: Duration::MAX,
            data: Duration::MAX,
            session: Duration::MAX,
            ..limits()
        };
        let end = after(now, l.session);
        let mut b = ContentBudget::new(l.data);
        b.spend(Duration::ZERO, usize::MAX, 1, l.data);
        let (at, _) = deadline(now, end, Some(now), Some(&b), &l);
        assert!(at > now);
    }
}
