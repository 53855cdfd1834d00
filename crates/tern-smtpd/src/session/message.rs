//! Receiving message content: DATA and BDAT, streamed into the spool.
//!
//! Both paths write the Received header first, then the content as it arrives, in chunks
//! of at most [`SPOOL_CHUNK`] bytes, so memory per session stays bounded whatever the
//! message size. Limits (size, line length, bare line endings) are enforced while
//! streaming, the same for both: DATA content goes through `DataDecoder`, BDAT chunks
//! through `BdatDecoder` (the same rules without dot handling, its state carried from one
//! chunk to the next), so well-formed content is stored byte for byte either way and a
//! bare CR or LF is normalised or refused per `bare_line_endings`. A refused message is
//! still read to its end (DATA) or to the end of the chunk (BDAT) so the session stays in
//! sync, then answered once. A spool write failure is answered with `451 4.3.0` after the
//! data has been read, so the client retries later.
//!
//! Content must keep progressing: a read of content waits at most what is left of the
//! session's content budget (`clock.rs`), which is opened at `354` or at the first BDAT
//! chunk and closed when the transfer ends.
//!
//! The reply `250 2.0.0 Ok: queued as <id>` is written only after `commit` returned, i.e.
//! after the message file and the directory entry were fsynced.
//!
//! For an authenticated client whose sender check includes the header, the header section
//! is kept as it passes (`from_header.rs`, bounded) and every From address must be the
//! user's; otherwise the message is refused with `553 5.7.1` and nothing is committed.

use std::time::Instant;

use tern_events::{catalog, fields};
use tern_metrics::Reject;
use tern_proto::{
    BdatDecoder, DataDecoder, DataLimits, DataProblem, DataStep, MessageIdScanner, Reply,
};
use tern_spool::{ClientInfo, Envelope, MessageDraft};

use super::clock::ContentBudget;
use super::from_header::HeaderCapture;
use super::state::{Greeting, Phase, Transaction};
use super::verify::{ClientFacts, Sink};
use super::{Flow, Session, Wait};
use crate::received::{Trace, rfc5322_now};

/// Decoded content is handed to the spool in pieces of this size.
const SPOOL_CHUNK: usize = 64 * 1024;

/// A BDAT transfer in progress (between the first BDAT and BDAT LAST).
pub(crate) struct BdatTransfer {
    greeting: Greeting,
    txn: Transaction,
    sink: Sink,
    /// The Message-ID, for the tracking log, found as the chunks pass.
    msgid: MessageIdScanner,
    /// The header section, for the From check of authenticated submissions.
    headers: HeaderCapture,
    /// Checks the content and counts what was received (the size limit).
    decoder: BdatDecoder,
    spool_error: Option<String>,
}

