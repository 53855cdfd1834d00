//! Streaming a stored message's content to a delivery, checked as it goes.
//!
//! A delivery never holds a message in memory: [`Spool::open_body`] opens the message
//! file (never following a link, refusing anything but a regular file), checks its
//! header and trailer, and returns a [`BodyReader`] over the content section only. It
//! reads with positioned reads into the caller's buffer, so memory per delivery is the
//! caller's buffer (64 KiB in Tern's deliveries) whatever the message size.
//!
//! Integrity: the format's whole-content check is the CRC-32C in the trailer. The reader
//! computes it over the bytes it hands out, and the read that reaches the end of the
//! content verifies it *before* returning its bytes: when the check fails, that last
//! piece is withheld and the read returns an error ([`BodyError`], kind `InvalidData`).
//! A consumer that writes each piece before asking for the next therefore never writes
//! the end of a message whose content fails its check: the SMTP client never sends the
//! final dot, a Maildir or drop file stays in its temporary name and is removed. The
//! same holds for a file that is shorter than its trailer says (kind `UnexpectedEof`).
//! The message task verified the whole content once when it loaded the message
//! ([`Spool::scan`]); the check while streaming catches what changed since.
//!
//! Only messages stored as files are streamed: a message leaves its segment (becomes
//! `active/<id>`) before a delivery reads it.
//!
//! Trust: the file is hostile; lengths come from a trailer that `format` validated
//! against the real file length, and every read is bounded by the content section.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::error::CorruptReason;

/// Pieces Tern's deliveries read the content in.
pub const BODY_CHUNK: usize = 64 * 1024;

/// Why a content stream stopped before its end. Carried inside the `io::Error` a read
/// returns (`io::Error::get_ref` downcasts to it). Either one means the content is not
/// what was stored: the delivery is abandoned before the end of the message and the
/// message task quarantines the file when it next loads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The CRC-32C of the content is not the one in the trailer.
    #[error("the stored content fails its checksum")]
    Checksum,
    /// The file ended before the content did.
    #[error("the stored content is shorter than its trailer says")]
    Truncated,
}

impl BodyError {
    fn into_io(self) -> io::Error {
        let kind = match self {
            BodyError::Checksum => io::ErrorKind::InvalidData,
            BodyError::Truncated => io::ErrorKind::UnexpectedEof,
        };
        io::Error::new(kind, self)
    }

    /// The corruption this error reports, for quarantine.
    pub fn reason(self) -> CorruptReason {
        match self {
            BodyError::Checksum => CorruptReason::ChecksumMismatch {
                section: crate::error::Section::Content,
            },
            BodyError::Truncated => CorruptReason::Truncated,
        }
    }

    /// The `BodyError` inside an error a [`BodyReader`] returned, if it is one.
    pub fn from_io(e: &io::Error) -> Option<BodyError> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<BodyError>())
            .copied()
    }
}

/// The running check: bytes left and CRC so far.
#[derive(Debug, Clone, Copy)]
struct Check {
    left: u64,
    crc: u32,
    expected: u32,
    /// Set once the end was verified (or failed): later reads return 0 (or the error).
    ended: Option<Result<(), BodyError>>,
}

impl Check {
    /// Takes in `n` bytes just read; at the end of the content, verifies the CRC.
    fn absorb(&mut self, bytes: &[u8]) -> Result<(), BodyError> {
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.left = self.left.saturating_sub(bytes.len() as u64);
        if self.left == 0 {
            let end = if self.crc == self.expected {
                Ok(())
            } else {
                Err(BodyError::Checksum)
            };
            self.ended = Some(end);
            end?;
        }
        Ok(())
    }

    /// What a read past the end returns.
    fn at_end(&mut self) -> io::Result<usize> {
        match self.ended {
            Some(Ok(())) => Ok(0),
            Some(Err(e)) => Err(e.into_io()),
            // Empty content: nothing was absorbed yet.
            None => {
                self.absorb(&[]).map_err(BodyError::into_io)?;
                Ok(0)
            }
        }
    }
}

/// A blocking reader over one message's content; see the module documentation.
#[derive(Debug)]
pub struct BodyReader {
    file: File,
    /// File offset of the next byte to read.
    offset: u64,
    len: u64,
    check: Check,
}

impl BodyReader {
    pub(crate) fn new(file: File, offset: u64, len: u64, expected: u32) -> BodyReader {
        BodyReader {
            file,
            offset,
            len,
            check: Check {
                left: len,
                crc: 0,
                expected,
                ended: None,
            },
        }
    }

