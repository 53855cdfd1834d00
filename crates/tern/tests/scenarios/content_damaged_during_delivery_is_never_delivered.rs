//! A queued message whose file is damaged after the queue loaded it and before its
//! content is sent (a disk returning other bytes, someone writing into the spool) is
//! never delivered: the spool checks the content while it streams it and withholds the
//! end, so the client stops before the final dot and closes the connection; the peer
//! discards the partial data, the recipient waits (4.3.0), and the next load
//! quarantines the file (event 3003). Without the check while streaming, the peer
//! would store the damaged message.

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use crate::common::free_port;
use crate::common::peers::{DnsServer, SmtpPeer, delivering, send_with};

#[test]
fn a_content_damaged_after_the_load_never_gets_its_final_dot() {
    let mut dns = DnsServer::start();
    let port = free_port("127.0.0.2".parse().unwrap());
    dns.set_mx("slow.test", &[(10, "mx.slow.test")], 300);
    dns.set_a("mx.slow.test", "127.0.0.2".parse().unwrap(), 300);
    // Every reply line 0.4 s late: the greeting, the EHLO lines, MAIL, RCPT and DATA
    // leave seconds between the connection and the 354.
    let peer = SmtpPeer::start_on("127.0.0.2", port, &["accept", "slow=400"]);
    let tern = delivering(&dns, port, "").start();

    let mut content =
        b"From: <s@client.test>\r\nTo: <a@slow.test>\r\nSubject: damage\r\n\r\n".to_vec();
    for i in 0..2000 {
        content.extend_from_slice(
            format!("line {i} of a message that will be damaged\r\n").as_bytes(),
        );
    }
    let id = send_with(
        tern.addr(),
        "MAIL FROM:<s@client.test>",
        &["RCPT TO:<a@slow.test>"],
        &content,
    );

    // The worker connected: the message task loaded (and checked) the file before.
    peer.wait_for_log("Peer:", Duration::from_secs(30));
    let path = tern.spool_dir().join("active").join(&id);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut b = [0u8; 1];
    let at = 16 + 40_000; // inside the content section (16-octet header first)
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x20;
    f.write_all_at(&b, at).unwrap();
    drop(f);

    // The next load finds the damage and quarantines the file.
    let quarantined = tern.wait_for_events(3003, 1, Duration::from_secs(60));
    assert!(
        quarantined[0].to_string().contains(&id),
        "{}",
        quarantined[0]
    );
    assert!(tern.spool_files("corrupt").iter().any(|n| n == &id));
    // The first attempt ended before the final dot: the peer stored nothing, and the
    // recipient was deferred, not bounced or delivered.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !peer.log().contains("connection lost") {
        assert!(Instant::now() < deadline, "{}", peer.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(peer.count(), 0, "a damaged message was delivered");
    let deferred = tern.events_with_id(4002);
    assert!(
        deferred.iter().any(|e| e
            .to_string()
            .contains("could not be read while it was sent")),
        "{deferred:?}"
    );
}
