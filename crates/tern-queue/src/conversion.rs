//! The 7-bit copy of a message for a next hop without 8BITMIME (or for binary content,
//! which this client never sends as it is), and the stream a transaction reads.
//!
//! Memory: the copy is sent from memory only when it is at most [`SPILL_OVER`] octets;
//! a larger copy is written to a spill file (`Spool::spill_file`: the spool's private
//! `tmp/`, mode 0600, an unnamed inode freed when the transaction drops it and when the
//! process dies) and streamed from there, so the transaction holds 64 KiB of it at a
//! time. The converter (`tern-convert`, sans-I/O) reads its input whole: inputs up to
//! [`SPILL_OVER`] are converted as they come, larger ones one at a time in the process
//! ([`LargeConversions`], one per queue), so conversions never hold more than one large message and its copy at
//! once, whatever `max_active_messages` says (docs/CONVERSION.md).
//!
//! The stored content is never changed; every attempt to such a peer converts again.
//!
//! Hook for DKIM signing (not yet implemented): a signer must see the final bytes, so
//! it runs last, on the [`ContentStream`] a transaction is about to read (the stored
//! file, or this copy): it reads that stream once to hash it (bounded buffer), then
//! prepends its `DKIM-Signature` field and streams it again. A signature over a copy
//! that is spilled reads the spill file twice; nothing needs holding in memory.

use std::borrow::Cow;
use std::io::{Cursor, Seek, SeekFrom, Write};

use tern_convert::{Limits, Source};
use tern_events::{catalog, fields};
use tern_spool::{AsyncBodyReader, SpoolError};
use tokio::io::AsyncRead;
use tokio::sync::Semaphore;

use crate::Context;
use crate::content::{self, SPILL_OVER};
use crate::job::Job;

/// Large conversions (inputs over [`SPILL_OVER`]) run one at a time per queue: the
/// queue's [`Context`] holds one of these (no process-wide state).
#[derive(Debug)]
pub struct LargeConversions(Semaphore);

impl Default for LargeConversions {
    fn default() -> Self {
        LargeConversions(Semaphore::new(1))
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
    // Waits for the large conversion running now, if any; never closed.
    let _permit = if large {
        ctx.large_conversions.0.acquire().await.ok()
    } else {
        None
    };
    let msg = job.msg.clone();
    let spool = ctx.spool.clone();
    let work = crate::last_gasp::spawn_blocking(move || {
        let id = msg.envelope.id;
        let input = content::read_whole(&spool, msg.state, id, u64::MAX)?.unwrap_or_default();
        let (copy, parts, fields) =
            match tern_convert::downgrade(&input, source, &Limits::default()) {
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
            let path = spool.dir().join("tmp");
            let io = |op: &'static str| {
                let path = path.clone();
                move |e| SpoolError::io(op, path, e)
            };
            let mut file = spool.spill_file()?;
            file.write_all(&copy).map_err(io("write spill file in"))?;
            file.seek(SeekFrom::Start(0))
                .map_err(io("seek spill file in"))?;
            Copy7::Spilled {
                file,
                len: copy.len() as u64,
            }
        } else {
            Copy7::Memory(copy)
        };
        Ok::<_, SpoolError>(Ok((copy, parts, fields)))
    });
    match work.await {
        Ok(Ok(Ok((copy, parts, fields)))) => {
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
