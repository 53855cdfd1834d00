//! A remote sender puts terminal control sequences into what an administrator will print
//! (a Subject that clears the screen, an OSC that retitles the window, a C1 CSI, a
//! right-to-left override in the Message-ID). Every CLI view of that message shows them
//! as visible escapes; no control octet reaches the terminal. `--json` stays valid JSON
//! with the same values.

use std::time::Duration;

use crate::common::admin::Admin;
use crate::common::{Setup, Tern, run, send_one};

fn cli(tern: &Tern, args: &[&str]) -> Vec<u8> {
    let out = run(&mut tern.tern_command(args), Duration::from_secs(60));
    assert!(out.status.success(), "{args:?}: {out:?}");
    let mut all = out.stdout;
    all.extend_from_slice(&out.stderr);
    all
}

fn assert_inert(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for (i, c) in text.char_indices() {
        assert!(
            !((c.is_control() && c != '\n' && c != '\t')
                || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')),
            "{what}: control character U+{:04X} at {i} in:\n{text}",
            u32::from(c)
        );
    }
}

#[test]
fn cli_escapes_terminal_control_sequences() {
    let tern = Setup::new().start();
    let _ = Admin::of(&tern);
    let content = "From: <a@client.test>\r\n\
                   Subject: hello \x1b[2J\x1b]0;pwned\x07 \u{9b}31m red\r\n\
                   Message-ID: <evil\u{202E}gnp.exe@client.test>\r\n\
                   \r\n\
                   body\r\n";
    let id = send_one(
        tern.addr(),
        "a@client.test",
        &["b@localhost"],
        content.as_bytes(),
    );
    tern.wait_for_events(2003, 1, Duration::from_secs(20));

    let show = cli(&tern, &["queue", "show", &id]);
    assert_inert("queue show", &show);
    let text = String::from_utf8_lossy(&show);
    assert!(
        text.contains("\\u001B[2J") && text.contains("\\u009B31m"),
        "the sequences are shown, escaped: {text}"
    );

    let json = cli(&tern, &["queue", "show", "--json", &id]);
    assert_inert("queue show --json", &json);
    let v: serde_json::Value = serde_json::from_slice(&json).expect("valid JSON");
    assert!(
        v.to_string().contains("pwned"),
        "the values are all there: {v}"
    );

    for args in [
        &["queue", "list"][..],
        &["queue", "list", "--json"],
        &["queue", "summary"],
        &["track", &id],
        &["track", "evil\u{202E}gnp.exe@client.test"],
    ] {
        let out = run(&mut tern.tern_command(args), Duration::from_secs(60));
        assert_inert(&format!("{args:?}"), &out.stdout);
        assert_inert(&format!("{args:?} (stderr)"), &out.stderr);
    }
}
