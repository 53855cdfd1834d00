//! The byte stream under a session: plain TCP, or TLS over it after STARTTLS or from the
//! first byte, or a local stream (`tern sendmail -bs`: stdin and stdout), never upgraded.
//!
//! [`Conn::upgrade`] swaps the plain stream for a TLS stream in place. The session must
//! have discarded its plaintext input buffer before calling it (RFC 3207 §4.2 and the
//! STARTTLS command-injection class of bugs): nothing read before the handshake is ever
//! interpreted after it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A byte stream a local program speaks SMTP on (`tern sendmail -bs`).
pub trait LocalStream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> LocalStream for T {}

/// A session's stream.
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// A local stream; TLS is never offered on it.
    Local(Box<dyn LocalStream>),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
    /// Transient state during an upgrade; never observed by I/O.
    Closed,
}

impl Conn {
    /// Performs the TLS handshake over the plain stream. On failure the connection is gone.
    pub async fn upgrade(&mut self, acceptor: &TlsAcceptor) -> io::Result<()> {
        let Conn::Plain(tcp) = std::mem::replace(self, Conn::Closed) else {
            return Err(io::Error::other("connection is not plain TCP"));
        };
        let tls = acceptor.accept(tcp).await?;
        *self = Conn::Tls(Box::new(tls));
        Ok(())
    }

    /// This server's address on the connection (for Dovecot's `lip=`); `None` for a
    /// local stream.
    pub fn local_ip(&self) -> Option<std::net::IpAddr> {
        match self {
            Conn::Plain(t) => t.local_addr().ok().map(|a| a.ip()),
            Conn::Tls(t) => t.get_ref().0.local_addr().ok().map(|a| a.ip()),
            Conn::Local(_) | Conn::Closed => None,
        }
    }

    /// `TLSv1.3 with cipher …` when encrypted.
    pub fn tls_description(&self) -> Option<String> {
        match self {
            Conn::Tls(t) => Some(crate::tls::describe(t.get_ref().1)),
            _ => None,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Local(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::Closed => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Local(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Closed => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Local(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Local(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::Closed => Poll::Ready(Ok(())),
        }
    }
}
