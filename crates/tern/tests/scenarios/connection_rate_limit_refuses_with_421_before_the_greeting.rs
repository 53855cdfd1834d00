//! `limits.client_connections`: a client network over its connection rate gets
//! `421 4.7.0` as the very first line (no `220` greeting) and is closed; swaks sees the
//! limit named in plain text. The limit is logged once per network and window (event
//! 2131), however many connections it refuses, and every refusal is counted in
//! `tern_smtp_rate_limited_total{limit="client_connections"}`. Another address is not
//! held back. The limited client is 127.0.0.3 (the harness's own start probe comes from
//! 127.0.0.1).

use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::admin::Admin;
use crate::common::{Setup, require_program, run};

/// swaks from `from` to the greeting and EHLO, then QUIT.
fn swaks(swaks: &Path, server: SocketAddr, from: &str) -> Output {
    run(
        Command::new(swaks)
            .arg("--server")
            .arg(server.to_string())
            .args(["--timeout", "20", "--quit-after", "HELO"])
            .args(["--local-interface", from]),
        Duration::from_secs(60),
    )
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The value of `series` in a `/metrics` scrape (0 when absent).
fn metric(admin: &Admin, series: &str) -> f64 {
    let a = admin.get("/metrics");
    assert_eq!(a.status, 200, "{a:?}");
    a.body
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn connection_rate_limit_refuses_with_421_before_the_greeting() {
    let swaks_bin = require_program("swaks");
    let tern = Setup::new()
        .section("[limits]\nclient_connections = \"2/1m\"\nexempt_relay_networks = false\n")
        .start();
    let addr = tern.addr();
    let admin = Admin::of(&tern);

    for i in 0..2 {
        let out = swaks(&swaks_bin, addr, "127.0.0.3");
        let t = text(&out);
        assert!(out.status.success(), "connection {i} refused:\n{t}");
        assert!(t.contains("<-  220 "), "{t}");
    }

    // The third connection in the minute: 421 first, no greeting, the limit named.
    let out = swaks(&swaks_bin, addr, "127.0.0.3");
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("421 4.7.0")
            && t.contains(
                "Connection rate limit exceeded for client network 127.0.0.3/32 (2 per 1m)"
            ),
        "{t}"
    );
    assert!(!t.contains(" 220 "), "a greeting was sent:\n{t}");

    // A raw socket sees the same as its very first bytes, then the close.
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap();
    let from: IpAddr = "127.0.0.3".parse().unwrap();
    socket.bind(&SocketAddr::new(from, 0).into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut sock: TcpStream = socket.into();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut all = String::new();
    sock.read_to_string(&mut all).unwrap();
    assert!(all.starts_with("421 4.7.0 "), "{all:?}");
    assert_eq!(all.lines().count(), 1, "{all:?}");

    // Another address is not limited; its session, logged after both refusals, shows
    // the log has passed them.
    let out = swaks(&swaks_bin, addr, "127.0.0.2");
    assert!(out.status.success(), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !tern
        .events_with_id(2002)
        .iter()
        .any(|e| e.to_string().contains("127.0.0.2"))
    {
        assert!(Instant::now() < deadline, "no session end for 127.0.0.2");
        std::thread::sleep(Duration::from_millis(50));
    }
    let limited = tern.events_with_id(2131);
    assert_eq!(limited.len(), 1, "logged once per window: {limited:#?}");
    let e = limited[0].to_string();
    assert!(e.contains("127.0.0.3/32") && e.contains("2/1m"), "{e}");
    // Refused sessions never started: 127.0.0.3 started two.
    let started = tern.events_with_id(2001);
    let from_3 = started
        .iter()
        .filter(|e| e.to_string().contains("127.0.0.3:"))
        .count();
    assert_eq!(from_3, 2, "{started:#?}");
    assert_eq!(
        metric(
            &admin,
            "tern_smtp_rate_limited_total{limit=\"client_connections\"}"
        ),
        2.0
    );
}
