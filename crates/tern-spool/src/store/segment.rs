//! Segment commit (`[spool] commit = "segment"`): new messages appended to shared
//! segment files instead of a file each.
//!
//! A segment `segments/<segment id>` is a sequence of records, each a 32-byte frame
//! followed by a complete message file of format version 1 (header, content, envelope,
//! trailer: self-checking on its own, see `format`):
//!
//! ```text
//! frame: "TERNSEG1" | queue id (15 ASCII) | 0 | blob length u32 LE | CRC-32C of the 28 bytes before, u32 LE
//! ```
//!
//! Beside it, `segments/<segment id>.out` lists (one `<queue id>\n` per line) the
//! messages that left the segment for good while it still existed (removed, deleted,
//! quarantined).
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
//! Recovery (`Segments::recover`): for every segment, each record is checked (frame CRC,
//! then the whole message file as `format::decode` checks it, id equal to the frame's);
//! a record whose id is in `.out` or has a file in any state directory or `corrupt/` was
//! taken and is skipped; the rest are resident in `incoming`. A record cut short at the
//! end of the segment (a write that a crash interrupted, never acknowledged) or a zeroed
//! tail is cut off (event 3002). Any other damage quarantines the segment: its readable
//! records are first written out as files, then the segment file moves to
//! `corrupt/<segment id>` with a reason (event 3003). Nothing a segment holds is deleted.
//! Records reached through the length chain from offset 0 go to `incoming/`; records
//! found only by searching past bytes that are not a frame go to `hold/`: they could be
//! bytes a peer put inside a message body, so an operator releases them, not the queue.
//!
//! Invariants:
//! - The state mutex guards only the in-memory index; it is never held across I/O.
//! - The index holds a message only after the sync of its record returned.
//! - A segment is unlinked only when no message is resident in it and it is sealed; a
//!   removal that races with the unlink still logs to `.out` (the segment's entry stays
//!   until the unlink is durable).
//! - Records are bounded: at most `MAX_BLOB` bytes (messages that spill past
//!   `MessageWriter::BUFFER_LIMIT` are committed as files of their own in every mode).

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use tern_events::{catalog, fields};

use crate::error::{CorruptReason, SpoolError};
use crate::format;
use crate::id::QueueId;
use crate::state::QueueState;

use super::handoff::Handoff;
use super::{SyncCounters, sys};

/// Recovery's way to write a message out as a durable file in `incoming/` or `hold/`.
pub(crate) type WriteOut<'a> = dyn Fn(QueueId, &[u8], QueueState) -> Result<(), SpoolError> + 'a;
/// Recovery's way to move `segments/<name>` to `corrupt/` with a reason; whether it moved.
pub(crate) type QuarantineSegment<'a> =
    dyn Fn(&std::ffi::OsStr, &CorruptReason) -> Result<bool, SpoolError> + 'a;

/// Directory under the spool that holds the segments.
pub(crate) const SEGMENTS_DIR: &str = "segments";
/// Suffix of a segment's list of messages that left it.
const OUT_SUFFIX: &str = ".out";
/// Magic at the start of every record frame.
const FRAME_MAGIC: [u8; 8] = *b"TERNSEG1";
/// Bytes in a record frame.
pub(crate) const FRAME_LEN: usize = 32;
/// A segment takes no more appends once it is this long.
const SEGMENT_MAX: u64 = 64 * 1024 * 1024;
/// Largest blob a record may hold: a message that stayed in memory
/// (`MessageWriter::BUFFER_LIMIT`) and the largest envelope, with header and trailer.
pub(crate) const MAX_BLOB: u64 = 256 * 1024 + format::MAX_ENVELOPE_LEN + format::MIN_FILE_LEN;
/// Bytes read at a time when searching past damage for the next frame.
const SEARCH_CHUNK: usize = 1024 * 1024;

/// The frame that precedes a record of `blob_len` bytes for message `id`.
pub(crate) fn encode_frame(id: QueueId, blob_len: u32) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[..8].copy_from_slice(&FRAME_MAGIC);
    f[8..23].copy_from_slice(id.to_string().as_bytes());
    f[24..28].copy_from_slice(&blob_len.to_le_bytes());
    let crc = crc32c::crc32c(&f[..28]);
    f[28..].copy_from_slice(&crc.to_le_bytes());
    f
}

