//! Writing one message: buffer, spill to `tmp/`, commit into `incoming/`.
//!
//! Write path of a message of C content bytes:
//! 1. [`MessageWriter::write`] appends to a memory buffer that starts with the format
//!    header. Once the buffer reaches [`MessageWriter::BUFFER_LIMIT`] it is written to
//!    `tmp/<id>` (created with O_EXCL on the first spill) on tokio's blocking pool, so a
//!    huge message never holds more than that limit in memory. The content CRC is computed
//!    as bytes arrive.
//! 2. [`MessageWriter::commit`] appends the envelope and trailer and, in ONE blocking task:
//!    writes what is left (for a small message: create + one write), `fdatasync`s, gives
//!    the file its name `incoming/<id>` (linkat of the O_TMPFILE inode, then an fsync of
//!    the file so its new link count is durable too; or rename of `tmp/<id>`). Concurrent commits' fdatasyncs run on
//!    separate threads, where the filesystem journal merges them.
//! 3. It then waits for the group-committed fsync of `incoming/` (see `dirsync`).
//!
//! The file itself is, in order of preference: a delivered message's file from the
//! `free/` pool (overwritten, cut to length, linked into `incoming/`, its `free/` name
//! removed only after step 3; see `recycle`), an O_TMPFILE inode, or `tmp/<id>`.
//!
//! Invariants:
//! - `tmp/<id>` is owned by a [`TmpFile`] guard that unlinks it when dropped unless it
//!   was renamed (a recycled file is given back to the pool instead). The guard lives in the writer or, while I/O runs, in the blocking task;
//!   so a dropped writer, a failed write or commit, and a cancelled future all end with
//!   no file in `tmp/` (once the blocking task, which cannot be cancelled, finishes).
//! - A commit future dropped after its blocking task started leaves the message either
//!   fully in `incoming/` (data synced, directory synced by the next group fsync) or gone.
//! - A failed or cancelled `write` marks the writer broken: its content would have a hole,
//!   so every later call fails with [`SpoolError::WriterBroken`].
//! - The queued count is incremented by the task that renamed, right after the rename.
//!
//! Trust: content is opaque bytes; the envelope is checked by `format::encode_tail`
//! (valid, `size` equal to the content written) so that nothing is committed that
//! recovery would quarantine.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tern_events::{catalog, fields};

use crate::envelope::Envelope;
use crate::error::SpoolError;
use crate::format;
use crate::id::QueueId;
use crate::state::QueueState;

use super::{Area, Inner, sys};

/// The file of a message being written, before it has its name in `incoming/`.
///
/// Normally an unnamed O_TMPFILE inode, created in a placement directory (see
/// `Inner::placement_dir`) and linked into `incoming/`: nothing is visible until
/// [`TmpFile::publish`] links it, a crash frees it, and no directory lock is held while its
/// inode is allocated. On filesystems without O_TMPFILE it is `tmp/<id>`, unlinked on drop
/// unless renamed away (recovery removes any left by a crash).
pub(super) struct TmpFile {
    file: File,
    /// `Some(tmp/<id>)` for a named file; `None` for an O_TMPFILE inode; `Some(free/<n>)`
    /// for a recycled file.
    path: Option<PathBuf>,
    armed: bool,
    /// Set for a file taken from the free pool (see `recycle`): it is overwritten from
    /// offset 0, cut to `written` before the sync, published by a link (its `free/` name
    /// is removed only after the directory sync), and returned to the pool if dropped.
    recycled: Option<Arc<Inner>>,
    /// Bytes written so far.
    written: u64,
}

impl TmpFile {
    pub(super) fn create(
        inner: &Arc<Inner>,
        placement: Option<&Path>,
        tmp_path: PathBuf,
    ) -> Result<TmpFile, SpoolError> {
        // A delivered message's file first: no inode to allocate, none to free later.
        while let Some(path) = inner.take_free() {
            // Never through a link, never blocking, a regular file only (the pool was
            // checked at start; this is one `fstat` more than a plain open).
            match sys::open_regular(&path, true) {
                Ok(file) => {
                    return Ok(TmpFile {
                        file,
                        path: Some(path),
                        armed: true,
                        recycled: Some(Arc::clone(inner)),
                        written: 0,
                    });
                }
                // Gone or unusable: forget it and try the next one.
                Err(_) => continue,
            }
        }
        let placement = match placement {
            Some(p) => p,
            None => return Self::create_named(tmp_path),
        };
        match sys::create_tmpfile(placement) {
            Ok(Some(file)) => {
                return Ok(TmpFile {
                    file,
                    path: None,
                    armed: true,
                    recycled: None,
                    written: 0,
                });
            }
            Ok(None) => {}
            Err(e) => return Err(SpoolError::io("create", placement, e)),
        }
        Self::create_named(tmp_path)
    }

