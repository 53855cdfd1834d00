//! The status snapshot: what `tern status` shows and what later metrics export (issue 6).
//!
//! The server writes it to `<data_dir>/status.json` on every supervisor tick: the JSON is
//! written to `status.json.tmp`, then renamed over the old file, so a reader sees the
//! previous snapshot or the new one, never half of one. No fsync: after a crash the file
//! is stale anyway, and readers judge staleness by `written_unix_ms` and the server's pid.
//!
//! Trust: [`Snapshot::read_from`] reads a file from disk: its size is capped at
//! [`MAX_STATUS_BYTES`] and its content goes through serde's checks only; nothing in it
//! can panic the reader.

use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Kind;

/// Version of the snapshot's format; a reader refuses other versions.
pub const STATUS_FORMAT: u32 = 1;
/// Largest status file a reader accepts.
pub const MAX_STATUS_BYTES: u64 = 4 << 20;

/// What a worker is doing, as the watchdog last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// No work waiting.
    Idle,
    /// Working, or work waiting, and progressing.
    Busy,
    /// Work waiting and no progress for longer than the stall limit.
    Stalled,
}

impl WorkerState {
    /// The name used in the JSON and the table.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
            WorkerState::Stalled => "stalled",
        }
    }
}

/// One registered worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Registration number, unique for the life of the process.
    pub id: u64,
    /// Name (`queue.scheduler`, `delivery#7@smtp:relay`, `listener.smtp`, ...).
    pub name: String,
    /// Kind.
    pub kind: Kind,
    /// State.
    pub state: WorkerState,
    /// Work items finished.
    pub processed: u64,
    /// Milliseconds since the last progress or liveness beat.
    pub last_progress_ms: u64,
    /// Items waiting for the worker.
    pub waiting: u64,
    /// The bounded wait in force, ms (0 = none): the stall limit is the larger of this
    /// and `stall_after_ms`.
    pub budget_ms: u64,
    /// Times the supervisor restarted this worker.
    pub restarts: u64,
}

/// Counters per kind of worker, over the life of the process (for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindTotals {
    /// The kind.
    pub kind: Kind,
    /// Stall episodes.
    pub stalls: u64,
    /// Restarts done.
    pub restarts: u64,
}

/// How a stall episode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StallOutcome {
    /// Not yet: the worker is still stalled.
    Ongoing,
    /// The worker made progress again, or its work went away.
    Recovered,
    /// The worker is gone (restarted, or it ended).
    Ended,
}

/// One stall episode, kept in a bounded list of recent ones so that an operator who
/// runs `tern status` after the event still sees it, even for a worker that was
/// restarted and so no longer exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StallRecord {
    /// Episode number, unique for the life of the process.
    pub seq: u64,
    /// The worker's registration number.
    pub worker_id: u64,
    /// The worker's name.
    pub worker: String,
    /// Its kind.
    pub kind: Kind,
    /// When the stall was noticed (Unix time, ms).
    pub stalled_at_unix_ms: u64,
    /// How long it had gone without progress when noticed, ms.
    pub waited_ms: u64,
    /// Items waiting when noticed.
    pub waiting: u64,
    /// Whether the supervisor restarted it.
    pub restarted: bool,
    /// How the episode ended.
    pub outcome: StallOutcome,
    /// When it ended (Unix time, ms).
    pub ended_at_unix_ms: Option<u64>,
}

/// The whole snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`STATUS_FORMAT`].
    pub format: u32,
    /// Process id of the server that wrote it.
    pub pid: u32,
    /// When the watchdog started (Unix time, ms).
    pub started_unix_ms: u64,
    /// When this snapshot was taken (Unix time, ms).
    pub written_unix_ms: u64,
    /// The supervisor's tick: a snapshot older than a few ticks is stale.
    pub tick_ms: u64,
    /// The configured stall limit.
    pub stall_after_ms: u64,
    /// Every registered worker, in registration order.
    pub workers: Vec<WorkerStatus>,
    /// Counters per kind.
    pub totals: Vec<KindTotals>,
    /// Recent stall episodes, oldest first.
    pub stalls: Vec<StallRecord>,
    /// Other parts' status lines (`cluster`: the shared control plane's health).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub notes: std::collections::BTreeMap<String, String>,
}

/// Why a status file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// The file could not be read (missing: `io::ErrorKind::NotFound`).
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// The file is larger than [`MAX_STATUS_BYTES`].
    #[error("{path} is larger than {MAX_STATUS_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The content is not a snapshot of this format.
    #[error("{path} is not a status snapshot of format {STATUS_FORMAT}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl Snapshot {
    /// Writes the snapshot to `path` atomically (temporary file, mode 0600, then rename;
    /// no fsync).
    pub fn write_to(&self, path: &Path) -> io::Result<()> {
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        let json = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        // Mode 0600 whatever the umask; a link planted under the temporary name is refused.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(&json)?;
        f.write_all(b"\n")?;
        drop(f);
        std::fs::rename(&tmp, path)
    }

    /// Reads a snapshot written by [`Snapshot::write_to`].
    pub fn read_from(path: &Path) -> Result<Snapshot, StatusError> {
        let io_err = |source| StatusError::Io {
            path: path.to_path_buf(),
            source,
        };
        let f = std::fs::File::open(path).map_err(io_err)?;
        let mut bytes = Vec::new();
        f.take(MAX_STATUS_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err)?;
        if bytes.len() as u64 > MAX_STATUS_BYTES {
            return Err(StatusError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        let snap: Snapshot = serde_json::from_slice(&bytes).map_err(|e| StatusError::Format {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if snap.format != STATUS_FORMAT {
            return Err(StatusError::Format {
                path: path.to_path_buf(),
                reason: format!("format {}", snap.format),
            });
        }
        Ok(snap)
    }
}
