//! Segment commit (`[spool] commit = "segment"`): new messages appended to shared
//! segment files instead of a file each.
//!
//! A segment `segments/<segment id>` is a sequence of records, each a frame (`frame`:
//! version 2, 64 bytes with the record's offset and a MAC under the spool key; version 1,
//! 32 bytes, in segments written before 2026-12) followed by a complete message file
//! of format version 1 (header, content, envelope, trailer: self-checking on its own,
//! see `format`), and, once it takes no more appends, a seal frame.
//!
//! Beside it, `segments/<segment id>.out` lists (one `<queue id>\n` per line) the
//! messages that left the segment for good while it still existed (removed, deleted,
//! quarantined), and `sealed <offset>\n` once the segment is sealed.
//!
//! Commit: one thread (`tern-spool-segment`) takes every message waiting, appends their
//! records with one positioned gathering write (`sys::write_all_vectored_at`, no copy of
//! the message files) at the end of the current segment, `fdatasync`s
//! the segment once, and only then answers them, so each `250` follows the sync of its
//! own bytes. No inode is allocated and no directory changes per message: a new segment
//! (and its `.out`) is created, and `segments/` fsynced, once per `SEGMENT_MAX` bytes.
//! A failed write or sync cuts the segment back to its last synced length before the
//! `451`, and the next batch starts a new segment.
//!
//! Seals: a segment that takes no more appends (it reached `SEGMENT_MAX`, the spool is
//! closing, a write failed) gets a seal frame at its end, synced, and a `sealed <offset>`
//! line in its `.out`, synced: two witnesses that the segment is complete.
//!
//! A message in a segment is in state `incoming`. Moving it to another state (the queue
//! manager taking it to `active/`, an operator holding it) writes it out as a file of its
//! own in the target directory, durably, exactly as a file-mode commit does; it then has
//! two copies and the file is the one that counts ("taken"). Removing a taken or resident
//! message first appends its id to the `.out` file, so a segment does not bring back a
//! message that was delivered. Like the unlink of a delivered message's file, that append
//! is not synced: a process crash keeps it, a power loss may lose it, and the message is
//! then delivered again (the at-least-once window). A segment with no resident message left
//! and no more appends is unlinked (with its `.out`), and `segments/` fsynced.
//!
//! Recovery (`Segments::recover`), after the state directories were validated: every
//! segment is scanned (`scan`); a record whose id is in `.out` or has a valid file in a
//! state directory was taken and is skipped; the rest are resident in `incoming`.
//! - An unfinished tail (a record cut short, the start of a frame, zeros) is a write a
//!   crash interrupted only in the segment that was being appended to: the newest
//!   segment (highest id) when it has no seal. There it is cut off and synced (event
//!   3002). Anywhere else it is damage.
//! - Any damage quarantines the segment: every record still resident is first written
//!   out as a file of its own, to `incoming/` when it is Tern's own (reached through the
//!   chain of lengths from offset 0 or from an authenticated frame, or authenticated
//!   itself), to `hold/` when it was only found by searching (it could be bytes a client
//!   put inside a body); then the segment moves to `corrupt/<segment id>` with a reason
//!   listing every damage and every message (event 3003), and each message concerned
//!   gets its own tracked event (3007 damaged, 3008 written out, 3009 held). Nothing a
//!   segment holds is deleted.
//! - Every segment kept is sealed (if it was not) before the commit thread starts, so at
//!   any start at most one segment can have an unfinished tail. A server that delivers
//!   recovers its segments in the background instead (`prepare_background`, then
//!   `recover` on the segments listed at the start only): the commit thread appends only
//!   to segments it creates, and the newest segment at the start gets an `unfinished`
//!   line in its `.out` first, so that if the process dies again before that recovery
//!   ends, its tail may still be cut although newer segments exist by then.
//!
//! Invariants:
//! - The state mutex guards only the in-memory index; it is never held across I/O.
//! - The index holds a message only after the sync of its record returned.
//! - A segment is unlinked only when no message is resident in it and it is sealed; a
//!   removal that races with the unlink still logs to `.out` (the segment's entry stays
//!   until the unlink is durable).
//! - Records are bounded: at most `MAX_BLOB` bytes (messages that spill past
//!   `MessageWriter::BUFFER_LIMIT` are committed as files of their own in every mode).
//! - Nothing is appended to a segment after its seal.

mod frame;
mod scan;

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use tokio::sync::oneshot;

use tern_events::{catalog, fields};

use crate::error::{CorruptReason, SpoolError};
use crate::id::QueueId;
use crate::state::QueueState;

use super::handoff::Handoff;
use super::key::SpoolKey;
use super::{SyncCounters, sys};

pub(crate) use frame::V2_LEN as FRAME_LEN;
pub(crate) use scan::{Damage, Found, Via};

/// Recovery's way to write a message out as a durable file in `incoming/` or `hold/`;
/// `Ok(false)` when a file by that name was already there.
pub(crate) type WriteOut<'a> = dyn Fn(QueueId, &[u8], QueueState) -> Result<bool, SpoolError> + 'a;
/// Recovery's way to move `segments/<name>` to `corrupt/` with a reason, the details for
/// its `.reason` file, and the (bounded) lists of damaged and written-out ids for event
/// 3003; the name it got in `corrupt/`, or `None` when it vanished.
pub(crate) type QuarantineSegment<'a> = dyn Fn(&std::ffi::OsStr, &CorruptReason, &str, &str, &str) -> Result<Option<String>, SpoolError>
    + 'a;

/// Directory under the spool that holds the segments.
pub(crate) const SEGMENTS_DIR: &str = "segments";
/// Suffix of a segment's list of messages that left it.
pub(crate) const OUT_SUFFIX: &str = ".out";
/// Line prefix in `.out` recording the seal.
const SEALED_LINE: &str = "sealed ";
/// Line in `.out` written (and synced) by a start that leaves this segment's recovery to
/// the background (`Segments::prepare_background`): it was the newest segment at that
/// start, so a tail a crash left unfinished in it may still be cut even when a newer
/// segment exists by the time its recovery runs.
const UNFINISHED_LINE: &str = "unfinished";
/// A segment takes no more appends once it is this long.
const SEGMENT_MAX: u64 = 64 * 1024 * 1024;
/// Most queue ids named in one event 3003 (every one is in the `.reason` file and has
/// its own event).
const MAX_IDS_IN_EVENT: usize = 20;

