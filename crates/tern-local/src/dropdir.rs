//! The `drop` transport's writer: a message and its envelope, written into a directory
//! for another system to collect.
//!
//! Format (docs/CONNECTORS.md): two files per message and drop route, named by the queue
//! id: `<queue id>.env`, the envelope file of [`crate::envfile`] listing the recipients of
//! this delivery (with the informational `queue_id`, `arrival`, `size`, `body`), and
//! `<queue id>.eml`, the message as stored (CRLF line endings, Tern's Received header
//! first). The envelope file is published first and the message file last, each written
//! under a hidden temporary name (`.tern-<name>.tmp`), `fdatasync`ed and renamed; then
//! the directory is fsynced, and only then is the delivery reported. A collector takes a
//! message when its `.eml` appears (the `.env` is there by then), and removes the `.eml`
//! before the `.env`.
//!
//! Invariants: no final name ever holds a partial file; once [`write_message`] returns
//! `Ok`, both files survive a crash or power loss. Two routes never share a directory
//! (the routing table refuses it), so a queue id names one message in one directory.
//!
//! Duplicates: a message is written again when Tern dies after the rename of its `.eml`
//! and before its delivery was recorded (one delivery attempt), or when a later attempt
//! writes it again for the same reason. The new files replace the old ones atomically
//! under the same names, so a collector that has not taken the first copy sees one
//! message; one that has, sees a second copy with the same queue id.
//!
//! Trust: the directory is the operator's (from the configuration); nothing is read from
//! it. Blocking I/O: call from a blocking thread.

use std::path::{Path, PathBuf};

use tern_spool::Envelope;

pub use crate::durable::PairPaths;
use crate::durable::{IoFailure, write_pair_from};
use crate::envfile::EnvelopeFile;

/// Mode of the files written (the collector reads them through its group).
pub const FILE_MODE: u32 = 0o640;

/// Why a message could not be written. Each means the delivery did not happen: the
/// recipients are deferred (`451 4.3.0`) and tried again later; no partial file is left
/// under a final name.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DropError {
    /// A system call failed (missing directory, permissions, disk full, I/O error).
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`create`, `write`, `fdatasync`, `rename`, `fsync`).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl From<IoFailure> for DropError {
    fn from(f: IoFailure) -> DropError {
        DropError::Io {
            op: f.op,
            path: f.path,
            source: f.source,
        }
    }
}

/// Writes `content` with the envelope of `envelope` restricted to the recipients `rcpts`
/// (indices) into `dir` as `<queue id>.env` and `<queue id>.eml`.
pub fn write_message(
    dir: &Path,
    envelope: &Envelope,
    rcpts: &[usize],
    content: &[u8],
) -> Result<PairPaths, DropError> {
    let mut content = content;
    write_message_from(dir, envelope, rcpts, &mut content)
}

/// [`write_message`] with the content read from `content`, 64 KiB at a time (memory
/// bounded whatever the size). A read error (the spool's integrity check failing) fails
/// the delivery before the `.eml` gets its name; the `.env` already published is
/// replaced by the next attempt.
pub fn write_message_from(
    dir: &Path,
    envelope: &Envelope,
    rcpts: &[usize],
    content: &mut dyn std::io::Read,
) -> Result<PairPaths, DropError> {
    let file = EnvelopeFile::from_envelope(envelope, rcpts, true);
    Ok(write_pair_from(
        dir,
        &envelope.id.to_string(),
        &file.to_json(),
        content,
        FILE_MODE,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_spool::{QueueId, Recipient};

    fn envelope(rcpts: &[&str]) -> Envelope {
        Envelope {
            quarantine: None,
            id: QueueId::generate(),
            sender: "s@x.test".into(),
            recipients: rcpts.iter().map(|a| Recipient::new(*a)).collect(),
            params: Default::default(),
            client: Default::default(),
            arrival_micros: 0,
            size: 5,
        }
    }

    #[test]
    fn the_drop_files_carry_the_jobs_recipients_and_the_content() {
        let d = tempfile::tempdir().unwrap();
        let env = envelope(&["a@x.test", "b@y.test", "c@x.test"]);
        let paths = write_message(d.path(), &env, &[0, 2], b"hi\r\n\r\n").unwrap();
        assert_eq!(paths.message, d.path().join(format!("{}.eml", env.id)));
        assert_eq!(std::fs::read(&paths.message).unwrap(), b"hi\r\n\r\n");
        let file = EnvelopeFile::parse(&std::fs::read(&paths.envelope).unwrap()).unwrap();
        let r = file.resolve("h.test", 10).unwrap();
        let got: Vec<&str> = r.recipients.iter().map(|r| r.address.as_str()).collect();
        assert_eq!(got, ["a@x.test", "c@x.test"]);
        assert_eq!(r.sender, "s@x.test");
        assert_eq!(file.queue_id, Some(env.id.to_string()));
        assert_eq!(file.size, Some(5));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&paths.message)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777 & !FILE_MODE, 0, "{mode:o}");
    }

    #[test]
    fn a_missing_directory_fails_without_creating_it() {
        let d = tempfile::tempdir().unwrap();
        let gone = d.path().join("not-mounted");
        let e = write_message(&gone, &envelope(&["a@x.test"]), &[0], b"x\r\n").unwrap_err();
        assert!(e.to_string().contains("not-mounted"), "{e}");
        assert!(!gone.exists());
    }

    #[test]
    fn a_content_that_fails_while_streaming_never_gets_its_eml_name() {
        struct Failing(usize);
        impl std::io::Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "checksum",
                    ));
                }
                let n = self.0.min(buf.len());
                buf[..n].fill(b'x');
                self.0 -= n;
                Ok(n)
            }
        }
        let d = tempfile::tempdir().unwrap();
        let env = envelope(&["a@x.test"]);
        let e = write_message_from(d.path(), &env, &[0], &mut Failing(100_000)).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        let names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".eml")), "{names:?}");
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    }
}
