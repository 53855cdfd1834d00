//! SMTP AUTH in a session (RFC 4954), and what authentication changes afterwards: the
//! `530 5.7.0` of a listener with `auth = "required"`, relaying for authenticated
//! clients, and the sender-login check of the envelope sender.
//!
//! Rules, in the order they are checked:
//! - AUTH is advertised (and accepted) only on listeners with `auth` set, after EHLO, and
//!   only over TLS, or in plaintext from a loopback client when the listener has
//!   `allow_plaintext_loopback`; anywhere else that offers AUTH the client gets
//!   `538 5.7.11` (RFC 4954 §6) until it has started TLS.
//! - Once per session: a second AUTH gets `503 5.5.1`, and so does AUTH inside a mail
//!   transaction. STARTTLS forgets an authentication made before it.
//! - While the client's network is locked out (`tern_auth::guard`), AUTH gets
//!   `454 4.7.0` straight away; while the user is, whatever it sends ends in that reply.
//! - Response lines may be 12288 octets (`tern_proto::AUTH_LINE_LIMIT`); `*` cancels
//!   (`501 5.7.0`), a line that is not base64 ends the exchange with `501 5.5.2`.
//! - A failure is answered after the guard's delay (which grows with the failures),
//!   with the same `535 5.7.8` for a wrong password and an unknown user; every failure is
//!   an event (2102) and counted in `tern_smtp_auth`; a lockout is one event (2103).
//!
//! Trust: the exchange's bytes are decoded by `tern_auth::sasl`, bounded and never
//! trusted; the identity comes only from the backend's verdict.

use std::net::IpAddr;

use tern_auth::sasl::{Response, decode_response, encode_challenge};
use tern_auth::{FailureReason, Mechanism, Step};
use tern_events::{catalog, fields};
use tern_metrics::{AuthResult, SubmissionRefusal};
use tern_proto::{Frame, Reply};

use super::conn::Conn;
use super::{Flow, Session, Wait};
use crate::config::AuthMode;

/// A response line of an exchange, as read.
enum ResponseLine {
    /// Decoded (data, or `*`).
    Decoded(Response),
    /// Not base64, or over the decoded bound: `501 5.5.2`.
    Undecodable,
    /// Over 12288 octets: `500 5.5.2`.
    TooLong,
}