/// The id and blob length of a frame, or `None` when these bytes are not a frame.
pub(crate) fn decode_frame(f: &[u8]) -> Option<(QueueId, u32)> {
    let f: &[u8; FRAME_LEN] = f.get(..FRAME_LEN)?.try_into().ok()?;
    if f[..8] != FRAME_MAGIC || f[23] != 0 {
        return None;
    }
    let crc = u32::from_le_bytes(f[28..].try_into().ok()?);
    if crc32c::crc32c(&f[..28]) != crc {
        return None;
    }
    let id = QueueId::parse(std::str::from_utf8(&f[8..23]).ok()?).ok()?;
    let len = u32::from_le_bytes(f[24..28].try_into().ok()?);
    (u64::from(len) <= MAX_BLOB && u64::from(len) >= format::MIN_FILE_LEN).then_some((id, len))
}

/// What a scan of one segment found, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    /// A complete, valid record: message `id`, whose file is `len` bytes at `blob_at`.
    Record { id: QueueId, blob_at: u64, len: u64 },
    /// Bytes `at..at+len` are not records (bad frame or a record that fails validation).
    /// `resync`: they were not a frame, and the next record was found by searching for
    /// a frame, not through the length chain from the start of the segment.
    Damaged {
        at: u64,
        len: u64,
        reason: CorruptReason,
        resync: bool,
    },
    /// From `at` to the end: a record cut short or zeros: a write that never finished.
    Unfinished { at: u64 },
}

/// Reads a segment of `file_len` bytes through `read_at` and classifies its bytes.
/// Memory: one record (at most `MAX_BLOB`) and one search chunk.
pub(crate) fn scan(
    read_at: &mut dyn FnMut(u64, &mut [u8]) -> io::Result<()>,
    file_len: u64,
) -> io::Result<Vec<Found>> {
    let mut out = Vec::new();
    let mut at = 0u64;
    let mut blob = Vec::new();
    while at < file_len {
        let left = file_len - at;
        let mut frame = [0u8; FRAME_LEN];
        let have = usize::try_from(left.min(FRAME_LEN as u64)).unwrap_or(FRAME_LEN);
        read_at(at, &mut frame[..have])?;
        let decoded = (have == FRAME_LEN).then(|| decode_frame(&frame)).flatten();
        let Some((id, len)) = decoded else {
            // Not a frame. A tail of zeros, or the start of a frame that never finished,
            // is an unfinished write; anything else is damage, up to the next frame.
            match next_frame(read_at, at.saturating_add(1), file_len)? {
                None if tail_is_unfinished(read_at, at, file_len, &frame[..have])? => {
                    out.push(Found::Unfinished { at });
                    return Ok(out);
                }
                None => {
                    out.push(Found::Damaged {
                        at,
                        len: left,
                        reason: CorruptReason::BadMagic,
                        resync: false,
                    });
                    return Ok(out);
                }
                Some(next) => {
                    out.push(Found::Damaged {
                        at,
                        len: next - at,
                        reason: CorruptReason::BadMagic,
                        resync: true,
                    });
                    at = next;
                    continue;
                }
            }
        };
        let blob_at = at + FRAME_LEN as u64;
        let len = u64::from(len);
        if blob_at.saturating_add(len) > file_len {
            // The frame is whole but its record runs past the end: a cut write.
            out.push(Found::Unfinished { at });
            return Ok(out);
        }
        blob.resize(usize::try_from(len).unwrap_or(0), 0);
        read_at(blob_at, &mut blob)?;
        match format::decode(&blob, Some(id)) {
            Ok(_) => out.push(Found::Record { id, blob_at, len }),
            Err(reason) => out.push(Found::Damaged {
                at,
                len: FRAME_LEN as u64 + len,
                reason,
                resync: false,
            }),
        }
        at = blob_at + len;
    }
    Ok(out)
}