/// Runs the scanner over `data` as one segment file, with a fixed key (the fuzz target).
pub(crate) fn scan_bytes_for_fuzzing(data: &[u8]) {
    let mut read_at = |at: u64, buf: &mut [u8]| -> io::Result<()> {
        let at = usize::try_from(at).map_err(io::Error::other)?;
        let end = at
            .checked_add(buf.len())
            .ok_or_else(|| io::Error::other("overflow"))?;
        let src = data
            .get(at..end)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    };
    let seg = fuzz_segment_id();
    let key = SpoolKey::for_tests(7);
    let _ = scan::scan(&mut read_at, data.len() as u64, seg, Some(&key));
}

/// The fuzz target with an oracle: a genuine segment (two records, the second carrying
/// forged frames in its body, and a seal) edited by `data` (each 3 bytes: a position
/// and a byte to XOR there; a last odd byte cuts the segment), then scanned. Panics if
/// the scan does not account for every byte in order, reports a record that fails
/// validation, or trusts anything but a genuine record at the offset it was written.
pub(crate) fn fuzz_edited_segment(data: &[u8]) {
    let key = SpoolKey::for_tests(7);
    let seg = fuzz_segment_id();
    let mut bytes = Vec::new();
    let mut genuine = Vec::new();
    let file = |content: &[u8]| -> Option<(QueueId, Vec<u8>)> {
        let id = QueueId::generate();
        let env = crate::envelope::Envelope {
            quarantine: None,
            id,
            sender: "a@b.test".into(),
            recipients: vec![crate::envelope::Recipient {
                address: "c@d.test".into(),
                orcpt: None,
                notify: None,
                status: crate::envelope::RecipientStatus::Pending,
            }],
            params: crate::envelope::MailParams::default(),
            client: crate::envelope::ClientInfo::default(),
            arrival_micros: id.arrival_micros(),
            size: content.len() as u64,
        };
        crate::format::encode(content, &env).ok().map(|f| (id, f))
    };
    let Some((id1, f1)) = file(b"Subject: one\r\n\r\nhello\r\n") else {
        return;
    };
    let Some((fake, ffake)) = file(b"Subject: forged\r\n\r\nx\r\n") else {
        return;
    };
    let mut body = b"Subject: two\r\n\r\n".to_vec();
    body.extend_from_slice(&frame::encode_record(
        seg,
        0,
        fake,
        &ffake,
        &SpoolKey::for_tests(8),
    ));
    body.extend_from_slice(&ffake);
    let Some((id2, f2)) = file(&body) else {
        return;
    };
    for (id, f) in [(id1, &f1), (id2, &f2)] {
        let at = bytes.len() as u64;
        bytes.extend_from_slice(&frame::encode_record(seg, at, id, f, &key));
        bytes.extend_from_slice(f);
        genuine.push((id, at));
    }
    let at = bytes.len() as u64;
    bytes.extend_from_slice(&frame::encode_seal(seg, at, &key));
    let mut edits = data.chunks_exact(3);
    for e in &mut edits {
        let pos = usize::from(u16::from_le_bytes([e[0], e[1]]));
        let n = bytes.len().max(1);
        if let Some(b) = bytes.get_mut(pos % n) {
            *b ^= e[2];
        }
    }
    if let [cut] = edits.remainder() {
        let keep = bytes.len() * usize::from(*cut) / 255;
        bytes.truncate(keep);
    }
    let mut read_at = |at: u64, buf: &mut [u8]| -> io::Result<()> {
        let at = usize::try_from(at).map_err(io::Error::other)?;
        let src = at
            .checked_add(buf.len())
            .and_then(|end| bytes.get(at..end))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    };
    let len = bytes.len() as u64;
    let Ok(found) = scan::scan(&mut read_at, len, seg, Some(&key)) else {
        panic!("a scan of bytes in memory failed");
    };
    let mut at = 0u64;
    for f in &found {
        match f {
            Found::Record {
                id,
                at: a,
                blob_at,
                len: n,
                via,
            } => {
                assert_eq!(*a, at, "records in order");
                let b = usize::try_from(*blob_at).unwrap_or(usize::MAX);
                let e = usize::try_from(*n).unwrap_or(usize::MAX);
                let file = b.checked_add(e).and_then(|end| bytes.get(b..end));
                assert!(
                    file.is_some_and(|f| crate::format::decode(f, Some(*id)).is_ok()),
                    "a record that does not validate"
                );
                if *via != Via::Search {
                    assert!(genuine.contains(&(*id, *a)), "trusted a forgery");
                }
                at = blob_at + n;
            }
            Found::Damaged { at: a, len: n, .. } => {
                assert_eq!(*a, at, "damage in order");
                assert!(*n > 0, "empty damage");
                at += n;
            }
            Found::Seal { at: a } => {
                assert_eq!(*a, at, "seal in order");
                at += FRAME_LEN as u64;
            }
            Found::Unfinished { at: a, .. } => {
                assert_eq!(*a, at, "tail in order");
                at = len;
            }
        }
    }
    assert_eq!(at, len, "every byte accounted for");
}

/// The segment id the fuzz target scans as (fixed, so a corpus can hold its seal).
fn fuzz_segment_id() -> QueueId {
    QueueId::parse("0000000000000F0").unwrap_or_else(|_| QueueId::generate())
}

/// Where a resident message's file is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Loc {
    seg: QueueId,
    blob_at: u64,
    len: u64,
}

impl Loc {
    /// Length of the message file in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// `segments/<segment> at offset N` under `dir` (the spool), for people.
    pub(crate) fn describe(&self, dir: &Path) -> String {
        format!(
            "{} at offset {}",
            dir.join(SEGMENTS_DIR).join(self.seg.to_string()).display(),
            self.blob_at
        )
    }
}

struct Seg {
    file: Arc<File>,
    /// `None` in a read-only spool.
    out: Option<Arc<File>>,
    /// Messages resident in it.
    live: usize,
    /// Takes no more appends.
    sealed: bool,
    /// Being unlinked (kept until the unlink is durable; see the invariants).
    retiring: bool,
}

#[derive(Default)]
struct Index {
    resident: HashMap<QueueId, Loc>,
    segs: HashMap<QueueId, Seg>,
    /// Messages written out of a segment that still exists: message id → segment id.
    taken: HashMap<QueueId, QueueId>,
}

/// The segments of one spool: the index of resident messages and, when writable, the
/// commit thread.
pub(crate) struct Segments {
    dir: PathBuf,
    index: Mutex<Index>,
    committer: Mutex<Option<Committer>>,
    /// The spool key that authenticates frames (set once at open; absent in a read-only
    /// spool whose key cannot be read).
    key: OnceLock<SpoolKey>,
    /// The key of delivery-record frames, derived from `key` (`SpoolKey::for_records`).
    record_key: OnceLock<SpoolKey>,
}

