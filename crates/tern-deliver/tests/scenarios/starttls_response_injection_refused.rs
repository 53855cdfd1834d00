//! The STARTTLS response-injection attack against the client: a man in the middle (or a
//! hostile server) answers STARTTLS with `220` and, in the same plaintext packet, a reply
//! meant to be read as if it came from inside TLS. The client must not start TLS over
//! such a stream and must not take the injected reply: the session fails (the message is
//! deferred by the queue, never sent in a stream that mixes plaintext into TLS).

use std::net::SocketAddr;

use tern_deliver::{SessionError, SmtpSession, TlsPolicy};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::common::context;

/// A server that injects `extra` after its `220` to STARTTLS; returns its address.
async fn injecting_server(extra: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.11:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        w.write_all(b"220 inject.test ESMTP\r\n").await.unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let cmd = line.trim_end().to_ascii_uppercase();
            if cmd.starts_with("EHLO") {
                w.write_all(b"250-inject.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
                    .await
                    .unwrap();
            } else if cmd == "STARTTLS" {
                let both = format!("220 2.0.0 go ahead\r\n{extra}");
                w.write_all(both.as_bytes()).await.unwrap();
                // Hold the connection open; the client decides.
                let mut rest = String::new();
                let _ = r.read_line(&mut rest).await;
                return;
            } else {
                w.write_all(b"250 ok\r\n").await.unwrap();
            }
        }
    });
    addr
}

#[tokio::test]
async fn starttls_response_injection_refused() {
    let addr = injecting_server("250-injected.test\r\n250 AUTH PLAIN\r\n").await;
    for policy in [TlsPolicy::May, TlsPolicy::Encrypt] {
        let addr = if matches!(policy, TlsPolicy::May) {
            addr
        } else {
            injecting_server("250 injected\r\n").await
        };
        let r = SmtpSession::connect(&context(), addr, "inject.test", policy).await;
        match r {
            Err(SessionError::Protocol { detail, .. }) => {
                assert!(detail.contains("after the reply to STARTTLS"), "{detail}");
            }
            Err(other) => panic!("{policy:?}: expected a protocol error, got {other:?}"),
            Ok(_) => panic!("{policy:?}: a session was set up over an injected stream"),
        }
    }
}
