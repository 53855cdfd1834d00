//! `tern sendmail -bs`: an SMTP session on stdin and stdout, run by the SMTP server's own
//! session code with the client treated as local: it may send to any domain even though
//! loopback is not a relay network here (where a TCP client from 127.0.0.1 is refused
//! with 554). The message goes through the pickup directory and is queued with the
//! envelope given in the session.

use std::time::Duration;

use crate::common::connectors::{FAST_PICKUP, assert_ok, sendmail};
use crate::common::{Setup, SmtpClient};

#[test]
fn an_smtp_session_on_stdin_queues_the_message() {
    let mut tern = Setup::new()
        .section(FAST_PICKUP)
        .section("[relay]\ndomains = [\"localhost\"]\nnetworks = [\"10.9.0.0/16\"]\n")
        .start();
    // Over TCP, 127.0.0.1 may not relay here.
    let mut c = SmtpClient::connect(tern.addr()).unwrap();
    c.hello("client.test");
    assert_eq!(c.command("MAIL FROM:<app@client.test>").unwrap().code, 250);
    assert_eq!(c.command("RCPT TO:<far@example.net>").unwrap().code, 554);
    let _ = c.command("QUIT");

    let script = b"EHLO app.local\r\nMAIL FROM:<app@client.test>\r\nRCPT TO:<far@example.net> NOTIFY=NEVER\r\n\
                   RCPT TO:<near@localhost>\r\nDATA\r\nSubject: via -bs\r\n\r\n..dot stuffed\r\nbody\r\n.\r\nQUIT\r\n";
    let out = sendmail(&tern, &["-bs"], script);
    let stdout = assert_ok(&out, "sendmail -bs");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("220 mx.tern.test ESMTP"), "{stdout}");
    assert!(stdout.contains("250-PIPELINING"), "{stdout}");
    assert!(
        stdout.contains("250 2.1.5 Ok\r\n250 2.1.5 Ok"),
        "both recipients taken: {stdout}"
    );
    assert!(stdout.contains("250 2.0.0 Ok: queued as "), "{stdout}");
    assert!(
        lines.last().is_some_and(|l| l.starts_with("221")),
        "{stdout}"
    );

    let (m, s) = super::sendmail_takes_recipients_from_arguments_and_headers::queued_with_subject(
        &tern, "via -bs",
    );
    let env = m.envelope.unwrap();
    assert_eq!(env.sender, "app@client.test");
    let rcpts: Vec<&str> = env.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(rcpts, ["far@example.net", "near@localhost"]);
    assert!(env.recipients[0].notify.is_some_and(|n| n.never));
    let body = String::from_utf8_lossy(&s.body);
    assert!(
        body.starts_with("Received: by mx.tern.test (Tern pickup"),
        "{body}"
    );
    assert!(
        body.contains("Received: from app.local (localhost [127.0.0.1])"),
        "{body}"
    );
    assert!(body.ends_with("\r\n\r\n.dot stuffed\r\nbody\r\n"), "{body}");

    // A session that ends without QUIT, mid-message, submits nothing.
    let out = sendmail(
        &tern,
        &["-bs"],
        b"HELO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nSubject: cut\r\n\r\nhalf",
    );
    assert!(out.status.success());
    tern.stop(Duration::from_secs(15));
    assert_eq!(tern.spooled().len(), 1, "the cut session queued nothing");
    let leftovers =
        crate::common::connectors::file_names(&crate::common::connectors::pickup_dir(&tern));
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