/// A resident message, found by [`Segments::lookup`].
pub(crate) struct Resident {
    pub(crate) loc: Loc,
    file: Arc<File>,
}

impl Resident {
    /// Reads its whole message file.
    pub(crate) fn read(&self) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; usize::try_from(self.loc.len).unwrap_or(0)];
        self.file.read_exact_at(&mut buf, self.loc.blob_at)?;
        Ok(buf)
    }
}

impl Segments {
    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// An empty set over `<spool>/segments` (nothing read yet).
    pub(crate) fn new(spool_dir: &Path) -> Segments {
        Segments {
            dir: spool_dir.join(SEGMENTS_DIR),
            index: Mutex::new(Index::default()),
            committer: Mutex::new(None),
            key: OnceLock::new(),
            record_key: OnceLock::new(),
        }
    }

    /// The key of delivery-record frames (`format::frame`), if the spool key was set.
    pub(crate) fn record_key(&self) -> Option<&SpoolKey> {
        self.record_key.get()
    }

    /// Sets the spool key (once, at open).
    pub(crate) fn set_key(&self, key: SpoolKey) {
        let _ = self.record_key.set(key.for_records());
        let _ = self.key.set(key);
    }

    /// Message `id` if it is resident in a segment.
    pub(crate) fn lookup(&self, id: QueueId) -> Option<Resident> {
        let ix = self.lock();
        let loc = *ix.resident.get(&id)?;
        let file = Arc::clone(&ix.segs.get(&loc.seg)?.file);
        Some(Resident { loc, file })
    }

    /// Every resident message, sorted by id.
    pub(crate) fn residents(&self) -> Vec<(QueueId, Resident)> {
        let ix = self.lock();
        let mut v: Vec<(QueueId, Resident)> = ix
            .resident
            .iter()
            .filter_map(|(id, loc)| {
                let file = Arc::clone(&ix.segs.get(&loc.seg)?.file);
                Some((*id, Resident { loc: *loc, file }))
            })
            .collect();
        drop(ix);
        v.sort_by_key(|(id, _)| *id);
        v
    }

    /// How many messages are resident.
    pub(crate) fn resident_count(&self) -> usize {
        self.lock().resident.len()
    }

    /// After message `id` was written out as a file of its own and that file is durable:
    /// it is no longer resident. Returns the segment to `retire` when it was its last
    /// resident (no I/O here: the caller may be on an async worker).
    pub(crate) fn taken(&self, id: QueueId) -> Option<QueueId> {
        let mut ix = self.lock();
        let loc = ix.resident.remove(&id)?;
        ix.taken.insert(id, loc.seg);
        Self::release(&mut ix, loc.seg)
    }

    /// Before message `id` (resident, or taken from a segment that still exists) is
    /// removed for good: logs it in the segment's `.out`, so the segment never
    /// brings it back (not synced: see the body). `Ok(false)` when no segment knows it.
    pub(crate) fn gone(&self, id: QueueId) -> Result<bool, SpoolError> {
        let (seg, out) = {
            let ix = self.lock();
            let seg = match ix.resident.get(&id) {
                Some(loc) => loc.seg,
                None => match ix.taken.get(&id) {
                    Some(s) => *s,
                    None => return Ok(false),
                },
            };
            let out = ix.segs.get(&seg).and_then(|s| s.out.clone());
            (seg, out)
        };
        let Some(out) = out else {
            return Err(SpoolError::ReadOnly);
        };
        let path = self.dir.join(format!("{seg}{OUT_SUFFIX}"));
        let line = format!("{id}\n");
        // Not synced, like the unlink of a delivered message (`lifecycle`): a crash of the
        // process keeps the line (it is in the page cache); a power loss can lose it, and
        // the message comes back and is delivered again: the at-least-once window.
        (&*out)
            .write_all(line.as_bytes())
            .map_err(|e| SpoolError::io("append", &path, e))?;
        let retire = {
            let mut ix = self.lock();
            ix.taken.remove(&id);
            match ix.resident.remove(&id) {
                Some(loc) => Self::release(&mut ix, loc.seg),
                None => None,
            }
        };
        if let Some(seg) = retire {
            self.retire(seg);
        }
        Ok(true)
    }

    /// A message written out of a segment that still exists leaves for good
    /// (quarantined from its state directory): logs it in that segment's `.out`, so the
    /// segment never brings it back. Best effort (an error is the at-least-once window).
    pub(crate) fn gone_if_taken(&self, id: QueueId) {
        let taken = self.lock().taken.contains_key(&id);
        if taken {
            let _ = self.gone(id);
        }
    }

    /// One resident fewer in `seg`; returns it when it should be unlinked now.
    fn release(ix: &mut Index, seg: QueueId) -> Option<QueueId> {
        let s = ix.segs.get_mut(&seg)?;
        s.live = s.live.saturating_sub(1);
        (s.live == 0 && s.sealed && !s.retiring && s.out.is_some()).then(|| {
            s.retiring = true;
            seg
        })
    }