impl Session {
    /// DATA: 354, then content up to CRLF.CRLF.
    pub(super) async fn data(&mut self) -> Flow {
        if self.bdat.is_some() {
            return self
                .reply(Reply::new(503, "5.5.1", "DATA not allowed after BDAT"))
                .await;
        }
        let (phase, taken) = std::mem::replace(&mut self.phase, Phase::Connected).take_for_data();
        self.phase = phase;
        let (greeting, txn) = match taken {
            Ok(t) => t,
            Err(reply) => return self.reply(reply).await,
        };
        let writer = self.ctx.shared.intake.begin();
        let (mut sink, mut spool_error) = self.start_message(&greeting, &txn, writer).await;
        // 354 carries no enhanced status code (RFC 2034 applies them to 2xx/4xx/5xx).
        Reply::plain(354, vec!["End data with <CR><LF>.<CR><LF>".into()]).write_to(&mut self.out);
        self.flush().await?;
        self.content = Some(ContentBudget::new(self.in_force().data));

        let limits = DataLimits {
            max_size: self.ctx.config.max_message_size,
            max_line: self.ctx.config.max_text_line,
            bare: self.ctx.config.bare_line_endings.policy(),
        };
        let mut decoder = DataDecoder::new(limits);
        let mut msgid = MessageIdScanner::new();
        let mut headers = HeaderCapture::new();
        let mut chunk = Vec::with_capacity(SPOOL_CHUNK.min(8192));
        loop {
            let step = decoder.feed(&self.inbuf, &mut chunk);
            match step {
                DataStep::End { consumed } => {
                    self.inbuf.drain(..consumed);
                }
                DataStep::NeedMore => self.inbuf.clear(),
            }
            let ended = matches!(step, DataStep::End { .. });
            if decoder.problem().is_some() || spool_error.is_some() {
                chunk.clear();
            } else if (ended || chunk.len() >= SPOOL_CHUNK) && !chunk.is_empty() {
                msgid.feed(&chunk);
                if self.authenticated.is_some() {
                    headers.feed(&chunk);
                }
                if let Err(e) = sink.write(&chunk).await {
                    spool_error = Some(e);
                }
                chunk.clear();
            }
            if ended {
                break;
            }
            self.read_more(Wait::Content).await?;
        }
        self.content = None;
        let reply = match (decoder.problem(), spool_error) {
            (Some(p), _) => refuse_content(p, &limits),
            (None, Some(e)) => self.spool_failed(&e),
            (None, None) => {
                self.finish_message(&greeting, txn, sink, msgid.message_id(), &headers)
                    .await
            }
        };
        self.reply(reply).await
    }

    /// BDAT: a chunk of exactly `size` octets follows the command line.
    pub(super) async fn bdat(&mut self, size: u64, last: bool) -> Flow {
        if self.content.is_none() {
            self.content = Some(ContentBudget::new(self.in_force().data));
        }
        let flow = self.bdat_chunk(size, last).await;
        // The transfer's budget lives as long as the transfer.
        if self.bdat.is_none() {
            self.content = None;
        }
        flow
    }

    async fn bdat_chunk(&mut self, size: u64, last: bool) -> Flow {
        let mut transfer = match self.bdat.take() {
            Some(t) => Some(t),
            None => {
                let (phase, taken) =
                    std::mem::replace(&mut self.phase, Phase::Connected).take_for_data();
                self.phase = phase;
                match taken {
                    Ok((greeting, txn)) => {
                        let writer = self.ctx.shared.intake.begin();
                        let (sink, spool_error) = self.start_message(&greeting, &txn, writer).await;
                        Some(BdatTransfer {
                            greeting,
                            txn,
                            sink,
                            msgid: MessageIdScanner::new(),
                            headers: HeaderCapture::new(),
                            decoder: BdatDecoder::new(self.data_limits()),
                            spool_error,
                        })
                    }
                    Err(reply) => {
                        // RFC 3030: the chunk is read and discarded even when refused.
                        self.consume_chunk(size, None).await?;
                        return self.reply(reply).await;
                    }
                }
            }
        };
        self.consume_chunk(size, transfer.as_mut()).await?;
        let Some(mut t) = transfer else {
            return Ok(());
        };
        if last {
            // A CR ending the last chunk is a bare CR.
            let mut tail = Vec::new();
            t.decoder.finish(&mut tail);
            t.store(&tail).await;
        }
        let failed = match (t.decoder.problem(), &t.spool_error) {
            (Some(p), _) => Some(refuse_content(p, &self.data_limits())),
            (None, Some(e)) => Some(self.spool_failed(e)),
            (None, None) => None,
        };
        if let Some(reply) = failed {
            // The transfer ends; the writer is dropped and its file removed.
            return self.reply(reply).await;
        }
        if !last {
            let reply = Reply::new(250, "2.0.0", format!("{size} octets received"));
            self.bdat = Some(t);
            return self.reply(reply).await;
        }
        let BdatTransfer {
            greeting,
            txn,
            sink,
            msgid,
            headers,
            ..
        } = t;
        let reply = self
            .finish_message(&greeting, txn, sink, msgid.message_id(), &headers)
            .await;
        self.reply(reply).await
    }