/// Whether the bytes from `at` to the end are an unfinished write: all zeros, or a
/// frame's first bytes that were cut (fewer than a frame, matching its magic).
fn tail_is_unfinished(
    read_at: &mut dyn FnMut(u64, &mut [u8]) -> io::Result<()>,
    at: u64,
    file_len: u64,
    first: &[u8],
) -> io::Result<bool> {
    let left = file_len - at;
    if left < FRAME_LEN as u64 {
        let n = first.len().min(FRAME_MAGIC.len());
        if first[..n] == FRAME_MAGIC[..n] {
            return Ok(true);
        }
    }
    let mut buf = vec![0u8; SEARCH_CHUNK];
    let mut pos = at;
    while pos < file_len {
        let n = usize::try_from((file_len - pos).min(SEARCH_CHUNK as u64)).unwrap_or(0);
        read_at(pos, &mut buf[..n])?;
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}

/// The offset of the next valid frame at or after `from`, if any.
fn next_frame(
    read_at: &mut dyn FnMut(u64, &mut [u8]) -> io::Result<()>,
    from: u64,
    file_len: u64,
) -> io::Result<Option<u64>> {
    let mut buf = vec![0u8; SEARCH_CHUNK + FRAME_LEN];
    let mut pos = from;
    while pos.saturating_add(FRAME_LEN as u64) <= file_len {
        let n = usize::try_from((file_len - pos).min(buf.len() as u64)).unwrap_or(0);
        read_at(pos, &mut buf[..n])?;
        let mut i = 0;
        while i + FRAME_LEN <= n {
            if buf[i] == FRAME_MAGIC[0] && decode_frame(&buf[i..i + FRAME_LEN]).is_some() {
                return Ok(Some(pos + i as u64));
            }
            i += 1;
        }
        // The last FRAME_LEN - 1 bytes may start a frame that the next read completes.
        pos += (n.saturating_sub(FRAME_LEN - 1)).max(1) as u64;
    }
    Ok(None)
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
        }
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
            .and_then(|()| sys::sync_dir(&self.dir));
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
    ) -> io::Result<()> {
        let shared = Arc::new(Shared::new());
        let thread_shared = Arc::clone(&shared);
        let segments = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name("tern-spool-segment".into())
            .spawn(move || commit_loop(&segments, &thread_shared, &counters, &queued))?;
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
        let (reply, rx) = oneshot::channel();
        if shared.push(Job { id, blob, reply }).is_err() {
            return Err(SpoolError::BlockingTask("segment thread stopped".into()));
        }
        rx.await
            .unwrap_or_else(|_| Err(SpoolError::BlockingTask("segment thread ended".into())))
    }
}

