//! The inbound side of TLS reporting (`[tls_reports] inbound_events = true`): a client
//! whose STARTTLS handshake with a listener fails gets event 4174 (client, listener,
//! reason), and a client that sends mail in the clear on a listener offering STARTTLS
//! gets event 4175; each at most once per client network and minute, however many
//! times it happens.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::{Setup, send_one, simple_message, toml_str, write_test_certificate};

/// Greeting, EHLO, STARTTLS, then bytes that are no TLS handshake.
fn broken_handshake(addr: std::net::SocketAddr) {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut w = stream;
    let reply = |reader: &mut BufReader<TcpStream>| loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("connection closed");
        }
        if line.as_bytes().get(3) == Some(&b' ') {
            return line;
        }
    };
    assert!(reply(&mut reader).starts_with("220"));
    w.write_all(b"EHLO client.test\r\n").unwrap();
    assert!(reply(&mut reader).starts_with("250"));
    w.write_all(b"STARTTLS\r\n").unwrap();
    assert!(reply(&mut reader).starts_with("220"));
    w.write_all(b"\x16\x03\x01\x00\x05this is not a ClientHello\r\n")
        .unwrap();
    // The server gives up the session: read to its end.
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut reader, &mut rest);
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn tls_inbound_events_name_failed_handshakes_and_cleartext_mail() {
    let work = tempfile::tempdir().unwrap();
    let (cert, key) = write_test_certificate(work.path());
    let tern = Setup::new()
        .listener_keys(&format!(
            "certificate = {}\nprivate_key = {}",
            toml_str(&cert.display().to_string()),
            toml_str(&key.display().to_string())
        ))
        .section("[tls_reports]\ninbound_events = true\n")
        .start();

    for n in 1..=2 {
        broken_handshake(tern.addr());
        // The handshake failure as the server always logged it (2008).
        tern.wait_for_events(2008, n, Duration::from_secs(10));
    }
    let failed = tern.wait_for_events(4174, 1, Duration::from_secs(10));
    assert_eq!(failed[0]["listener"], "smtp", "{failed:?}");
    assert!(
        failed[0]["client"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{failed:?}"
    );
    assert!(
        !failed[0]["reason"].as_str().unwrap().is_empty(),
        "{failed:?}"
    );

    for n in 1..=2 {
        send_one(
            tern.addr(),
            "s@client.test",
            &["r@localhost"],
            &simple_message("clear", "x"),
        );
        tern.wait_for_events(2003, n, Duration::from_secs(10));
    }
    let clear = tern.wait_for_events(4175, 1, Duration::from_secs(10));
    assert_eq!(clear[0]["listener"], "smtp", "{clear:?}");
    assert_eq!(clear[0]["reason"], "STARTTLS not used", "{clear:?}");
    // Twice each, but once per network and minute.
    tern.wait_for_events(2002, 4, Duration::from_secs(10));
    assert_eq!(tern.events_with_id(4174).len(), 1);
    assert_eq!(tern.events_with_id(4175).len(), 1);
}
