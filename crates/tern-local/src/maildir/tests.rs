#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::*;

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

const CONTENT: &[u8] = b"Subject: hi\r\n\r\nline one\r\nbare\rcr\r\n";

fn msg() -> Message<'static> {
    Message {
        return_path: "sender@client.test",
        delivered_to: "alice@x.test",
        content: CONTENT,
    }
}

#[test]
fn unique_names_carry_time_pid_counter_host_and_sizes() {
    let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
    let a = unique_name(t, "mx.test", 10, 12);
    let b = unique_name(t, "mx.test", 10, 12);
    assert_ne!(a, b, "same microsecond, different names");
    let pid = std::process::id();
    assert!(a.starts_with(&format!("1700000000.M123456P{pid}Q")), "{a}");
    assert!(a.ends_with(".mx.test,S=10,W=12"), "{a}");
    assert_eq!(size_from_name(&a), Some(10));
    assert_eq!(size_from_name(&format!("{a}:2,S")), Some(10));
    assert_eq!(size_from_name("1.M1P1.host"), None);
    assert!(!a.contains('/'));
}

#[test]
fn crlf_becomes_lf_and_sizes_agree() {
    let mut out = Vec::new();
    write_lf(&mut out, CONTENT).unwrap();
    assert_eq!(out, b"Subject: hi\n\nline one\nbare\rcr\n");
    assert_eq!(lf_size(CONTENT), out.len() as u64);
    let mut out = Vec::new();
    write_lf(&mut out, b"\r").unwrap();
    assert_eq!(out, b"\r");
}

#[test]
fn delivery_creates_the_maildir_and_leaves_only_a_complete_file_in_new() {
    let root = tempfile::tempdir().unwrap();
    let md = Maildir::new(root.path().join("alice/Maildir"));
    let name = md.deliver(&msg(), None).unwrap();
    for sub in ["tmp", "new", "cur"] {
        assert!(md.path().join(sub).is_dir(), "{sub}");
    }
    assert!(names(&md.path().join("tmp")).is_empty());
    assert_eq!(names(&md.path().join("new")), std::slice::from_ref(&name));
    let stored = fs::read(md.path().join("new").join(&name)).unwrap();
    assert_eq!(
        stored,
        b"Return-Path: <sender@client.test>\nDelivered-To: alice@x.test\nSubject: hi\n\nline one\nbare\rcr\n"
    );
    assert_eq!(size_from_name(&name), Some(stored.len() as u64));
    let lines = stored.iter().filter(|b| **b == b'\n').count() as u64;
    assert!(
        name.ends_with(&format!(",W={}", stored.len() as u64 + lines)),
        "{name}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(md.path().join("new").join(&name))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let second = md
        .deliver(
            &Message {
                return_path: "",
                ..msg()
            },
            None,
        )
        .unwrap();
    assert_ne!(second, name);
    let stored = fs::read(md.path().join("new").join(&second)).unwrap();
    assert!(stored.starts_with(b"Return-Path: <>\n"));
}

#[test]
fn quota_counts_new_and_cur_and_refuses_what_does_not_fit() {
    let root = tempfile::tempdir().unwrap();
    let md = Maildir::new(root.path().join("q"));
    let first = md.deliver(&msg(), Some(1000)).unwrap();
    let size = size_from_name(&first).unwrap();
    // A file read by a client moves to cur/ and still counts; one without S= is stat'ed.
    fs::rename(
        md.path().join("new").join(&first),
        md.path().join("cur").join(format!("{first}:2,S")),
    )
    .unwrap();
    fs::write(md.path().join("cur/legacy"), vec![b'x'; 100]).unwrap();
    assert_eq!(md.usage().unwrap(), size + 100);
    match md.deliver(&msg(), Some(size * 2 + 99)) {
        Err(MaildirError::OverQuota { used, limit, .. }) => {
            assert_eq!((used, limit), (size + 100, size * 2 + 99))
        }
        other => panic!("{other:?}"),
    }
    assert!(names(&md.path().join("new")).is_empty());
    assert!(names(&md.path().join("tmp")).is_empty());
    md.deliver(&msg(), Some(size * 2 + 100)).unwrap();
}

#[test]
fn io_failures_are_temporary_and_leave_nothing_behind() {
    let root = tempfile::tempdir().unwrap();
    // A file where the Maildir's new/ should be.
    let md = Maildir::new(root.path().join("broken"));
    fs::create_dir_all(md.path().join("tmp")).unwrap();
    fs::write(md.path().join("new"), b"not a directory").unwrap();
    let e = md.deliver(&msg(), None).unwrap_err();
    assert_eq!(e.temporary_status(), (451, "4.3.0"), "{e}");
    assert!(names(&md.path().join("tmp")).is_empty());
    let full = MaildirError::io(
        "write",
        Path::new("/x"),
        io::Error::from_raw_os_error(libc::ENOSPC),
    );
    assert_eq!(full.temporary_status(), (452, "4.3.1"));
    let dq = MaildirError::io(
        "write",
        Path::new("/x"),
        io::Error::from_raw_os_error(libc::EDQUOT),
    );
    assert_eq!(dq.temporary_status(), (452, "4.2.2"));
}
