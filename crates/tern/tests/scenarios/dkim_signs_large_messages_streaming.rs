//! A message of 3 MiB (stored 7-bit, sent as stored) is signed streaming: the stored
//! file is read once through the spool's check to sign it, then sent behind the
//! signature, and dkimpy verifies it. The body has lines with trailing white space and
//! several empty lines at its end, which relaxed canonicalisation must treat as the
//! peer sees them.

use std::time::Duration;

use crate::common::dkim::{assert_signed_by, generate, section};
use crate::common::free_port;
use crate::common::peers::{DnsServer, SmtpPeer, delivering, send_with};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn a_message_over_one_mib_is_signed_streaming_and_verifies() {
    let keys = tempfile::tempdir().unwrap();
    let rsa = generate(keys.path(), "big.test", "s1", "rsa");
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    dns.set_mx("dest.test", &[(10, "mx.dest.test")], 300);
    dns.set_a("mx.dest.test", "127.0.0.2".parse().unwrap(), 300);
    let sink = SmtpPeer::start_on("127.0.0.2", port, &[]);
    let tern = delivering(&dns, port, "")
        .section(&section(&[&rsa], ""))
        .start();
    let mut content = b"From: <s@big.test>\r\nTo: <a@dest.test>\r\nSubject: large\r\n\r\n".to_vec();
    let mut i = 0usize;
    while content.len() < 3 * 1024 * 1024 {
        content.extend_from_slice(format!("line {i} of a long message \t \r\n").as_bytes());
        i += 1;
    }
    content.extend_from_slice(b"last line\r\n\r\n\r\n");
    send_with(
        tern.addr(),
        "MAIL FROM:<s@big.test>",
        &["RCPT TO:<a@dest.test>"],
        &content,
    );
    let got = sink.wait_for(1, Duration::from_secs(60));
    assert_eq!(got.len(), 1);
    assert!(got[0].content.len() > 3 * 1024 * 1024);
    assert_signed_by(&got[0].content, &[&rsa], "large");
}
