//! `limits.client_messages`: with 2 messages per 2 s, Python's smtplib gets its two
//! messages queued, the third MAIL FROM refused with `451 4.7.1` naming the limit, and,
//! retrying in the same session, accepted again once the allowance comes back (one
//! message per second), without reconnecting. Three messages end up queued.

use std::time::Duration;

use crate::common::{Setup, python, require_python_modules};

const SCRIPT: &str = r#"
import json, smtplib, sys, time
host, port = sys.argv[1], int(sys.argv[2])
msg = "From: <a@client.test>\r\nTo: <r@localhost>\r\nSubject: rate\r\n\r\nbody\r\n"
out = {"refusals": []}
s = smtplib.SMTP(host, port, local_hostname="rate.client.test", timeout=30)
s.ehlo()
for i in range(2):
    s.sendmail("a@client.test", ["r@localhost"], msg)
try:
    s.sendmail("a@client.test", ["r@localhost"], msg)
    out["third"] = "accepted"
except smtplib.SMTPSenderRefused as e:
    out["third"] = "%d %s" % (e.smtp_code, e.smtp_error.decode())
refused_at = time.monotonic()
# Poll for the condition "accepted again", bounded.
deadline = refused_at + 20
while True:
    try:
        s.sendmail("a@client.test", ["r@localhost"], msg)
        out["accepted_after"] = time.monotonic() - refused_at
        break
    except smtplib.SMTPSenderRefused as e:
        out["refusals"].append(e.smtp_code)
        if time.monotonic() > deadline:
            out["accepted_after"] = None
            break
        time.sleep(0.2)
s.quit()
print(json.dumps(out))
"#;

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn message_rate_limit_refuses_with_451_then_accepts_after_the_window() {
    require_python_modules(&["smtplib"]);
    let tern = Setup::new()
        .section("[limits]\nclient_messages = \"2/2s\"\nexempt_relay_networks = false\n")
        .start();
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
    let third = v["third"].as_str().unwrap();
    assert!(
        third.starts_with(
            "451 4.7.1 Message rate limit exceeded for client network 127.0.0.1/32 (2 per 2s)"
        ),
        "{v}"
    );
    assert!(v["accepted_after"].is_number(), "never accepted again: {v}");
    assert!(
        v["refusals"].as_array().unwrap().iter().all(|c| c == 451),
        "{v}"
    );
    assert_eq!(tern.spooled().len(), 3, "{v}");
    tern.wait_for_events(2132, 1, Duration::from_secs(10));
}
