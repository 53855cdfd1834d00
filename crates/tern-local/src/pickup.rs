//! The pickup service: message files dropped into a directory by another system (or by
//! `tern sendmail`) become queued messages, scheduled like SMTP mail.
//!
//! Formats (docs/CONNECTORS.md): a plain RFC 5322 file, any name not ending in `.env` or
//! `.eml`, whose envelope comes from its headers (sender from `Sender`/`From` or
//! `pickup.default_sender`; recipients from `To`, `Cc`, `Bcc`, like `sendmail -t`); or a
//! pair `<stem>.env` (see [`crate::envfile`]) + `<stem>.eml`, taken only when both are
//! there. Writers create files under a name starting with a dot and rename them into
//! place; names starting with a dot are never read.
//!
//! Every `interval` one scan: claim up to `max_files_per_scan` units (rename into
//! `.claimed/`, leftovers there first), then for each: read it (size capped at the
//! largest listener's `max_message_size`), parse it ([`crate::submit`]), apply header
//! hygiene, add `Received: by <host> (Tern pickup, from userid <owner>)`, and hand it to
//! the [`MessageIntake`] (the queue's, so it is scheduled at once); only after the
//! commit returned is it removed from `.claimed/`. A unit that cannot be used is moved to
//! `badmail/` with a `<name>.reason` file (event 6022) and never looked at again; the
//! units behind it go on. A temporary failure (spool error, back pressure) ends the scan
//! and leaves the unit claimed for the next scan (event 6023).
//!
//! Duplicate window: Tern dying after a unit's commit and before its removal from
//! `.claimed/` queues that unit once more at the next start: at most one unit per crash,
//! since units are committed one after another. After a power loss, up to one scan's units
//! (the removals are synced once per scan). Nothing claimed is ever lost: a claim is a
//! rename, synced before the first commit of the scan.
//!
//! Concurrency: one task; directory work runs on the blocking pool; no lock is held. The
//! heartbeat (`pickup`, listener kind) is busy during a scan and counts each unit.
//!
//! Trust: see `files` (names, types, sizes) and `submit` (content); the owner of a file
//! (its uid) is the only identity recorded, because it is the only one a writer cannot
//! forge.

mod files;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tern_events::{EventLog, catalog, fields};
use tern_spool::backpressure::BackPressure;
use tern_spool::{
    BodyType, ClientInfo, DsnRet, Envelope, MailParams, MessageIntake, QueueId, Recipient,
    RecipientStatus, SpoolError,
};
use tern_watchdog::Heartbeat;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use files::{BADMAIL_DIR, CLAIMED_DIR};
use files::{Bad, Dirs, FileRead, Limits, Unit};

use crate::durable::{ENV_SUFFIX, IoFailure, MSG_SUFFIX};
use crate::envfile::{self, EnvelopeFile};
use crate::submit::{Hygiene, LocalMessage, one_line, qualify, rfc5322_now};

/// Content is handed to the intake in pieces of this size (the spool writer's memory
/// stays bounded whatever the message size).
const WRITE_CHUNK: usize = 64 * 1024;

