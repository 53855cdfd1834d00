//! The content stream fails in the middle of the data (the spool's integrity check, a
//! read error): the client stops before the end-of-data marker and closes the
//! connection without QUIT, so the peer stores nothing. Without the abort, the peer
//! would store a message cut at the failure (the marker after a partial content).

#![allow(clippy::unwrap_used)]

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, ReadBuf};

use crate::common::*;
use tern_deliver::{OutRecipient, SessionError, Stage};

/// Yields `good` octets of content in small pieces, then an error.
struct FailingContent {
    good: Vec<u8>,
    at: usize,
}

impl AsyncRead for FailingContent {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at >= self.good.len() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "checksum mismatch",
            )));
        }
        let n = (self.good.len() - self.at).min(buf.remaining()).min(10_000);
        let at = self.at;
        buf.put_slice(&self.good[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_content_error_mid_data_abandons_the_transaction_before_the_final_dot() {
    let peer = Peer::start("127.0.0.44", &["accept"]);
    let mut session = connect(&peer).await;
    let mut good = b"Subject: cut\r\n\r\n".to_vec();
    for i in 0..5_000 {
        good.extend_from_slice(format!("line {i}\r\n").as_bytes());
    }
    let rcpts = [OutRecipient::new("a@example.net")];
    // The transaction claims more than the stream will give.
    let mut tx = transaction(&rcpts, &good);
    tx.size += 1000;
    let mut content = FailingContent {
        good: good.clone(),
        at: 0,
    };
    let err = session.send(&tx, &mut content).await.unwrap_err();
    assert!(matches!(err, SessionError::Content(_)), "{err:?}");
    assert_eq!(err.stage(), Stage::DataBlock);
    assert!(!err.is_data_unknown(), "nothing can have been delivered");
    assert!(!session.is_usable());
    session.quit().await;

    // Wait until the peer saw the connection end, then check it stored nothing.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !peer.log().contains("connection lost") {
        assert!(Instant::now() < deadline, "peer log:\n{}", peer.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(peer.messages().is_empty(), "a cut message was delivered");
    assert!(
        !peer.log().contains("QUIT"),
        "QUIT was sent inside the data"
    );
}
