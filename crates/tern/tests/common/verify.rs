//! Helpers for the inbound verification scenarios (`[verify]`, docs/FILTERING.md): a
//! server that verifies mail for `dest.test` from any loopback client but 127.0.0.1 (its
//! only relay network), the records the scripted DNS server publishes (SPF, DMARC, DKIM
//! keys), a client that sends from a chosen loopback address and times the end-of-data
//! reply, the stored message's Authentication-Results, and dkimpy's signer.

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use super::peers::DnsServer;
use super::{Reply, Setup, SmtpClient, Tern, dot_stuff, python, require_python_modules, run};

/// The address verified clients send from.
pub const CLIENT: &str = "127.0.0.5";
/// The authserv-id the test servers use.
pub const AUTHSERV: &str = "mx.tern.test";

/// A server receiving for `dest.test`, relaying only for 127.0.0.1, with `[verify]` on
/// (`authserv_id = mx.tern.test`) plus `keys`.
pub fn verifying(dns: &DnsServer, keys: &str) -> Setup {
    Setup::new()
        .listeners(vec![super::Listener::new(
            "mx",
            "127.0.0.1".parse().unwrap(),
        )])
        .dns(&dns.dns_section())
        .section("[relay]\ndomains = [\"dest.test\"]\nnetworks = [\"127.0.0.1/32\"]\n")
        .section(&format!(
            "[verify]\nenabled = true\nauthserv_id = \"{AUTHSERV}\"\ntimeout = 5\n{keys}\n"
        ))
}

/// Publishes a TXT record, cut into 255-octet strings.
pub fn publish_txt(dns: &mut DnsServer, name: &str, text: &str) {
    let strings: Vec<String> = text
        .as_bytes()
        .chunks(255)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    dns.set_txt(name, &strings, 300);
}

/// What the client saw of one transaction.
#[derive(Debug)]
pub struct Sent {
    /// The reply to the end of data.
    pub reply: Reply,
    /// From the end of the data to that reply.
    pub waited: Duration,
}

/// Sends `content` from `source` with `MAIL FROM:<mail_from>` to `rcpt@dest.test`.
pub fn send_from(tern: &Tern, source: &str, mail_from: &str, content: &[u8]) -> Sent {
    send_helo_from(tern, source, "client.test", mail_from, content)
}

/// [`send_from`] with a chosen EHLO name.
pub fn send_helo_from(
    tern: &Tern,
    source: &str,
    helo: &str,
    mail_from: &str,
    content: &[u8],
) -> Sent {
    let src: IpAddr = source.parse().unwrap();
    let addr: SocketAddr = tern.addr();
    let mut c = SmtpClient::connect_from(addr, src).expect("connect");
    c.hello(helo);
    let r = c
        .command(&format!("MAIL FROM:<{mail_from}>"))
        .expect("MAIL");
    assert_eq!(r.code, 250, "{}", r.text());
    let r = c.command("RCPT TO:<user@dest.test>").expect("RCPT");
    assert_eq!(r.code, 250, "{}", r.text());
    let r = c.command("DATA").expect("DATA");
    assert_eq!(r.code, 354, "{}", r.text());
    c.write_raw(&dot_stuff(content)).expect("data");
    let start = Instant::now();
    let reply = c.read_reply().expect("end of data reply");
    let waited = start.elapsed();
    let _ = c.command("QUIT");
    Sent { reply, waited }
}

/// The stored content of the message queued as `id`.
pub fn stored(tern: &Tern, id: &str) -> Vec<u8> {
    tern.spooled()
        .into_iter()
        .find(|(m, _)| m.id.to_string() == id)
        .map(|(_, s)| s.body)
        .unwrap_or_else(|| panic!("{id} not in the spool"))
}

/// The first header field of `content`, unfolded (`Name: value` on one line).
pub fn first_field(content: &[u8]) -> String {
    let text = String::from_utf8_lossy(content);
    let mut out = String::new();
    for (i, line) in text.split("\r\n").enumerate() {
        if i > 0 && !line.starts_with([' ', '\t']) {
            break;
        }
        out.push_str(line.trim_start());
        out.push(' ');
    }
    out.trim_end().to_string()
}

/// The value of the method `m` in an unfolded Authentication-Results (`pass`, ...).
pub fn result_of(ar: &str, m: &str) -> Option<String> {
    ar.split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix(&format!("{m}=")))
        .map(|r| r.split_whitespace().next().unwrap_or("").to_string())
}

/// A simple message From `from`.
pub fn message(from: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: <user@dest.test>\r\nSubject: {subject}\r\nDate: Mon, 2 Feb 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@client.test>\r\n\r\nHello.\r\n"
    )
    .into_bytes()
}

/// An RSA key made with openssl (PKCS#1 PEM, for dkimpy) and its `p=` value.
pub fn rsa_key(dir: &Path, bits: u32) -> (std::path::PathBuf, String) {
    let key = dir.join(format!("rsa{bits}.pem"));
    let out = run(
        std::process::Command::new("openssl")
            .args(["genrsa", "-traditional", "-out"])
            .arg(&key)
            .arg(bits.to_string()),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "openssl genrsa");
    let out = run(
        std::process::Command::new("sh").args([
            "-c",
            "openssl rsa -in \"$0\" -pubout -outform DER 2>/dev/null | base64 -w0",
            key.to_str().unwrap(),
        ]),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "openssl rsa -pubout");
    (key, String::from_utf8_lossy(&out.stdout).trim().to_string())
}

const SIGN: &str = r#"
import sys, dkim
msg = open(sys.argv[1], "rb").read()
key = open(sys.argv[2], "rb").read()
sig = dkim.sign(msg, sys.argv[3].encode(), sys.argv[4].encode(), key,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
sys.stdout.buffer.write(sig + msg)
"#;

/// `content` signed by dkimpy's `dkim.sign` for `selector._domainkey.domain`.
pub fn dkimpy_sign(content: &[u8], selector: &str, domain: &str, key: &Path) -> Vec<u8> {
    require_python_modules(&["dkim"]);
    let dir = tempfile::tempdir().unwrap();
    let msg = dir.path().join("m.eml");
    std::fs::write(&msg, content).unwrap();
    let out = python(
        SIGN,
        &[
            msg.to_str().unwrap(),
            key.to_str().unwrap(),
            selector,
            domain,
        ],
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "dkim.sign: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
