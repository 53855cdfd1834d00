//! The CLI gives its admin token only to the Tern that owns the data directory. Another
//! program listening where `admin.addr` points (Tern stopped and someone else took the
//! port, or a stale file) never sees it:
//! - server stopped: the spool lock is free, so the CLI says no server runs and connects
//!   nowhere;
//! - server running, `admin.addr` pointing elsewhere: the listener there cannot prove it
//!   knows the token (`/proof`), so the CLI stops before sending it.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::admin::Admin;
use crate::common::{Setup, run};

/// A listener that records every byte sent to it and answers each request with a
/// plausible 200 (a made-up proof).
struct Impostor {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<u8>>>,
    connections: Arc<Mutex<usize>>,
}

impl Impostor {
    fn start() -> Impostor {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let (s2, c2) = (Arc::clone(&seen), Arc::clone(&connections));
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut c) = conn else { return };
                *c2.lock().unwrap() += 1;
                c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut buf = [0u8; 4096];
                let n = c.read(&mut buf).unwrap_or(0);
                s2.lock().unwrap().extend_from_slice(&buf[..n]);
                let body = br#"{"proof":"00","destinations":[]}"#;
                let _ = c.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    )
                    .as_bytes(),
                );
                let _ = c.write_all(body);
            }
        });
        Impostor {
            addr,
            seen,
            connections,
        }
    }

    fn seen(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }
}

#[test]
fn cli_sends_the_token_only_to_its_own_server() {
    let mut tern = Setup::new().start();
    let token = Admin::of(&tern).token;
    let addr_file = tern.data_dir.join("admin.addr");
    let real = std::fs::read_to_string(&addr_file).unwrap();

    // The real server answers.
    let out = run(
        &mut tern.tern_command(&["config", "show"]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{out:?}");

    // Running, but admin.addr names someone else's listener.
    let impostor = Impostor::start();
    std::fs::write(&addr_file, format!("{}\n", impostor.addr)).unwrap();
    let out = run(
        &mut tern.tern_command(&["config", "show"]),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr.contains("is not this Tern"), "{stderr}");
    let seen = impostor.seen();
    assert!(seen.starts_with("GET /proof?nonce="), "{seen}");
    assert!(
        !seen.contains(&token),
        "the token reached the impostor: {seen}"
    );
    assert!(
        !seen.to_ascii_lowercase().contains("authorization"),
        "{seen}"
    );
    std::fs::write(&addr_file, &real).unwrap();

    // Stopped: nothing is sent anywhere, even with an address to go to.
    tern.stop(Duration::from_secs(30));
    let impostor = Impostor::start();
    std::fs::write(&addr_file, format!("{}\n", impostor.addr)).unwrap();
    for args in [
        &["dest", "list"][..],
        &["queue", "summary"],
        &["config", "show"],
        &["log-level"],
    ] {
        let out = run(&mut tern.tern_command(args), Duration::from_secs(30));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {out:?}");
        assert!(stderr.contains("no Tern server runs"), "{args:?}: {stderr}");
    }
    for args in [&["status"][..], &["reload"]] {
        let _ = run(&mut tern.tern_command(args), Duration::from_secs(30));
    }
    assert_eq!(
        *impostor.connections.lock().unwrap(),
        0,
        "the CLI connected to the impostor: {}",
        impostor.seen()
    );
}
