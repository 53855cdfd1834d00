//! The spool's secret key (`spool/spool.key`): what makes a segment frame provably
//! Tern's own (see `segment::frame`).
//!
//! A segment record found only by searching past damage could be bytes a client put
//! inside a message body (BDAT carries any bytes, and a client can compute every CRC).
//! Each version-2 frame therefore carries a MAC keyed with a secret the spool never
//! shows anyone: a frame whose MAC verifies was written by this spool, whatever bytes
//! surround it.
//!
//! File: `"TERNKEY1" | 32 random bytes | CRC-32C of the 40 bytes before (u32 LE)`, mode
//! 0600, created exclusively (O_EXCL, never through a link), written, fsynced, and the
//! spool directory fsynced, before any frame uses it. The MAC key is derived from it
//! (BLAKE3 `derive_key` with this module's context string), so the file's bytes are
//! never used directly as a key.
//!
//! Invariants:
//! - The key is never logged, never part of an event, an error or a `Debug` output, and
//!   never served (no API reads this file).
//! - Loading never fails the start because of the file: a missing file is created; a
//!   file that is not a regular file, or is damaged, is moved to `corrupt/` by the caller
//!   (never deleted) and a new key is created. Frames written under the old key then
//!   only count through the chain of lengths (a record found by searching goes to
//!   `hold/`). Only an I/O error of the system (the file cannot be created or synced)
//!   is an error.
//!
//! Trust: the file is read with `open_regular` (no link, no FIFO, regular files only),
//! bounded to its fixed length, and checked (length, magic, CRC).

use std::io::{Read, Write};
use std::path::Path;

use super::sys;

/// Name of the key file in the spool directory.
pub(crate) const KEY_FILE: &str = "spool.key";
/// Magic at the start of the key file.
const KEY_MAGIC: [u8; 8] = *b"TERNKEY1";
/// Bytes of key material.
const KEY_LEN: usize = 32;
/// Length of the whole file.
const FILE_LEN: usize = KEY_MAGIC.len() + KEY_LEN + 4;
/// BLAKE3 context string for the segment frame MAC key (domain separation).
const MAC_CONTEXT: &str = "tern spool 2026 segment frame MAC v2";
/// Bytes of MAC kept in a frame.
pub(crate) const MAC_LEN: usize = 16;
/// BLAKE3 context string for the key of delivery-record frames (`format::frame`),
/// derived from the segment MAC key so the two kinds of frame never share a key.
const RECORD_CONTEXT: &str = "tern spool 2026 record frame MAC v1";

/// The key that authenticates segment frames. Its `Debug` output hides the key.
#[derive(Clone)]
pub(crate) struct SpoolKey {
    mac_key: [u8; 32],
}

impl std::fmt::Debug for SpoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpoolKey(..)")
    }
}

impl SpoolKey {
    fn from_material(material: &[u8; KEY_LEN]) -> SpoolKey {
        SpoolKey {
            mac_key: blake3::derive_key(MAC_CONTEXT, material),
        }
    }

    /// A key made from fixed material (tests and the fuzz target; never a spool's key).
    pub(crate) fn for_tests(seed: u8) -> SpoolKey {
        SpoolKey::from_material(&[seed; KEY_LEN])
    }

    /// The key that authenticates delivery-record frames appended to message files
    /// (`format::frame`): derived from this one with its own context string (domain
    /// separation: a segment frame's MAC is never a record frame's).
    pub(crate) fn for_records(&self) -> SpoolKey {
        SpoolKey {
            mac_key: blake3::derive_key(RECORD_CONTEXT, &self.mac_key),
        }
    }

    /// The MAC of `parts` in order (keyed BLAKE3, first [`MAC_LEN`] bytes).
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        let mut h = blake3::Hasher::new_keyed(&self.mac_key);
        for p in parts {
            h.update(p);
        }
        let mut out = [0u8; MAC_LEN];
        h.finalize_xof().fill(&mut out);
        out
    }

    /// Whether `tag` is the MAC of `parts` (compared in constant time).
    pub(crate) fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let want = self.mac(parts);
        tag.len() == MAC_LEN && want.iter().zip(tag).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// What [`load`] found.
#[derive(Debug)]
pub(crate) enum Loaded {
    /// A valid key.
    Key(SpoolKey),
    /// No file by that name.
    Missing,
    /// Something that is not a usable key file; the text says what (for `.reason`).
    Unusable(String),
}