/// The reply for a failed authentication (the same for every credential problem).
fn invalid() -> Reply {
    Reply::new(535, "5.7.8", "Authentication credentials invalid")
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

impl Session {
    /// The listener offers AUTH at all (configured, with a credential service).
    pub(super) fn auth_enabled(&self) -> bool {
        self.ctx.config.auth != AuthMode::None && self.ctx.shared.auth.is_some()
    }

    /// AUTH may be used on this connection now: TLS, or trusted plaintext loopback.
    fn auth_channel_ok(&self) -> bool {
        matches!(self.conn, Conn::Tls(_))
            || (self.ctx.config.allow_plaintext_loopback && is_loopback(self.peer.ip()))
    }

    /// The EHLO line `AUTH …`, when AUTH is offered on this connection now.
    pub(super) fn auth_ehlo_line(&self) -> Option<String> {
        if !self.auth_enabled() || !self.auth_channel_ok() {
            return None;
        }
        let service = self.ctx.shared.auth.as_ref()?;
        let names: Vec<&str> = service
            .mechanisms()
            .into_iter()
            .map(Mechanism::name)
            .collect();
        (!names.is_empty()).then(|| format!("AUTH {}", names.join(" ")))
    }

    /// MAIL on a listener that requires AUTH, before it: the refusal.
    pub(super) fn auth_required_refusal(&self) -> Option<Reply> {
        if self.ctx.config.auth == AuthMode::Required && self.authenticated.is_none() {
            tern_metrics::get().submission_refused(SubmissionRefusal::AuthRequired);
            return Some(Reply::new(530, "5.7.0", "Authentication required"));
        }
        None
    }

    /// The envelope sender check (sender-login map) for an authenticated client.
    pub(super) fn sender_refusal(&self, sender: &str) -> Option<Reply> {
        let user = self.authenticated.as_deref()?;
        let service = self.ctx.shared.auth.as_ref()?;
        if service.sender_check() == tern_auth::SenderCheck::Off
            || service.sender_allowed(user, sender)
        {
            return None;
        }
        Some(self.sender_mismatch(user, sender, "envelope"))
    }

    /// Logs and counts a sender mismatch; the `553 5.7.1` reply.
    pub(super) fn sender_mismatch(&self, user: &str, sender: &str, place: &str) -> Reply {
        tern_metrics::get().submission_refused(SubmissionRefusal::SenderMismatch);
        self.ctx.shared.events.emit(
            &catalog::SMTP_SENDER_MISMATCH,
            fields!("client" => self.peer.ip(), "user" => user, "sender" => sender, "where" => place, "listener" => self.ctx.config.name),
        );
        Reply::new(
            553,
            "5.7.1",
            format!("<{sender}>: Sender address rejected: not owned by user {user}"),
        )
    }

    /// `AUTH mechanism [initial-response]`.
    pub(super) async fn auth(&mut self, mechanism: String, initial: Option<String>) -> Flow {
        let reply = match self.auth_precheck(&mechanism) {
            Err(reply) => reply,
            Ok(mech) => {
                // The lockout may be shared by a cluster (an awaited look-up): asked
                // with owned values only, the session is not shared across the await.
                let service = self.ctx.shared.auth.clone();
                let ip = self.peer.ip();
                let locked = match service {
                    Some(s) => s.client_locked(ip).await,
                    None => false,
                };
                if !locked {
                    return self.auth_exchange(mech, initial).await;
                }
                tern_metrics::get().auth(mech.label(), AuthResult::Locked);
                Reply::new(
                    454,
                    "4.7.0",
                    "Too many failed authentications, try again later",
                )
            }
        };
        self.reply(reply).await
    }

    fn auth_precheck(&self, mechanism: &str) -> Result<Mechanism, Reply> {
        let Some(service) = self
            .ctx
            .shared
            .auth
            .as_ref()
            .filter(|_| self.auth_enabled())
        else {
            return Err(Reply::new(502, "5.5.1", "AUTH not available"));
        };
        if !self.phase.greeting().is_some_and(|g| g.esmtp) {
            return Err(Reply::new(503, "5.5.1", "Send EHLO first"));
        }
        if self.authenticated.is_some() {
            return Err(Reply::new(503, "5.5.1", "Already authenticated"));
        }
        if self.phase.in_transaction() || self.bdat.is_some() {
            return Err(Reply::new(503, "5.5.1", "Mail transaction in progress"));
        }
        if !self.auth_channel_ok() {
            return Err(Reply::new(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            ));
        }
        let Some(mech) = Mechanism::parse(mechanism).filter(|m| service.mechanisms().contains(m))
        else {
            return Err(Reply::new(504, "5.5.4", "Unrecognized authentication type"));
        };
        Ok(mech)
    }

    async fn auth_exchange(&mut self, mech: Mechanism, initial: Option<String>) -> Flow {
        let Some(service) = self.ctx.shared.auth.clone() else {
            return self
                .reply(Reply::new(502, "5.5.1", "AUTH not available"))
                .await;
        };
        let mut response = match initial.as_deref() {
            None => None,
            Some("=") => Some(Vec::new()),
            Some(text) => match decode_response(text.as_bytes()) {
                Ok(Response::Data(d)) => Some(d),
                Ok(Response::Cancel) | Err(_) => return self.auth_unreadable(mech).await,
            },
        };
        let local = self.conn.local_ip();
        let secured = matches!(self.conn, Conn::Tls(_)) || is_loopback(self.peer.ip());
        let mut exchange = service.start(mech, local, self.peer.ip(), secured);
        loop {
            match exchange.step(response.take()).await {
                Step::Challenge(challenge) => {
                    Reply::plain(334, vec![encode_challenge(&challenge)]).write_to(&mut self.out);
                    self.flush().await?;
                    match self.read_auth_response().await? {
                        ResponseLine::Decoded(Response::Data(d)) => response = Some(d),
                        ResponseLine::Decoded(Response::Cancel) => {
                            tern_metrics::get().auth(mech.label(), AuthResult::Cancelled);
                            return self
                                .reply(Reply::new(501, "5.7.0", "Authentication aborted"))
                                .await;
                        }
                        ResponseLine::Undecodable => return self.auth_unreadable(mech).await,
                        ResponseLine::TooLong => {
                            tern_metrics::get().auth(mech.label(), AuthResult::Cancelled);
                            return self.reply(Reply::new(500, "5.5.2", "Line too long")).await;
                        }
                    }
                }
                Step::Success(user) => {
                    tern_metrics::get().auth(mech.label(), AuthResult::Success);
                    self.ctx.shared.events.emit(
                        &catalog::SMTP_AUTH_SUCCEEDED,
                        fields!("client" => self.peer.ip(), "listener" => self.ctx.config.name, "mechanism" => mech, "user" => user),
                    );
                    self.authenticated = Some(user);
                    return self
                        .reply(Reply::new(235, "2.7.0", "Authentication successful"))
                        .await;
                }
                Step::Failure(failure) => {
                    let events = &self.ctx.shared.events;
                    for lockout in &failure.lockouts {
                        events.emit(
                            &catalog::SMTP_AUTH_LOCKOUT,
                            fields!("kind" => lockout.key.kind(), "key" => lockout.key, "failures" => lockout.failures, "seconds" => lockout.duration.as_secs(), "listener" => self.ctx.config.name),
                        );
                    }
                    let user: String = failure
                        .user
                        .as_deref()
                        .unwrap_or("")
                        .chars()
                        .take(64)
                        .map(|c| if c.is_control() { '?' } else { c })
                        .collect();
                    let (result, reply) = match &failure.reason {
                        FailureReason::Unavailable(why) => {
                            events.emit(
                                &catalog::SMTP_AUTH_UNAVAILABLE,
                                fields!("client" => self.peer.ip(), "mechanism" => mech, "error" => why),
                            );
                            (
                                AuthResult::Unavailable,
                                Reply::new(454, "4.7.0", "Temporary authentication failure"),
                            )
                        }
                        FailureReason::Locked => (
                            AuthResult::Locked,
                            Reply::new(
                                454,
                                "4.7.0",
                                "Too many failed authentications, try again later",
                            ),
                        ),
                        _ => (AuthResult::Failure, invalid()),
                    };
                    if !matches!(failure.reason, FailureReason::Unavailable(_)) {
                        events.emit(
                            &catalog::SMTP_AUTH_FAILED,
                            fields!("client" => self.peer.ip(), "listener" => self.ctx.config.name, "mechanism" => mech, "user" => user, "reason" => failure.reason),
                        );
                    }
                    tern_metrics::get().auth(mech.label(), result);
                    if !failure.delay.is_zero() {
                        // The failure delay: the client waits before it may try again.
                        tokio::time::sleep(failure.delay).await;
                    }
                    return self.reply(reply).await;
                }
            }
        }
    }

    async fn auth_unreadable(&mut self, mech: Mechanism) -> Flow {
        tern_metrics::get().auth(mech.label(), AuthResult::Cancelled);
        self.reply(Reply::new(501, "5.5.2", "Cannot decode response"))
            .await
    }

    /// Reads one response line of an exchange (a too-long one is skipped to its end, in
    /// step, and ends the exchange).
    async fn read_auth_response(&mut self) -> Result<ResponseLine, super::EndReason> {
        self.command_since = None;
        loop {
            let (frame, used) = self.framer.next_auth_response(&self.inbuf);
            let result = match frame {
                Frame::NeedMore => None,
                Frame::Skipped => {
                    self.inbuf.drain(..used);
                    continue;
                }
                Frame::TooLong => Some(ResponseLine::TooLong),
                Frame::Line(line) => Some(match decode_response(line) {
                    Ok(r) => ResponseLine::Decoded(r),
                    Err(_) => ResponseLine::Undecodable,
                }),
            };
            if let Some(r) = result {
                self.inbuf.drain(..used);
                self.command_since = None;
                return Ok(r);
            }
            self.read_more(Wait::Command).await?;
        }
    }
}
