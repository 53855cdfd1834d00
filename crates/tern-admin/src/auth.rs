//! The bearer token: where it comes from, and the check every API request passes.
//!
//! The token is `admin.token` in the configuration, or else the content of
//! `<data_dir>/admin.token`. That file is generated at the first start (32 random octets
//! as hex, mode 0600, written under a temporary name, fsynced, then renamed), so a fresh
//! install is never open, and the CLI, running as the same user, reads it with no flags.
//! The file is never read through a link; one owned by another user is refused, one with a
//! looser mode is tightened to 0600 (event 7025).
//!
//! Before the CLI sends the token it makes the server prove it knows it
//! ([`proof`], `GET /api/v1/proof`), so the token never goes to a listener that is not
//! Tern's.
//!
//! The comparison takes the same time whatever the first differing octet is.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::{AdminError, ApiError};
use crate::state::AdminState;

/// Name of the token file in the data directory.
pub const TOKEN_FILE: &str = "admin.token";
/// Longest token accepted from a file or a header, octets.
const MAX_TOKEN: usize = 256;

/// The path of the token file for `data_dir`.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE)
}

/// What the server found when it loaded the token file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFile {
    /// The token comes from the configuration; the file is not used.
    Configured,
    /// Generated now (mode 0600).
    Generated,
    /// Read; its mode was already 0600.
    Private,
    /// Read; its mode was looser (the old mode given) and is 0600 now (event 7025).
    Tightened(u32),
}

fn token_error(path: &Path, kind: std::io::ErrorKind, message: String) -> AdminError {
    AdminError::Token {
        path: path.to_path_buf(),
        source: std::io::Error::new(kind, message),
    }
}

/// Opens the token file without following a link or blocking on a FIFO; it must be a
/// regular file.
fn open_token(path: &Path) -> std::io::Result<Option<(std::fs::File, std::fs::Metadata)>> {
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a symbolic link stands in place of the token file",
            ));
        }
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the token file is not a regular file",
        ));
    }
    Ok(Some((f, meta)))
}

/// Reads the token from `<data_dir>/admin.token`; `None` when the file is missing. A
/// link, a FIFO or anything but a regular file is an error, never followed.
pub fn read_token(data_dir: &Path) -> Result<Option<String>, AdminError> {
    Ok(read_token_file(data_dir)?.map(|(t, _)| t))
}

fn read_token_file(data_dir: &Path) -> Result<Option<(String, std::fs::Metadata)>, AdminError> {
    let path = token_path(data_dir);
    let err = |source| AdminError::Token {
        path: path.clone(),
        source,
    };
    let Some((f, meta)) = open_token(&path).map_err(err)? else {
        return Ok(None);
    };
    let mut text = String::new();
    f.take(MAX_TOKEN as u64 + 2)
        .read_to_string(&mut text)
        .map_err(err)?;
    let t = text.trim();
    if t.is_empty() || t.len() > MAX_TOKEN {
        return Err(token_error(
            &path,
            std::io::ErrorKind::InvalidData,
            format!("the token must be 1 to {MAX_TOKEN} characters"),
        ));
    }
    Ok(Some((t.to_owned(), meta)))
}

/// The configured token, or the token file's, generating the file when it is missing.
///
/// The file must be owned by the user Tern runs as: a token file someone else owns is a
/// token someone else knows, and starting with it is refused. A looser mode than 0600
/// (an older Tern, or a copy made under a umask of 022) is tightened to 0600 and reported
/// as [`TokenFile::Tightened`], for the caller's warning event.
pub fn load_or_create(
    configured: &str,
    data_dir: &Path,
) -> Result<(String, TokenFile), AdminError> {
    if !configured.is_empty() {
        return Ok((configured.to_owned(), TokenFile::Configured));
    }
    let path = token_path(data_dir);
    if let Some((t, meta)) = read_token_file(data_dir)? {
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Err(token_error(
                &path,
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "owned by uid {}, not by the user Tern runs as (uid {me}): whoever owns it \
                     knows the token; remove it to have a new one generated",
                    meta.uid()
                ),
            ));
        }
        let mode = meta.mode() & 0o7777;
        if mode == 0o600 {
            return Ok((t, TokenFile::Private));
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| AdminError::Token {
                path: path.clone(),
                source,
            },
        )?;
        return Ok((t, TokenFile::Tightened(mode)));
    }
    let token = generate();
    let tmp = data_dir.join(format!(".{TOKEN_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        // A leftover temporary file of a crashed start goes first; then the new one is
        // created exclusively (never through a link), mode 0600 whatever the umask.
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(token.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(data_dir)?.sync_all()
    };
    write().map_err(|source| AdminError::Token {
        path: path.clone(),
        source,
    })?;
    Ok((token, TokenFile::Generated))
}

/// The server's answer to a proof challenge: HMAC-SHA256 keyed with the token over a
/// fixed label and the client's nonce, in hex. The CLI sends its token only to a server
/// whose answer matches (`GET /api/v1/proof`): a listener that does not know the token
/// (another user's program on the port after Tern stopped) cannot answer, and the answer
/// says nothing about the token (HMAC is a pseudo-random function of it).
pub fn proof(token: &str, nonce: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token.as_bytes());
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(PROOF_LABEL);
    ctx.update(nonce.as_bytes());
    hex(ctx.sign().as_ref())
}

