//! The bearer token: where it comes from, and the check every API request passes.
//!
//! The token is `admin.token` in the configuration, or else the content of
//! `<data_dir>/admin.token`. That file is generated at the first start (32 random octets
//! as hex, mode 0600, written under a temporary name, fsynced, then renamed), so a fresh
//! install is never open, and the CLI, running as the same user, reads it with no flags.
//!
//! The comparison takes the same time whatever the first differing octet is.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
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

/// Reads the token from `<data_dir>/admin.token`; `None` when the file is missing.
pub fn read_token(data_dir: &Path) -> Result<Option<String>, AdminError> {
    let path = token_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let t = s.trim();
            if t.is_empty() || t.len() > MAX_TOKEN {
                return Err(AdminError::Token {
                    path,
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("the token must be 1 to {MAX_TOKEN} characters"),
                    ),
                });
            }
            Ok(Some(t.to_owned()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AdminError::Token { path, source }),
    }
}

/// The configured token, or the token file's, generating the file when it is missing.
pub fn load_or_create(configured: &str, data_dir: &Path) -> Result<String, AdminError> {
    if !configured.is_empty() {
        return Ok(configured.to_owned());
    }
    if let Some(t) = read_token(data_dir)? {
        return Ok(t);
    }
    let token = generate();
    let path = token_path(data_dir);
    let tmp = data_dir.join(format!(".{TOKEN_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
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
    Ok(token)
}

/// 32 random octets as 64 hex digits.
fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
        let first = load_or_create("", dir.path()).expect("generated");
        assert_eq!(first.len(), 64);
        let mode = std::fs::metadata(token_path(dir.path()))
            .expect("token file")
            .permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
        let second = load_or_create("", dir.path()).expect("read");
        assert_eq!(first, second);
        assert_eq!(
            load_or_create("configured", dir.path()).expect("configured"),
            "configured"
        );
    }

    #[test]
    fn empty_token_file_is_an_error_not_an_open_door() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(token_path(dir.path()), "\n").expect("write");
        assert!(load_or_create("", dir.path()).is_err());
    }
}
