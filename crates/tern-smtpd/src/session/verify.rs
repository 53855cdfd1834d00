//! Inbound verification in the session (`[verify]`, tern-authcheck, docs/FILTERING.md).
//!
//! SPF starts at MAIL FROM in a task of its own ([`SpfTask`]) and is awaited only at the
//! end of the data. While a message is verified its content is kept in memory
//! ([`Sink`]): the Received header and the content are written to the spool draft only at
//! the end of the data, after the Authentication-Results field, so the stored message
//! carries it at the top. A message that passes `max_size`, or finds the process-wide
//! budget used up, is written out at that point (SPF awaited, the header decided on SPF
//! alone) and the rest streamed as usual.
//!
//! Invariants:
//! - Memory per session: at most `max_size` octets of content held, reserved from the
//!   process-wide budget in steps and given back when the message ends however it ends
//!   (`Drop`).
//! - The SPF task never outlives its transaction (aborted on drop) and never makes the
//!   reply wait past its deadline (MAIL FROM + `timeout`).
//! - Earlier Authentication-Results fields claiming Tern's authserv-id, and any
//!   `X-Tern-Quarantine`, are removed from the header section before it is stored (only
//!   when the whole header section was held).
//! - Nothing is written to the draft for a message that verification refuses.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_authcheck::results::SpfCheck;
use tern_authcheck::{AuthResult, Client, Outcome, Verifier};
use tern_spool::MessageDraft;
use tokio::task::JoinHandle;

/// Content budget is reserved from the process-wide budget in steps of this size.
const BUDGET_STEP: u64 = 256 * 1024;
/// A little time past its deadline for the SPF task to hand its result over.
const SPF_GRACE: Duration = Duration::from_millis(200);

/// The SPF check of a transaction, running since MAIL FROM.
pub(crate) struct SpfTask {
    handle: JoinHandle<SpfCheck>,
    deadline: Instant,
    domain: String,
    helo: bool,
}

impl Drop for SpfTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl SpfTask {
    /// Starts the check of `mail_from` (of `helo` when it is empty) for `ip`.
    pub(crate) fn start(v: Arc<Verifier>, ip: IpAddr, helo: &str, mail_from: &str) -> SpfTask {
        let deadline = Instant::now() + Duration::from_secs(v.config().timeout);
        let (helo_s, from_s) = (helo.to_string(), mail_from.to_string());
        let handle = tokio::spawn(async move { v.spf(ip, &helo_s, &from_s, deadline).await });
        let is_helo = mail_from.is_empty();
        let domain = if is_helo {
            helo.to_ascii_lowercase()
        } else {
            tern_proto::address::domain_of(mail_from).to_ascii_lowercase()
        };
        SpfTask {
            handle,
            deadline,
            domain,
            helo: is_helo,
        }
    }

    /// The result, by its deadline or `by` whichever comes first (`temperror` if the
    /// task did not finish).
    pub(crate) async fn result(mut self, by: Instant) -> SpfCheck {
        let until = (self.deadline + SPF_GRACE).min(by);
        match tokio::time::timeout_at(until.into(), &mut self.handle).await {
            Ok(Ok(check)) => check,
            _ => SpfCheck {
                result: AuthResult::TempError,
                domain: std::mem::take(&mut self.domain),
                helo: self.helo,
                comment: Some("DNS timeout".into()),
            },
        }
    }
}

/// The client as the verifier needs it, owned.
#[derive(Debug, Clone)]
pub(crate) struct ClientFacts {
    pub ip: IpAddr,
    pub name: Option<String>,
    pub helo: String,
    pub mail_from: String,
}

impl ClientFacts {
    fn client(&self) -> Client<'_> {
        Client {
            ip: self.ip,
            name: self.name.as_deref(),
            helo: &self.helo,
            mail_from: &self.mail_from,
        }
    }
}

/// A message being verified: its content held until the end of the data.
pub(crate) struct Held {
    verifier: Arc<Verifier>,
    received: String,
    buf: Vec<u8>,
    reserved: u64,
    spf: Option<SpfTask>,
    facts: ClientFacts,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.verifier.budget().give(self.reserved);
    }
}

/// Where a message's content goes.
pub(crate) struct Sink {
    writer: Box<dyn MessageDraft>,
    state: State,
}

enum State {
    /// Not verified: straight to the draft.
    Direct,
    /// Held in memory for verification.
    Held(Box<Held>),
    /// Written out before its end (over `max_size` or the budget): decided on SPF alone.
    Streamed {
        outcome: Box<Outcome>,
        removed: usize,
    },
}

