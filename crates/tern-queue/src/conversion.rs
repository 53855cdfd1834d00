//! The 7-bit copy of a message for a next hop without 8BITMIME (or for binary content,
//! which this client never sends as it is), and the stream a transaction reads.
//!
//! Memory: the copy is sent from memory only when it is at most [`SPILL_OVER`] octets;
//! a larger copy is written to a spill file (`Spool::spill_file`: the spool's private
//! `tmp/`, mode 0600, an unnamed inode freed when the transaction drops it and when the
//! process dies) and streamed from there, so the transaction holds 64 KiB of it at a
//! time. The conversion itself (`tern-convert`, sans-I/O) takes one of two forms:
//! - a message of at most [`SPILL_OVER`] octets is read whole and converted as one
//!   buffer (`tern_convert::downgrade`): at most 1 MiB and its copy;
//! - a larger one is converted streaming (`tern_convert::Scanner`, then its `Writer`):
//!   the stored content is read twice through the spool's checked `BodyReader`, 64 KiB
//!   at a time (the plan, then the copy), and the copy goes to the spill file as it is
//!   written, so a conversion holds a few hundred KiB whatever the message size. Both
//!   forms give the same octets (tern-convert's property tests).
//!
//! Either runs on the blocking pool. Large conversions run at most as many at a time
//! per queue as there are cores ([`LargeConversions`]): a CPU bound, no longer a memory
//! one (docs/CONVERSION.md).
//!
//! Integrity: each pass reads through the spool's check, so a content that changed or
//! was damaged between or during the passes is an error (`Conversion::Failed`), and a
//! copy whose second pass does not match its plan is refused by `tern-convert`; in both
//! cases the spill file is dropped unread.
//!
//! The stored content is never changed; every attempt to such a peer converts again.
//!
//! DKIM signing (`signing.rs`) runs after this, on the bytes a transaction is about to
//! send (the stored file, or this copy): it reads them once to hash them (bounded
//! buffer), then the transaction sends its `DKIM-Signature` fields and the same bytes.
//! A signature over a spilled copy reads the spill file twice; nothing is held in
//! memory (docs/DKIM.md).

use std::borrow::Cow;
use std::io::{Cursor, Read, Seek, SeekFrom, Write};

use tern_convert::{Limits, Source};
use tern_events::{catalog, fields};
use tern_spool::{AsyncBodyReader, SpoolError};
use tokio::io::AsyncRead;
use tokio::sync::Semaphore;

use crate::Context;
use crate::content::{self, SPILL_OVER};
use crate::job::Job;

/// Large conversions (inputs over [`SPILL_OVER`]) run at most as many at a time per
/// queue as the machine has cores: a CPU bound, so that a burst of large 8-bit
/// messages to a 7-bit next hop leaves the blocking pool and the cores to the rest of
/// the process (memory needs no such bound any more: each conversion streams). The
/// queue's [`Context`] holds one of these (no process-wide state).
#[derive(Debug)]
pub struct LargeConversions(pub(crate) Semaphore);

impl Default for LargeConversions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        LargeConversions(Semaphore::new(cores))
    }
}

/// A 7-bit copy made for one transaction.
pub(crate) enum Copy7 {
    /// Small: held in memory.
    Memory(Vec<u8>),
    /// Large: in a spill file (unnamed), positioned at its start.
    Spilled {
        /// The file.
        file: std::fs::File,
        /// Its length.
        len: u64,
    },
}

impl Copy7 {
    /// Length in octets.
    pub(crate) fn len(&self) -> u64 {
        match self {
            Copy7::Memory(v) => v.len() as u64,
            Copy7::Spilled { len, .. } => *len,
        }
    }

    /// The stream a transaction reads.
    pub(crate) fn into_stream(self) -> ContentStream {
        match self {
            Copy7::Memory(v) => ContentStream::Memory(Cursor::new(v)),
            Copy7::Spilled { file, len } => {
                ContentStream::Spilled(tokio::fs::File::from_std(file), len)
            }
        }
    }
}