    pub(super) fn create_named(tmp_path: PathBuf) -> Result<TmpFile, SpoolError> {
        match sys::create_new(&tmp_path) {
            Ok(file) => Ok(TmpFile {
                file,
                path: Some(tmp_path),
                armed: true,
                recycled: None,
                written: 0,
            }),
            Err(e) => Err(SpoolError::io("create", tmp_path, e)),
        }
    }

    fn describe(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new("(unnamed)"))
    }

    pub(super) fn write_all(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        self.file
            .write_all(bytes)
            .map_err(|e| SpoolError::io("write", self.describe(), e))?;
        self.written = self.written.saturating_add(bytes.len() as u64);
        Ok(())
    }

    /// A recycled file still holds its old content past what was written: cut it.
    fn cut(&mut self) -> Result<(), SpoolError> {
        if self.recycled.is_some() {
            self.file
                .set_len(self.written)
                .map_err(|e| SpoolError::io("truncate", self.describe(), e))?;
        }
        Ok(())
    }

    /// Makes the written file durable under the name `to` (never replacing anything):
    /// cut, `fdatasync`, publish, and an `fsync` when publishing linked it (see
    /// `commit`); on a failed `fsync` the name is taken back.
    pub(super) fn finish(&mut self, to: &Path) -> Result<(), SpoolError> {
        self.cut()?;
        self.file
            .sync_data()
            .map_err(|e| SpoolError::io("fdatasync", self.describe(), e))?;
        self.publish(to)?;
        if self.linked()
            && let Err(e) = self.file.sync_all()
        {
            let _ = std::fs::remove_file(to);
            return Err(SpoolError::io("fsync", to, e));
        }
        Ok(())
    }

    /// Whether the inode's link count changed at publish and needs an fsync to be durable
    /// (O_TMPFILE and recycled files are linked; a `tmp/` file is renamed).
    fn linked(&self) -> bool {
        self.path.is_none() || self.recycled.is_some()
    }

    /// Gives the file its final name `to`, never replacing an existing file; disarms the
    /// guard on success.
    pub(super) fn publish(&mut self, to: &Path) -> Result<(), SpoolError> {
        let res = match &self.path {
            None => sys::link_tmpfile(&self.file, to).map_err(|e| SpoolError::io("link", to, e)),
            // The free/ name stays until the directory sync made the new one durable
            // (`release_free_name`): a crash in between leaves two names, and recovery
            // drops the free/ one.
            Some(from) if self.recycled.is_some() => {
                std::fs::hard_link(from, to).map_err(|e| SpoolError::io("link", to, e))
            }
            Some(from) => {
                sys::rename_noreplace(from, to).map_err(|e| SpoolError::io("rename", to, e))
            }
        };
        res?;
        self.armed = false;
        Ok(())
    }

    /// After a recycled file is durable under its new name: the `free/` name it came
    /// from, to unlink.
    pub(super) fn free_name(&self) -> Option<PathBuf> {
        self.recycled.as_ref().and(self.path.clone())
    }

    /// True for a named file under `tmp/` (tests).
    #[cfg(test)]
    fn is_named(&self) -> bool {
        self.path.is_some()
    }
}

