//! Screening in the session (docs/SCREENING.md): the tests before the greeting, their
//! consequences at RCPT, and greylisting. The decisions are `tern-screen`'s; this is the
//! I/O around them.
//!
//! Before the greeting, a screened client (listener's `screen` on, not in a relay
//! network, not a local session) that the pass cache does not remember:
//! - gets the first line of the greeting, `220-<host> ESMTP Tern`, then nothing for
//!   `greet_wait`, while the DNS lists are asked in the background (each bounded by the
//!   resolver's timeout); anything it sends meanwhile is pre-greeting talk, kept in the
//!   input buffer (one read of at most `READ_CHUNK`, then no more reading until the
//!   greeting) and executed after it unless the session ends;
//! - is judged (`tern_screen::judge`): `drop` ends the session with `521`; `enforce`
//!   lets it go on and refuses every RCPT with `550`; `ignore` logs; a client that
//!   failed nothing is remembered in the pass cache.
//!
//! A client whose greeting pass still stands but whose list pass expired waits only for
//! the lists (no `220-` line, no wait). A client remembered for both pays nothing.
//!
//! Greylisting runs at RCPT, after the relay and local-recipient checks (so unknown users
//! still get their 550), for screened sessions of clients that neither are in a relay
//! network, nor authenticated, nor listed by an allow list.
//!
//! Events of refusals go through the screen's `EventGate` (once per kind, client
//! network and 10 minutes); metrics count every outcome.

use std::sync::Arc;
use std::time::Duration;

use tern_events::{catalog, fields};
use tern_metrics::{Reject, Screened};
use tern_proto::Reply;
use tern_screen::greylist::network_text;
use tern_screen::{Action, Refusal, Screen, Verdict};
use tokio::io::AsyncReadExt;

use super::{EndReason, Flow, READ_CHUNK, Session, displaced, wait_for_shutdown};
use crate::config::AuthMode;

/// Most octets of pre-greeting talk shown in event 2182.
const SAMPLE: usize = 40;

/// What screening decided for one session.
#[derive(Debug, Default)]
pub(super) struct ScreenState {
    /// The session is screened (see the module header).
    pub(super) on: bool,
    /// The reply every RCPT gets (a test failed under `enforce`).
    pub(super) refuse_rcpt: Option<Reply>,
    /// An allow list lists the client: no greylisting.
    pub(super) allow_listed: bool,
}

impl ScreenState {
    /// The state of a new session: screened when the listener screens and the client
    /// is not in a relay network.
    pub(super) fn for_session(
        screen: Option<&Arc<Screen>>,
        listener: &crate::ListenerConfig,
        client_may_relay: bool,
        local: bool,
    ) -> ScreenState {
        let enabled = screen.is_some_and(|s| s.settings().config.enabled);
        let listener_on = listener
            .screen
            .unwrap_or(enabled && listener.auth != AuthMode::Required);
        ScreenState {
            on: screen.is_some() && listener_on && !client_may_relay && !local,
            ..ScreenState::default()
        }
    }
}