    /// Unlinks segment `seg` and its `.out`, fsyncs `segments/`, then forgets it. On an
    /// error it stays on disk (recovery finds every message in it taken). Blocking.
    pub(crate) fn retire(&self, seg: QueueId) {
        let path = self.dir.join(seg.to_string());
        let out = self.dir.join(format!("{seg}{OUT_SUFFIX}"));
        let done = std::fs::remove_file(&path)
            .and_then(|()| match std::fs::remove_file(&out) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            })
            .and_then(|()| sys::sync_subdir(&self.dir));
        let mut ix = self.lock();
        if done.is_ok() {
            ix.segs.remove(&seg);
            ix.taken.retain(|_, s| *s != seg);
        } else if let Some(s) = ix.segs.get_mut(&seg) {
            s.retiring = false;
        }
    }

    /// Seals the segment being appended to (no more appends; unlinked once empty).
    fn seal(&self, seg: QueueId) {
        let retire = {
            let mut ix = self.lock();
            match ix.segs.get_mut(&seg) {
                Some(s) if !s.sealed => {
                    s.sealed = true;
                    (s.live == 0 && s.out.is_some()).then(|| {
                        s.retiring = true;
                        seg
                    })
                }
                _ => None,
            }
        };
        if let Some(seg) = retire {
            self.retire(seg);
        }
    }

    /// Starts the commit thread (writable spools).
    pub(crate) fn start_committer(
        self: &Arc<Self>,
        counters: Arc<SyncCounters>,
        queued: Arc<AtomicUsize>,
        events: tern_events::EventLog,
    ) -> io::Result<()> {
        let shared = Arc::new(Shared::new());
        let thread_shared = Arc::clone(&shared);
        let segments = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name("tern-spool-segment".into())
            .spawn(move || commit_loop(&segments, &thread_shared, &counters, &queued, &events))?;
        *self
            .committer
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Committer {
            shared,
            thread: Some(thread),
        });
        Ok(())
    }

    /// Stops the commit thread once it has answered every message given to it, and
    /// waits for it (at most one batch's write and sync), so that nothing is appended
    /// after the spool's lock is released.
    pub(crate) fn stop_committer(&self) {
        let c = self
            .committer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut c) = c {
            c.shared.stop();
            if let Some(t) = c.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// Appends message `id` (its whole file, `blob`) to a segment and returns once it is
    /// durable there and resident (see the module header).
    pub(crate) async fn commit(&self, id: QueueId, blob: Vec<u8>) -> Result<(), SpoolError> {
        let shared = {
            let c = self
                .committer
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match c.as_ref() {
                Some(c) => Arc::clone(&c.shared),
                None => return Err(SpoolError::ReadOnly),
            }
        };
        // The MAC covers the whole message file through its digest, computed here, by
        // the session, in parallel with the others; the commit thread then spends a
        // constant time per record on its frame, whatever the message's size.
        let digest = frame::digest(&blob);
        let (reply, rx) = oneshot::channel();
        if shared
            .push(Job {
                id,
                blob,
                digest,
                reply,
            })
            .is_err()
        {
            return Err(SpoolError::BlockingTask("segment thread stopped".into()));
        }
        rx.await
            .unwrap_or_else(|_| Err(SpoolError::BlockingTask("segment thread ended".into())))
    }
}

struct Job {
    id: QueueId,
    blob: Vec<u8>,
    /// `frame::digest(&blob)`, computed by the session (see `Segments::commit`).
    digest: frame::Digest,
    reply: oneshot::Sender<Result<(), SpoolError>>,
}

type Shared = Handoff<Job>;

struct Committer {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The segment being appended to, owned by the commit thread.
struct Current {
    id: QueueId,
    file: Arc<File>,
    len: u64,
}

fn create_segment(segments: &Segments) -> Result<Current, SpoolError> {
    let id = QueueId::generate();
    let path = segments.dir.join(id.to_string());
    let out_path = segments.dir.join(format!("{id}{OUT_SUFFIX}"));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| SpoolError::io("create", &path, e))?;
    let out = OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&out_path)
        .map_err(|e| SpoolError::io("create", &out_path, e))?;
    sys::sync_subdir(&segments.dir)
        .map_err(|e| SpoolError::io("fsync directory", &segments.dir, e))?;
    let file = Arc::new(file);
    segments.lock().segs.insert(
        id,
        Seg {
            file: Arc::clone(&file),
            out: Some(Arc::new(out)),
            live: 0,
            sealed: false,
            retiring: false,
        },
    );
    Ok(Current { id, file, len: 0 })
}

impl Segments {
    /// Writes the seal of segment `seg` (whose records end at `at`) and syncs it, then
    /// records `sealed <at>` in its `.out` and syncs that (see the module header).
    /// Blocking: two writes and two syncs, once per segment.
    fn write_seal(&self, seg: QueueId, file: &File, at: u64) -> Result<(), SpoolError> {
        let path = self.dir.join(seg.to_string());
        let Some(key) = self.key.get() else {
            return Err(SpoolError::ReadOnly);
        };
        let f = frame::encode_seal(seg, at, key);
        file.write_all_at(&f, at)
            .and_then(|()| file.sync_data())
            .map_err(|e| SpoolError::io("seal", &path, e))?;
        self.note_sealed(seg, at)
    }

    /// Appends `sealed <at>` to segment `seg`'s `.out` and syncs it.
    fn note_sealed(&self, seg: QueueId, at: u64) -> Result<(), SpoolError> {
        let out = self
            .lock()
            .segs
            .get(&seg)
            .and_then(|s| s.out.as_ref().map(Arc::clone));
        if let Some(out) = out {
            let out_path = self.dir.join(format!("{seg}{OUT_SUFFIX}"));
            (&*out)
                .write_all(format!("{SEALED_LINE}{at}\n").as_bytes())
                .and_then(|()| out.sync_data())
                .map_err(|e| SpoolError::io("append", &out_path, e))?;
        }
        Ok(())
    }

    /// The commit thread's end of a segment: writes its seal (best effort: a segment
    /// without a seal that is not the newest is treated as damaged, never cut) and stops
    /// appending to it.
    fn close_current(&self, cur: &Current, events: Option<&tern_events::EventLog>) {
        if let Err(e) = self.write_seal(cur.id, &cur.file, cur.len)
            && let Some(events) = events
        {
            events.emit(
                &catalog::SPOOL_IO_ERROR,
                fields!("file" => self.dir.join(cur.id.to_string()).display(), "op" => "seal", "error" => e),
            );
        }
        self.seal(cur.id);
    }
}