impl Drop for TmpFile {
    fn drop(&mut self) {
        if self.armed
            && let Some(path) = &self.path
        {
            match &self.recycled {
                // Never published: still a free file (its content is garbage).
                Some(inner) => inner.give_back_free(path.clone()),
                None => {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        // An unnamed O_TMPFILE inode is freed by the kernel when `file` closes.
    }
}

/// Runs spool I/O on tokio's blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, SpoolError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, SpoolError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(SpoolError::BlockingTask(e.to_string())),
    }
}

/// A message being received. Created by `Spool::begin`; dropping it without a
/// successful commit removes everything it wrote.
pub struct MessageWriter {
    inner: Arc<Inner>,
    id: QueueId,
    /// File bytes not yet written: the header (until the first spill) and content.
    /// Invariant: shorter than `BUFFER_LIMIT` between calls.
    pending: Vec<u8>,
    /// `Some` once the message spilled to `tmp/`.
    tmp: Option<TmpFile>,
    /// Content bytes accepted so far.
    content_len: u64,
    /// CRC-32C of those bytes.
    content_crc: u32,
    /// An earlier write failed or was cancelled.
    broken: bool,
}

impl std::fmt::Debug for MessageWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageWriter")
            .field("id", &self.id)
            .field("written", &self.content_len)
            .field("spilled", &self.tmp.is_some())
            .finish()
    }
}

impl MessageWriter {
    /// Bytes held in memory before the message spills to `tmp/`, and the size of each
    /// write to `tmp/` after that.
    pub const BUFFER_LIMIT: usize = 256 * 1024;

    pub(crate) fn new(inner: Arc<Inner>, id: QueueId) -> MessageWriter {
        let mut pending = Vec::with_capacity(8 * 1024);
        pending.extend_from_slice(&format::encode_header());
        MessageWriter {
            inner,
            id,
            pending,
            tmp: None,
            content_len: 0,
            content_crc: 0,
            broken: false,
        }
    }

    /// The message's queue id (for the Received header).
    pub fn id(&self) -> QueueId {
        self.id
    }

    /// Content bytes written so far.
    pub fn written(&self) -> u64 {
        self.content_len
    }