/// `s` with anything but printable ASCII shown as `\xNN`, cut at [`SAMPLE`] octets.
fn sample(bytes: &[u8]) -> String {
    let mut s = String::new();
    for b in bytes.iter().take(SAMPLE) {
        if b.is_ascii_graphic() || *b == b' ' {
            s.push(char::from(*b));
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

impl Session {
    fn screen(&self) -> Option<Arc<Screen>> {
        self.ctx.shared.screen.clone()
    }

    /// The tests before the greeting (module header). `greeting` is the text of the
    /// greeting line. Ends the session (`Err`) when a test says `drop`.
    pub(super) async fn before_greeting(&mut self, greeting: &str) -> Flow {
        if !self.screen.on {
            return Ok(());
        }
        let Some(screen) = self.screen() else {
            return Ok(());
        };
        let settings = screen.settings();
        let ip = self.peer.ip();
        let metrics = tern_metrics::get();
        let before = screen
            .pass_cache()
            .get(ip, tern_watchdog::clock::unix_ms())
            .await;
        let greet_test = before.greet_until == 0;
        let lists_test = !settings.sites.is_empty() && before.lists_until == 0;
        if !greet_test && !lists_test {
            metrics.screened(Screened::PassCached);
            return Ok(());
        }
        // The lists run while the client waits; the task is aborted if the session ends
        // first.
        let lookups = lists_test.then(|| {
            let screen = Arc::clone(&screen);
            let sites = settings.sites.clone();
            AbortOnDrop(tokio::spawn(async move { screen.score(&sites, ip).await }))
        });
        let mut talked = false;
        if greet_test {
            self.out
                .extend_from_slice(format!("220-{greeting}\r\n").as_bytes());
            self.flush().await?;
            let stop_early = settings.config.pregreet == Action::Drop;
            talked = self
                .wait_for_greeting(settings.config.greet_wait.duration(), stop_early)
                .await?;
        }
        let score = match lookups {
            // Talked under `drop`: the session ends whatever the lists say.
            Some(_) if talked && settings.config.pregreet == Action::Drop => None,
            Some(mut task) => (&mut task.0).await.ok(),
            None => None,
        };
        let now = tern_watchdog::clock::unix_ms();
        let j = tern_screen::judge(&settings, before, greet_test, talked, score.as_ref(), now);
        let net = network_text(ip);
        let events = &self.ctx.shared.events;
        let gate = screen.gate();
        if let Some(s) = &score {
            for zone in &s.unanswered {
                metrics.screened(Screened::ListUnanswered);
                if gate.first(Refusal::Unanswered, zone, now) {
                    events.emit(
                        &catalog::SCREEN_LIST_UNANSWERED,
                        fields!("zone" => zone, "client" => ip),
                    );
                }
            }
        }
        if let Some(action) = j.pregreet {
            metrics.screened(Screened::Pregreet);
            if gate.first(Refusal::Pregreet, &net, now) {
                events.emit(
                    &catalog::SCREEN_PREGREET,
                    fields!(
                        "client" => self.peer,
                        "action" => action.as_str(),
                        "octets" => self.inbuf.len(),
                        "sample" => sample(&self.inbuf),
                    ),
                );
            }
        }
        let blocked_by = score
            .as_ref()
            .and_then(|s| s.blocked_by.first().cloned())
            .unwrap_or_default();
        if let (Some(action), Some(s)) = (j.listed, &score) {
            metrics.screened(Screened::Listed);
            if gate.first(Refusal::Listed, &net, now) {
                events.emit(
                    &catalog::SCREEN_LISTED,
                    fields!(
                        "client" => ip,
                        "score" => s.total,
                        "threshold" => settings.config.dnsbl_threshold,
                        "listed_by" => s.blocked_by.join(" "),
                        "action" => action.as_str(),
                    ),
                );
            }
        }
        if let (true, Some(s)) = (j.allow_listed, &score) {
            metrics.screened(Screened::AllowListed);
            if gate.first(Refusal::AllowListed, &net, now) {
                events.emit(
                    &catalog::SCREEN_ALLOW_LISTED,
                    fields!("client" => ip, "score" => s.total, "allowed_by" => s.allowed_by.join(" ")),
                );
            }
        }
        self.screen.allow_listed = j.allow_listed;
        if let Some(passed) = j.remember {
            metrics.screened(Screened::Passed);
            screen.pass_cache().put(ip, passed, now).await;
        }
        let listed_reply = |code: u16| {
            Reply::new(
                code,
                "5.7.1",
                format!("Service unavailable; client [{ip}] blocked using {blocked_by}"),
            )
        };
        if j.listed == Some(Action::Drop) {
            metrics.reject(Reject::Screen);
            return self
                .goodbye(listed_reply(521), EndReason::Screened("dnsbl"))
                .await;
        }
        if j.pregreet == Some(Action::Drop) {
            metrics.reject(Reject::Screen);
            return self
                .goodbye(
                    Reply::new(521, "5.5.1", "Protocol error"),
                    EndReason::Screened("pregreet"),
                )
                .await;
        }
        if j.listed == Some(Action::Enforce) {
            self.screen.refuse_rcpt = Some(listed_reply(550));
        } else if j.pregreet == Some(Action::Enforce) {
            self.screen.refuse_rcpt = Some(Reply::new(550, "5.5.1", "Protocol error"));
        }
        Ok(())
    }

    /// Waits `wait` for the final greeting line, reading once if the client talks;
    /// returns whether it did. With `stop_early`, returns as soon as it talks.
    async fn wait_for_greeting(
        &mut self,
        wait: Duration,
        stop_early: bool,
    ) -> Result<bool, EndReason> {
        let until = tokio::time::Instant::now() + wait;
        let mut talked = false;
        self.inbuf.reserve(READ_CHUNK);
        loop {
            let reading = !talked;
            let evictable = self.idle;
            tokio::select! {
                () = tokio::time::sleep_until(until) => return Ok(talked),
                r = self.conn.read_buf(&mut self.inbuf), if reading => match r {
                    Ok(0) => return Err(EndReason::ClientClosed),
                    Ok(_) => {
                        talked = true;
                        if stop_early {
                            return Ok(true);
                        }
                    }
                    Err(e) => return Err(EndReason::Io(e.to_string())),
                },
                _ = wait_for_shutdown(&mut self.shutdown) => {
                    let reply = Reply::new(421, "4.3.2", format!("{} Service shutting down, try again later", self.ctx.shared.hostname));
                    return self.goodbye(reply, EndReason::Shutdown).await.map(|()| false);
                }
                _ = displaced(&self.slot), if evictable => {
                    return self.evicted().await.map(|()| false);
                }
            }
        }
    }

    /// The refusal of every RCPT after a test failed under `enforce`.
    pub(super) fn screen_refusal(&self) -> Option<Reply> {
        let reply = self.screen.refuse_rcpt.clone()?;
        let m = tern_metrics::get();
        m.screened(Screened::Enforced);
        m.reject(Reject::Screen);
        Some(reply)
    }

    /// The screen, when this recipient is to be greylisted (see the module header).
    pub(super) fn greylisting(&self, may_relay: bool) -> Option<Arc<Screen>> {
        if !self.screen.on || may_relay || self.screen.allow_listed {
            return None;
        }
        self.screen().filter(|s| s.settings().config.greylist)
    }
}

/// Greylists `recipient` of a transaction from `sender`: `None` to go on, or the `451`.
pub(super) async fn greylist(
    screen: &Screen,
    events: &tern_events::EventLog,
    peer: std::net::SocketAddr,
    sender: &str,
    recipient: &str,
) -> Option<Reply> {
    let settings = screen.settings();
    let now = tern_watchdog::clock::unix_ms();
    let verdict = screen
        .greylist()
        .check(peer.ip(), sender, recipient, settings.policy(), now)
        .await;
    let m = tern_metrics::get();
    match verdict {
        Verdict::Greylisted { retry_in_ms, new } => {
            m.screened(Screened::Greylisted);
            m.reject(Reject::Screen);
            let secs = retry_in_ms.div_ceil(1000);
            let net = network_text(peer.ip());
            if screen.gate().first(Refusal::Greylisted, &net, now) {
                events.emit(
                    &catalog::SCREEN_GREYLISTED,
                    fields!(
                        "client" => peer,
                        "sender" => sender,
                        "recipient" => recipient,
                        "new" => new,
                        "retry_in_secs" => secs,
                    ),
                );
            }
            Some(Reply::new(
                451,
                "4.7.1",
                format!(
                    "{GREYLISTED} see https://www.rfc-editor.org/rfc/rfc6647 (try again in {secs} s)"
                ),
            ))
        }
        Verdict::Passed { after_ms } => {
            m.screened(Screened::GreylistPassed);
            events.emit(
                &catalog::SCREEN_GREYLIST_PASSED,
                fields!(
                    "client" => peer,
                    "network" => network_text(peer.ip()),
                    "sender" => sender,
                    "recipient" => recipient,
                    "after_secs" => after_ms / 1000,
                ),
            );
            None
        }
        Verdict::Known | Verdict::NetworkAllowed => {
            m.screened(Screened::GreylistKnown);
            None
        }
    }
}

/// How a greylisting reply starts (it does not count toward `max_errors`: a client
/// with many recipients gets one per recipient by design).
pub(super) const GREYLISTED: &str = "Greylisted,";

/// Aborts a spawned task when dropped (the session ended before it finished).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_printable_and_short() {
        assert_eq!(sample(b"EHLO x\r\n"), "EHLO x\\x0d\\x0a");
        assert_eq!(sample(&[b'a'; 100]).len(), SAMPLE);
        assert_eq!(sample(b"\x1b[2J"), "\\x1b[2J");
    }

    #[test]
    fn greylisting_does_not_count_toward_max_errors() {
        let grey = Reply::new(
            451,
            "4.7.1",
            format!("{GREYLISTED} see x (try again in 5 s)"),
        );
        assert!(!super::super::counts_as_error(&grey));
        let limited = Reply::new(451, "4.7.1", "Recipient rate limit exceeded");
        assert!(super::super::counts_as_error(&limited));
        assert!(super::super::counts_as_error(&Reply::new(
            550,
            "5.5.1",
            "Protocol error"
        )));
    }

    #[test]
    fn relay_networks_local_sessions_and_submission_are_not_screened() {
        let screen = Arc::new(Screen::new(
            &tern_screen::ScreenConfig {
                enabled: true,
                ..Default::default()
            },
            None,
            Arc::new(tern_screen::MemoryPassCache::new(4)),
            Arc::new(tern_screen::MemoryGreylist::default()),
        ));
        let mx = crate::ListenerConfig::default();
        let on = |l: &crate::ListenerConfig, relay: bool, local: bool| {
            ScreenState::for_session(Some(&screen), l, relay, local).on
        };
        assert!(on(&mx, false, false));
        assert!(!on(&mx, true, false), "relay network");
        assert!(!on(&mx, false, true), "local session");
        assert!(!ScreenState::for_session(None, &mx, false, false).on);
        let submission = crate::ListenerConfig {
            auth: AuthMode::Required,
            ..crate::ListenerConfig::default()
        };
        assert!(!on(&submission, false, false));
        let forced = crate::ListenerConfig {
            screen: Some(true),
            ..submission
        };
        assert!(on(&forced, false, false));
        let off = crate::ListenerConfig {
            screen: Some(false),
            ..crate::ListenerConfig::default()
        };
        assert!(!on(&off, false, false));
    }
}
