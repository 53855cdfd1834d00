//! `tern sendmail` flags: `-f` sets the envelope sender (and `-f '<>'` the null sender),
//! `-F` the name in the From field it adds, `-i` and `-oi` keep lines holding a lone dot,
//! the usual harmless flags (`-odi`, `-oem`, `-om`, `-v`, `-Am`, `-B 8BITMIME`) are
//! accepted, `-N`/`-R`/`-V` set the DSN parameters, and an unknown flag is a usage error
//! (64) that submits nothing.

use std::time::Duration;

use tern_spool::DsnRet;

use crate::common::connectors::{FAST_PICKUP, assert_ok, header, sendmail};
use crate::common::{Setup, Tern};

fn queued(tern: &Tern, subject: &str) -> (tern_spool::ListedMessage, tern_spool::StoredMessage) {
    super::sendmail_takes_recipients_from_arguments_and_headers::queued_with_subject(tern, subject)
}

#[test]
fn sender_name_dots_and_harmless_flags() {
    let mut tern = Setup::new().section(FAST_PICKUP).start();

    let out = sendmail(
        &tern,
        &[
            "-f",
            "bounces@app.test",
            "-FWeb Shop",
            "-i",
            "-odi",
            "-oem",
            "-om",
            "-v",
            "-Am",
            "-B",
            "8BITMIME",
            "buyer@example.net",
        ],
        b"Subject: order\n\nline\n.\nafter a lone dot\n",
    );
    let stdout = assert_ok(&out, "sendmail -f -F -i");
    assert!(stdout.contains("queued as"), "-v says where: {stdout}");
    let (m, s) = queued(&tern, "order");
    let env = m.envelope.unwrap();
    assert_eq!(env.sender, "bounces@app.test");
    assert_eq!(
        header(&s.body, "From").as_deref(),
        Some("\"Web Shop\" <bounces@app.test>")
    );
    assert!(
        String::from_utf8_lossy(&s.body).ends_with("\r\nline\r\n.\r\nafter a lone dot\r\n"),
        "-i keeps the lone dot"
    );

    let out = sendmail(
        &tern,
        &[
            "-oi",
            "-f<>",
            "-N",
            "failure,delay",
            "-R",
            "hdrs",
            "-V",
            "env-7",
            "-t",
        ],
        b"From: Existing <me@app.test>\nTo: ops@example.net\nSubject: dsn\n\n.\n",
    );
    assert_ok(&out, "sendmail -oi -f<> -N -R -V");
    let (m, s) = queued(&tern, "dsn");
    let env = m.envelope.unwrap();
    assert_eq!(env.sender, "", "the null sender");
    let n = env.recipients[0].notify.expect("NOTIFY from -N");
    assert!(n.failure && n.delay && !n.success);
    assert_eq!(env.params.dsn_ret, Some(DsnRet::Hdrs));
    assert_eq!(env.params.dsn_envid.as_deref(), Some("env-7"));
    assert_eq!(
        header(&s.body, "From").as_deref(),
        Some("Existing <me@app.test>")
    );
    assert!(String::from_utf8_lossy(&s.body).ends_with("\r\n\r\n.\r\n"));

    for bad in [
        &["-q", "x@example.net"][..],
        &["-bd"],
        &["-f"],
        &["-N", "sometimes", "x@example.net"],
    ] {
        let out = sendmail(&tern, bad, b"Subject: bad\n\nx\n");
        assert_eq!(out.status.code(), Some(64), "{bad:?}: {out:?}");
    }
    tern.stop(Duration::from_secs(15));
    assert_eq!(tern.spooled().len(), 2, "usage errors submit nothing");
}