fn commit_loop(
    segments: &Segments,
    shared: &Shared,
    counters: &SyncCounters,
    queued: &AtomicUsize,
    events: &tern_events::EventLog,
) {
    let mut current: Option<Current> = None;
    loop {
        let Some(batch) = shared.take(false) else {
            // A clean stop: seal the segment being appended to, so that the next start
            // knows it is complete.
            if let Some(c) = current.take() {
                segments.close_current(&c, Some(events));
            }
            return;
        };
        if current.as_ref().is_some_and(|c| c.len >= SEGMENT_MAX)
            && let Some(c) = current.take()
        {
            segments.close_current(&c, Some(events));
        }
        let cur = match current.take() {
            Some(c) => c,
            None => match create_segment(segments) {
                Ok(c) => c,
                Err(e) => {
                    for j in batch {
                        let _ = j.reply.send(Err(SpoolError::io(
                            "create segment",
                            &segments.dir,
                            io::Error::other(e.to_string()),
                        )));
                    }
                    continue;
                }
            },
        };
        let Some(key) = segments.key.get() else {
            for j in batch {
                let _ = j.reply.send(Err(SpoolError::ReadOnly));
            }
            current = Some(cur);
            continue;
        };
        // Frames first (small: each hashes its message file for the MAC, no copy), then
        // one gathering write of frames and message files, from where the sessions left
        // them.
        let mut placed = Vec::with_capacity(batch.len());
        let mut frames = Vec::with_capacity(batch.len());
        let mut end = cur.len;
        for j in batch {
            let Ok(len) = u32::try_from(j.blob.len()) else {
                let _ = j.reply.send(Err(SpoolError::WriterBroken));
                continue;
            };
            frames.push(frame::encode_record_with(
                cur.id, end, j.id, len, &j.digest, key,
            ));
            let blob_at = end + FRAME_LEN as u64;
            end = blob_at + u64::from(len);
            placed.push((j, blob_at));
        }
        let mut slices: Vec<io::IoSlice<'_>> = frames
            .iter()
            .zip(&placed)
            .flat_map(|(f, (j, _))| [io::IoSlice::new(f), io::IoSlice::new(&j.blob)])
            .collect();
        let path = || segments.dir.join(cur.id.to_string());
        let started = std::time::Instant::now();
        let written = sys::write_all_vectored_at(&cur.file, &mut slices, cur.len)
            .map_err(|e| SpoolError::io("write", path(), e))
            .and_then(|()| {
                cur.file
                    .sync_data()
                    .map_err(|e| SpoolError::io("fdatasync", path(), e))
            });
        tern_metrics::get()
            .fsync_latency
            .observe_duration(started.elapsed());
        if let Err(e) = written {
            // Not known to be durable, so not accepted: cut the segment back so the
            // records the clients are told 451 for never come back, seal it, and start a
            // new one.
            let cut = cur
                .file
                .set_len(cur.len)
                .and_then(|()| cur.file.sync_data());
            if cut.is_ok() {
                segments.close_current(&cur, None);
            } else {
                segments.seal(cur.id);
            }
            for (j, _) in placed {
                let _ = j.reply.send(Err(SpoolError::io(
                    "append",
                    path(),
                    io::Error::other(e.to_string()),
                )));
            }
            continue;
        }
        counters.file_syncs.fetch_add(1, Ordering::Relaxed);
        {
            let mut ix = segments.lock();
            for (j, blob_at) in &placed {
                let len = j.blob.len() as u64;
                ix.resident.insert(
                    j.id,
                    Loc {
                        seg: cur.id,
                        blob_at: *blob_at,
                        len,
                    },
                );
            }
            if let Some(s) = ix.segs.get_mut(&cur.id) {
                s.live += placed.len();
            }
        }
        queued.fetch_add(placed.len(), Ordering::AcqRel);
        for (j, _) in placed {
            tern_metrics::get().received.inc();
            let _ = j.reply.send(Ok(()));
        }
        current = Some(Current { len: end, ..cur });
    }
}

/// What recovery did with the segments.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SegmentReport {
    /// The ids written out to `incoming/` (the messages of damaged segments that are
    /// Tern's own).
    pub(crate) incoming_ids: Vec<QueueId>,
    /// Messages resident after the scan.
    pub(crate) resident: usize,
    /// Messages of damaged segments written out to `incoming/`.
    pub(crate) to_incoming: usize,
    /// Messages of damaged segments written out to `hold/`.
    pub(crate) to_hold: usize,
    /// Unfinished tails cut off.
    pub(crate) partials: usize,
    /// Entries quarantined (damaged segments, unexpected entries in `segments/`).
    pub(crate) quarantined: usize,
}

/// What a `.out` file says: the ids that left, and the seal's offset if it records one.
#[derive(Debug, Default)]
pub(crate) struct OutFile {
    pub(crate) gone: HashSet<QueueId>,
    pub(crate) sealed_at: Option<u64>,
    /// The `unfinished` mark of a start that left the recovery to the background.
    pub(crate) unfinished: bool,
}

/// The segment a name in `segments/` belongs to: `<segment id>` or `<segment id>.out`.
fn owner_of(name: &std::ffi::OsStr) -> Option<QueueId> {
    let text = name.to_str()?;
    QueueId::parse(text.strip_suffix(OUT_SUFFIX).unwrap_or(text)).ok()
}

impl Segments {
    /// A start that leaves the recovery of the segments to the background
    /// (`Spool::open_lazy`): reads only the names in `segments/` and returns the ids of the
    /// segments there (segment files and `.out` files alike), the set the later recovery
    /// works on. The commit thread appends only to segments it creates after this, never
    /// to one of these. The newest of them, when it is a regular file, gets the
    /// `unfinished` mark in its `.out` (appended and synced, the `.out` created if
    /// missing): at the next start it may still be the one a crash left unfinished even
    /// if newer segments exist by then, so its tail may still be cut (see `recover`).
    /// Cost: one directory read of `segments/` (two names per 64 MiB of resident mail),
    /// one `lstat`, one append and one `fdatasync`. Blocking.
    pub(crate) fn prepare_background(&self) -> Result<HashSet<QueueId>, SpoolError> {
        let names = super::read_names(&self.dir)?;
        let ids: HashSet<QueueId> = names.iter().filter_map(|n| owner_of(n)).collect();
        let newest = names.iter().filter_map(|n| super::name_to_id(n)).max();
        if let Some(seg) = newest {
            let path = self.dir.join(seg.to_string());
            if matches!(
                sys::entry_kind(&path).map_err(|e| SpoolError::io("stat", &path, e))?,
                (sys::EntryKind::File, _)
            ) {
                self.mark_unfinished(seg)?;
            }
        }
        Ok(ids)
    }

    /// Appends the `unfinished` mark to segment `seg`'s `.out` and syncs it. A `.out`
    /// that is not a regular file is left for the recovery to quarantine (the mark is
    /// then missing: a tail found later counts as damage, nothing is lost).
    fn mark_unfinished(&self, seg: QueueId) -> Result<(), SpoolError> {
        let out_path = self.dir.join(format!("{seg}{OUT_SUFFIX}"));
        let existed =
            match sys::entry_kind(&out_path).map_err(|e| SpoolError::io("stat", &out_path, e))? {
                (sys::EntryKind::Missing, _) => false,
                (sys::EntryKind::File, _) => true,
                _ => return Ok(()),
            };
        let out = match sys::open_append(&out_path) {
            Ok(f) => f,
            Err(e) if sys::is_not_regular(&e) => return Ok(()),
            Err(e) => return Err(SpoolError::io("open", &out_path, e)),
        };
        (&out)
            .write_all(format!("{UNFINISHED_LINE}\n").as_bytes())
            .and_then(|()| out.sync_data())
            .map_err(|e| SpoolError::io("append", &out_path, e))?;
        if !existed {
            sys::sync_subdir(&self.dir)
                .map_err(|e| SpoolError::io("fsync directory", &self.dir, e))?;
        }
        Ok(())
    }