/// Domain separation for [`proof`]: the HMAC of the token is used for nothing else.
const PROOF_LABEL: &[u8] = b"tern admin proof v1\0";
/// A proof nonce: exactly this many lowercase hex digits.
pub const NONCE_HEX: usize = 64;

/// Whether `nonce` is a well-formed proof nonce (64 lowercase hex digits).
pub fn valid_nonce(nonce: &str) -> bool {
    nonce.len() == NONCE_HEX
        && nonce
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A new random nonce for [`proof`].
pub fn new_nonce() -> String {
    let bytes: [u8; 32] = rand::random();
    hex(&bytes)
}

/// Whether `answer` is the proof of `token` for `nonce` (compared in constant time).
pub fn verify_proof(token: &str, nonce: &str, answer: &str) -> bool {
    same(proof(token, nonce).as_bytes(), answer.trim().as_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 random octets as 64 hex digits.
fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    hex(&bytes)
}

/// Compares in time that depends only on the lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `header` (the `Authorization` value) carries `token`.
pub fn authorized(header: Option<&[u8]>, token: &str) -> bool {
    let Some(h) = header else { return false };
    if h.len() > MAX_TOKEN + 16 {
        return false;
    }
    let Some(given) = h.strip_prefix(b"Bearer ") else {
        return false;
    };
    same(given.trim_ascii(), token.as_bytes())
}

/// Middleware: 401 unless the request carries the token.
pub async fn require_token(
    State(state): State<Arc<AdminState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if !authorized(header, &state.token) {
        return Err(ApiError::Unauthorized);
    }
    Ok(next.run(request).await)
}

/// `GET /proof?nonce=<64 hex digits>`: `{"proof": "<hex>"}` (see [`proof`]). No token
/// needed: it is how a client checks the server before sending one.
pub async fn prove(
    State(state): State<Arc<AdminState>>,
    axum::extract::Query(q): axum::extract::Query<ProofQuery>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    if !valid_nonce(&q.nonce) {
        return Err(ApiError::BadRequest(format!(
            "nonce must be {NONCE_HEX} lowercase hex digits"
        )));
    }
    Ok(axum::Json(
        serde_json::json!({ "proof": proof(&state.token, &q.nonce) }),
    ))
}

/// The query of [`prove`].
#[derive(Debug, serde::Deserialize)]
pub struct ProofQuery {
    /// The client's nonce.
    nonce: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_must_carry_the_exact_token() {
        assert!(authorized(Some(b"Bearer abc"), "abc"));
        assert!(authorized(Some(b"Bearer abc "), "abc"));
        assert!(!authorized(Some(b"Bearer abd"), "abc"));
        assert!(!authorized(Some(b"Bearer ab"), "abc"));
        assert!(!authorized(Some(b"bearer abc"), "abc"));
        assert!(!authorized(Some(b"Basic abc"), "abc"));
        assert!(!authorized(Some(b"abc"), "abc"));
        assert!(!authorized(None, "abc"));
    }

    #[test]
    fn token_file_is_generated_once_private_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, how) = load_or_create("", dir.path()).expect("generated");
        assert_eq!(how, TokenFile::Generated);
        assert_eq!(first.len(), 64);
        let mode = std::fs::metadata(token_path(dir.path()))
            .expect("token file")
            .permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
        let second = load_or_create("", dir.path()).expect("read");
        assert_eq!(second, (first, TokenFile::Private));
        assert_eq!(
            load_or_create("configured", dir.path()).expect("configured"),
            ("configured".to_owned(), TokenFile::Configured)
        );
    }

    #[test]
    fn empty_token_file_is_an_error_not_an_open_door() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(token_path(dir.path()), "\n").expect("write");
        assert!(load_or_create("", dir.path()).is_err());
    }

    #[test]
    fn a_loose_token_file_is_tightened_and_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = token_path(dir.path());
        std::fs::write(&path, "abc\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let (t, how) = load_or_create("", dir.path()).expect("loaded");
        assert_eq!((t.as_str(), how), ("abc", TokenFile::Tightened(0o644)));
        let mode = std::fs::metadata(&path).expect("meta").mode() & 0o7777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_token_file_of_another_user_or_a_link_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = token_path(dir.path());
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "abc\n").expect("write");
        std::os::unix::fs::symlink(&elsewhere, &path).expect("link");
        let e = load_or_create("", dir.path()).expect_err("link refused");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(read_token(dir.path()).is_err());
        std::fs::remove_file(&path).expect("unlink");
        if rustix::process::geteuid().is_root() {
            std::fs::write(&path, "abc\n").expect("write");
            std::os::unix::fs::chown(&path, Some(65534), None).expect("chown");
            let e = load_or_create("", dir.path()).expect_err("foreign owner refused");
            assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        }
    }

    #[test]
    fn proof_verifies_only_with_the_token_and_the_nonce() {
        let nonce = new_nonce();
        assert!(valid_nonce(&nonce));
        let p = proof("secret", &nonce);
        assert!(verify_proof("secret", &nonce, &p));
        assert!(!verify_proof("other", &nonce, &p));
        assert!(!verify_proof("secret", &new_nonce(), &p));
        assert!(!p.contains("secret"));
        assert!(!valid_nonce("ABC"));
        assert!(!valid_nonce(&"g".repeat(64)));
    }
}
