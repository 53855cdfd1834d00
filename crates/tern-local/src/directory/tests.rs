#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    config: LocalConfig,
}

fn fixture(mailboxes: &str, aliases: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("mailboxes");
    let a = dir.path().join("aliases");
    std::fs::write(&m, mailboxes).unwrap();
    std::fs::write(&a, aliases).unwrap();
    Fixture {
        config: LocalConfig {
            domains: vec!["x.test".into(), "Y.test.".into()],
            mailbox_map: Some(m),
            alias_map: Some(a),
            ..LocalConfig::default()
        },
        _dir: dir,
    }
}

fn load(mailboxes: &str, aliases: &str) -> LocalDirectory {
    LocalDirectory::load(&fixture(mailboxes, aliases).config).unwrap()
}

fn finals(dir: &LocalDirectory, address: &str) -> Vec<String> {
    match dir.resolve(address) {
        Ok(Resolution::Local(list)) => list,
        other => panic!("{address}: {other:?}"),
    }
}

const MAILBOXES: &str =
    "alice@x.test alice\nal@x.test alice\nbob@y.test /srv/bob/Maildir quota=1K\n";

#[test]
fn unknown_local_addresses_are_refused_and_other_domains_are_not_local() {
    let d = load(MAILBOXES, "");
    assert_eq!(finals(&d, "Alice@X.test"), ["Alice@X.test"]);
    assert_eq!(
        d.resolve("ghost@x.test"),
        Err(Refusal::Unknown {
            address: "ghost@x.test".into()
        })
    );
    assert_eq!(d.resolve("anyone@elsewhere.test"), Ok(Resolution::NotLocal));
    assert!(d.is_local_domain("y.test"));
    assert!(!d.is_local_domain("elsewhere.test"));
    let e = d.resolve("ghost@x.test").unwrap_err();
    assert_eq!((e.code(), e.enhanced()), (550, "5.1.1"));
}

#[test]
fn mailboxes_by_name_and_path_with_quota() {
    let d = load(MAILBOXES, "");
    let a = d.mailbox("ALICE@x.test").unwrap();
    assert_eq!(a.target, MailboxTarget::Name("alice".into()));
    assert_eq!(
        a.maildir_path(Path::new("/r")),
        PathBuf::from("/r/alice/Maildir")
    );
    assert_eq!(a.lmtp_user(), Some("alice"));
    let b = d.mailbox("bob@y.test").unwrap();
    assert_eq!(
        b.maildir_path(Path::new("/r")),
        PathBuf::from("/srv/bob/Maildir")
    );
    assert_eq!(b.quota, Some(1024));
    assert_eq!(d.mailbox("ghost@x.test"), None);
    assert!(d.has_mailboxes("x.test"));
}

#[test]
fn catch_all_fills_in_only_safe_local_parts() {
    let mut f = fixture(MAILBOXES, "");
    f.config.catch_all.insert("y.test".into(), "{local}".into());
    f.config.quota_bytes = 500;
    let d = LocalDirectory::load(&f.config).unwrap();
    let m = d.mailbox("You+Tag@y.test").unwrap();
    assert_eq!(m.target, MailboxTarget::Name("you+tag".into()));
    assert_eq!(m.quota, Some(500));
    // An explicit entry wins over the catch-all.
    assert_eq!(d.mailbox("bob@y.test").unwrap().quota, Some(1024));
    for unsafe_local in [
        "../etc@y.test",
        ".hidden@y.test",
        "\"a b\"@y.test",
        "a/b@y.test",
    ] {
        assert_eq!(d.mailbox(unsafe_local), None, "{unsafe_local}");
        assert!(d.resolve(unsafe_local).is_err(), "{unsafe_local}");
    }
    assert_eq!(finals(&d, "anyone@y.test"), ["anyone@y.test"]);
}

#[test]
fn aliases_expand_with_duplicates_removed_and_remote_members_kept() {
    let aliases = "team@x.test: alice, al@x.test, ALICE@x.test, far@elsewhere.test, sub\n\
                   sub: alice, bob@y.test\n";
    let d = load(MAILBOXES, aliases);
    assert_eq!(
        finals(&d, "team@x.test"),
        [
            "alice@x.test",
            "al@x.test",
            "far@elsewhere.test",
            "bob@y.test"
        ]
    );
    // A bare key applies in every local domain; bare members take that domain.
    assert_eq!(
        d.resolve("sub@y.test").unwrap_err(),
        Refusal::UnknownMember {
            address: "sub@y.test".into(),
            member: "alice@y.test".into()
        }
    );
}