    /// The ids of the messages resident in the segments `segs`.
    pub(crate) fn residents_in(&self, segs: &HashSet<QueueId>) -> Vec<QueueId> {
        let ix = self.lock();
        let mut v: Vec<QueueId> = ix
            .resident
            .iter()
            .filter(|(_, loc)| segs.contains(&loc.seg))
            .map(|(id, _)| *id)
            .collect();
        drop(ix);
        v.sort_unstable();
        v
    }
}

/// Reads a `.out` file (a torn or unknown line is ignored; a missing one is empty).
/// `Err(reason)` when the entry is not a regular file (the caller quarantines it).
fn read_out(path: &Path) -> Result<Result<OutFile, String>, SpoolError> {
    let mut text = Vec::new();
    match sys::entry_kind(path).map_err(|e| SpoolError::io("stat", path, e))? {
        (sys::EntryKind::Missing, _) => return Ok(Ok(OutFile::default())),
        (sys::EntryKind::File, _) => {}
        (other, _) => return Ok(Err(format!("{}, not a regular file", other.describe()))),
    }
    match sys::open_regular(path, false) {
        Ok(f) => {
            f.take(64 * 1024 * 1024)
                .read_to_end(&mut text)
                .map_err(|e| SpoolError::io("read", path, e))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) if sys::is_not_regular(&e) => return Ok(Err(e.to_string())),
        Err(e) => return Err(SpoolError::io("open", path, e)),
    }
    let mut out = OutFile::default();
    for line in text.split(|b| *b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        if let Some(at) = line.strip_prefix(SEALED_LINE) {
            out.sealed_at = at.parse().ok().or(out.sealed_at);
        } else if line == UNFINISHED_LINE {
            out.unfinished = true;
        } else if let Ok(id) = QueueId::parse(line) {
            out.gone.insert(id);
        }
    }
    Ok(Ok(out))
}

/// One segment's scan result, ready to be applied.
pub(crate) struct Scanned {
    pub(crate) seg: QueueId,
    pub(crate) file: File,
    pub(crate) len: u64,
    pub(crate) found: Vec<Found>,
    /// Ids in `.out` or with a valid file of their own: not resident.
    pub(crate) out: HashSet<QueueId>,
    /// Where `.out` says the segment was sealed.
    pub(crate) out_sealed_at: Option<u64>,
    /// Its `.out` carries the `unfinished` mark (see `UNFINISHED_LINE`).
    pub(crate) marked_unfinished: bool,
}

impl Scanned {
    /// Puts the segment's records that are still resident (not in `.out`) in the
    /// index, the first copy of an id winning; how many it put.
    fn index_into(&self, resident: &mut HashMap<QueueId, Loc>) -> usize {
        let mut live = 0;
        for f in &self.found {
            if let Found::Record {
                id, blob_at, len, ..
            } = f
                && !self.out.contains(id)
                && !resident.contains_key(id)
            {
                resident.insert(
                    *id,
                    Loc {
                        seg: self.seg,
                        blob_at: *blob_at,
                        len: *len,
                    },
                );
                live += 1;
            }
        }
        live
    }

    /// Whether a seal says the segment is complete (its seal frame, or its `.out`).
    fn sealed(&self) -> bool {
        self.out_sealed_at.is_some() || self.found.iter().any(|f| matches!(f, Found::Seal { .. }))
    }

    /// The damage found, as `(offset, description)` lines for the `.reason` file, with
    /// an unfinished tail counted as damage when `tail_is_damage`.
    fn damage(&self, tail_is_damage: bool) -> Vec<String> {
        let mut out = Vec::new();
        for f in &self.found {
            match f {
                Found::Damaged { at, len, what } => out.push(what.describe(*at, *len)),
                Found::Unfinished { at, .. } if tail_is_damage => out.push(format!(
                    "offset {at} ({} bytes, to the end): cut short (a record, a frame or \
                     zeros), which only a crash during a write to the newest unsealed \
                     segment can leave; this segment {}, so it is damage",
                    self.len.saturating_sub(*at),
                    if self.sealed() {
                        "was sealed"
                    } else {
                        "is not the newest"
                    }
                )),
                _ => {}
            }
        }
        if let Some(at) = self.out_sealed_at {
            let seal = self.found.iter().find_map(|f| match f {
                Found::Seal { at } => Some(*at),
                _ => None,
            });
            if seal != Some(at) {
                out.push(format!(
                    "its .out file says it was sealed at offset {at}, but {}",
                    match seal {
                        Some(s) => format!("its seal is at offset {s}"),
                        None => "no seal was found there".to_string(),
                    }
                ));
            }
        }
        out
    }
}

/// An entry of `segments/` that is not a segment or a `.out` file Tern can use, with why.
pub(crate) type Unexpected = (OsString, String);