/// Reads `<spool>/spool.key` (see the module header). Never creates anything.
pub(crate) fn load(spool_dir: &Path) -> std::io::Result<Loaded> {
    let path = spool_dir.join(KEY_FILE);
    let (kind, _) = sys::entry_kind(&path)?;
    match kind {
        sys::EntryKind::Missing => return Ok(Loaded::Missing),
        sys::EntryKind::File => {}
        other => {
            return Ok(Loaded::Unusable(format!(
                "the key file is {}, not a regular file",
                other.describe()
            )));
        }
    }
    let f = match sys::open_regular(&path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(e) if sys::is_entry_fault(&e) => {
            return Ok(Loaded::Unusable(format!(
                "the key file cannot be read: {e}"
            )));
        }
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::with_capacity(FILE_LEN);
    let read = f.take(FILE_LEN as u64 + 1).read_to_end(&mut bytes);
    if let Err(e) = read {
        if sys::is_entry_fault(&e) {
            return Ok(Loaded::Unusable(format!(
                "the key file cannot be read: {e}"
            )));
        }
        return Err(e);
    }
    Ok(decode(&bytes).map_or_else(Loaded::Unusable, Loaded::Key))
}

fn decode(bytes: &[u8]) -> Result<SpoolKey, String> {
    if bytes.len() != FILE_LEN {
        return Err(format!(
            "the key file is {} bytes long, not {FILE_LEN}",
            bytes.len()
        ));
    }
    let (body, crc) = bytes.split_at(FILE_LEN - 4);
    if body.get(..KEY_MAGIC.len()) != Some(KEY_MAGIC.as_slice()) {
        return Err("the key file does not start with its magic".into());
    }
    let crc = crc.try_into().map(u32::from_le_bytes).unwrap_or(0);
    if crc32c::crc32c(body) != crc {
        return Err("the key file's checksum does not match".into());
    }
    let material: [u8; KEY_LEN] = body
        .get(KEY_MAGIC.len()..)
        .and_then(|m| m.try_into().ok())
        .ok_or_else(|| "the key file is malformed".to_string())?;
    Ok(SpoolKey::from_material(&material))
}

/// Creates `<spool>/spool.key` with 32 bytes from the operating system's random source:
/// exclusively, mode 0600, written and fsynced, then the spool directory fsynced. Fails
/// if anything exists by that name.
pub(crate) fn create(spool_dir: &Path) -> std::io::Result<SpoolKey> {
    let mut material = [0u8; KEY_LEN];
    getrandom::fill(&mut material).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut bytes = Vec::with_capacity(FILE_LEN);
    bytes.extend_from_slice(&KEY_MAGIC);
    bytes.extend_from_slice(&material);
    bytes.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
    let path = spool_dir.join(KEY_FILE);
    let mut f = sys::create_new(&path)?;
    let written = f.write_all(&bytes).and_then(|()| f.sync_all());
    if let Err(e) = written {
        // Never leave a partial key behind: the next start would set it aside.
        drop(f);
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    sys::sync_dir(spool_dir)?;
    Ok(SpoolKey::from_material(&material))
}

/// At open (under the lock): the spool's key, created when missing (event 3012), or
/// replaced when unusable after the old file was quarantined (events 3003, 3013); and
/// whether a file was quarantined.
pub(crate) fn open_or_create(
    spool_dir: &Path,
    events: &tern_events::EventLog,
) -> Result<(SpoolKey, bool), crate::error::SpoolError> {
    use crate::error::{CorruptReason, SpoolError};
    use tern_events::{catalog, fields};
    let path = spool_dir.join(KEY_FILE);
    let io = |op| move |e| SpoolError::io(op, spool_dir.join(KEY_FILE), e);
    match load(spool_dir).map_err(io("read"))? {
        Loaded::Key(k) => {
            // Its mode is 0600 whatever made it otherwise (an administrator's copy).
            use std::os::unix::fs::PermissionsExt;
            let f = sys::open_regular(&path, false).map_err(io("open"))?;
            let mode = f.metadata().map_err(io("stat"))?.permissions().mode();
            if mode & 0o7777 != 0o600 {
                f.set_permissions(std::fs::Permissions::from_mode(0o600))
                    .map_err(io("chmod"))?;
            }
            Ok((k, false))
        }
        Loaded::Missing => {
            let k = create(spool_dir).map_err(io("create"))?;
            events.emit(
                &catalog::SPOOL_KEY_CREATED,
                fields!("file" => path.display()),
            );
            Ok((k, false))
        }
        Loaded::Unusable(why) => {
            let reason = CorruptReason::BadKey(why.clone());
            let moved = super::quarantine::move_to_corrupt(
                spool_dir,
                events,
                super::Area::Root,
                KEY_FILE.as_ref(),
                &reason,
                &super::quarantine::Extra::default(),
            )?;
            let k = create(spool_dir).map_err(io("create"))?;
            events.emit(
                &catalog::SPOOL_KEY_REPLACED,
                fields!("file" => path.display(), "reason" => why),
            );
            Ok((k, moved.is_some()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_loads_back_and_damage_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(load(dir.path()), Ok(Loaded::Missing)));
        let key = create(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let Ok(Loaded::Key(again)) = load(dir.path()) else {
            panic!("the key loads back");
        };
        assert_eq!(key.mac(&[b"x"]), again.mac(&[b"x"]));
        assert!(create(dir.path()).is_err(), "never replaces a key");
        let path = dir.path().join(KEY_FILE);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o600));
        let mut bytes = std::fs::read(&path).unwrap_or_default();
        bytes[12] ^= 1;
        std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(load(dir.path()), Ok(Loaded::Unusable(_))));
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(load(dir.path()), Ok(Loaded::Unusable(_))));
        std::fs::remove_dir(&path).unwrap_or_else(|e| panic!("{e}"));
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            matches!(load(dir.path()), Ok(Loaded::Unusable(_))),
            "a FIFO is refused without blocking"
        );
    }

    #[test]
    fn macs_depend_on_every_byte_and_on_the_key() {
        let k = SpoolKey::for_tests(1);
        let tag = k.mac(&[b"frame", b"blob"]);
        assert!(k.verify(&[b"frame", b"blob"], &tag));
        assert!(!k.verify(&[b"frame", b"blub"], &tag));
        assert!(!SpoolKey::for_tests(2).verify(&[b"frame", b"blob"], &tag));
        assert_eq!(format!("{k:?}"), "SpoolKey(..)");
    }
}
