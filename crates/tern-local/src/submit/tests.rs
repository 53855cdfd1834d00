//! Unit tests of local submission: parsing, the envelope from the headers, hygiene.

use super::*;

fn parse(s: &str) -> LocalMessage {
    LocalMessage::parse(s.as_bytes()).unwrap()
}

fn hy<'a>(remove_bcc: bool) -> Hygiene<'a> {
    Hygiene {
        hostname: "host.test",
        unique: "Q123",
        remove_bcc,
        from_if_missing: None,
    }
}

#[test]
fn line_endings_become_crlf() {
    assert_eq!(normalize_line_endings(b""), b"");
    assert_eq!(
        normalize_line_endings(b"a\nb\r\nc\rd"),
        b"a\r\nb\r\nc\r\nd\r\n"
    );
    assert_eq!(normalize_line_endings(b"a\r\n\r\n"), b"a\r\n\r\n");
    assert_eq!(normalize_line_endings(b"\r\r\n"), b"\r\n\r\n");
}

#[test]
fn recipients_come_from_to_cc_and_bcc_with_groups_and_bare_names() {
    let m = parse(
        "From: Alice <alice@example.com>\nTo: Bob <bob@example.net>, carol@example.org\n\
         Cc: undisclosed-recipients:;\nCc: Team: dave@example.org, Erin <erin@example.org>;\n\
         Bcc: root, BOB@example.net\nTo: =?utf-8?q?Fr=C3=A9d?= <fred@example.com>\n\nbody\n",
    );
    let r = m.recipients_from_headers("host.test", 100).unwrap();
    assert_eq!(
        r,
        [
            "bob@example.net",
            "carol@example.org",
            "fred@example.com",
            "dave@example.org",
            "erin@example.org",
            "root@host.test",
        ]
    );
    assert_eq!(
        m.sender_from_headers("host.test").unwrap().as_deref(),
        Some("alice@example.com")
    );
}

#[test]
fn sender_prefers_sender_over_from_and_may_be_absent() {
    let m = parse("From: a@example.com\r\nSender: s@example.com\r\nTo: x@y.test\r\n\r\n");
    assert_eq!(
        m.sender_from_headers("h").unwrap().as_deref(),
        Some("s@example.com")
    );
    let m = parse("To: x@y.test\r\n\r\n");
    assert_eq!(m.sender_from_headers("h").unwrap(), None);
    assert_eq!(m.recipients_from_headers("h", 10).unwrap(), ["x@y.test"]);
}

#[test]
fn no_recipients_and_bad_addresses_are_reported() {
    let m = parse("Subject: nothing\r\n\r\nbody\r\n");
    assert_eq!(
        m.recipients_from_headers("h.test", 10).unwrap(),
        Vec::<String>::new()
    );
    let m = parse("To: <a@[300.1.1.1]>\r\n\r\n");
    assert!(matches!(
        m.recipients_from_headers("h.test", 10),
        Err(SubmitError::BadAddress { field: "To", .. })
    ));
    let m = parse("To: a@x.test, b@x.test, c@x.test\r\n\r\n");
    assert_eq!(
        m.recipients_from_headers("h.test", 2),
        Err(SubmitError::TooManyRecipients { limit: 2 })
    );
}

#[test]
fn garbage_is_not_a_message() {
    for bad in [
        &b""[..],
        b"\r\n\r\nbody",
        b"no header here\r\n\r\n",
        b" continuation first: x\r\n",
        b"\x89PNG\r\n\x1a\n\0\0\0",
        b": empty name\r\n",
    ] {
        assert_eq!(
            LocalMessage::parse(bad).unwrap_err(),
            SubmitError::NoHeader,
            "{bad:?}"
        );
    }
    assert_eq!(
        LocalMessage::parse(b"A: 1\r\nnot a field\r\n\r\n").unwrap_err(),
        SubmitError::BadHeaderLine { line: 2 }
    );
    assert_eq!(
        LocalMessage::parse(b"A: 1\0\r\n\r\n").unwrap_err(),
        SubmitError::NulInHeader
    );
}

#[test]
fn an_mbox_separator_line_is_dropped() {
    let m = parse("From alice@example.com Mon Jan  1 00:00:00 2024\nTo: b@x.test\n\nhi\n");
    assert!(m.content().starts_with(b"To: b@x.test\r\n"));
}