impl Segments {
    /// Scans every segment (read-only: no change on disk). `has_file(id)` says whether
    /// message `id` has a valid file of its own in a state directory. Entries that are
    /// not regular segment files (or their `.out`), and names Tern does not make, are
    /// returned for the caller to quarantine, never opened.
    ///
    /// `only`: the segments to scan (the ids of the segment names and `.out` owners that
    /// were there at a background start, `prepare_background`); everything else in
    /// `segments/` (a segment created since, its `.out`) is left alone. `None`: all.
    pub(crate) fn scan_all(
        &self,
        has_file: &dyn Fn(QueueId) -> bool,
        writable: bool,
        only: Option<&HashSet<QueueId>>,
    ) -> Result<(Vec<Scanned>, Vec<Unexpected>), SpoolError> {
        let mut out = Vec::new();
        let mut unexpected = Vec::new();
        let mut names = super::read_names(&self.dir)?;
        if let Some(only) = only {
            names.retain(|n| match owner_of(n) {
                Some(id) => only.contains(&id),
                // Not a name Tern gives: never a segment created since the start.
                None => true,
            });
        }
        let segs: HashSet<QueueId> = names.iter().filter_map(|n| super::name_to_id(n)).collect();
        for name in &names {
            let path = self.dir.join(name);
            let Some(seg) = super::name_to_id(name) else {
                let text = name.to_string_lossy();
                let owner = text
                    .strip_suffix(OUT_SUFFIX)
                    .and_then(|s| QueueId::parse(s).ok());
                match owner {
                    // `.out` files are read with their segment.
                    Some(id) if segs.contains(&id) => {}
                    // The `.out` of a segment that was unlinked (its unlink and the
                    // `.out`'s were cut apart by a crash): Tern's own leftover.
                    Some(_) if writable => match sys::entry_kind(&path) {
                        Ok((sys::EntryKind::File, _)) => {
                            let _ = std::fs::remove_file(&path);
                        }
                        Ok((kind, _)) => unexpected.push((
                            name.clone(),
                            format!("{}, named like a segment's .out file", kind.describe()),
                        )),
                        Err(e) => return Err(SpoolError::io("stat", &path, e)),
                    },
                    Some(_) => {}
                    None => unexpected.push((
                        name.clone(),
                        "a name Tern does not make in segments/".to_string(),
                    )),
                }
                continue;
            };
            let kind = sys::entry_kind(&path).map_err(|e| SpoolError::io("stat", &path, e))?;
            match kind {
                (sys::EntryKind::Missing, _) => continue,
                (sys::EntryKind::File, _) => {}
                (other, _) => {
                    unexpected.push((
                        name.clone(),
                        format!("{}, named like a segment", other.describe()),
                    ));
                    continue;
                }
            }
            let file = match sys::open_regular(&path, writable) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) if sys::is_not_regular(&e) => {
                    unexpected.push((name.clone(), format!("{e}, named like a segment")));
                    continue;
                }
                Err(e) => return Err(SpoolError::io("open", &path, e)),
            };
            let len = file
                .metadata()
                .map_err(|e| SpoolError::io("stat", &path, e))?
                .len();
            let found = scan::scan(
                &mut |at, buf| file.read_exact_at(buf, at),
                len,
                seg,
                self.key.get(),
            )
            .map_err(|e| SpoolError::io("read", &path, e))?;
            let out_name = format!("{seg}{OUT_SUFFIX}");
            let of = match read_out(&self.dir.join(&out_name))? {
                Ok(of) => of,
                Err(why) => {
                    // Messages that left may come back (delivered again): never lost.
                    unexpected.push((out_name.into(), why));
                    OutFile::default()
                }
            };
            let mut taken = of.gone;
            for f in &found {
                // Ids in `.out` are taken already: `has_file` may cost a file read.
                if let Found::Record { id, .. } = f
                    && !taken.contains(id)
                    && has_file(*id)
                {
                    taken.insert(*id);
                }
            }
            out.push(Scanned {
                seg,
                file,
                len,
                found,
                out: taken,
                out_sealed_at: of.sealed_at,
                marked_unfinished: of.unfinished,
            });
        }
        Ok((out, unexpected))
    }

    /// Fills the index from a scan without changing anything (read-only spools).
    pub(crate) fn load_read_only(&self, scanned: Vec<Scanned>) {
        let mut ix = self.lock();
        for s in scanned {
            let live = s.index_into(&mut ix.resident);
            ix.segs.insert(
                s.seg,
                Seg {
                    file: Arc::new(s.file),
                    out: None,
                    live,
                    sealed: true,
                    retiring: false,
                },
            );
        }
    }

    /// Recovery at open (module header). `write_out(id, bytes, state)` writes a message
    /// out as a durable file in `incoming/` or `hold/` (a damaged segment's readable
    /// records); `quarantine(name, reason, details)` moves `segments/<name>` to
    /// `corrupt/`.
    pub(crate) fn recover(
        &self,
        scanned: Vec<Scanned>,
        events: &tern_events::EventLog,
        write_out: &WriteOut<'_>,
        quarantine: &QuarantineSegment<'_>,
    ) -> Result<SegmentReport, SpoolError> {
        let mut report = SegmentReport::default();
        let mut empty = Vec::new();
        // Only the segment being appended to when the process died can have an
        // unfinished tail: the newest one, and only if it has no seal.
        let newest = scanned.iter().map(|s| s.seg).max();
        for s in scanned {
            let name = s.seg.to_string();
            let path = self.dir.join(&name);
            let unfinished = s.found.iter().find_map(|f| match f {
                Found::Unfinished { at, .. } => Some(*at),
                _ => None,
            });
            let may_cut = !s.sealed() && (Some(s.seg) == newest || s.marked_unfinished);
            let damage = s.damage(unfinished.is_some() && !may_cut);
            if !damage.is_empty() {
                let tail_is_damage = !may_cut;
                self.quarantine_damaged(
                    &s,
                    &damage,
                    tail_is_damage,
                    events,
                    write_out,
                    quarantine,
                    &mut report,
                )?;
                continue;
            }
            if let Some(at) = unfinished {
                s.file
                    .set_len(at)
                    .and_then(|()| s.file.sync_all())
                    .map_err(|e| SpoolError::io("truncate", &path, e))?;
                report.partials += 1;
                events.emit(
                    &catalog::SPOOL_PARTIAL_REMOVED,
                    fields!("file" => format!("{SEGMENTS_DIR}/{name} from offset {at}")),
                );
            }
            let out_path = self.dir.join(format!("{name}{OUT_SUFFIX}"));
            let out =
                sys::open_append(&out_path).map_err(|e| SpoolError::io("open", &out_path, e))?;
            let live = s.index_into(&mut self.lock().resident);
            let seal_frame = s.found.iter().find_map(|f| match f {
                Found::Seal { at } => Some(*at),
                _ => None,
            });
            let file = Arc::new(s.file);
            self.lock().segs.insert(
                s.seg,
                Seg {
                    file: Arc::clone(&file),
                    out: Some(Arc::new(out)),
                    live,
                    sealed: true,
                    retiring: live == 0,
                },
            );
            report.resident += live;
            if live == 0 {
                empty.push(s.seg);
                continue;
            }
            // Every segment kept is sealed before any new one is created.
            match (seal_frame, s.out_sealed_at) {
                (Some(_), Some(_)) => {}
                // The `.out` lost its line (or never got it): the frame is the witness.
                (Some(at), None) => self.note_sealed(s.seg, at)?,
                _ => self.write_seal(s.seg, &file, unfinished.unwrap_or(s.len))?,
            }
        }
        sys::sync_subdir(&self.dir).map_err(|e| SpoolError::io("fsync directory", &self.dir, e))?;
        for seg in empty {
            self.retire(seg);
        }
        Ok(report)
    }

    /// A damaged segment: writes out every record still resident (to `incoming/`, or to
    /// `hold/` when found only by searching), quarantines the segment with a reason that
    /// lists every damage and every message, and emits one tracked event per message
    /// concerned (see the module header).
    #[allow(clippy::too_many_arguments)]
    fn quarantine_damaged(
        &self,
        s: &Scanned,
        damage: &[String],
        tail_is_damage: bool,
        events: &tern_events::EventLog,
        write_out: &WriteOut<'_>,
        quarantine: &QuarantineSegment<'_>,
        report: &mut SegmentReport,
    ) -> Result<(), SpoolError> {
        let name = s.seg.to_string();
        let path = self.dir.join(&name);
        let mut messages = Vec::new();
        let mut damaged: Vec<(QueueId, u64, String)> = Vec::new();
        let mut written: Vec<(QueueId, u64, QueueState, Via)> = Vec::new();
        for f in &s.found {
            match f {
                Found::Record { id, at, .. } if s.out.contains(id) => messages.push(format!(
                    "message {id} at offset {at}: had already left the segment (a file of \
                     its own, or removed); not written out"
                )),
                Found::Record {
                    id,
                    at,
                    blob_at,
                    len,
                    via,
                } => {
                    let mut buf = vec![0u8; usize::try_from(*len).unwrap_or(0)];
                    s.file
                        .read_exact_at(&mut buf, *blob_at)
                        .map_err(|e| SpoolError::io("read", &path, e))?;
                    let to = match via {
                        Via::Search => QueueState::Hold,
                        Via::Chain | Via::Authenticated => QueueState::Incoming,
                    };
                    let new = write_out(*id, &buf, to)?;
                    let how = match via {
                        Via::Chain => "reached through the chain of record lengths",
                        Via::Authenticated => "found past the damage; its frame's MAC verifies",
                        Via::Search => {
                            "found only by searching past the damage, not authenticated \
                             (it could be bytes inside another message's body): held for \
                             an operator"
                        }
                    };
                    messages.push(format!(
                        "message {id} at offset {at}: {} {to}/{id} ({how})",
                        if new {
                            "written out to"
                        } else {
                            "already had a file at"
                        }
                    ));
                    written.push((*id, *at, to, *via));
                }
                // The newest unsealed segment's tail: a write that was never
                // acknowledged, kept with the segment (it is quarantined for other damage).
                Found::Unfinished { at, .. } if !tail_is_damage => messages.push(format!(
                    "offset {at} to the end: an unfinished write, never acknowledged (the \
                     process died during it); kept with the segment"
                )),
                Found::Unfinished { at, id: Some(id) } if !s.out.contains(id) => {
                    messages.push(format!(
                        "message {id} at offset {at}: cut short; kept only in this \
                         quarantined segment"
                    ));
                    damaged.push((*id, *at, "its record is cut short".to_string()));
                }
                Found::Damaged {
                    at,
                    what: Damage::BadRecord { id, reason },
                    ..
                } => {
                    if s.out.contains(id) {
                        messages.push(format!(
                            "message {id} at offset {at}: damaged ({reason}), but it had \
                             already left the segment (a file of its own, or removed)"
                        ));
                    } else {
                        messages.push(format!(
                            "message {id} at offset {at}: damaged ({reason}); kept only in \
                             this quarantined segment"
                        ));
                        damaged.push((*id, *at, reason.to_string()));
                    }
                }
                _ => {}
            }
        }
        let to_hold = written
            .iter()
            .filter(|(_, _, to, _)| *to == QueueState::Hold)
            .count();
        let to_incoming = written.len() - to_hold;
        report.incoming_ids.extend(
            written
                .iter()
                .filter(|(_, _, to, _)| *to == QueueState::Incoming)
                .map(|(id, _, _, _)| *id),
        );
        report.to_hold += to_hold;
        report.to_incoming += to_incoming;
        let summary = format!(
            "{} problem(s), the first at {}; {} message(s) written out ({to_incoming} to \
             incoming/, {to_hold} to hold/), {} damaged",
            damage.len(),
            damage
                .first()
                .map_or("?", |d| d.split(':').next().unwrap_or("?")),
            written.len(),
            damaged.len()
        );
        let mut details = String::new();
        for d in damage {
            details.push_str(&format!("damage: {d}\n"));
        }
        for m in &messages {
            details.push_str(&format!("{m}\n"));
        }
        details.push_str(
            "find a message: `tern track <queue id>`; release a held one with \
             `tern queue release <queue id>` once its content is checked\n",
        );
        let ids = |v: Vec<String>| bounded_list(&v);
        let quarantined = quarantine(
            name.as_ref(),
            &CorruptReason::DamagedSegment(summary),
            &details,
            &ids(damaged.iter().map(|(id, _, _)| id.to_string()).collect()),
            &ids(written.iter().map(|(id, _, _, _)| id.to_string()).collect()),
        )?;
        let moved_to = match &quarantined {
            Some(n) => format!("corrupt/{n}"),
            None => format!("{SEGMENTS_DIR}/{name}"),
        };
        report.quarantined += usize::from(quarantined.is_some());
        for (id, at, reason) in damaged {
            events.emit(
                &catalog::SPOOL_SEGMENT_MESSAGE_DAMAGED,
                fields!(
                    "queue_id" => id,
                    "segment" => &name,
                    "offset" => at,
                    "reason" => reason,
                    "moved_to" => &moved_to,
                ),
            );
        }
        for (id, at, to, via) in written {
            let def = if to == QueueState::Hold {
                &catalog::SPOOL_SEGMENT_MESSAGE_HELD
            } else {
                &catalog::SPOOL_SEGMENT_MESSAGE_RECOVERED
            };
            let via = match via {
                Via::Chain => "chain",
                Via::Authenticated => "authenticated",
                Via::Search => "search",
            };
            events.emit(
                def,
                fields!(
                    "queue_id" => id,
                    "segment" => &name,
                    "offset" => at,
                    "to" => format!("{to}/{id}"),
                    "found" => via,
                    "segment_moved_to" => &moved_to,
                ),
            );
        }
        if quarantined.is_some() {
            let _ = std::fs::remove_file(self.dir.join(format!("{name}{OUT_SUFFIX}")));
        }
        Ok(())
    }
}

/// Up to `MAX_IDS_IN_EVENT` items, comma-separated, with the number left out.
fn bounded_list(items: &[String]) -> String {
    let mut s = items
        .iter()
        .take(MAX_IDS_IN_EVENT)
        .cloned()
        .collect::<Vec<_>>()
        .join(",");
    if items.len() > MAX_IDS_IN_EVENT {
        s.push_str(&format!(
            " (+{} more, see the reason file)",
            items.len() - MAX_IDS_IN_EVENT
        ));
    }
    s
}

#[cfg(test)]
mod tests;
