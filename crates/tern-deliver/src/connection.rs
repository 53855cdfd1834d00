//! The byte stream under a session: plain TCP, TLS, or a Unix socket (LMTP), with timed
//! reads and writes.
//!
//! Every read and write is bounded by a time limit chosen by the caller for the stage.
//! Reading goes through [`ReplyParser`]; at most one read buffer of bytes beyond the
//! reply being returned is kept (`pending`), so memory per connection is bounded
//! whatever the peer sends.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;

use crate::error::{SessionError, Stage};
use crate::reply::{Reply, ReplyParser};

/// Size of one socket read.
const READ_CHUNK: usize = 8192;

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// A Unix domain socket (LMTP to a local server); never upgraded to TLS.
    Unix(UnixStream),
    /// After a failed TLS handshake consumed the TCP stream.
    Closed,
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Closed => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Closed => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }
}

/// A connection to one server.
pub(crate) struct Connection {
    stream: Stream,
    parser: ReplyParser,
    /// Bytes read after the end of the last reply returned; at most one read's worth.
    pending: Vec<u8>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.stream {
            Stream::Plain(_) => "plain",
            Stream::Tls(_) => "tls",
            Stream::Unix(_) => "unix",
            Stream::Closed => "closed",
        };
        f.debug_struct("Connection")
            .field("stream", &kind)
            .finish_non_exhaustive()
    }
}

impl Connection {
    pub(crate) fn new(tcp: TcpStream) -> Connection {
        Connection {
            stream: Stream::Plain(tcp),
            parser: ReplyParser::new(),
            pending: Vec::new(),
        }
    }

    pub(crate) fn new_unix(stream: UnixStream) -> Connection {
        Connection {
            stream: Stream::Unix(stream),
            parser: ReplyParser::new(),
            pending: Vec::new(),
        }
    }

    /// Reads one complete reply within `limit`.
    pub(crate) async fn read_reply(
        &mut self,
        stage: Stage,
        limit: Duration,
    ) -> Result<Reply, SessionError> {
        timeout(limit, self.read_reply_untimed(stage))
            .await
            .unwrap_or(Err(SessionError::Timeout { stage }))
    }

    async fn read_reply_untimed(&mut self, stage: Stage) -> Result<Reply, SessionError> {
        let protocol = |e: crate::reply::ReplyError| SessionError::Protocol {
            stage,
            detail: e.to_string(),
        };
        if !self.pending.is_empty() {
            let (used, reply) = self.parser.advance(&self.pending).map_err(protocol)?;
            self.pending.drain(..used.min(self.pending.len()));
            if let Some(reply) = reply {
                return Ok(reply);
            }
        }
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = self
                .stream
                .read(&mut buf)
                .await
                .map_err(|e| SessionError::io(stage, e))?;
            if n == 0 {
                return Err(SessionError::Dropped { stage });
            }
            let chunk = buf.get(..n).unwrap_or_default();
            let (used, reply) = self.parser.advance(chunk).map_err(protocol)?;
            if let Some(reply) = reply {
                self.pending
                    .extend_from_slice(chunk.get(used..).unwrap_or_default());
                return Ok(reply);
            }
        }
    }

    /// Writes and flushes `bytes` within `limit`.
    pub(crate) async fn write(
        &mut self,
        bytes: &[u8],
        stage: Stage,
        limit: Duration,
    ) -> Result<(), SessionError> {
        let io = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match timeout(limit, io).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SessionError::io(stage, e)),
            Err(_) => Err(SessionError::Timeout { stage }),
        }
    }

    /// Sends a command and reads its reply, both within `limit` each.
    pub(crate) async fn command(
        &mut self,
        line: &[u8],
        stage: Stage,
        limit: Duration,
    ) -> Result<Reply, SessionError> {
        self.write(line, stage, limit).await?;
        self.read_reply(stage, limit).await
    }

    /// The certificate chain the server presented, once TLS is up (end entity first).
    pub(crate) fn peer_certificates(
        &self,
    ) -> Option<Vec<rustls_pki_types::CertificateDer<'static>>> {
        match &self.stream {
            Stream::Tls(tls) => tls.get_ref().1.peer_certificates().map(<[_]>::to_vec),
            _ => None,
        }
    }

    /// Runs the TLS handshake over the plain stream. Refuses if the server sent anything
    /// after its reply to STARTTLS: such bytes were sent in plaintext and must not be
    /// taken as coming from inside TLS (the STARTTLS response-injection attack).
    pub(crate) async fn start_tls(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
        limit: Duration,
    ) -> Result<String, SessionError> {
        if !self.pending.is_empty() || !self.parser.is_idle() {
            return Err(SessionError::Protocol {
                stage: Stage::StartTls,
                detail: "data after the reply to STARTTLS".into(),
            });
        }
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Err(SessionError::Protocol {
                stage: Stage::StartTls,
                detail: "STARTTLS on a connection that is not plaintext".into(),
            });
        };
        let connector = tokio_rustls::TlsConnector::from(config);
        let tls = match timeout(limit, connector.connect(name, tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                let failure = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .map_or(
                        crate::TlsFailure::ValidationFailure,
                        crate::TlsFailure::of_rustls,
                    );
                return Err(SessionError::TlsHandshake {
                    failure,
                    detail: e.to_string(),
                });
            }
            Err(_) => {
                return Err(SessionError::Timeout {
                    stage: Stage::StartTls,
                });
            }
        };
        let description = crate::context::describe(tls.get_ref().1);
        self.stream = Stream::Tls(Box::new(tls));
        Ok(description)
    }

    /// Closes the write side (sends close_notify under TLS) within `limit`.
    pub(crate) async fn shutdown(&mut self, limit: Duration) {
        let _ = timeout(limit, self.stream.shutdown()).await;
    }
}