struct Job {
    id: QueueId,
    blob: Vec<u8>,
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
        .open(&path)
        .map_err(|e| SpoolError::io("create", &path, e))?;
    let out = OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(&out_path)
        .map_err(|e| SpoolError::io("create", &out_path, e))?;
    sys::sync_dir(&segments.dir)
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

fn commit_loop(
    segments: &Segments,
    shared: &Shared,
    counters: &SyncCounters,
    queued: &AtomicUsize,
) {
    let mut current: Option<Current> = None;
    loop {
        let Some(batch) = shared.take(false) else {
            // The current segment is left as it is: the next open seals it (and
            // unlinks it if nothing is resident in it).
            return;
        };
        if current.as_ref().is_some_and(|c| c.len >= SEGMENT_MAX)
            && let Some(c) = current.take()
        {
            segments.seal(c.id);
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
        // Frames first (small), then one gathering write of frames and blobs: the
        // message files are written from where the sessions left them, not copied.
        let mut placed = Vec::with_capacity(batch.len());
        let mut frames = Vec::with_capacity(batch.len());
        let mut end = cur.len;
        for j in batch {
            let Ok(len) = u32::try_from(j.blob.len()) else {
                let _ = j.reply.send(Err(SpoolError::WriterBroken));
                continue;
            };
            frames.push(encode_frame(j.id, len));
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
            // records the clients are told 451 for never come back, and start a new one.
            let _ = cur
                .file
                .set_len(cur.len)
                .and_then(|()| cur.file.sync_data());
            segments.seal(cur.id);
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
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentReport {
    /// Messages resident after the scan (a damaged segment's readable records are
    /// written out to `incoming/` and counted there instead).
    pub(crate) resident: usize,
    /// Unfinished tails cut off.
    pub(crate) partials: usize,
    /// Segments quarantined.
    pub(crate) quarantined: usize,
}

/// The ids in a `.out` file (a torn last line is ignored).
fn read_out(path: &Path) -> Result<HashSet<QueueId>, SpoolError> {
    let mut text = Vec::new();
    match File::open(path) {
        Ok(f) => {
            f.take(64 * 1024 * 1024)
                .read_to_end(&mut text)
                .map_err(|e| SpoolError::io("read", path, e))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(SpoolError::io("open", path, e)),
    }
    Ok(text
        .split(|b| *b == b'\n')
        .filter_map(|l| std::str::from_utf8(l).ok())
        .filter_map(|l| QueueId::parse(l).ok())
        .collect())
}

/// One segment's scan result, ready to be applied.
pub(crate) struct Scanned {
    pub(crate) seg: QueueId,
    pub(crate) file: File,
    pub(crate) found: Vec<Found>,
    pub(crate) out: HashSet<QueueId>,
}

impl Scanned {
    /// Puts the segment's records that are still resident (not in `.out`) in the
    /// index, the first copy of an id winning; how many it put.
    fn index_into(&self, resident: &mut HashMap<QueueId, Loc>) -> usize {
        let mut live = 0;
        for f in &self.found {
            if let Found::Record { id, blob_at, len } = f
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
}

impl Segments {
    /// Scans every segment (read-only: no change on disk). `has_file(id)` says whether
    /// message `id` has a file of its own in a state directory or in `corrupt/`.
    pub(crate) fn scan_all(
        &self,
        has_file: &dyn Fn(QueueId) -> bool,
    ) -> Result<Vec<Scanned>, SpoolError> {
        let mut out = Vec::new();
        for name in super::read_names(&self.dir)? {
            let Some(seg) = super::name_to_id(&name) else {
                continue; // `.out` files are read with their segment
            };
            let path = self.dir.join(&name);
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(SpoolError::io("open", &path, e)),
            };
            let len = file
                .metadata()
                .map_err(|e| SpoolError::io("stat", &path, e))?
                .len();
            let found = scan(&mut |at, buf| file.read_exact_at(buf, at), len)
                .map_err(|e| SpoolError::io("read", &path, e))?;
            let mut taken = read_out(&self.dir.join(format!("{seg}{OUT_SUFFIX}")))?;
            for f in &found {
                if let Found::Record { id, .. } = f
                    && has_file(*id)
                {
                    taken.insert(*id);
                }
            }
            out.push(Scanned {
                seg,
                file,
                found,
                out: taken,
            });
        }
        Ok(out)
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
    /// out as a durable file in `incoming/` or `hold/` (a damaged segment's readable records);
    /// `quarantine(name, reason)` moves `segments/<name>` to `corrupt/`.
    pub(crate) fn recover(
        &self,
        scanned: Vec<Scanned>,
        events: &tern_events::EventLog,
        write_out: &WriteOut<'_>,
        quarantine: &QuarantineSegment<'_>,
    ) -> Result<SegmentReport, SpoolError> {
        let mut report = SegmentReport::default();
        let mut empty = Vec::new();
        for s in scanned {
            let name = s.seg.to_string();
            let path = self.dir.join(&name);
            let damage = s.found.iter().find_map(|f| match f {
                Found::Damaged {
                    at, len, reason, ..
                } => Some((*at, *len, reason.clone())),
                _ => None,
            });
            if let Some((at, len, reason)) = damage {
                // Records reached through the length chain go back to `incoming/`.
                // Past a resync they could be bytes inside another message's body (a
                // peer can send any bytes with BDAT), so they wait in `hold/` for an
                // operator instead of being delivered.
                let mut to = QueueState::Incoming;
                let mut held = 0usize;
                for f in &s.found {
                    match f {
                        Found::Damaged { resync: true, .. } => to = QueueState::Hold,
                        Found::Record { id, blob_at, len } if !s.out.contains(id) => {
                            let mut buf = vec![0u8; usize::try_from(*len).unwrap_or(0)];
                            s.file
                                .read_exact_at(&mut buf, *blob_at)
                                .map_err(|e| SpoolError::io("read", &path, e))?;
                            write_out(*id, &buf, to)?;
                            held += usize::from(to == QueueState::Hold);
                        }
                        _ => {}
                    }
                }
                let why = CorruptReason::Unreadable(format!(
                    "segment damaged at offset {at} ({len} bytes: {reason}); its readable \
                     records were written out to incoming/ ({held} found past the damage \
                     by searching for the next frame went to hold/ instead)"
                ));
                report.quarantined += usize::from(quarantine(name.as_ref(), &why)?);
                let _ = std::fs::remove_file(self.dir.join(format!("{name}{OUT_SUFFIX}")));
                continue;
            }
            if let Some(Found::Unfinished { at }) = s.found.last() {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| SpoolError::io("open", &path, e))?;
                file.set_len(*at)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| SpoolError::io("truncate", &path, e))?;
                report.partials += 1;
                events.emit(
                    &catalog::SPOOL_PARTIAL_REMOVED,
                    fields!("file" => format!("{SEGMENTS_DIR}/{name} from offset {at}")),
                );
            }
            let out_path = self.dir.join(format!("{name}{OUT_SUFFIX}"));
            let out = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&out_path)
                .map_err(|e| SpoolError::io("open", &out_path, e))?;
            let mut ix = self.lock();
            let live = s.index_into(&mut ix.resident);
            report.resident += live;
            ix.segs.insert(
                s.seg,
                Seg {
                    file: Arc::new(s.file),
                    out: Some(Arc::new(out)),
                    live,
                    sealed: true,
                    retiring: live == 0,
                },
            );
            if live == 0 {
                empty.push(s.seg);
            }
        }
        sys::sync_dir(&self.dir).map_err(|e| SpoolError::io("fsync directory", &self.dir, e))?;
        for seg in empty {
            self.retire(seg);
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests;