    /// Appends content. Buffers up to [`Self::BUFFER_LIMIT`] bytes in memory; past that,
    /// writes through to `tmp/<id>` in chunks of that size, so memory stays bounded.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), SpoolError> {
        if self.broken {
            return Err(SpoolError::WriterBroken);
        }
        if !self.inner.is_writable() {
            return Err(SpoolError::ReadOnly);
        }
        let mut rest = data;
        while !rest.is_empty() {
            let room = Self::BUFFER_LIMIT.saturating_sub(self.pending.len()).max(1);
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.pending.extend_from_slice(now);
            self.content_len = self.content_len.saturating_add(now.len() as u64);
            self.content_crc = crc32c::crc32c_append(self.content_crc, now);
            rest = later;
            if self.pending.len() >= Self::BUFFER_LIMIT {
                self.spill().await?;
            }
        }
        Ok(())
    }

    /// Writes the buffer to `tmp/<id>`, creating it on the first call.
    async fn spill(&mut self) -> Result<(), SpoolError> {
        let tmp = self.tmp.take();
        let mut buf = std::mem::take(&mut self.pending);
        let path = self.inner.entry_path(Area::Tmp, self.id);
        let placement = self.inner.use_tmpfile().then(|| self.inner.placement_dir());
        let inner = Arc::clone(&self.inner);
        // Stays set if this future is dropped or the task fails.
        self.broken = true;
        let (tmp, buf) = blocking(move || {
            let mut tmp = match tmp {
                Some(t) => t,
                None => TmpFile::create(&inner, placement.as_deref(), path)?,
            };
            tmp.write_all(&buf)?;
            buf.clear();
            Ok((tmp, buf))
        })
        .await?;
        self.tmp = Some(tmp);
        self.pending = buf;
        self.broken = false;
        Ok(())
    }

    /// Makes the message durable in `incoming/`: writes the rest, the envelope and the
    /// trailer, fdatasyncs, renames out of `tmp/`, then waits for the group-committed
    /// fsync of `incoming/`. Returns only when all of that is done.
    ///
    /// `envelope.id` must be [`Self::id`] (else [`SpoolError::IdMismatch`]) and
    /// `envelope.size` must be [`Self::written`]; nothing in the envelope is changed.
    pub async fn commit(self, envelope: Envelope) -> Result<(), SpoolError> {
        let MessageWriter {
            inner,
            id,
            mut pending,
            tmp,
            content_len,
            content_crc,
            broken,
        } = self;
        if broken {
            return Err(SpoolError::WriterBroken);
        }
        let Some(writable) = inner.writable.as_ref() else {
            return Err(SpoolError::ReadOnly);
        };
        if envelope.id != id {
            return Err(SpoolError::IdMismatch);
        }
        // Counted until this returns. A caller that drops this future early (a session
        // aborted at shutdown) ends the count while a segment append may still land.
        let _noted = super::Noted::begin(&inner);
        pending.extend_from_slice(&format::encode_tail(content_len, content_crc, &envelope)?);
        let tmp_path = inner.entry_path(Area::Tmp, id);
        let final_path = inner.entry_path(Area::State(QueueState::Incoming), id);
        let task_inner = Arc::clone(&inner);
        let task_final = final_path.clone();
        let placement = inner.use_tmpfile().then(|| inner.placement_dir());
        if inner.segment_commit.load(Ordering::Relaxed) && tmp.is_none() {
            return inner.segments.commit(id, pending).await;
        }
        if inner.batch_commit.load(Ordering::Relaxed) {
            let prepare: super::batch::Prepare = Box::new(move || {
                let mut tmp = match tmp {
                    Some(t) => t,
                    None => TmpFile::create(&task_inner, placement.as_deref(), tmp_path)?,
                };
                tmp.write_all(&pending)?;
                tmp.cut()?;
                Ok(tmp)
            });
            let free_name = writable.batch.commit(prepare, final_path).await?;
            if let Some(free) = free_name {
                let _ = std::fs::remove_file(free);
            }
            return Ok(());
        }
        let free_name = blocking(move || {
            let mut tmp = match tmp {
                Some(t) => t,
                None => TmpFile::create(&task_inner, placement.as_deref(), tmp_path)?,
            };
            tmp.write_all(&pending)?;
            tmp.cut()?;
            let started = std::time::Instant::now();
            let data_synced = tmp.file.sync_data();
            tern_metrics::get()
                .fsync_latency
                .observe_duration(started.elapsed());
            data_synced.map_err(|e| SpoolError::io("fdatasync", tmp.describe(), e))?;
            task_inner
                .counters
                .file_syncs
                .fetch_add(1, Ordering::Relaxed);
            tmp.publish(&task_final)?;
            if tmp.linked() {
                // An O_TMPFILE inode was synced above with a link count of 0; linking it
                // changed the count in memory only, and fdatasync skips that. Without this
                // fsync a power loss on a filesystem without a journal could leave the new
                // directory entry pointing at an inode that is free on disk. (With a
                // journal the link is one transaction and this commits it, so the
                // directory fsync below then has nothing left to write.)
                if let Err(e) = tmp.file.sync_all() {
                    // Not known to be durable, so not accepted (the client gets 451 and
                    // retries): take the name back, or the retry would be a duplicate.
                    let _ = std::fs::remove_file(&task_final);
                    return Err(SpoolError::io("fsync", &task_final, e));
                }
            }
            task_inner.queued.fetch_add(1, Ordering::AcqRel);
            Ok(tmp.free_name())
        })
        .await?;
        let synced = writable.incoming.sync().await;
        if let Some(free) = free_name {
            // The message has its own name now; the free/ one goes (either way: if the
            // sync failed, the message name is removed below and the file with it).
            let _ = std::fs::remove_file(free);
        }
        if let Err(e) = synced {
            // Not known to be durable, so not accepted: take it back out of the queue.
            if std::fs::remove_file(&final_path).is_ok() {
                inner.forget_queued(QueueState::Incoming);
            }
            let dir = writable.incoming.path().clone();
            inner.events.emit(
                &catalog::SPOOL_IO_ERROR,
                fields!("file" => dir.display(), "op" => "fsync directory", "error" => e),
            );
            return Err(SpoolError::io("fsync directory", dir, e));
        }
        tern_metrics::get().received.inc();
        Ok(())
    }

    /// Bytes currently held in memory (tests check the bound).
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.pending.len()
    }

    /// Whether content has spilled to a file, and whether that file is named `tmp/<id>`
    /// (no O_TMPFILE support) (tests).
    #[cfg(test)]
    pub(crate) fn spilled(&self) -> Option<bool> {
        self.tmp.as_ref().map(TmpFile::is_named)
    }
}