#[test]
fn hygiene_adds_date_and_message_id_at_the_end_of_the_header_section() {
    let m = parse("To: b@x.test\nSubject: s\n\nbody\n");
    let (out, report) = m.hygiene(&hy(false));
    let text = String::from_utf8(out).unwrap();
    assert!(report.added_date && report.added_message_id, "{report:?}");
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert_eq!(body, "body\r\n");
    let lines: Vec<&str> = head.split("\r\n").collect();
    assert_eq!(lines[0], "To: b@x.test");
    assert_eq!(lines[1], "Subject: s");
    assert!(lines[2].starts_with("Date: "), "{head}");
    assert_eq!(lines[3], "Message-ID: <Q123@host.test>");
    // mail-parser reads the added fields back.
    let parsed = MessageParser::new().parse(text.as_bytes()).unwrap();
    assert!(parsed.date().is_some());
    assert_eq!(parsed.message_id(), Some("Q123@host.test"));
}

#[test]
fn hygiene_keeps_existing_fields_in_any_case() {
    let m = parse("date: Mon, 1 Jan 2024 00:00:00 +0000\nMESSAGE-id: <x@y>\nTo: a@b.test\n\n");
    let (out, report) = m.hygiene(&hy(false));
    assert_eq!(report, HygieneReport::default());
    assert_eq!(out, m.content());
}

#[test]
fn bcc_is_removed_only_when_asked_with_its_continuation_lines() {
    let src = "To: a@x.test\nBcc: secret@x.test,\n other@x.test\nSubject: s\nbcc: third@x.test\n\nBcc: in the body stays\n";
    let m = parse(src);
    let (kept, report) = m.hygiene(&hy(false));
    assert_eq!(report.removed_bcc, 0);
    assert!(String::from_utf8_lossy(&kept).contains("Bcc: secret@x.test"));
    let (out, report) = m.hygiene(&hy(true));
    assert_eq!(report.removed_bcc, 2);
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains("secret") && !text.contains("other@") && !text.contains("third"));
    assert!(
        text.starts_with("To: a@x.test\r\nSubject: s\r\nDate: "),
        "{text}"
    );
    assert!(
        text.ends_with("\r\n\r\nBcc: in the body stays\r\n"),
        "{text}"
    );
}

#[test]
fn from_is_added_only_when_missing_and_kept_on_one_line() {
    let h = Hygiene {
        from_if_missing: Some("Cron Daemon <root@host.test>\r\nBcc: x@evil.test"),
        ..hy(false)
    };
    let (out, report) = parse("To: a@x.test\n\n").hygiene(&h);
    assert!(report.added_from);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("From: Cron Daemon <root@host.test>  Bcc: x@evil.test\r\n"),
        "{text}"
    );
    let (_, report) = parse("From: me@x.test\nTo: a@x.test\n\n").hygiene(&h);
    assert!(!report.added_from);
}

#[test]
fn a_message_without_a_body_gets_its_fields_appended() {
    let m = parse("To: a@x.test");
    let (out, _) = m.hygiene(&hy(true));
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("To: a@x.test\r\nDate: "), "{text}");
    assert!(text.ends_with("Message-ID: <Q123@host.test>\r\n"), "{text}");
}

#[test]
fn qualify_validates_and_completes_addresses() {
    assert_eq!(qualify("root", "h.test", "x").unwrap(), "root@h.test");
    assert_eq!(
        qualify(" A@Example.COM ", "h.test", "x").unwrap(),
        "A@example.com"
    );
    assert_eq!(
        qualify("a b@c.test", "h.test", "x").unwrap(),
        "\"a b\"@c.test"
    );
    for bad in ["a@", "@b.test", "a@b..test", "x\n@b.test", "a@-b.test"] {
        assert!(qualify(bad, "h.test", "x").is_err(), "{bad:?}");
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bytes never panic the parser, and whatever parses keeps its body
        /// byte for byte through hygiene and yields only valid recipients.
        #[test]
        fn arbitrary_input_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(m) = LocalMessage::parse(&raw) {
                let _ = m.sender_from_headers("h.test");
                if let Ok(r) = m.recipients_from_headers("h.test", 50) {
                    for a in r {
                        prop_assert!(Mailbox::parse(&a).is_ok());
                    }
                }
                let (out, _) = m.hygiene(&hy(true));
                let body = m.content().get(m.header_end..).unwrap_or_default();
                prop_assert!(out.ends_with(body));
            }
        }

        /// Header-shaped input: normalised output has only CRLF line endings.
        #[test]
        fn output_has_only_crlf(lines in proptest::collection::vec("[A-Za-z]{1,8}: [ -~]{0,20}", 1..8), body in "[ -~\r\n]{0,80}") {
            let raw = format!("{}\n\n{body}", lines.join("\n"));
            let m = LocalMessage::parse(raw.as_bytes()).unwrap();
            let (out, _) = m.hygiene(&hy(false));
            for (i, b) in out.iter().enumerate() {
                if *b == b'\n' { prop_assert_eq!(out.get(i.wrapping_sub(1)), Some(&b'\r')); }
                if *b == b'\r' { prop_assert_eq!(out.get(i + 1), Some(&b'\n')); }
            }
        }
    }
}