/// What a transaction sends.
pub(crate) enum ContentStream {
    /// The stored file, checked as it is read.
    Stored(AsyncBodyReader),
    /// A converted copy in memory.
    Memory(Cursor<Vec<u8>>),
    /// A converted copy in a spill file, and its length.
    Spilled(tokio::fs::File, u64),
}

impl ContentStream {
    /// Octets it will yield; `stored` is the stored content's length.
    pub(crate) fn len(&self, stored: u64) -> u64 {
        match self {
            ContentStream::Stored(_) => stored,
            ContentStream::Memory(c) => c.get_ref().len() as u64,
            ContentStream::Spilled(_, len) => *len,
        }
    }

    /// The reader for `SmtpSession::send`.
    pub(crate) fn reader(&mut self) -> &mut (dyn AsyncRead + Unpin + Send) {
        match self {
            ContentStream::Stored(r) => r,
            ContentStream::Memory(c) => c,
            ContentStream::Spilled(f, _) => f,
        }
    }
}

/// What converting a job's message for a next hop without 8BITMIME came to.
pub(crate) enum Conversion {
    /// The content is 7-bit already: it goes as it is, declared 7BIT.
    Unneeded,
    /// The 7-bit copy to send in this attempt.
    Copy(Copy7),
    /// Why it cannot be converted: the message is deferred.
    Refused(String),
    /// The stored content or the spill file could not be read or written: deferred.
    Failed(SpoolError),
}

/// Converts the message to 7 bit (`tern-convert`) on the blocking pool, so a large
/// message does not hold a runtime thread (see the module header for memory).
pub(crate) async fn convert(ctx: &Context, job: &Job, source: Source, remote: &str) -> Conversion {
    if source == Source::EightBit && job.msg.facts.seven_bit {
        return Conversion::Unneeded;
    }
    let large = job.msg.facts.len > SPILL_OVER as u64;
    // Waits while as many large conversions as there are cores run; never closed.
    let _permit = if large {
        ctx.large_conversions.0.acquire().await.ok()
    } else {
        None
    };
    let msg = job.msg.clone();
    let spool = ctx.spool.clone();
    let work = crate::last_gasp::spawn_blocking(move || {
        let (state, id) = (msg.state, msg.envelope.id);
        if large {
            convert_streaming(&spool, state, id, source)
        } else {
            convert_whole(&spool, state, id, source)
        }
    });
    match work.await {
        Ok(Ok(Ok(None))) => Conversion::Unneeded,
        Ok(Ok(Ok(Some((copy, parts, fields))))) => {
            ctx.events.emit(
                &catalog::DELIVERY_CONVERTED_7BIT,
                fields!(
                    "queue_id" => job.msg.envelope.id,
                    "next_hop" => job.hop,
                    "host" => remote,
                    "parts" => parts,
                    "fields" => fields,
                    "size" => job.msg.facts.len,
                    "converted_size" => copy.len(),
                    "spilled" => matches!(copy, Copy7::Spilled { .. }),
                ),
            );
            Conversion::Copy(copy)
        }
        Ok(Ok(Err(reason))) => Conversion::Refused(reason),
        Ok(Err(e)) => Conversion::Failed(e),
        // A panic in the conversion ends that blocking task only; the message waits.
        Err(_) => Conversion::Refused("the conversion failed inside Tern".into()),
    }
}

/// A conversion's outcome on the blocking pool: the copy and its counts (`None`: the
/// content needs no copy), or why it is refused; or why the spool failed.
type Converted = Result<Result<Option<(Copy7, usize, usize)>, String>, SpoolError>;

/// An error writing or positioning the spill file.
fn spill_error(spool: &tern_spool::Spool) -> impl Fn(std::io::Error) -> SpoolError + '_ {
    move |e| SpoolError::io("write spill file in", spool.dir().join("tmp"), e)
}

