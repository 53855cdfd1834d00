#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
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

fn lf(pieces: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = LfWriter::default();
    for p in pieces {
        w.write(&mut out, p).unwrap();
    }
    w.finish(&mut out).unwrap();
    out
}

#[test]
fn crlf_becomes_lf_and_sizes_agree() {
    let out = lf(&[CONTENT]);
    assert_eq!(out, b"Subject: hi\n\nline one\nbare\rcr\n");
    let shape = ContentShape::of(CONTENT);
    assert_eq!(shape.len - shape.crlf, out.len() as u64);
    assert_eq!(shape.lf, 4);
    assert_eq!(lf(&[b"\r"]), b"\r");
    assert_eq!(lf(&[b"a\r", b"\nb\r", b"\r", b"\n", b"\r"]), b"a\nb\r\n\r");
}

proptest::proptest! {
    /// However the content is cut into pieces, the file and the shape are those of the
    /// whole content.
    #[test]
    fn any_chunking_writes_the_same_file(
        content in proptest::collection::vec(proptest::prop_oneof![proptest::strategy::Just(b'\r'), proptest::strategy::Just(b'\n'), proptest::num::u8::ANY], 0..300),
        cut in 1usize..40,
    ) {
        let pieces: Vec<&[u8]> = content.chunks(cut).collect();
        let whole = lf(&[&content]);
        proptest::prop_assert_eq!(lf(&pieces), whole.clone());
        let mut counter = ShapeCounter::default();
        for p in &pieces {
            counter.feed(p);
        }
        let shape = counter.shape();
        proptest::prop_assert_eq!(shape, ContentShape::of(&content));
        proptest::prop_assert_eq!(shape.len - shape.crlf, whole.len() as u64);
    }
}

#[test]
fn a_content_that_fails_while_streaming_leaves_nothing_in_the_maildir() {
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "checksum"));
            }
            let n = self.0.min(buf.len()).min(1000);
            buf[..n].fill(b'x');
            self.0 -= n;
            Ok(n)
        }
    }
    let root = tempfile::tempdir().unwrap();
    let md = Maildir::new(root.path().join("alice"));
    let streamed = Streamed {
        return_path: "s@x.test",
        delivered_to: "alice@x.test",
        shape: ContentShape {
            len: 200_000,
            crlf: 0,
            lf: 0,
        },
    };
    let guard = Guard::default();
    let options = Options {
        quota: None,
        may_create: true,
        guard: &guard,
    };
    let e = md
        .deliver_from(&streamed, &mut Failing(150_000), &options)
        .unwrap_err();
    assert!(e.to_string().contains("checksum"), "{e}");
    assert!(names(&md.path().join("new")).is_empty());
    assert!(names(&md.path().join("tmp")).is_empty());
    // Shorter than announced: refused the same way.
    let mut short: &[u8] = b"only this";
    let e = md
        .deliver_from(&streamed, &mut short, &options)
        .unwrap_err();
    assert!(e.to_string().contains("announced"), "{e}");
    assert!(names(&md.path().join("new")).is_empty());
    assert!(names(&md.path().join("tmp")).is_empty());
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

// The attacks of issue 15. These tests need root (to make files owned by another uid),
// as the test machines run them; elsewhere they say so and pass without checking.

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        eprintln!("not root: the ownership cases are not checked");
    }
    root
}

