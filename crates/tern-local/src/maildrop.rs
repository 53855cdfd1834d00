//! Submission into the pickup directory by a local program (`tern sendmail`), whether or
//! not the server runs: Postfix's maildrop, with Tern's pickup directory as the drop.
//!
//! A submission is a pair (see `envfile`): `<id>.env` and then `<id>.eml` are written
//! under hidden temporary names, synced, renamed, and the directory synced, so the
//! pickup service sees a pair only when it is complete. The rename of the `.eml` is the
//! commit: an error before it leaves nothing, and from it on the submission is `Ok`
//! whatever the directory sync gives ([`DirSync`]: a user who may write but not read a
//! 1733 directory cannot sync it), so a caller told "failed" never sent the message.
//! A submission whose directory was synced survives a power loss. `<id>` is a fresh queue id (unique and time-ordered); the
//! message gets its own queue id when the server picks it up.
//!
//! [`Maildrop`] is also a [`MessageIntake`], so `tern sendmail -bs` runs the SMTP server's
//! own session code with the pickup directory as its storage: the content streams into
//! the temporary message file (memory stays bounded), and `commit` publishes the pair.
//! Its `250 … queued as <id>` names the maildrop id. Blocking file I/O runs inline: one
//! session per process.
//!
//! Invariants: a draft dropped before its commit finished removes its temporary files,
//! and the envelope file when the message file could not follow, so the pickup service
//! never finds half a submission except after a crash (it then waits for the `.eml` and
//! moves a lone `.env` to badmail after `pickup.orphan_after_secs`).
//!
//! Trust: the directory is shared; names are fresh ids, files are opened without
//! following symlinks and truncated, never appended to.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use tern_spool::intake::BoxFuture;
use tern_spool::{Envelope, MessageDraft, MessageIntake, QueueId, SpoolError};

use crate::durable::{
    ENV_SUFFIX, IoFailure, MSG_SUFFIX, PairPaths, create_truncated, publish, sync_dir, tmp_name,
};
use crate::envfile::EnvelopeFile;

/// Mode of submitted files when the submitter is not the directory's owner and the
/// directory is not set-group-id: readable by the server whichever user submitted them.
/// Others cannot find them: the documented pickup modes (0700, 1733) let nobody but Tern
/// list the directory, the names are unpredictable queue ids, and the pickup service
/// moves them into its 0700 `.claimed/` at its next scan.
pub const FILE_MODE: u32 = 0o644;

/// The mode of files submitted into `dir`, always set explicitly (never through the
/// umask): 0600 when the submitter owns the directory (Tern itself), 0640 when the
/// directory is set-group-id (files take its group, Tern's, so the group can read them),
/// else [`FILE_MODE`].
pub fn file_mode(dir: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    let euid = rustix::process::geteuid().as_raw();
    match std::fs::metadata(dir) {
        Ok(m) if m.uid() == euid => 0o600,
        Ok(m) if m.mode() & 0o2000 != 0 => 0o640,
        _ => FILE_MODE,
    }
}

/// Why a submission failed; nothing was submitted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MaildropError {
    /// A system call failed (no such directory, permissions, disk full).
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl From<IoFailure> for MaildropError {
    fn from(f: IoFailure) -> MaildropError {
        MaildropError::Io {
            op: f.op,
            path: f.path,
            source: f.source,
        }
    }
}

fn spool_error(f: IoFailure) -> SpoolError {
    SpoolError::Io {
        op: f.op,
        path: f.path,
        error: f.source,
    }
}

/// A submission made: it stands, whatever `dir_synced` says.
#[derive(Debug)]
pub struct Submission {
    /// The files written.
    pub paths: PairPaths,
    /// Whether the directory was synced after the renames (see [`DirSync`]).
    pub dir_synced: DirSync,
}

/// The fate of the directory sync that follows a submission.
#[derive(Debug)]
pub enum DirSync {
    /// Synced: the names survive a crash or power loss.
    Synced,
    /// The submitter may write the directory but not read it (the documented mode 1733
    /// for unprivileged submitters): it cannot open it to sync it. The files' data is
    /// synced and the names are in place; they reach the disk with the filesystem's next
    /// journal commit (seconds), and a power loss before that loses the submission.
    NotPermitted,
    /// The sync failed (an I/O error): the names are in place and will be picked up, but
    /// may not survive a power loss.
    Failed(std::io::Error),
}