    /// Length of the content in octets (the envelope's `size`).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the content is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The same stream for async code: reads go to the blocking pool (tokio's file),
    /// with the same check. Call from inside a tokio runtime.
    pub fn into_async(self) -> io::Result<AsyncBodyReader> {
        use std::io::{Seek, SeekFrom};
        let mut file = self.file;
        file.seek(SeekFrom::Start(self.offset))?;
        let left = self.check.left;
        Ok(AsyncBodyReader {
            inner: tokio::fs::File::from_std(file).take(left),
            check: self.check,
        })
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.check.left == 0 {
            return self.check.at_end();
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.check.left).map_or(buf.len(), |l| l.min(buf.len()));
        let Some(piece) = buf.get_mut(..want) else {
            return Ok(0);
        };
        let n = loop {
            match self.file.read_at(piece, self.offset) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            self.check.ended = Some(Err(BodyError::Truncated));
            return Err(BodyError::Truncated.into_io());
        }
        let got = piece.get(..n).unwrap_or_default();
        self.check.absorb(got).map_err(BodyError::into_io)?;
        self.offset = self.offset.saturating_add(n as u64);
        Ok(n)
    }
}

/// The async face of a [`BodyReader`] (see [`BodyReader::into_async`]).
#[derive(Debug)]
pub struct AsyncBodyReader {
    inner: tokio::io::Take<tokio::fs::File>,
    check: Check,
}

impl AsyncRead for AsyncBodyReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.check.left == 0 {
            return Poll::Ready(this.check.at_end().map(|_| ()));
        }
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {
                let got = buf.filled().get(before..).unwrap_or_default();
                if got.is_empty() {
                    this.check.ended = Some(Err(BodyError::Truncated));
                    return Poll::Ready(Err(BodyError::Truncated.into_io()));
                }
                if let Err(e) = this.check.absorb(got) {
                    // The last piece is withheld: the consumer never sees the end.
                    buf.set_filled(before);
                    return Poll::Ready(Err(e.into_io()));
                }
                Poll::Ready(Ok(()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(prefix: &[u8], content: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(prefix).unwrap();
        f.write_all(content).unwrap();
        f
    }

    fn read_all(r: &mut BodyReader, piece: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; piece];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn streams_the_content_and_ends_cleanly() {
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let f = file_with(b"0123456789abcdef", &content);
        let mut r = BodyReader::new(f, 16, content.len() as u64, crc32c::crc32c(&content));
        assert_eq!(read_all(&mut r, 4096).unwrap(), content);
        assert_eq!(r.read(&mut [0u8; 8]).unwrap(), 0);
    }

    #[test]
    fn a_checksum_failure_withholds_the_last_piece() {
        let content = vec![b'a'; 10_000];
        let f = file_with(b"", &content);
        let mut r = BodyReader::new(f, 0, content.len() as u64, 12345);
        let mut buf = vec![0u8; 4096];
        assert_eq!(r.read(&mut buf).unwrap(), 4096);
        assert_eq!(r.read(&mut buf).unwrap(), 4096);
        let e = r.read(&mut buf).unwrap_err();
        assert_eq!(BodyError::from_io(&e), Some(BodyError::Checksum));
        // And it stays failed.
        let e = r.read(&mut buf).unwrap_err();
        assert_eq!(BodyError::from_io(&e), Some(BodyError::Checksum));
    }

    #[test]
    fn a_short_file_is_truncated() {
        let content = b"hello";
        let f = file_with(b"", content);
        let mut r = BodyReader::new(f, 0, 10, 0);
        let e = read_all(&mut r, 64).unwrap_err();
        assert_eq!(BodyError::from_io(&e), Some(BodyError::Truncated));
    }

    #[test]
    fn empty_content_is_checked_too() {
        let f = file_with(b"", b"");
        let mut r = BodyReader::new(f, 0, 0, crc32c::crc32c(b""));
        assert_eq!(read_all(&mut r, 64).unwrap(), b"");
        let f = file_with(b"", b"");
        let mut r = BodyReader::new(f, 0, 0, 7);
        assert!(read_all(&mut r, 64).is_err());
    }

    #[tokio::test]
    async fn the_async_reader_checks_the_same_way() {
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 13) as u8).collect();
        let f = file_with(b"xxxx", &content);
        let r = BodyReader::new(f, 4, content.len() as u64, crc32c::crc32c(&content));
        let mut a = r.into_async().unwrap();
        let mut out = Vec::new();
        a.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, content);

        let f = file_with(b"xxxx", &content);
        let r = BodyReader::new(f, 4, content.len() as u64, 1);
        let mut a = r.into_async().unwrap();
        let mut out = Vec::new();
        let e = a.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(BodyError::from_io(&e), Some(BodyError::Checksum));
        assert!(out.len() < content.len(), "the last piece was withheld");
    }
}
