//! Recipients per message are the listener's `max_recipients`: with 3, Python's
//! smtplib sending to five recipients gets the first three accepted and the other two
//! refused with `452 4.5.3` naming the limit, and the message is queued for the three
//! (the client sends the rest in another transaction, RFC 5321 4.5.3.1.10). Each
//! message that reaches the limit is logged once (event 2133), not once per refused
//! recipient.

use std::time::Duration;

use crate::common::{Setup, python, require_python_modules};

const SCRIPT: &str = r#"
import json, smtplib, sys
host, port = sys.argv[1], int(sys.argv[2])
msg = "From: <a@client.test>\r\nSubject: many\r\n\r\nbody\r\n"
rcpts = ["r%d@localhost" % i for i in range(1, 6)]
s = smtplib.SMTP(host, port, local_hostname="many.client.test", timeout=30)
out = []
for _ in range(2):
    refused = s.sendmail("a@client.test", rcpts, msg)
    out.append({k: "%d %s" % (c, t.decode()) for k, (c, t) in refused.items()})
s.quit()
print(json.dumps(out))
"#;

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn recipients_per_message_limit_refuses_with_452_and_logs_once() {
    require_python_modules(&["smtplib"]);
    let tern = Setup::new().listener_keys("max_recipients = 3").start();
    let addr = tern.addr();
    let out = python(
        SCRIPT,
        &[&addr.ip().to_string(), &addr.port().to_string()],
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    for refused in v.as_array().unwrap() {
        let keys: Vec<&String> = refused.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["r4@localhost", "r5@localhost"], "{v}");
        for reply in refused.as_object().unwrap().values() {
            assert_eq!(
                reply, "452 4.5.3 Too many recipients for one message (limit 3)",
                "{v}"
            );
        }
    }
    let stored = tern.spooled();
    assert_eq!(stored.len(), 2);
    for (_, m) in &stored {
        let to: Vec<&str> = m
            .envelope
            .recipients
            .iter()
            .map(|r| r.address.as_str())
            .collect();
        assert_eq!(to, ["r1@localhost", "r2@localhost", "r3@localhost"]);
    }
    // Both messages are in the log (2003) before the check: one 2133 each.
    tern.wait_for_events(2003, 2, Duration::from_secs(10));
    tern.wait_for_events(2002, 1, Duration::from_secs(10));
    assert_eq!(tern.events_with_id(2133).len(), 2);
}
