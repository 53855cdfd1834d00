//! A client that keeps hitting a rate limit is refused at every command but logged once
//! per key and window: with 1 message per 2 s and smtplib trying a message every 50 ms
//! for 5 s, dozens of MAIL commands get `451 4.7.1`, the event 2132 appears at most once
//! per 2 s window (2 or 3 times), and `/metrics` counts every refusal.

use std::time::Duration;

use crate::common::admin::Admin;
use crate::common::{Setup, python, require_python_modules};

const SCRIPT: &str = r#"
import json, smtplib, sys, time
host, port = sys.argv[1], int(sys.argv[2])
msg = "From: <a@client.test>\r\nSubject: hammer\r\n\r\nbody\r\n"
s = smtplib.SMTP(host, port, local_hostname="hammer.client.test", timeout=30)
s.ehlo()
accepted = refused = 0
end = time.monotonic() + 5
while time.monotonic() < end:
    try:
        s.sendmail("a@client.test", ["r@localhost"], msg)
        accepted += 1
    except smtplib.SMTPSenderRefused as e:
        assert e.smtp_code == 451, e
        refused += 1
    time.sleep(0.05)
s.quit()
print(json.dumps({"accepted": accepted, "refused": refused}))
"#;

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn rate_limit_is_logged_once_per_key_and_window() {
    require_python_modules(&["smtplib"]);
    let tern = Setup::new()
        .section("[limits]\nclient_messages = \"1/2s\"\nexempt_relay_networks = false\n")
        .listener_keys("max_errors = 10000\nmax_junk_commands = 10000")
        .start();
    let addr = tern.addr();
    let admin = Admin::of(&tern);
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
    let refused = v["refused"].as_u64().unwrap();
    let accepted = v["accepted"].as_u64().unwrap();
    // 5 s at 1 per 2 s: the burst of one, then one every 2 s.
    assert!((2..=4).contains(&accepted), "{v}");
    assert!(refused >= 20, "{v}");
    // The session's end is logged after every refusal of it.
    tern.wait_for_events(2002, 1, Duration::from_secs(10));
    let events = tern.events_with_id(2132);
    assert!(
        (2..=3).contains(&events.len()),
        "{} events for {refused} refusals: {events:#?}",
        events.len()
    );
    let scrape = admin.get("/metrics").body;
    let counted: f64 = scrape
        .lines()
        .find_map(|l| {
            l.strip_prefix("tern_smtp_rate_limited_total{limit=\"client_messages\"}")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0);
    assert_eq!(counted, refused as f64, "{scrape}");
}