/// What verification made of a message at its end.
pub(crate) struct Verified {
    pub outcome: Outcome,
    /// Earlier Authentication-Results claiming Tern's id removed.
    pub removed: usize,
    /// Why it was not held in memory, when it was not.
    pub streamed: bool,
}

impl Sink {
    /// A sink writing straight to `writer` (the Received header already written).
    pub(crate) fn direct(writer: Box<dyn MessageDraft>) -> Sink {
        Sink {
            writer,
            state: State::Direct,
        }
    }

    /// A sink holding the content for `verifier`; `received` is written later.
    pub(crate) fn held(
        writer: Box<dyn MessageDraft>,
        verifier: Arc<Verifier>,
        received: String,
        spf: Option<SpfTask>,
        facts: ClientFacts,
    ) -> Sink {
        Sink {
            writer,
            state: State::Held(Box::new(Held {
                verifier,
                received,
                buf: Vec::new(),
                reserved: 0,
                spf,
                facts,
            })),
        }
    }

    /// The draft's queue id.
    pub(crate) fn id(&self) -> tern_spool::QueueId {
        self.writer.id()
    }

    /// Appends content.
    pub(crate) async fn write(&mut self, data: &[u8]) -> Result<(), String> {
        let State::Held(held) = &mut self.state else {
            return self.writer.write(data).await.map_err(|e| e.to_string());
        };
        let want = (held.buf.len() + data.len()) as u64;
        let max = held.verifier.config().max_size;
        let reason = if want > max {
            Some("message larger than verify.max_size")
        } else {
            let mut ok = true;
            while held.reserved < want {
                if held.verifier.budget().take(BUDGET_STEP) {
                    held.reserved += BUDGET_STEP;
                } else {
                    ok = false;
                    break;
                }
            }
            (!ok).then_some("verify.memory_budget used up")
        };
        match reason {
            None => {
                held.buf.extend_from_slice(data);
                Ok(())
            }
            Some(why) => {
                self.spill(why).await?;
                self.writer.write(data).await.map_err(|e| e.to_string())
            }
        }
    }