    fn data_limits(&self) -> DataLimits {
        DataLimits {
            max_size: self.ctx.config.max_message_size,
            max_line: self.ctx.config.max_text_line,
            bare: self.ctx.config.bare_line_endings.policy(),
        }
    }

    /// Reads exactly `size` octets of BDAT content, checking them and writing what is to
    /// be stored to the transfer's spool file unless the transfer already failed.
    async fn consume_chunk(&mut self, size: u64, mut transfer: Option<&mut BdatTransfer>) -> Flow {
        let mut remaining = size;
        let mut checked = Vec::new();
        loop {
            let take = usize::try_from(remaining)
                .unwrap_or(usize::MAX)
                .min(self.inbuf.len());
            if take > 0 {
                if let Some(t) = transfer.as_deref_mut() {
                    let piece = self.inbuf.get(..take).unwrap_or_default();
                    t.decoder.feed(piece, &mut checked);
                    if self.authenticated.is_some() {
                        t.headers.feed(&checked);
                    }
                    t.store(&checked).await;
                    checked.clear();
                }
                self.inbuf.drain(..take);
                remaining -= take as u64;
            }
            if remaining == 0 {
                return Ok(());
            }
            self.read_more(Wait::Content).await?;
        }
    }

    /// Renders the Received header and makes the message's sink: the header is written
    /// at once, or, when the message is verified, kept for the end of the data (after the
    /// Authentication-Results field). Returns the spool error text if a write failed.
    async fn start_message(
        &mut self,
        g: &Greeting,
        txn: &Transaction,
        mut writer: Box<dyn MessageDraft>,
    ) -> (Sink, Option<String>) {
        let client_name = self.client_name.get().await;
        let tls = self.conn.tls_description();
        let id = writer.id().to_string();
        let auth = self.ctx.shared.auth.clone();
        let date = rfc5322_now();
        let single = match txn.recipients.as_slice() {
            [one] => Some(one.address.as_str()),
            _ => None,
        };
        let header = Trace {
            helo: &g.name,
            client_name: client_name.as_deref(),
            client_ip: self.peer.ip(),
            tls: tls.as_deref(),
            hostname: &self.ctx.shared.hostname,
            esmtp: g.esmtp,
            smtputf8: txn.params.smtputf8,
            queue_id: &id,
            single_recipient: single,
            date: &date,
            authenticated: self.authenticated.is_some(),
            show_user: self
                .authenticated
                .as_deref()
                .filter(|_| auth.as_ref().is_some_and(|a| a.received_show_user())),
            hide_client: auth.as_ref().is_some_and(|a| a.received_hide_client()),
        }
        .render();
        if let Some(v) = self.verifier() {
            let facts = ClientFacts {
                ip: self.peer.ip(),
                name: client_name,
                helo: g.name.clone(),
                mail_from: txn.sender.clone(),
            };
            let spf = self.spf.take();
            return (Sink::held(writer, v, header, spf, facts), None);
        }
        let error = writer
            .write(header.as_bytes())
            .await
            .err()
            .map(|e| e.to_string());
        (Sink::direct(writer), error)
    }