#[test]
fn loops_are_refused_with_their_path_and_self_reference_keeps_the_mailbox() {
    let aliases = "a@x.test: b@x.test\nb@x.test: c@x.test\nc@x.test: a@x.test\n\
                   alice@x.test: alice@x.test, far@elsewhere.test\n";
    let d = load(MAILBOXES, aliases);
    let e = d.resolve("A@x.test").unwrap_err();
    assert_eq!(
        e,
        Refusal::Loop {
            address: "A@x.test".into(),
            chain: vec![
                "a@x.test".into(),
                "b@x.test".into(),
                "c@x.test".into(),
                "a@x.test".into()
            ]
        }
    );
    assert_eq!(e.enhanced(), "5.4.6");
    assert!(
        e.to_string()
            .contains("a@x.test -> b@x.test -> c@x.test -> a@x.test"),
        "{e}"
    );
    assert_eq!(
        finals(&d, "alice@x.test"),
        ["alice@x.test", "far@elsewhere.test"]
    );
}

#[test]
fn expansion_is_bounded_in_depth_and_size() {
    let mut chain = String::new();
    for i in 0..=MAX_DEPTH {
        chain.push_str(&format!("l{i}@x.test: l{}@x.test\n", i + 1));
    }
    chain.push_str(&format!("l{}@x.test: alice\n", MAX_DEPTH + 1));
    let d = load(MAILBOXES, &chain);
    assert!(matches!(
        d.resolve("l0@x.test"),
        Err(Refusal::TooDeep { .. })
    ));
    assert_eq!(finals(&d, "l2@x.test"), ["alice@x.test"]);

    let many: Vec<String> = (0..=MAX_EXPANSION)
        .map(|i| format!("u{i}@elsewhere.test"))
        .collect();
    let d = load(MAILBOXES, &format!("big@x.test: {}\n", many.join(", ")));
    assert!(matches!(
        d.resolve("big@x.test"),
        Err(Refusal::TooMany { .. })
    ));
}

#[test]
fn every_problem_is_reported_with_file_and_line() {
    let mut f = fixture(
        "alice@x.test alice\nalice@x.test again\nz@other.test z\nbad@x.test ../up\n",
        "a@other.test: b\nok: alice\nok: alice\n",
    );
    f.config.domains.push("*.wild".into());
    f.config
        .catch_all
        .insert("nolocal.test".into(), "{local}".into());
    let problems = LocalDirectory::load(&f.config).unwrap_err();
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let has = |key: &str, what: &str| {
        assert!(
            text.iter().any(|t| t.starts_with(key) && t.contains(what)),
            "no {key} {what:?} in {text:#?}"
        );
    };
    has("local.domains[2]", "exact names");
    has("local.catch_all.nolocal.test", "not in local.domains");
    has(
        "local.mailbox_map",
        "mailboxes:2: \"alice@x.test\" is already mapped at line 1",
    );
    has("local.mailbox_map", "mailboxes:3:");
    has("local.mailbox_map", "mailboxes:4:");
    has("local.alias_map", "aliases:1:");
    has(
        "local.alias_map",
        "aliases:3: alias \"ok\" is already defined at line 2",
    );
    assert_eq!(problems.len(), 7, "{text:#?}");
}

#[test]
fn an_empty_directory_has_no_local_domain() {
    let d = LocalDirectory::empty();
    assert!(!d.is_local_domain("localhost"));
    assert_eq!(d.resolve("a@localhost"), Ok(Resolution::NotLocal));
}

fn with_delimiter(mailboxes: &str, aliases: &str, delimiter: &str) -> LocalDirectory {
    let mut f = fixture(mailboxes, aliases);
    f.config.recipient_delimiter = delimiter.into();
    LocalDirectory::load(&f.config).unwrap()
}

#[test]
fn without_a_delimiter_an_extension_is_part_of_the_name() {
    let d = load(MAILBOXES, "");
    assert_eq!(
        d.resolve("alice+news@x.test"),
        Err(Refusal::Unknown {
            address: "alice+news@x.test".into()
        })
    );
}

#[test]
fn an_extended_address_reaches_the_base_mailbox_and_keeps_its_extension() {
    let mailboxes = "alice@x.test alice\nalice+vip@x.test vip\n";
    let d = with_delimiter(mailboxes, "", "+-");
    // The final recipient keeps the extension (it becomes the Delivered-To).
    assert_eq!(finals(&d, "Alice+News@x.test"), ["Alice+News@x.test"]);
    let m = d.mailbox("Alice+News@x.test").unwrap();
    assert_eq!(m.target, MailboxTarget::Name("alice".into()));
    // Every listed character delimits, and the first one found starts the extension.
    let m = d.mailbox("alice-a+b@x.test").unwrap();
    assert_eq!(m.target, MailboxTarget::Name("alice".into()));
    // The address as given wins over its base.
    let m = d.mailbox("alice+vip@x.test").unwrap();
    assert_eq!(m.target, MailboxTarget::Name("vip".into()));
    // A local part that starts with the delimiter has no base.
    assert!(d.resolve("+alice@x.test").is_err());
    assert!(d.resolve("ghost+x@x.test").is_err());
}

