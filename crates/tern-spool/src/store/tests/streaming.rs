//! The content streamed to deliveries: `Spool::scan`, `Spool::open_body` and spill files.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};

use super::*;
use crate::error::{CorruptReason, Section, SpoolError};
use crate::state::QueueState;
use crate::store::BodyError;

/// Flips one octet of the content of a stored file (offset from the content's start).
fn damage(path: &Path, at: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 16 + at)
        .unwrap_or_else(|e| panic!("{e}"));
    b[0] ^= 0x55;
    f.write_all_at(&b, 16 + at)
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_message_is_scanned_and_streamed_byte_identical() {
    let dir = tempdir();
    let (spool, _) = open(dir.path());
    let body = content(3 * 1024 * 1024 + 17, 5);
    let id = store(&spool, &body, 100_000).await;

    let mut seen = Vec::new();
    let mut largest = 0;
    let env = spool
        .scan(QueueState::Incoming, id, &mut |piece| {
            largest = largest.max(piece.len());
            seen.extend_from_slice(piece);
        })
        .unwrap_or_else(|e| panic!("scan: {e}"));
    assert_eq!(env.size, body.len() as u64);
    assert!(seen == body, "scan saw other bytes");
    assert!(largest <= 256 * 1024, "pieces are bounded: {largest}");

    let mut r = spool
        .open_body(QueueState::Incoming, id)
        .unwrap_or_else(|e| panic!("open_body: {e}"));
    assert_eq!(r.len(), body.len() as u64);
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap_or_else(|e| panic!("{e}"));
    assert!(out == body, "the stream is not the content");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_content_fails_at_the_end_of_the_stream_and_the_scan_quarantines_it() {
    let dir = tempdir();
    let (spool, _) = open(dir.path());
    let body = content(1024 * 1024, 9);
    let id = store(&spool, &body, 65_536).await;
    let path = spool.path_of(QueueState::Incoming, id);
    damage(&path, 500_000);

    // Opened before anyone noticed: everything but the last piece, then the error.
    let mut r = spool
        .open_body(QueueState::Incoming, id)
        .unwrap_or_else(|e| panic!("open_body: {e}"));
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0usize;
    let err = loop {
        match r.read(&mut buf) {
            Ok(0) => panic!("a damaged content reached its end"),
            Ok(n) => got += n,
            Err(e) => break e,
        }
    };
    assert_eq!(BodyError::from_io(&err), Some(BodyError::Checksum));
    assert!(got < body.len(), "the last piece was withheld");

    let e = spool
        .scan(QueueState::Incoming, id, &mut |_| {})
        .unwrap_err();
    assert!(
        matches!(
            e,
            SpoolError::Corrupt(CorruptReason::ChecksumMismatch {
                section: Section::Content
            })
        ),
        "{e:?}"
    );
    assert!(!path.exists(), "quarantined");
    assert!(names(&sub(dir.path(), "corrupt")).contains(&id.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spill_file_is_private_and_has_no_name() {
    let dir = tempdir();
    let (spool, _) = open(dir.path());
    // (The umask is process-wide and other tests run beside this one, so it is not
    // changed here; the mode is set with fchmod.)
    let mut f = spool.spill_file().unwrap_or_else(|e| panic!("spill: {e}"));
    let mode = f.metadata().map(|m| m.permissions().mode()).unwrap_or(0);
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    assert!(names(&sub(dir.path(), "tmp")).is_empty(), "no name in tmp/");
    let data = content(2 * 1024 * 1024, 1);
    f.write_all(&data).unwrap_or_else(|e| panic!("{e}"));
    f.seek(SeekFrom::Start(0)).unwrap_or_else(|e| panic!("{e}"));
    let mut back = Vec::new();
    f.read_to_end(&mut back).unwrap_or_else(|e| panic!("{e}"));
    assert!(back == data);
    drop(f);
    assert!(names(&sub(dir.path(), "tmp")).is_empty());
}
