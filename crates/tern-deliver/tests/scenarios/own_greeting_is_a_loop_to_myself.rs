//! A server that greets with this process's own loop mark is this very server (an MX or
//! relay host that points back here, perhaps through NAT): the client says QUIT right
//! after the greeting, never EHLO, and fails with `LoopsBack`, a connection failure at
//! the greeting. Another process's mark, or only part of ours, is an ordinary server.

use std::net::SocketAddr;
use std::sync::Arc;

use tern_deliver::{ClientContext, SessionError, SmtpSession, Stage, TlsPolicy};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::common::config;

const GREETING: &str = "220 mx.tern.test ESMTP Tern loop-check=0123abcd4567ef89\r\n";

/// A one-connection server: greets with [`GREETING`], answers EHLO and QUIT, and sends
/// every command line it reads on the channel.
async fn greeter() -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.6:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        if write.write_all(GREETING.as_bytes()).await.is_err() {
            return;
        }
        while let Ok(Some(line)) = lines.next_line().await {
            let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
            let _ = tx.send(verb.clone());
            let answer: &[u8] = match verb.as_str() {
                "EHLO" => b"250-mx.tern.test\r\n250 PIPELINING\r\n",
                "QUIT" => b"221 2.0.0 Bye\r\n",
                _ => b"250 2.0.0 Ok\r\n",
            };
            if write.write_all(answer).await.is_err() || verb == "QUIT" {
                return;
            }
        }
    });
    (addr, rx)
}

fn context(mark: &str) -> Arc<ClientContext> {
    let mut c = config();
    c.loop_mark = Some(mark.to_owned());
    ClientContext::new(c).unwrap()
}

async fn commands(mut rx: mpsc::UnboundedReceiver<String>) -> Vec<String> {
    let mut got = Vec::new();
    // The server task ends (closing the channel) after QUIT or the client's close.
    while let Ok(Some(c)) =
        tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await
    {
        got.push(c);
    }
    got
}

#[tokio::test]
async fn own_greeting_is_a_loop_to_myself() {
    let (addr, rx) = greeter().await;
    let ctx = context("loop-check=0123abcd4567ef89");
    let err = SmtpSession::connect(&ctx, addr, "mx.tern.test", TlsPolicy::May)
        .await
        .unwrap_err();
    assert!(matches!(err, SessionError::LoopsBack), "{err}");
    assert!(err.is_connection_failure());
    assert_eq!(err.stage(), Stage::Greeting);
    assert_eq!(commands(rx).await, ["QUIT"], "QUIT at once, no EHLO");
}

#[tokio::test]
async fn another_mark_or_part_of_ours_is_an_ordinary_server() {
    for mark in ["loop-check=ffffffffffffffff", "loop-check=0123abcd"] {
        let (addr, rx) = greeter().await;
        let s = SmtpSession::connect(&context(mark), addr, "mx.tern.test", TlsPolicy::None)
            .await
            .unwrap_or_else(|e| panic!("{mark}: {e}"));
        s.quit().await;
        assert_eq!(commands(rx).await, ["EHLO", "QUIT"], "{mark}");
    }
}
