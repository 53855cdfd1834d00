//! Issue 16: the MX of a domain is this server, reached at an address and port no
//! listener owns (a port forward on 127.0.0.7, as NAT would be): no address check can
//! know it. The greeting that comes back carries this process's loop mark, so the
//! client says QUIT at once (event 4035, `how` = `greeting`) and the mail is deferred
//! with 4.4.6: received once, never relayed to itself, not bounced. Another domain
//! through a real peer still flows.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::common::peers::{DnsServer, SmtpPeer, delivering};
use crate::common::{free_port, send_one, simple_message};

/// A TCP port forward: every connection to `listen` is joined to `to`. Stopped (and its
/// threads joined) on drop.
struct Forward {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Forward {
    fn start(listen: &str, to: SocketAddr) -> Forward {
        let listener = TcpListener::bind(listen).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut pipes = Vec::new();
            for incoming in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = incoming else { continue };
                let Ok(server) = TcpStream::connect_timeout(&to, Duration::from_secs(5)) else {
                    continue;
                };
                pipes.push(pipe(&client, &server));
                pipes.push(pipe(&server, &client));
            }
            for p in pipes {
                let _ = p.join();
            }
        });
        Forward {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

/// Copies `from` to `to` until either side closes (each read bounded by a timeout).
fn pipe(from: &TcpStream, to: &TcpStream) -> JoinHandle<()> {
    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
    std::thread::spawn(move || {
        let _ = from.set_read_timeout(Some(Duration::from_secs(30)));
        let mut buf = [0u8; 8192];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
        let _ = from.shutdown(Shutdown::Read);
    })
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _: io::Result<TcpStream> = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn mx_to_self_through_a_port_forward_is_recognised_by_its_greeting() {
    let mut dns = DnsServer::start();
    // The forward's port is the MX port of every domain; a real peer shares it.
    let port = free_port("127.0.0.7".parse().unwrap());
    dns.set_mx("nat.test", &[(10, "mx.nat.test")], 300);
    dns.set_a("mx.nat.test", "127.0.0.7".parse().unwrap(), 300);
    dns.set_mx("client.test", &[(10, "mx.client.test")], 300);
    dns.set_a("mx.client.test", "127.0.0.4".parse().unwrap(), 300);
    let sender_mx = SmtpPeer::start_on("127.0.0.4", port, &["accept"]);
    let tern = delivering(&dns, port, "").start();
    let _forward = Forward::start(&format!("127.0.0.7:{port}"), tern.addr());

    send_one(
        tern.addr(),
        "s@client.test",
        &["a@nat.test"],
        &simple_message("through the forward", "must not loop"),
    );
    let looped = tern.wait_for_events(4035, 1, Duration::from_secs(20));
    assert_eq!(looped[0]["how"], "greeting", "{looped:?}");
    assert_eq!(looped[0]["host"], "mx.nat.test[127.0.0.7]");
    let deferred = tern.wait_for_events(4002, 1, Duration::from_secs(20));
    let reason = deferred[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("4.4.6") && reason.contains("loops back to myself"),
        "{deferred:?}"
    );
    // The one session through the forward got QUIT right after the greeting: nothing
    // else was received.
    assert_eq!(tern.events_with_id(2003).len(), 1, "copies: {}", tern.log());
    assert!(tern.events_with_id(4003).is_empty(), "failed recipients");
    assert_eq!(tern.queue_json(&[]).len(), 1);

    // A domain whose MX is a real peer at the same port flows as before.
    send_one(
        tern.addr(),
        "s@other.test",
        &["b@client.test"],
        &simple_message("elsewhere", "fine"),
    );
    let got = sender_mx.wait_for(1, Duration::from_secs(20));
    assert_eq!(got[0].rcpts(), vec!["b@client.test".to_string()]);
    assert_eq!(got.len(), 1, "no bounce for the looping mail");
}