#[test]
fn with_a_delimiter_an_alias_of_the_base_beats_a_mailbox_of_the_extended_address() {
    // Postfix's order: each map is asked for the full address and then its base before
    // the next map is asked at all.
    let mailboxes = "alice@x.test alice\nteam+x@x.test teamx\n";
    let d = with_delimiter(mailboxes, "team: alice, far@elsewhere.test\n", "+");
    assert_eq!(
        finals(&d, "team+x@x.test"),
        ["alice@x.test", "far@elsewhere.test"],
        "the extension is not carried over to the members"
    );
}

#[test]
fn a_catch_all_is_filled_in_with_the_base_local_part() {
    let mut f = fixture(MAILBOXES, "");
    f.config.catch_all.insert("y.test".into(), "{local}".into());
    f.config.recipient_delimiter = "+".into();
    let d = LocalDirectory::load(&f.config).unwrap();
    let m = d.mailbox("You+Tag@y.test").unwrap();
    assert_eq!(m.target, MailboxTarget::Name("you".into()));
}

#[test]
fn a_delimiter_that_could_hide_a_domain_or_a_quote_is_a_problem() {
    for bad in ["@", "\"", "\\", " ", "+\u{e9}"] {
        let mut f = fixture(MAILBOXES, "");
        f.config.recipient_delimiter = bad.into();
        let problems = LocalDirectory::load(&f.config).unwrap_err();
        assert_eq!(problems.len(), 1, "{bad:?}: {problems:?}");
        assert_eq!(problems[0].key, "local.recipient_delimiter");
    }
}

#[test]
fn unicode_case_mappings_never_merge_two_addresses() {
    let d = load(
        "kelvin@x.test kelvin\nj\u{f6}rg@x.test joerg\n",
        "stra\u{df}e: kelvin\n",
    );
    // U+212A KELVIN SIGN would lower-case to `k`: it is another, unknown, address.
    assert!(d.mailbox("KELVIN@x.test").is_some());
    assert_eq!(d.mailbox("\u{212A}elvin@x.test"), None);
    assert_eq!(
        d.resolve("\u{212A}elvin@x.test"),
        Err(Refusal::Unknown {
            address: "\u{212A}elvin@x.test".into()
        })
    );
    // Non-ASCII letters are kept as received; ASCII ones still fold.
    assert!(d.mailbox("J\u{f6}RG@x.test").is_some());
    assert_eq!(d.mailbox("J\u{d6}RG@x.test"), None);
    assert_eq!(d.mailbox("\u{130}@x.test"), None);
    assert_eq!(finals(&d, "STRA\u{df}E@x.test"), ["kelvin@x.test"]);
    assert!(d.resolve("STRA\u{1E9E}E@x.test").is_err());
    // A catch-all takes only safe ASCII names: no mailbox for the Kelvin sign either.
    let mut f = fixture("", "");
    f.config.catch_all.insert("y.test".into(), "{local}".into());
    let d = LocalDirectory::load(&f.config).unwrap();
    assert_eq!(
        d.mailbox("Kelvin@y.test").unwrap().target,
        MailboxTarget::Name("kelvin".into())
    );
    assert_eq!(d.mailbox("\u{212A}elvin@y.test"), None);
}

#[test]
fn dot_and_parent_local_parts_never_name_a_mailbox() {
    let mut f = fixture(MAILBOXES, "");
    f.config.catch_all.insert("y.test".into(), "{local}".into());
    f.config
        .catch_all
        .insert("x.test".into(), "/srv/mail/{local}/Maildir".into());
    let d = LocalDirectory::load(&f.config).unwrap();
    for local in ["../x", ".", "..", "../../etc", "a/../b", ".x", "x/y"] {
        for domain in ["x.test", "y.test"] {
            let address = format!("{local}@{domain}");
            assert_eq!(d.mailbox(&address), None, "{address}");
            assert!(d.resolve(&address).is_err(), "{address}");
        }
    }
}

#[test]
fn pipe_file_and_include_aliases_are_refused() {
    let f = fixture(
        MAILBOXES,
        "pipe: |/usr/bin/procmail\nfile: /var/mail/x\ninc: :include:/etc/list\nquoted: \"|cmd\"\n",
    );
    let problems = LocalDirectory::load(&f.config).unwrap_err();
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    for line in ["aliases:1:", "aliases:2:", "aliases:3:"] {
        assert!(
            text.iter()
                .any(|t| t.starts_with("local.alias_map") && t.contains(line)),
            "{line} not refused: {text:#?}"
        );
    }
    assert!(
        text.iter().any(|t| t.contains("aliases:4:")),
        "a quoted pipe is not a member either: {text:#?}"
    );
}