/// A small message (at most [`SPILL_OVER`] octets): read whole and converted in memory;
/// its copy (at most 5 times as large) is spilled when it is over [`SPILL_OVER`].
fn convert_whole(
    spool: &tern_spool::Spool,
    state: tern_spool::QueueState,
    id: tern_spool::QueueId,
    source: Source,
) -> Converted {
    let input = content::read_whole(spool, state, id, u64::MAX)?.unwrap_or_default();
    let (copy, parts, fields) = match tern_convert::downgrade(&input, source, &Limits::default()) {
        Ok(d) => {
            let (parts, fields) = (d.parts_encoded, d.fields_encoded);
            let copy = match d.content {
                Cow::Owned(v) => Some(v),
                Cow::Borrowed(_) => None,
            };
            (copy, parts, fields)
        }
        Err(e) => return Ok(Err(e.to_string())),
    };
    let copy = copy.unwrap_or(input);
    let copy = if copy.len() > SPILL_OVER {
        let mut file = spool.spill_file()?;
        file.write_all(&copy).map_err(spill_error(spool))?;
        file.seek(SeekFrom::Start(0)).map_err(spill_error(spool))?;
        Copy7::Spilled {
            file,
            len: copy.len() as u64,
        }
    } else {
        Copy7::Memory(copy)
    };
    Ok(Ok(Some((copy, parts, fields))))
}

/// Octets read from the stored content at a time by a streaming conversion.
pub(crate) const PIECE: usize = 64 * 1024;

/// Feeds the stored content to `feed`, [`PIECE`] octets at a time, checked by the
/// spool's reader as it goes (a changed or damaged file is an error, never fed whole).
pub(crate) fn stream_content(
    spool: &tern_spool::Spool,
    state: tern_spool::QueueState,
    id: tern_spool::QueueId,
    buf: &mut [u8],
    feed: &mut dyn FnMut(&[u8]) -> Result<(), SpoolError>,
) -> Result<(), SpoolError> {
    let mut reader = spool.open_body(state, id)?;
    loop {
        let n = match reader.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(content::body_error(spool, state, id, e)),
        };
        feed(buf.get(..n).unwrap_or_default())?;
    }
}

