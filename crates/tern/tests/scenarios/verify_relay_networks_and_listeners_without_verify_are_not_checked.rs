//! Mail from a relay network (127.0.0.1 here) is never verified: no
//! Authentication-Results is added even to a spoofed `p=reject` From. A listener with
//! `verify = false` does not verify either, while the other listener does.

use crate::common::peers::DnsServer;
use crate::common::verify::{CLIENT, message, publish_txt, send_from, stored, verifying};
use crate::common::{Listener, SmtpClient, dot_stuff};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn relay_networks_and_unverified_listeners_get_no_checks() {
    let mut dns = DnsServer::start();
    publish_txt(&mut dns, "_dmarc.bank.test", "v=DMARC1; p=reject");
    let tern = verifying(&dns, "")
        .listeners(vec![
            Listener::new("mx", "127.0.0.1".parse().unwrap()),
            Listener::new("plain", "127.0.0.1".parse().unwrap()).with("verify = false"),
        ])
        .start();
    let spoof = message("ceo@bank.test", "relay");
    let sent = send_from(&tern, "127.0.0.1", "ceo@bank.test", &spoof);
    let id = sent
        .reply
        .queued_id()
        .unwrap_or_else(|| panic!("{}", sent.reply.text()));
    let text = String::from_utf8_lossy(&stored(&tern, &id)).to_string();
    assert!(text.starts_with("Received: "), "{text}");
    assert!(!text.contains("Authentication-Results"), "{text}");

    // The listener with verify = false.
    let mut c = SmtpClient::connect_from(tern.addr_of("plain"), CLIENT.parse().unwrap()).unwrap();
    c.hello("client.test");
    assert_eq!(c.command("MAIL FROM:<ceo@bank.test>").unwrap().code, 250);
    assert_eq!(c.command("RCPT TO:<user@dest.test>").unwrap().code, 250);
    assert_eq!(c.command("DATA").unwrap().code, 354);
    c.write_raw(&dot_stuff(&spoof)).unwrap();
    let r = c.read_reply().unwrap();
    let id = r.queued_id().unwrap_or_else(|| panic!("{}", r.text()));
    let text = String::from_utf8_lossy(&stored(&tern, &id)).to_string();
    assert!(!text.contains("Authentication-Results"), "{text}");

    // The verifying listener refuses the same message from an outside client.
    let sent = send_from(&tern, CLIENT, "ceo@bank.test", &spoof);
    assert_eq!(sent.reply.code, 550, "{}", sent.reply.text());
}
