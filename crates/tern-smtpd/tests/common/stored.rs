//! Checks on what the server stored: queued count, `tmp/` leftovers, queue ids the
//! server announced, content and envelope fields (see `tests/transcripts.rs` for the
//! header keys).
//!
//! Runs after the conversation, on the server's own spool handle. A content or envelope
//! check with no queued message fails: it would otherwise pass without checking anything.

use tern_spool::StoredMessage;

use super::TestServer;
use super::script::{Check, Script, lossy, matches, render};

/// An envelope field as text, for `# envelope: field = value`.
fn envelope_field(m: &StoredMessage, field: &str) -> Result<String, String> {
    let e = &m.envelope;
    let opt = |o: Option<String>| o.unwrap_or_else(|| "none".into());
    let rcpt = |i: &str| -> Result<&tern_spool::Recipient, String> {
        let i: usize = i
            .parse()
            .map_err(|_| format!("bad recipient index {i:?}"))?;
        e.recipients
            .get(i)
            .ok_or_else(|| format!("no recipient {i}"))
    };
    Ok(match field {
        "sender" => e.sender.clone(),
        "recipients" => e
            .recipients
            .iter()
            .map(|r| r.address.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        "dsn_ret" => opt(e.params.dsn_ret.map(|r| format!("{r:?}").to_lowercase())),
        "dsn_envid" => opt(e.params.dsn_envid.clone()),
        "smtputf8" => e.params.smtputf8.to_string(),
        "body" => format!("{:?}", e.params.body).to_lowercase(),
        "declared_size" => opt(e.params.declared_size.map(|s| s.to_string())),
        "helo" => e.client.helo.clone(),
        "esmtp" => e.client.esmtp.to_string(),
        "tls" => opt(e.client.tls.clone()),
        "verified_name" => opt(e.client.verified_name.clone()),
        "authenticated" => opt(e.client.authenticated.clone()),
        "relay_network" => e.client.relay_network.to_string(),
        _ => {
            let (what, index) = field
                .strip_suffix(']')
                .and_then(|f| f.split_once('['))
                .ok_or_else(|| format!("unknown envelope field {field:?}"))?;
            let r = rcpt(index)?;
            match what {
                "orcpt" => opt(r.orcpt.clone()),
                "notify" => opt(r.notify.map(|n| {
                    [
                        ("success", n.success),
                        ("failure", n.failure),
                        ("delay", n.delay),
                        ("never", n.never),
                    ]
                    .iter()
                    .filter(|(_, on)| *on)
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>()
                    .join(",")
                })),
                _ => return Err(format!("unknown envelope field {field:?}")),
            }
        }
    })
}

fn check_message(m: &StoredMessage, check: &Check) -> Result<(), String> {
    let body = &m.body;
    let contains =
        |needle: &[u8]| needle.is_empty() || body.windows(needle.len()).any(|w| w == needle);
    match check {
        Check::BodyContains(n) if !contains(n) => {
            Err(format!("stored content lacks {:?}", lossy(n)))
        }
        Check::BodyLacks(n) if contains(n) => {
            Err(format!("stored content contains {:?}", lossy(n)))
        }
        Check::BodyEndsWith(n) if !body.ends_with(n) => {
            Err(format!("stored content does not end with {:?}", lossy(n)))
        }
        Check::BodyStartsWith(p) => {
            let qid = m.envelope.id.to_string();
            if matches(p, body, Some(&qid), &mut Vec::new(), false) {
                Ok(())
            } else {
                Err(format!(
                    "stored content does not start with {:?}",
                    render(p)
                ))
            }
        }
        Check::Envelope(field, expected) => {
            let got = envelope_field(m, field)?;
            if &got == expected {
                Ok(())
            } else {
                Err(format!(
                    "envelope {field} is {got:?}, expected {expected:?}"
                ))
            }
        }
        _ => Ok(()),
    }
    .map_err(|e| {
        format!(
            "{e}\n--- stored content of {} ---\n{}",
            m.envelope.id,
            lossy(body)
        )
    })
}

/// Runs every stored-message check of `script`; panics naming the file and line.
pub fn check_spool(file: &str, script: &Script, server: &TestServer, ids: &[String]) {
    let messages = server.queued_messages();
    let stored: Vec<String> = messages.iter().map(|m| m.envelope.id.to_string()).collect();
    if let Some((line, n)) = script.queued {
        assert_eq!(
            messages.len(),
            n,
            "{file}:{line}: queued messages {stored:?}"
        );
    }
    if let Some((line, n)) = script.tmp_files {
        let tmp: Vec<_> = std::fs::read_dir(server.spool.dir().join("tmp"))
            .expect("read the spool's tmp directory")
            .map(|e| e.expect("tmp entry").file_name())
            .collect();
        assert_eq!(
            tmp.len(),
            n,
            "{file}:{line}: files in the spool's tmp/: {tmp:?}"
        );
    }
    for id in ids {
        assert!(
            stored.contains(id),
            "{file}: the server said `queued as {id}` but the spool holds {stored:?}"
        );
    }
    for (line, check) in &script.checks {
        assert!(
            !messages.is_empty(),
            "{file}:{line}: no queued message to check"
        );
        for m in &messages {
            if let Err(e) = check_message(m, check) {
                panic!("{file}:{line}: {e}");
            }
        }
    }
}