/// A large message: converted streaming (`tern_convert::Scanner`, then its `Writer`),
/// reading the stored content twice and writing the copy to a spill file as it comes,
/// so the conversion holds a few hundred KiB whatever the size (docs/CONVERSION.md).
fn convert_streaming(
    spool: &tern_spool::Spool,
    state: tern_spool::QueueState,
    id: tern_spool::QueueId,
    source: Source,
) -> Converted {
    let mut buf = vec![0u8; PIECE];
    let limits = Limits::default();
    // Pass 1: the plan. A refusal stops the reading at once.
    let mut scanner = tern_convert::Scanner::new(source, &limits);
    let mut refused = None;
    stream_content(spool, state, id, &mut buf, &mut |piece| {
        if refused.is_none()
            && let Err(e) = scanner.feed(piece)
        {
            refused = Some(e);
        }
        Ok(())
    })?;
    if let Some(e) = refused {
        return Ok(Err(e.to_string()));
    }
    let plan = match scanner.finish() {
        Ok(plan) => plan,
        Err(e) => return Ok(Err(e.to_string())),
    };
    if !plan.needed() {
        return Ok(Ok(None));
    }
    // Pass 2: the copy, into the spill file.
    let mut file = spool.spill_file()?;
    let mut writer = plan.writer();
    let mut out = Vec::with_capacity(PIECE * 2);
    let mut len = 0u64;
    let mut failed = None;
    stream_content(spool, state, id, &mut buf, &mut |piece| {
        if failed.is_some() {
            return Ok(());
        }
        if let Err(e) = writer.feed(piece, &mut out) {
            failed = Some(e);
            return Ok(());
        }
        file.write_all(&out).map_err(spill_error(spool))?;
        len = len.saturating_add(out.len() as u64);
        out.clear();
        Ok(())
    })?;
    if let Some(e) = failed {
        return Ok(Err(e.to_string()));
    }
    if let Err(e) = writer.finish(&mut out) {
        return Ok(Err(e.to_string()));
    }
    file.write_all(&out).map_err(spill_error(spool))?;
    len = len.saturating_add(out.len() as u64);
    file.seek(SeekFrom::Start(0)).map_err(spill_error(spool))?;
    let (parts, fields) = (plan.parts_encoded(), plan.fields_encoded());
    Ok(Ok(Some((Copy7::Spilled { file, len }, parts, fields))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_spool::{BodyType, ClientInfo, Envelope, MailParams, QueueState, Recipient, Spool};

    async fn store(spool: &Spool, content: &[u8]) -> tern_spool::QueueId {
        let mut draft = spool.begin();
        let id = draft.id();
        draft.write(content).await.unwrap();
        let envelope = Envelope {
            quarantine: None,
            id,
            sender: "s@example.org".into(),
            recipients: vec![Recipient::new("r@example.net")],
            params: MailParams {
                declared_size: None,
                body: BodyType::EightBitMime,
                smtputf8: false,
                dsn_ret: None,
                dsn_envid: None,
            },
            client: ClientInfo {
                address: "127.0.0.1:0".into(),
                verified_name: None,
                helo: "test".into(),
                esmtp: true,
                tls: None,
                listener: "test".into(),
                ..Default::default()
            },
            arrival_micros: 1,
            size: content.len() as u64,
        };
        draft.commit(envelope).await.unwrap();
        id
    }

    fn read(copy: Copy7) -> Vec<u8> {
        match copy {
            Copy7::Memory(v) => v,
            Copy7::Spilled { mut file, len } => {
                let mut v = Vec::new();
                file.read_to_end(&mut v).unwrap();
                assert_eq!(v.len() as u64, len);
                v
            }
        }
    }

    /// A multipart of about `size` octets: 8-bit text, an 8-bit attachment, 8-bit
    /// Subject, preamble and epilogue, with lines crossing every 64 KiB piece.
    fn big(size: usize) -> Vec<u8> {
        let mut m = "Subject: Grüße\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"=_b\"\r\n\r\npréambule\r\n--=_b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n".as_bytes().to_vec();
        let mut i = 0usize;
        while m.len() < size / 2 {
            m.extend_from_slice("Zeile für Zeile, ça va ".as_bytes());
            m.extend(std::iter::repeat_n(b'x', i % 113));
            m.extend_from_slice(b"\r\n");
            i += 1;
        }
        m.extend_from_slice(b"--=_b\r\nContent-Type: application/octet-stream\r\n\r\n");
        while m.len() < size {
            m.extend((0..=255u8).filter(|b| *b != b'-'));
        }
        m.extend_from_slice("\r\n--=_b--\r\népilogue\r\n".as_bytes());
        m
    }

    #[tokio::test]
    async fn the_streaming_conversion_writes_what_the_whole_one_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) =
            Spool::open(&dir.path().join("spool"), tern_events::EventLog::discard()).unwrap();
        let content = big(3 * SPILL_OVER);
        let id = store(&spool, &content).await;
        let state = QueueState::Incoming;
        let streamed = convert_streaming(&spool, state, id, Source::EightBit)
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(matches!(streamed.0, Copy7::Spilled { .. }));
        let whole = convert_whole(&spool, state, id, Source::EightBit)
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!((streamed.1, streamed.2), (whole.1, whole.2));
        assert_eq!((streamed.1, streamed.2), (2, 1));
        let (streamed, whole) = (read(streamed.0), read(whole.0));
        assert!(streamed == whole, "the two forms differ");
        assert!(tern_convert::is_7bit(&streamed));
        assert!(
            streamed == tern_convert::downgrade_8bit(&content).unwrap(),
            "not the buffer form's copy"
        );

        // A refusal is a reason, not a failure, and leaves nothing behind.
        let mut bad = b"To: j\xc3\xb6rg@example.com\r\n\r\n".to_vec();
        bad.extend(big(2 * SPILL_OVER));
        let id = store(&spool, &bad).await;
        let refused = convert_streaming(&spool, state, id, Source::EightBit).unwrap();
        assert!(
            matches!(&refused, Err(reason) if reason.contains("SMTPUTF8")),
            "{:?}",
            refused.as_ref().err()
        );
    }
}
