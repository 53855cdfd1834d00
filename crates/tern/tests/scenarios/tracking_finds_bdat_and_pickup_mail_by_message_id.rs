//! The Message-ID reaches the tracking log for every way in: found while BDAT chunks
//! stream (the field split across two chunks), and for mail from the pickup directory
//! (`tern sendmail`), whose Message-ID Tern adds when the submitter gave none. Each is
//! found again by `tern track <Message-ID>`.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::connectors::{FAST_PICKUP, assert_ok, sendmail};
use crate::common::{Setup, SmtpClient, Tern, run};

fn track(tern: &Tern, query: &str) -> Vec<Value> {
    let out = run(
        &mut tern.tern_command(&["track", "--json", query]),
        Duration::from_secs(30),
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["records"].as_array().cloned().unwrap_or_default()
}

fn wait_received(tern: &Tern, query: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(r) = track(tern, query)
            .into_iter()
            .find(|r| r["step"] == "received")
        {
            return r;
        }
        assert!(Instant::now() < deadline, "no received record for {query}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn tracking_finds_bdat_and_pickup_mail_by_message_id() {
    let tern = Setup::new().section(FAST_PICKUP).start();

    let mut c = SmtpClient::connect(tern.addr()).unwrap();
    c.hello("client.test");
    assert_eq!(
        c.command("MAIL FROM:<chunky@client.test>").unwrap().code,
        250
    );
    assert_eq!(c.command("RCPT TO:<r@remote.test>").unwrap().code, 250);
    let first = b"Subject: chunks\r\nMessage-";
    let second = b"ID: <split.chunk@client.test>\r\n\r\nbody\r\n";
    c.write_raw(format!("BDAT {}\r\n", first.len()).as_bytes())
        .unwrap();
    c.write_raw(first).unwrap();
    assert_eq!(c.read_reply().unwrap().code, 250);
    c.write_raw(format!("BDAT {} LAST\r\n", second.len()).as_bytes())
        .unwrap();
    c.write_raw(second).unwrap();
    let reply = c.read_reply().unwrap();
    let id = reply.queued_id().expect("queued");
    let _ = c.command("QUIT");

    let r = wait_received(&tern, "<split.chunk@client.test>");
    assert_eq!(r["id"], id.as_str());
    assert_eq!(r["event"], "smtp.message.queued");
    assert_eq!(r["message_id"], "<split.chunk@client.test>");
    assert_eq!(r["sender"], "chunky@client.test");

    let out = sendmail(
        &tern,
        &["picked@remote.test"],
        b"Subject: from pickup\n\nno Message-ID given\n",
    );
    assert_ok(&out, "sendmail");
    let r = wait_received(&tern, "picked@remote.test");
    assert_eq!(r["event"], "pickup.queued");
    let mid = r["message_id"].as_str().unwrap().to_owned();
    let queue_id = r["id"].as_str().unwrap();
    assert!(
        mid.starts_with('<') && mid.ends_with("@mx.tern.test>"),
        "the Message-ID Tern's sendmail added: {r}"
    );
    let by_mid = track(&tern, &mid);
    assert!(by_mid.iter().all(|x| x["id"] == queue_id), "{by_mid:?}");
    assert_eq!(by_mid.len(), 1, "{by_mid:?}");
}