/// The pickup service's settings (`[pickup]` in the configuration).
#[derive(Debug, Clone)]
pub struct PickupConfig {
    /// The pickup directory; `.claimed/` and `badmail/` are made inside it.
    pub dir: PathBuf,
    /// Time between scans.
    pub interval: Duration,
    /// Units claimed per scan, at least 1.
    pub max_files_per_scan: usize,
    /// Largest message file, octets (the largest listener's `max_message_size`).
    pub max_message_size: u64,
    /// Most recipients of one file.
    pub max_recipients: usize,
    /// Sender of a plain file without Sender or From.
    pub default_sender: String,
    /// Our host name: Received header, generated Message-IDs, bare local names.
    pub hostname: String,
    /// How long half a pair, or a stale temporary file, may wait before it goes to badmail
    /// (or, for a temporary file, is removed).
    pub orphan_after: Duration,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PickupError {
    /// A directory could not be created.
    #[error("pickup directory: {0}")]
    Io(String),
    /// A directory of the service is unsafe (a symbolic link, not a directory, owned by
    /// someone other than Tern, or in a directory others may write): the service does
    /// not start, and `tern serve` exits with this message.
    #[error("pickup directory {}: {why}", path.display())]
    Unsafe {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// The running service.
pub struct Pickup {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Pickup {
    /// Creates the directories and starts scanning (the first scan at once).
    pub fn start(
        config: PickupConfig,
        intake: Arc<dyn MessageIntake>,
        events: EventLog,
        back_pressure: Option<BackPressure>,
        beat: Heartbeat,
    ) -> Result<Pickup, PickupError> {
        let dirs = Dirs::new(&config.dir);
        let uid = rustix::process::geteuid().as_raw();
        let fixes = dirs.prepare(uid).map_err(|p| PickupError::Unsafe {
            path: p.path,
            why: p.why,
        })?;
        for f in fixes {
            events.emit(
                &catalog::PICKUP_DIR_MODE_FIXED,
                fields!(
                    "dir" => f.dir.display(),
                    "old_mode" => format!("{:04o}", f.old),
                    "new_mode" => format!("{:04o}", f.new),
                ),
            );
        }
        events.emit(
            &catalog::PICKUP_STARTED,
            fields!("dir" => config.dir.display(), "interval_ms" => config.interval.as_millis()),
        );
        let (stop, stop_rx) = watch::channel(false);
        let service = Service {
            config,
            dirs,
            intake,
            events,
            back_pressure,
            beat,
        };
        let task = tokio::spawn(service.run(stop_rx));
        Ok(Pickup { stop, task })
    }

    /// Stops after the unit in progress (bounded by one commit).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

struct Service {
    config: PickupConfig,
    dirs: Dirs,
    intake: Arc<dyn MessageIntake>,
    events: EventLog,
    back_pressure: Option<BackPressure>,
    beat: Heartbeat,
}

/// A unit read and parsed, ready to be committed.
struct Prepared {
    message: LocalMessage,
    sender: String,
    recipients: Vec<Recipient>,
    dsn_ret: Option<DsnRet>,
    dsn_envid: Option<String>,
    smtputf8: bool,
    remove_bcc: bool,
    owner: u32,
}

/// What became of one unit.
enum Fate {
    /// Committed and removed.
    Queued,
    Bad(String),
    /// Temporary: stays claimed, the scan ends.
    Retry(String),
    /// Its files disappeared (nothing to do).
    Gone,
}

/// Runs blocking directory work on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

impl Service {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(self.config.interval.max(Duration::from_millis(10)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut first = true;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                r = stop.changed() => {
                    if r.is_err() || *stop.borrow() { break; }
                    continue;
                }
            }
            if *stop.borrow() {
                break;
            }
            self.beat.busy(true);
            self.scan(first, &stop).await;
            self.beat.busy(false);
            first = false;
        }
    }

    /// One scan (see the module header).
    async fn scan(&self, first: bool, stop: &watch::Receiver<bool>) {
        if self
            .back_pressure
            .as_ref()
            .and_then(BackPressure::refusing)
            .is_some()
        {
            // New files wait where they are; event 3004 already said why.
            return;
        }
        let dirs = self.dirs.clone();
        let limits = Limits {
            max_units: self.config.max_files_per_scan.max(1),
            orphan_after: self.config.orphan_after,
        };
        let Some(collected) = blocking(move || files::collect(&dirs, &limits)).await else {
            return;
        };
        for e in &collected.errors {
            self.io_error(e);
        }
        if first && (collected.leftovers > 0 || collected.finished_leftovers > 0) {
            self.events.emit(
                &catalog::PICKUP_RECOVERED,
                fields!(
                    "dir" => self.dirs.claimed.display(),
                    "units" => collected.leftovers,
                    "finished" => collected.finished_leftovers,
                ),
            );
        }
        for bad in collected.bad {
            self.badmail(bad).await;
            self.beat.progress();
        }
        let mut removed_any = false;
        for unit in collected.units {
            // Between units a stop is honoured: what is claimed waits in `.claimed/`.
            if *stop.borrow() {
                break;
            }
            let fate = self.process(&unit).await;
            self.beat.progress();
            match fate {
                Fate::Queued | Fate::Gone => removed_any = true,
                Fate::Bad(reason) => self.badmail(Bad::unit(&self.dirs, &unit, reason)).await,
                Fate::Retry(error) => {
                    self.events.emit(
                        &catalog::PICKUP_DEFERRED,
                        fields!("file" => unit.name(), "error" => error),
                    );
                    break;
                }
            }
        }
        if removed_any {
            let dirs = self.dirs.clone();
            if let Some(Err(e)) = blocking(move || files::sync_claimed(&dirs)).await {
                self.io_error(&e);
            }
        }
    }

    fn io_error(&self, e: &IoFailure) {
        self.events.emit(
            &catalog::PICKUP_ERROR,
            fields!("dir" => self.dirs.pickup.display(), "op" => e.op, "path" => e.path.display(), "error" => e.source),
        );
    }

    async fn badmail(&self, bad: Bad) {
        let dirs = self.dirs.clone();
        let (shown, reason) = (bad.shown.clone(), bad.reason.clone());
        match blocking(move || files::to_badmail(&dirs, &bad)).await {
            Some(Ok(path)) => self.events.emit(
                &catalog::PICKUP_BADMAIL,
                fields!("file" => shown, "reason" => reason, "moved_to" => path.display()),
            ),
            Some(Err(e)) => self.io_error(&e),
            None => {}
        }
    }

    /// Reads, parses, commits and removes one claimed unit.
    async fn process(&self, unit: &Unit) -> Fate {
        let dirs = self.dirs.clone();
        let cfg = self.config.clone();
        let u = unit.clone();
        let prepared = match blocking(move || prepare(&dirs, &cfg, &u)).await {
            Some(Ok(Some(p))) => p,
            Some(Ok(None)) => return Fate::Gone,
            Some(Err(fate)) => return fate,
            None => return Fate::Retry("the blocking pool is shutting down".into()),
        };
        if let Some(reason) = self.back_pressure.as_ref().and_then(BackPressure::refusing) {
            return Fate::Retry(format!("back pressure: {reason}"));
        }
        let (id, message_id, size) = match self.commit(&prepared).await {
            Ok(x) => x,
            Err(e @ (SpoolError::InvalidEnvelope(_) | SpoolError::EnvelopeTooLarge { .. })) => {
                return Fate::Bad(format!("the spool refused its envelope: {e}"));
            }
            Err(e) => return Fate::Retry(e.to_string()),
        };
        let dirs = self.dirs.clone();
        let u = unit.clone();
        if let Some(Err(e)) = blocking(move || files::remove_unit(&dirs, &u)).await {
            // Queued but still claimed: it would be queued again at the next scan. Say so
            // loudly; the spool keeps the message either way.
            self.io_error(&e);
        }
        self.events.emit(
            &catalog::PICKUP_QUEUED,
            fields!(
                "file" => unit.name(),
                "format" => unit.format(),
                "queue_id" => id,
                "sender" => if prepared.sender.is_empty() { "<>" } else { prepared.sender.as_str() },
                "recipients" => prepared.recipients.len(),
                "to" => prepared.recipients.iter().map(|r| r.address.as_str()).collect::<Vec<_>>().join(","),
                "size" => size,
                "message_id" => message_id.as_deref().unwrap_or(""),
            ),
        );
        Fate::Queued
    }

    /// Commits the message; returns its queue id, its Message-ID (for the tracking log)
    /// and its size.
    async fn commit(&self, p: &Prepared) -> Result<(QueueId, Option<String>, u64), SpoolError> {
        let mut draft = self.intake.begin();
        let id = draft.id();
        let unique = id.to_string();
        let (content, _) = p.message.hygiene(&Hygiene {
            hostname: &self.config.hostname,
            unique: &unique,
            remove_bcc: p.remove_bcc,
            from_if_missing: None,
        });
        let received = format!(
            "Received: by {} (Tern pickup, from userid {})\r\n\tid {id}; {}\r\n",
            one_line(&self.config.hostname),
            p.owner,
            rfc5322_now()
        );
        draft.write(received.as_bytes()).await?;
        for chunk in content.chunks(WRITE_CHUNK) {
            draft.write(chunk).await?;
        }
        let body = if p.message.is_8bit() {
            BodyType::EightBitMime
        } else {
            BodyType::SevenBit
        };
        let envelope = Envelope {
            quarantine: None,
            id,
            sender: p.sender.clone(),
            recipients: p.recipients.clone(),
            params: MailParams {
                declared_size: None,
                body,
                smtputf8: p.smtputf8,
                dsn_ret: p.dsn_ret,
                dsn_envid: p.dsn_envid.clone(),
            },
            client: ClientInfo {
                address: format!("pickup (uid {})", p.owner),
                verified_name: None,
                helo: self.config.hostname.clone(),
                esmtp: false,
                tls: None,
                listener: "pickup".into(),
                ..Default::default()
            },
            arrival_micros: tern_watchdog::clock::unix_micros(),
            size: draft.written(),
        };
        let size = envelope.size;
        draft.commit(envelope).await?;
        Ok((id, tern_proto::msgid::message_id_of(&content), size))
    }
}

/// Reads and parses a claimed unit. `Ok(None)`: its files are gone.
fn prepare(dirs: &Dirs, cfg: &PickupConfig, unit: &Unit) -> Result<Option<Prepared>, Fate> {
    let retry = |e: IoFailure| Fate::Retry(e.to_string());
    let max = cfg.max_message_size;
    let read = |name: &str, limit: u64| -> Result<Option<(Vec<u8>, u32)>, Fate> {
        match files::read_bounded(&dirs.claimed.join(name), limit).map_err(retry)? {
            FileRead::Bytes { bytes, uid } => Ok(Some((bytes, uid))),
            FileRead::Gone => Ok(None),
            FileRead::NotRegular => Err(Fate::Bad("not a regular file".into())),
            FileRead::Linked(n) => Err(Fate::Bad(format!(
                "{name} has {n} names (hard links); a file with more than one name is never read, it could be another user's file"
            ))),
            FileRead::TooBig(n) => Err(Fate::Bad(format!(
                "{name} has {n} octets, more than the limit of {limit}"
            ))),
        }
    };
    match unit {
        Unit::Plain(name) => {
            let Some((bytes, owner)) = read(name, max)? else {
                return Ok(None);
            };
            let message = LocalMessage::parse(&bytes).map_err(|e| Fate::Bad(e.to_string()))?;
            let host = &cfg.hostname;
            let bad = |e: crate::submit::SubmitError| Fate::Bad(e.to_string());
            let sender = match message.sender_from_headers(host).map_err(bad)? {
                Some(s) => s,
                None => qualify(&cfg.default_sender, host, "pickup.default_sender").map_err(bad)?,
            };
            let list = message
                .recipients_from_headers(host, cfg.max_recipients)
                .map_err(bad)?;
            if list.is_empty() {
                return Err(Fate::Bad(
                    crate::submit::SubmitError::NoRecipients.to_string(),
                ));
            }
            let smtputf8 = !sender.is_ascii() || list.iter().any(|a| !a.is_ascii());
            let recipients = list
                .into_iter()
                .map(|address| Recipient {
                    address,
                    orcpt: None,
                    notify: None,
                    status: RecipientStatus::Pending,
                })
                .collect();
            Ok(Some(Prepared {
                message,
                sender,
                recipients,
                dsn_ret: None,
                dsn_envid: None,
                smtputf8,
                remove_bcc: true,
                owner,
            }))
        }
        Unit::Pair(stem) => {
            let Some((env_bytes, _)) = read(&format!("{stem}{ENV_SUFFIX}"), envfile::MAX_LEN)?
            else {
                return Ok(None);
            };
            let env = EnvelopeFile::parse(&env_bytes)
                .and_then(|f| f.resolve(&cfg.hostname, cfg.max_recipients))
                .map_err(|e| Fate::Bad(e.to_string()))?;
            let Some((bytes, owner)) = read(&format!("{stem}{MSG_SUFFIX}"), max)? else {
                return Ok(None);
            };
            let message = LocalMessage::parse(&bytes).map_err(|e| Fate::Bad(e.to_string()))?;
            Ok(Some(Prepared {
                message,
                sender: env.sender,
                recipients: env.recipients,
                dsn_ret: env.dsn_ret,
                dsn_envid: env.dsn_envid,
                smtputf8: env.smtputf8,
                remove_bcc: false,
                owner,
            }))
        }
    }
}

#[cfg(test)]
mod tests;
