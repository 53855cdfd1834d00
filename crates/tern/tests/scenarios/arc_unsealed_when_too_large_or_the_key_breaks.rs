//! Sealing never holds mail up. A message over `arc.max_size` is delivered without a
//! seal, with event 4114 (`reason` = too_large) and `tern_arc_seals_total{result=
//! "too_large"}`; a smaller one is sealed. A reload whose key file is broken keeps the
//! key loaded before (event 4112, `kept_previous`), and the next message is still
//! sealed with it; `tern check-config` reports the broken file under `arc.key_file`.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::common::arc::{assert_sealed, section, top_seal};
use crate::common::dkim::generate;
use crate::common::peers::{SmtpPeer, send_with};
use crate::common::{Setup, tern_bin};

fn message(case: &str, body_len: usize) -> Vec<u8> {
    let mut m = format!(
        "X-Case: {case}\r\nFrom: <ann@origin.test>\r\nTo: <a@dest.test>\r\nSubject: {case}\r\n\r\n"
    )
    .into_bytes();
    while m.len() < body_len {
        m.extend_from_slice(b"a line of the body\r\n");
    }
    m
}

fn case_of(content: &[u8]) -> String {
    String::from_utf8_lossy(content)
        .lines()
        .find_map(|l| l.strip_prefix("X-Case: ").map(str::to_string))
        .unwrap_or_default()
}

#[test]
#[ignore = "needs root or a test peer: scripts/test.sh runs it"]
fn oversized_mail_goes_unsealed_and_a_broken_key_keeps_the_old_one() {
    let keys = tempfile::tempdir().unwrap();
    let key = generate(keys.path(), "forward.test", "arc", "rsa");
    let sink = SmtpPeer::start("127.0.0.3", &[]);
    let tern = Setup::new()
        .queue("[queue]\ndeliver = true\nmin_backoff_secs = 1\nmax_backoff_secs = 2\n")
        .section("[relay]\ndomains = [\"dest.test\"]\nnetworks = [\"127.0.0.9/32\"]\n")
        .section(&format!(
            "[[route]]\ndomains = [\"dest.test\"]\ntransport = \"smtp\"\nhosts = [\"{}\"]\ntls = \"none\"\n",
            sink.addr
        ))
        .section(&section(&key, "max_size = 4096"))
        .start();
    for (case, len) in [("small", 500), ("large", 8000)] {
        send_with(
            tern.addr(),
            "MAIL FROM:<ann@origin.test>",
            &["RCPT TO:<a@dest.test>"],
            &message(case, len),
        );
    }
    let got = sink.wait_for(2, Duration::from_secs(30));
    for r in &got {
        match case_of(&r.content).as_str() {
            "small" => assert_sealed(&r.content, &[&key], 1, "none", "small"),
            "large" => assert_eq!(top_seal(&r.content), None, "the large one was sealed"),
            other => panic!("unknown case {other}"),
        }
    }
    let skipped = tern.wait_for_events(4114, 1, Duration::from_secs(10));
    assert_eq!(skipped[0]["reason"], "too_large", "{skipped:?}");
    let metrics = crate::common::admin::Admin::of(&tern).get("/metrics").body;
    for line in [
        "tern_arc_seals_total{result=\"too_large\"} 1",
        "tern_arc_seals_total{result=\"sealed\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }

    // The key file becomes readable by others: refused, the loaded key kept.
    std::fs::set_permissions(&key.file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = tern.config_text();
    let path = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(path.path(), &config).unwrap();
    let check = std::process::Command::new(tern_bin())
        .args(["check-config", path.path().to_str().unwrap()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&check.stdout).to_string()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(!check.status.success(), "{out}");
    assert!(out.contains("arc.key_file"), "{out}");
    let reload = tern.tern_command(&["reload"]).output().unwrap();
    assert!(
        reload.status.success(),
        "{}",
        String::from_utf8_lossy(&reload.stdout)
    );
    let failed = tern.wait_for_events(4112, 1, Duration::from_secs(10));
    assert_eq!(failed[0]["kept_previous"], "true", "{failed:?}");
    send_with(
        tern.addr(),
        "MAIL FROM:<ann@origin.test>",
        &["RCPT TO:<a@dest.test>"],
        &message("after", 500),
    );
    let got = sink.wait_for(3, Duration::from_secs(30));
    let after = got.iter().find(|r| case_of(&r.content) == "after").unwrap();
    assert_sealed(&after.content, &[&key], 1, "none", "after the reload");
}
