//! The `drop` transport: each message routed to it is written into its directory as
//! `<queue id>.env` (the envelope file, JSON) and `<queue id>.eml` (the message as
//! stored), read back here and by Python's `email` package: the recipients of the route
//! with their DSN parameters, the sender, the content byte for byte after Tern's Received
//! field. No temporary file is left. A missing directory defers the message (event 6031)
//! until the directory exists; then it is written.

use std::time::Duration;

use serde_json::Value;

use crate::common::connectors::{file_names, wait_until};
use crate::common::peers::send_with;
use crate::common::{Setup, python, split_received};

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn messages_are_dropped_with_their_envelopes_and_a_missing_directory_defers() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    let later = root.path().join("later");
    std::fs::create_dir(&out).unwrap();
    let mut tern = Setup::new()
        .queue("[queue]\ndeliver = true\nmin_backoff_secs = 1\nmax_backoff_secs = 1\n")
        .section(&format!(
            "[[route]]\ndomains = [\"legacy.test\"]\ntransport = \"drop\"\ndir = {:?}\n\n\
             [[route]]\ndomains = [\"later.test\"]\ntransport = \"drop\"\ndir = {:?}\n\n\
             [[route]]\ndomains = [\"*\"]\ntransport = \"hold\"\n",
            out.display().to_string(),
            later.display().to_string()
        ))
        .start();
    let first = b"From: <s@client.test>\r\nSubject: first\r\n\r\n.leading dot\r\nline\r\n".to_vec();
    let id1 = send_with(
        tern.addr(),
        "MAIL FROM:<s@client.test> RET=HDRS ENVID=env-1",
        &[
            "RCPT TO:<a@legacy.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@legacy.test",
            "RCPT TO:<b@legacy.test>",
            "RCPT TO:<c@elsewhere.test>",
        ],
        &first,
    );
    let second = "Subject: zweite\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\u{fc}\u{df}e\r\n"
        .as_bytes()
        .to_vec();
    let id2 = send_with(
        tern.addr(),
        "MAIL FROM:<> BODY=8BITMIME",
        &["RCPT TO:<x@legacy.test>"],
        &second,
    );
    // A collector takes a message when its .eml appears: the .env is there by then.
    wait_until(Duration::from_secs(20), "both messages dropped", || {
        out.join(format!("{id1}.eml")).exists() && out.join(format!("{id2}.eml")).exists()
    });
    assert_eq!(
        file_names(&out),
        [
            format!("{id1}.eml"),
            format!("{id1}.env"),
            format!("{id2}.eml"),
            format!("{id2}.env")
        ],
        "two files per message and no temporary file"
    );

    let env1: Value =
        serde_json::from_slice(&std::fs::read(out.join(format!("{id1}.env"))).unwrap()).unwrap();
    assert_eq!(env1["version"], 1);
    assert_eq!(env1["queue_id"], id1);
    assert_eq!(env1["sender"], "s@client.test");
    assert_eq!(env1["ret"], "hdrs");
    assert_eq!(env1["envid"], "env-1");
    assert_eq!(env1["body"], "7bit");
    let r = env1["recipients"].as_array().unwrap();
    assert_eq!(r.len(), 2, "only the drop route's recipients: {r:?}");
    assert_eq!(r[0]["address"], "a@legacy.test");
    assert_eq!(r[0]["notify"], "success,failure");
    assert_eq!(r[0]["orcpt"], "rfc822;a@legacy.test");
    assert_eq!(r[1]["address"], "b@legacy.test");
    let eml1 = std::fs::read(out.join(format!("{id1}.eml"))).unwrap();
    assert_eq!(env1["size"].as_u64(), Some(eml1.len() as u64));
    let (received, rest) = split_received(&eml1);
    assert!(received.contains(&format!("id {id1}")), "{received}");
    assert_eq!(rest, first.as_slice(), "the message byte for byte");

    let env2: Value =
        serde_json::from_slice(&std::fs::read(out.join(format!("{id2}.env"))).unwrap()).unwrap();
    assert_eq!(env2["sender"], "");
    assert_eq!(env2["body"], "8bitmime");
    let eml2 = out.join(format!("{id2}.eml"));
    // A real reader: Python's email package parses the dropped file.
    let parsed = python(
        "import email, email.policy, sys\n\
         m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=email.policy.default)\n\
         print(m['Subject']); print(m.get_content().strip())",
        &[eml2.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert!(
        parsed.status.success(),
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&parsed.stdout),
        "zweite\nGr\u{fc}\u{df}e\n"
    );
    tern.wait_for_events(6030, 2, Duration::from_secs(10));

    // The third recipient went to the hold route; the rest of message 1 is delivered.
    // NOTIFY=SUCCESS through a drop directory (no DSN beyond it) brings a "relayed"
    // notice from Tern, which waits in hold too (the `*` route).
    let held = tern.queue_json(&["--state", "hold"]);
    assert_eq!(held.len(), 2, "{held:?}");
    let original = held
        .iter()
        .find(|m| m["id"] == id1)
        .expect("message 1 held");
    assert_eq!(original["recipients"][0]["status"]["state"], "delivered");
    assert_eq!(original["recipients"][2]["status"]["state"], "pending");
    let notice = held.iter().find(|m| m["id"] != id1).unwrap();
    assert_eq!(notice["sender"], "");
    assert_eq!(notice["recipients"][0]["address"], "s@client.test");

    // A missing directory defers, never loses, and never leaves a partial file.
    let id3 = send_with(
        tern.addr(),
        "MAIL FROM:<s@client.test>",
        &["RCPT TO:<y@later.test>"],
        b"Subject: later\r\n\r\nwaits\r\n",
    );
    let failed = tern.wait_for_events(6031, 1, Duration::from_secs(20));
    assert_eq!(failed[0]["queue_id"], id3);
    assert!(!later.exists(), "Tern does not create a drop directory");
    let deferred = tern.queue_json(&["--state", "deferred"]);
    assert!(
        deferred.iter().any(|m| m["id"] == id3),
        "deferred until the directory exists: {deferred:?}"
    );
    std::fs::create_dir(&later).unwrap();
    wait_until(
        Duration::from_secs(30),
        "the deferred message is dropped",
        || later.join(format!("{id3}.eml")).exists(),
    );
    assert_eq!(
        file_names(&later),
        [format!("{id3}.eml"), format!("{id3}.env")]
    );
    tern.stop(Duration::from_secs(15));
}