/// Syncs the pickup directory after a submission's last rename (see [`DirSync`]).
fn sync_submitted(dir: &Path) -> DirSync {
    match sync_dir(dir) {
        Ok(()) => DirSync::Synced,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
            DirSync::NotPermitted
        }
        Err(e) => DirSync::Failed(e),
    }
}

/// The pickup directory, seen by a program that submits into it.
#[derive(Debug, Clone)]
pub struct Maildrop {
    dir: PathBuf,
}

impl Maildrop {
    /// Submits into `dir` (the pickup directory; it must exist).
    pub fn new(dir: impl Into<PathBuf>) -> Maildrop {
        Maildrop { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes one message with its envelope as `<id>.env` and `<id>.eml` (`id` fresh from
    /// `QueueId::generate`, so the names are unique): each synced, then renamed into
    /// place, `.eml` last. The rename of the `.eml` is the point of no return: an error
    /// before it leaves nothing (the `.env` is removed again) and nothing will be
    /// delivered; from it on the submission stands, and the sync of the directory that
    /// follows is reported in [`Submission::dir_synced`], never as an error.
    pub fn submit(
        &self,
        id: QueueId,
        envelope: &EnvelopeFile,
        content: &[u8],
    ) -> Result<Submission, MaildropError> {
        let stem = id.to_string();
        let env_name = format!("{stem}{ENV_SUFFIX}");
        let msg_name = format!("{stem}{MSG_SUFFIX}");
        let mode = file_mode(&self.dir);
        publish(&self.dir, &env_name, &envelope.to_json(), mode)?;
        if let Err(e) = publish(&self.dir, &msg_name, content, mode) {
            let _ = std::fs::remove_file(self.dir.join(&env_name));
            return Err(e.into());
        }
        Ok(Submission {
            paths: PairPaths {
                envelope: self.dir.join(env_name),
                message: self.dir.join(msg_name),
            },
            dir_synced: sync_submitted(&self.dir),
        })
    }
}

impl MessageIntake for Maildrop {
    fn begin(&self) -> Box<dyn MessageDraft> {
        let id = QueueId::generate();
        Box::new(MaildropDraft {
            mode: file_mode(&self.dir),
            tmp: self.dir.join(tmp_name(&format!("{id}{MSG_SUFFIX}"))),
            dir: self.dir.clone(),
            id,
            file: None,
            written: 0,
            broken: false,
            armed: true,
        })
    }

    /// Nothing is queued here: the server counts the queue when it picks the files up.
    fn queued(&self) -> usize {
        0
    }
}

/// One message being written into the maildrop by an SMTP session.
struct MaildropDraft {
    dir: PathBuf,
    /// Mode of the files (see [`file_mode`]).
    mode: u32,
    id: QueueId,
    /// The temporary message file, `.tern-<id>.eml.tmp`.
    tmp: PathBuf,
    file: Option<File>,
    written: u64,
    /// A write failed: the content has a hole.
    broken: bool,
    /// Remove the temporary files on drop (cleared once published).
    armed: bool,
}

impl MaildropDraft {
    fn append(&mut self, data: &[u8]) -> Result<(), SpoolError> {
        if self.broken {
            return Err(SpoolError::WriterBroken);
        }
        if self.file.is_none() {
            let f = create_truncated(&self.tmp, self.mode)
                .map_err(|e| spool_error(IoFailure::at("create", &self.tmp)(e)))?;
            self.file = Some(f);
        }
        let result = match self.file.as_mut() {
            Some(f) => f.write_all(data),
            None => Ok(()),
        };
        match result {
            Ok(()) => {
                self.written = self.written.saturating_add(data.len() as u64);
                Ok(())
            }
            Err(e) => {
                self.broken = true;
                Err(spool_error(IoFailure::at("write", &self.tmp)(e)))
            }
        }
    }

    fn publish(&mut self, envelope: &Envelope) -> Result<(), SpoolError> {
        if self.broken {
            return Err(SpoolError::WriterBroken);
        }
        if self.file.is_none() {
            self.append(b"")?;
        }
        let stem = self.id.to_string();
        let all: Vec<usize> = (0..envelope.recipients.len()).collect();
        let file = EnvelopeFile::from_envelope(envelope, &all, false);
        let env_name = format!("{stem}{ENV_SUFFIX}");
        publish(&self.dir, &env_name, &file.to_json(), self.mode).map_err(spool_error)?;
        let synced = match self.file.take() {
            Some(f) => f.sync_data(),
            None => Ok(()),
        };
        let to = self.dir.join(format!("{stem}{MSG_SUFFIX}"));
        let published = synced
            .map_err(IoFailure::at("fdatasync", &self.tmp))
            .and_then(|()| std::fs::rename(&self.tmp, &to).map_err(IoFailure::at("rename", &to)));
        if let Err(f) = published {
            // Half a submission must not wait in the pickup directory.
            let _ = std::fs::remove_file(self.dir.join(&env_name));
            return Err(spool_error(f));
        }
        self.armed = false;
        // The submission stands from the rename on: a failed directory sync is not a
        // failure to report to the client (see `Maildrop::submit`).
        let _ = sync_submitted(&self.dir);
        Ok(())
    }
}

impl Drop for MaildropDraft {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl MessageDraft for MaildropDraft {
    fn id(&self) -> QueueId {
        self.id
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn write<'a>(&'a mut self, data: &'a [u8]) -> BoxFuture<'a, Result<(), SpoolError>> {
        Box::pin(async move { self.append(data) })
    }

    fn commit(
        mut self: Box<Self>,
        envelope: Envelope,
    ) -> BoxFuture<'static, Result<(), SpoolError>> {
        Box::pin(async move {
            if envelope.id != self.id {
                return Err(SpoolError::IdMismatch);
            }
            self.publish(&envelope)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_spool::Recipient;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_submission_is_a_complete_pair() {
        let d = tempfile::tempdir().unwrap();
        let m = Maildrop::new(d.path());
        let env = EnvelopeFile::new("a@x.test", &["b@y.test".to_owned()]);
        let id = QueueId::generate();
        let paths = m
            .submit(id, &env, b"To: b@y.test\r\n\r\nhi\r\n")
            .unwrap()
            .paths;
        assert_eq!(names(d.path()), [format!("{id}.eml"), format!("{id}.env")]);
        let back = EnvelopeFile::parse(&std::fs::read(paths.envelope).unwrap()).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn submitted_files_have_their_mode_whatever_the_umask() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        // An ordinary login's umask (022 is also what the other tests expect).
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
        let d = tempfile::tempdir().unwrap();
        let env = EnvelopeFile::new("a@x.test", &["b@y.test".to_owned()]);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        // The submitter owns the directory (Tern, or root's own test): 0600.
        let s = Maildrop::new(d.path())
            .submit(QueueId::generate(), &env, b"x\r\n")
            .unwrap();
        assert_eq!(mode(&s.paths.envelope), 0o600);
        assert_eq!(mode(&s.paths.message), 0o600);
        assert!(matches!(s.dir_synced, DirSync::Synced));
        if rustix::process::geteuid().is_root() {
            // Another user's directory: 0644, or 0640 when it is set-group-id.
            std::os::unix::fs::chown(d.path(), Some(65534), Some(65534)).unwrap();
            let s = Maildrop::new(d.path())
                .submit(QueueId::generate(), &env, b"x\r\n")
                .unwrap();
            assert_eq!(mode(&s.paths.message), 0o644);
            std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o2733)).unwrap();
            let s = Maildrop::new(d.path())
                .submit(QueueId::generate(), &env, b"x\r\n")
                .unwrap();
            assert_eq!(mode(&s.paths.envelope), 0o640);
            assert_eq!(mode(&s.paths.message), 0o640);
        }
    }

    #[tokio::test]
    async fn a_draft_publishes_on_commit_and_leaves_nothing_when_dropped() {
        let d = tempfile::tempdir().unwrap();
        let m = Maildrop::new(d.path());
        let mut draft = m.begin();
        draft.write(b"Received: x\r\n").await.unwrap();
        draft.write(b"To: b@y.test\r\n\r\nhi\r\n").await.unwrap();
        assert_eq!(names(d.path()).len(), 1, "only the hidden temporary file");
        let id = draft.id();
        let env = Envelope {
            quarantine: None,
            id,
            sender: "a@x.test".into(),
            recipients: vec![Recipient::new("b@y.test")],
            params: Default::default(),
            client: Default::default(),
            arrival_micros: 0,
            size: draft.written(),
        };
        draft.commit(env).await.unwrap();
        assert_eq!(names(d.path()), [format!("{id}.eml"), format!("{id}.env")]);
        assert_eq!(
            std::fs::read(d.path().join(format!("{id}.eml"))).unwrap(),
            b"Received: x\r\nTo: b@y.test\r\n\r\nhi\r\n"
        );

        let mut abandoned = m.begin();
        abandoned.write(b"half").await.unwrap();
        drop(abandoned);
        assert_eq!(names(d.path()).len(), 2, "the abandoned draft left nothing");
    }
}