    /// Writes out what is held, decided on SPF alone; the rest will stream.
    async fn spill(&mut self, why: &str) -> Result<(), String> {
        let State::Held(mut held) = std::mem::replace(&mut self.state, State::Direct) else {
            return Ok(());
        };
        tern_metrics::get().verify_not_in_memory();
        let v = Arc::clone(&held.verifier);
        let deadline = Instant::now() + Duration::from_secs(v.config().timeout);
        let spf = held.spf.take();
        let outcome = v
            .verify(
                None,
                why,
                &held.facts.client(),
                spf_result(spf, deadline),
                deadline,
            )
            .await;
        let buf = std::mem::take(&mut held.buf);
        let (content, removed) = strip_if_whole_header(&v, buf);
        let mut head = outcome.header.clone();
        if let Some(q) = &outcome.quarantine_field {
            head.push_str(q);
        }
        head.push_str(&held.received);
        drop(held);
        self.state = State::Streamed {
            outcome: Box::new(outcome),
            removed,
        };
        for piece in [head.as_bytes(), &content] {
            self.writer.write(piece).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Ends the content: verifies a held message and, unless it is to be refused,
    /// writes it out. `None` when the message was not verified. The draft is handed back
    /// for the commit.
    pub(crate) async fn finish(self) -> (Box<dyn MessageDraft>, Result<Option<Verified>, String>) {
        let Sink { mut writer, state } = self;
        match state {
            State::Direct => (writer, Ok(None)),
            State::Streamed { outcome, removed } => (
                writer,
                Ok(Some(Verified {
                    outcome: *outcome,
                    removed,
                    streamed: true,
                })),
            ),
            State::Held(mut held) => {
                let v = Arc::clone(&held.verifier);
                // One bound for everything from the end of the data: `timeout`.
                let deadline = Instant::now() + Duration::from_secs(v.config().timeout);
                let spf = held.spf.take();
                let outcome = v
                    .verify(
                        Some(&held.buf),
                        "",
                        &held.facts.client(),
                        spf_result(spf, deadline),
                        deadline,
                    )
                    .await;
                let refused = matches!(
                    outcome.decision.action,
                    tern_authcheck::Action::Reject { .. } | tern_authcheck::Action::Defer { .. }
                );
                let mut removed = 0;
                if !refused {
                    let buf = std::mem::take(&mut held.buf);
                    let (content, n) = strip_if_whole_header(&v, buf);
                    removed = n;
                    let mut head = outcome.header.clone();
                    if let Some(q) = &outcome.quarantine_field {
                        head.push_str(q);
                    }
                    head.push_str(&held.received);
                    drop(held);
                    for piece in [head.as_bytes(), &content] {
                        if let Err(e) = writer.write(piece).await {
                            return (writer, Err(e.to_string()));
                        }
                    }
                }
                (
                    writer,
                    Ok(Some(Verified {
                        outcome,
                        removed,
                        streamed: false,
                    })),
                )
            }
        }
    }
}

/// The SPF task's result by `deadline` (none when SPF was not started).
async fn spf_result(task: Option<SpfTask>, deadline: Instant) -> Option<SpfCheck> {
    match task {
        Some(t) => Some(t.result(deadline).await),
        None => None,
    }
}

/// Removes earlier fields claiming Tern's id, when `buf` holds the whole header section.
fn strip_if_whole_header(v: &Verifier, buf: Vec<u8>) -> (Vec<u8>, usize) {
    let whole = buf.starts_with(b"\r\n") || buf.windows(4).any(|w| w == b"\r\n\r\n");
    if !whole {
        return (buf, 0);
    }
    let (out, n) = v.strip(&buf);
    if n == 0 { (buf, 0) } else { (out, n) }
}

impl super::Session {
    /// The verifier when this message is to be verified: on a listener that verifies,
    /// for a client neither in a relay network nor authenticated.
    pub(super) fn verifier(&self) -> Option<Arc<Verifier>> {
        if self.client_may_relay || self.authenticated.is_some() {
            return None;
        }
        let v = self.ctx.shared.verify.load_full()?;
        self.ctx.config.verifies(true).then_some(v)
    }

    /// Counts and logs a verdict; the reply when the message is refused (nothing is
    /// queued then).
    pub(super) fn verification_refusal(
        &self,
        id: tern_spool::QueueId,
        txn: &super::state::Transaction,
        v: &Verified,
        message_id: Option<&str>,
    ) -> Option<tern_proto::Reply> {
        let (code, status, text) = match &v.outcome.decision.action {
            tern_authcheck::Action::Reject { code, status, text }
            | tern_authcheck::Action::Defer { code, status, text } => (*code, *status, text),
            _ => return None,
        };
        self.record_verdict(id, v, message_id);
        let events = &self.ctx.shared.events;
        events.emit(
            &tern_events::catalog::VERIFY_REFUSED,
            tern_events::fields!(
                "queue_id" => id,
                "client" => self.peer,
                "sender" => txn.sender,
                "reply" => format!("{code} {status}"),
                "reason" => v.outcome.decision.reason,
            ),
        );
        Some(tern_proto::Reply::new(code, status, text.clone()))
    }

    /// Counts and logs the verdict of a message that was queued.
    pub(super) fn verification_accepted(
        &self,
        id: tern_spool::QueueId,
        v: &Verified,
        message_id: Option<&str>,
    ) {
        self.record_verdict(id, v, message_id);
    }

    fn record_verdict(&self, id: tern_spool::QueueId, v: &Verified, message_id: Option<&str>) {
        let verdicts = &v.outcome.verdicts;
        let m = tern_metrics::get();
        let spf = verdicts.spf.as_ref().map(|s| s.result);
        let dkim = verdicts.dkim_summary();
        let dmarc = verdicts.dmarc.as_ref().map(|d| d.result);
        let arc = verdicts.arc.as_ref().map(|a| a.result);
        for (method, r) in [("spf", spf), ("dkim", dkim), ("dmarc", dmarc), ("arc", arc)] {
            if let Some(r) = r {
                m.verify_result(method, r.as_str());
            }
        }
        let action = v.outcome.decision.action.name();
        m.verify_action(action);
        let name = |r: Option<AuthResult>| r.map_or("-", AuthResult::as_str);
        let events = &self.ctx.shared.events;
        if v.streamed {
            events.emit(
                &tern_events::catalog::VERIFY_NOT_IN_MEMORY,
                tern_events::fields!(
                    "queue_id" => id,
                    "client" => self.peer,
                    "reason" => verdicts.dkim_skipped.as_deref().unwrap_or(""),
                ),
            );
        }
        events.emit(
            &tern_events::catalog::VERIFY_VERDICT,
            tern_events::fields!(
                "queue_id" => id,
                "client" => self.peer,
                "spf" => name(spf),
                "dkim" => name(dkim),
                "dmarc" => name(dmarc),
                "arc" => name(arc),
                "from_domain" => verdicts.dmarc.as_ref().map_or("", |d| d.from.as_str()),
                "action" => action,
                "reason" => v.outcome.decision.reason,
                "removed" => v.removed,
                "message_id" => message_id.unwrap_or(""),
            ),
        );
        for obs in &v.outcome.observations {
            self.ctx.shared.dmarc_recorder.record(obs.clone());
        }
    }
}