    /// Commits the message and returns the reply for the client. `message_id` is the
    /// content's Message-ID, for the tracking log.
    async fn finish_message(
        &mut self,
        g: &Greeting,
        txn: Transaction,
        sink: Sink,
        message_id: Option<String>,
        headers: &HeaderCapture,
    ) -> Reply {
        // Accept latency: from the end of the content to the reply.
        let started = Instant::now();
        if let Some(reply) = self.header_sender_refusal(headers) {
            // The writer is dropped: its file is removed, nothing is queued.
            return reply;
        }
        let id = sink.id();
        let (writer, verified) = sink.finish().await;
        let verified = match verified {
            Ok(v) => v,
            Err(e) => return self.spool_failed(&e),
        };
        if let Some(v) = &verified
            && let Some(reply) = self.verification_refusal(id, &txn, v, message_id.as_deref())
        {
            // The writer is dropped: nothing is queued.
            return reply;
        }
        let envelope = Envelope {
            quarantine: verified
                .as_ref()
                .and_then(|v| v.outcome.envelope_mark.clone()),
            id,
            sender: txn.sender,
            recipients: txn.recipients,
            params: txn.params,
            client: ClientInfo {
                address: self.peer.to_string(),
                verified_name: self.client_name.get().await,
                helo: g.name.clone(),
                esmtp: g.esmtp,
                tls: self.conn.tls_description(),
                listener: self.ctx.config.name.clone(),
                relay_network: self.client_may_relay,
                authenticated: self.authenticated.clone(),
            },
            arrival_micros: tern_watchdog::clock::unix_micros(),
            size: writer.written(),
        };
        let (sender, nrcpt, size) = (
            envelope.sender.clone(),
            envelope.recipients.len(),
            envelope.size,
        );
        let to: Vec<&str> = envelope
            .recipients
            .iter()
            .map(|r| r.address.as_str())
            .collect();
        let to = to.join(",");
        match writer.commit(envelope).await {
            Ok(()) => {
                self.queued = self.queued.saturating_add(1);
                // A client that delivers mail is not idling: its junk count restarts.
                self.junk = 0;
                self.ctx.shared.events.emit(
                    &catalog::SMTP_MESSAGE_QUEUED,
                    fields!(
                        "queue_id" => id,
                        "client" => self.peer,
                        "sender" => sender,
                        "recipients" => nrcpt,
                        "size" => size,
                        "to" => to,
                        "message_id" => message_id.as_deref().unwrap_or(""),
                    ),
                );
                if let Some(v) = &verified {
                    self.verification_accepted(id, v, message_id.as_deref());
                }
                if self.starttls_offered()
                    && let Some(inbound) = &self.ctx.shared.inbound_tls
                {
                    inbound.cleartext(&self.ctx.shared.events, self.peer, &self.ctx.config.name);
                }
                tern_metrics::get()
                    .accept_latency
                    .observe_duration(started.elapsed());
                Reply::new(250, "2.0.0", format!("Ok: queued as {id}"))
            }
            Err(e) => self.spool_failed(&e.to_string()),
        }
    }

    /// The From check of an authenticated submission (`envelope_and_header`): every From
    /// address must be the user's; an empty one or an unreadable header section is not.
    fn header_sender_refusal(&self, headers: &HeaderCapture) -> Option<Reply> {
        let user = self.authenticated.as_deref()?;
        let service = self.ctx.shared.auth.as_ref()?;
        if service.sender_check() != tern_auth::SenderCheck::EnvelopeAndHeader {
            return None;
        }
        if !headers.checkable() {
            return Some(self.sender_mismatch(user, "(header section too long)", "header"));
        }
        headers
            .sender_addresses()
            .into_iter()
            .find(|a| a.is_empty() || !service.sender_allowed(user, a))
            .map(|bad| self.sender_mismatch(user, &bad, "header"))
    }

    fn spool_failed(&self, error: &str) -> Reply {
        tern_metrics::get().reject(Reject::SpoolError);
        self.ctx.shared.events.emit(
            &catalog::SMTP_SPOOL_FAILED,
            fields!("client" => self.peer, "error" => error),
        );
        Reply::new(
            451,
            "4.3.0",
            "Error: queue file write error, try again later",
        )
    }
}

impl BdatTransfer {
    /// Writes checked content to the spool file, unless the transfer already failed.
    async fn store(&mut self, checked: &[u8]) {
        if checked.is_empty() || self.decoder.problem().is_some() || self.spool_error.is_some() {
            return;
        }
        self.msgid.feed(checked);
        if let Err(e) = self.sink.write(checked).await {
            self.spool_error = Some(e);
        }
    }
}

/// The reply refusing content, counted by its reason.
fn refuse_content(p: DataProblem, limits: &DataLimits) -> Reply {
    let reason = match p {
        DataProblem::TooBig => Reject::Size,
        DataProblem::LineTooLong | DataProblem::BareLineEnding => Reject::Content,
    };
    tern_metrics::get().reject(reason);
    p.reply(limits)
}