/// Changes the owner of `path` itself (a link is not followed).
fn lchown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A Maildir owned by `nobody` under `<root>/home/bob` (also nobody's), ready for
/// delivery; `<root>` is root's, mode 0755.
fn users_maildir(root: &Path) -> PathBuf {
    chmod(root, 0o755);
    let md = root.join("home/bob/Maildir");
    for sub in ["tmp", "new", "cur"] {
        fs::create_dir_all(md.join(sub)).unwrap();
    }
    for p in [
        root.join("home/bob"),
        md.clone(),
        md.join("tmp"),
        md.join("new"),
        md.join("cur"),
    ] {
        lchown(&p, NOBODY);
        chmod(&p, 0o700);
    }
    md
}

fn unsafe_component(e: MaildirError) -> (PathBuf, String) {
    assert_eq!(e.temporary_status(), (451, "4.3.0"), "{e}");
    match e {
        MaildirError::Unsafe {
            component, reason, ..
        } => (component, reason),
        other => panic!("expected Unsafe, got {other:?}"),
    }
}

/// Files anywhere under `dir` (recursively), for "nothing was written there".
fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.symlink_metadata().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_users_symlink_at_any_level_is_refused_and_nothing_is_written_through_it() {
    if !is_root() {
        return;
    }
    for level in ["Maildir", "tmp", "new", "cur", "ancestor"] {
        let root = tempfile::tempdir().unwrap();
        let md = users_maildir(root.path());
        // The place the user wants Tern to write into (say, the pickup directory).
        let target = root.path().join("target");
        for sub in ["", "tmp", "new", "cur"] {
            fs::create_dir_all(target.join(sub)).unwrap();
        }
        let swapped = match level {
            "Maildir" => md.clone(),
            "ancestor" => root.path().join("home/bob"),
            sub => md.join(sub),
        };
        if level == "ancestor" {
            // /home is the admin's; bob's own directory is the link, made by bob.
            fs::rename(&swapped, root.path().join("bob.real")).unwrap();
            fs::create_dir_all(target.join("Maildir/new")).unwrap();
        } else {
            fs::remove_dir_all(&swapped).unwrap();
        }
        let link_to = match level {
            "Maildir" | "ancestor" => target.clone(),
            sub => target.join(sub),
        };
        symlink(&link_to, &swapped).unwrap();
        lchown(&swapped, NOBODY);
        let e = Maildir::new(&md).deliver(&msg(), None).unwrap_err();
        let (component, reason) = unsafe_component(e);
        assert_eq!(component, swapped, "{level}: {reason}");
        assert!(
            reason.contains("symbolic link owned by uid 65534"),
            "{level}: {reason}"
        );
        assert!(
            all_files(&target).is_empty(),
            "{level}: written through the link"
        );
    }
}

#[test]
fn a_link_made_by_root_or_tern_in_a_safe_directory_is_followed() {
    let root = tempfile::tempdir().unwrap();
    chmod(root.path(), 0o755);
    // The admin's `/home -> /srv/home`.
    let srv = root.path().join("srv/home");
    fs::create_dir_all(&srv).unwrap();
    symlink(&srv, root.path().join("home")).unwrap();
    let md = Maildir::new(root.path().join("home/alice/Maildir"));
    let name = md.deliver(&msg(), None).unwrap();
    assert!(srv.join("alice/Maildir/new").join(&name).is_file());
    // The same link in a directory others may write is not followed.
    chmod(root.path(), 0o777);
    let (component, reason) = unsafe_component(md.deliver(&msg(), None).unwrap_err());
    assert_eq!(component, root.path().join("home"));
    assert!(
        reason.contains("writable by its group or others"),
        "{reason}"
    );
    chmod(root.path(), 0o755);
    if is_root() {
        // A link owned by a user, in the admin's directory: refused.
        lchown(&root.path().join("home"), NOBODY);
        let (_, reason) = unsafe_component(md.deliver(&msg(), None).unwrap_err());
        assert!(reason.contains("owned by uid 65534"), "{reason}");
    }
}

#[test]
fn maildir_directories_writable_by_everyone_or_owned_by_a_third_user_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let md = Maildir::new(root.path().join("m"));
    md.create().unwrap();
    for sub in ["", "tmp", "new", "cur"] {
        let dir = md.path().join(sub);
        chmod(&dir, 0o777);
        let (component, reason) = unsafe_component(md.deliver(&msg(), None).unwrap_err());
        assert_eq!(component, md.path().join(sub), "{reason}");
        assert!(
            reason.contains("writable by everyone (mode 777)"),
            "{reason}"
        );
        // Group-writable (a shared mailbox) is accepted.
        chmod(&dir, 0o770);
        md.deliver(&msg(), None).unwrap();
        chmod(&dir, 0o700);
    }
    if is_root() {
        // new/ owned by a third user (the Maildir is root's, root is Tern here).
        lchown(&md.path().join("new"), NOBODY);
        let (component, reason) = unsafe_component(md.deliver(&msg(), None).unwrap_err());
        assert_eq!(component, md.path().join("new"));
        assert!(reason.contains("owned by uid 65534"), "{reason}");
        // The Maildir's owner may own its subdirectories.
        lchown(md.path(), NOBODY);
        md.deliver(&msg(), None).unwrap();
    }
}

