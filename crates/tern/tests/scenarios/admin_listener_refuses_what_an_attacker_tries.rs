//! What whoever can reach the admin port might try, against a running server:
//! - half-sent requests: each is closed after `admin.header_timeout_secs`, and once
//!   `admin.max_connections` are open the next connection is answered 503 at once, so
//!   the listener is usable again as soon as the stragglers time out;
//! - a request whose body never comes: 503 after `admin.request_timeout_secs`;
//! - the right token anywhere but the `Authorization: Bearer` header (query string,
//!   cookie, Basic credentials): 401;
//! - message ids that climb out of the spool: 400, nothing read;
//! - `/readyz` asked in a tight loop: answered, with at most one disk probe a second
//!   (the cache itself is unit-tested in tern-admin's `health`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::Setup;
use crate::common::admin::Admin;

const MAX: usize = 6;
const HEADER_TIMEOUT: u64 = 2;

/// Reads until the peer closes or `limit` passes; what was read, and whether it closed.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), false)
}

fn addr_of(admin: &Admin) -> SocketAddr {
    admin.base.trim_start_matches("http://").parse().unwrap()
}

#[test]
fn admin_listener_refuses_what_an_attacker_tries() {
    let tern = Setup::new()
        .admin(&format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\nmax_connections = {MAX}\nheader_timeout_secs = {HEADER_TIMEOUT}\nrequest_timeout_secs = 2\n"
        ))
        .start();
    let admin = Admin::of(&tern);
    let addr = addr_of(&admin);

    // Half-sent requests fill the listener...
    let started = Instant::now();
    let mut stragglers: Vec<TcpStream> = (0..MAX)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    // ...so the next connection is refused at once, not left waiting.
    let mut extra = TcpStream::connect(addr).unwrap();
    let (answer, closed) = read_until_closed(&mut extra, Duration::from_secs(5));
    assert!(
        answer.starts_with("HTTP/1.1 503") && closed,
        "a connection past admin.max_connections: {answer:?}"
    );
    // Each straggler is closed once its header time is up (never before it).
    for s in &mut stragglers {
        let (_, closed) = read_until_closed(s, Duration::from_secs(HEADER_TIMEOUT + 10));
        assert!(closed, "a half-sent request was still open");
    }
    assert!(
        started.elapsed() >= Duration::from_secs(HEADER_TIMEOUT),
        "closed before the header timeout: {:?}",
        started.elapsed()
    );
    // An idle connection that never sends a byte is closed the same way.
    let mut idle = TcpStream::connect(addr).unwrap();
    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(HEADER_TIMEOUT + 10));
    assert!(closed, "an idle connection was never closed");
    // And the listener serves again.
    assert_eq!(admin.get("/api/v1/status").status, 200);

    // A request whose body never comes: 503 when the request time is up.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(
        format!(
            "POST /api/v1/queue/actions/hold HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
            admin.token
        )
        .as_bytes(),
    )
    .unwrap();
    let (answer, closed) = read_until_closed(&mut slow, Duration::from_secs(15));
    assert!(
        answer.starts_with("HTTP/1.1 503") && closed,
        "a request whose body never came: {answer:?}"
    );

    // The right token, but not where the API reads it: 401 every time.
    let token = admin.token.clone();
    let basic = {
        let raw = format!("tern:{token}");
        base64_encode(raw.as_bytes())
    };
    for (path, header) in [
        (format!("/api/v1/status?token={token}"), None),
        (format!("/api/v1/status?access_token={token}"), None),
        (
            "/api/v1/status".to_owned(),
            Some(("Cookie", format!("token={token}"))),
        ),
        (
            "/api/v1/status".to_owned(),
            Some(("Authorization", format!("Basic {basic}"))),
        ),
        (
            "/api/v1/status".to_owned(),
            Some(("Authorization", format!("Token {token}"))),
        ),
        (
            "/metrics".to_owned(),
            Some(("Cookie", format!("admin_token={token}"))),
        ),
    ] {
        let mut s = TcpStream::connect(addr).unwrap();
        let extra = header.map_or(String::new(), |(k, v)| format!("{k}: {v}\r\n"));
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n")
                .as_bytes(),
        )
        .unwrap();
        let (answer, _) = read_until_closed(&mut s, Duration::from_secs(10));
        assert!(
            answer.starts_with("HTTP/1.1 401"),
            "{path} with {extra:?}: {answer}"
        );
    }

    // Queue ids that climb out of the spool directory.
    for id in [
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "..",
        "%2E%2E",
        "x%00y",
        "00000000000000%2F..",
    ] {
        for path in [
            format!("/api/v1/queue/{id}"),
            format!("/api/v1/queue/{id}/raw"),
        ] {
            let a = admin.get(&path);
            assert!(
                a.status == 400 || a.status == 404,
                "{path}: {} {}",
                a.status,
                a.body
            );
            assert!(!a.body.contains("root:"), "{path} read a file: {}", a.body);
        }
    }

    // /readyz in a tight loop stays answered (and the disk sees one probe a second).
    for _ in 0..300 {
        let r = admin.get_with_auth("/readyz", None);
        assert_eq!(r.status, 200, "{r:?}");
    }
}

/// Standard base64 (tests only).
fn base64_encode(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