#[test]
fn a_directory_swapped_after_the_walk_does_not_redirect_the_file() {
    let root = tempfile::tempdir().unwrap();
    let md = Maildir::new(root.path().join("m"));
    let elsewhere = root.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let opened = md
        .open(&Walker::current(), true, &Guard::default())
        .unwrap();
    // The owner moves new/ away and puts a link to elsewhere in its place.
    fs::rename(md.path().join("new"), md.path().join("new.real")).unwrap();
    symlink(&elsewhere, md.path().join("new")).unwrap();
    let streamed = Streamed {
        return_path: "sender@client.test",
        delivered_to: "alice@x.test",
        shape: ContentShape::of(CONTENT),
    };
    let name = md
        .write(&opened, &streamed, &mut { CONTENT }, None)
        .unwrap();
    assert!(md.path().join("new.real").join(&name).is_file());
    assert!(all_files(&elsewhere).is_empty());
    assert!(names(&md.path().join("tmp")).is_empty());
}

#[test]
fn tern_own_directories_are_never_a_maildir() {
    let root = tempfile::tempdir().unwrap();
    chmod(root.path(), 0o755);
    let pickup = root.path().join("data/pickup");
    fs::create_dir_all(&pickup).unwrap();
    let guard = Guard {
        protected: vec![pickup.clone()],
    };
    let opts = |may_create| Options {
        quota: None,
        may_create,
        guard: &guard,
    };
    // new/ is a link (made by Tern, so trusted) to the pickup directory.
    let md = Maildir::new(root.path().join("m"));
    md.create().unwrap();
    fs::remove_dir(md.path().join("new")).unwrap();
    symlink(&pickup, md.path().join("new")).unwrap();
    let (component, reason) = unsafe_component(md.deliver_with(&msg(), &opts(true)).unwrap_err());
    assert_eq!(component, pickup);
    assert!(reason.contains("one of Tern's own directories"), "{reason}");
    assert!(all_files(&pickup).is_empty());
    // A Maildir inside the pickup directory.
    let inside = Maildir::new(pickup.join("x/Maildir"));
    let (_, reason) = unsafe_component(inside.deliver_with(&msg(), &opts(true)).unwrap_err());
    assert!(reason.contains(&pickup.display().to_string()), "{reason}");
    assert!(all_files(&pickup).is_empty());
    // Without the guard the same delivery goes through (the guard is what refuses).
    inside.deliver(&msg(), None).unwrap();
}

#[test]
fn a_missing_maildir_is_created_only_when_allowed() {
    let root = tempfile::tempdir().unwrap();
    let guard = Guard::default();
    let md = Maildir::new(root.path().join("new-user/Maildir"));
    let opts = |may_create| Options {
        quota: None,
        may_create,
        guard: &guard,
    };
    let e = md.deliver_with(&msg(), &opts(false)).unwrap_err();
    assert!(matches!(e, MaildirError::NewMailboxLimit { .. }), "{e:?}");
    assert_eq!(e.temporary_status(), (452, "4.5.3"));
    assert!(!root.path().join("new-user").exists());
    let first = md.deliver_with(&msg(), &opts(true)).unwrap();
    assert!(first.created);
    let second = md.deliver_with(&msg(), &opts(false)).unwrap();
    assert!(!second.created);
    let mode = fs::metadata(md.path()).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o700);
}
