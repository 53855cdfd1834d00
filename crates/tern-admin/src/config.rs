//! `[admin]`: where the admin listener binds and how it authenticates (docs/CONFIG.md).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// `[admin]` in the configuration file.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct AdminConfig {
    /// Run the admin listener in `tern serve`.
    pub enabled: bool,
    /// TCP address; `None` (an empty string in the file is not accepted) only with a
    /// Unix socket. Default 127.0.0.1:8025.
    pub listen: Option<SocketAddr>,
    /// Also (or only) listen on this Unix socket, created with mode 0600.
    pub unix_socket: Option<PathBuf>,
    /// The bearer token. Empty: read `<data_dir>/admin.token`, generated at the first
    /// start when missing.
    pub token: String,
    /// Connections served at once (TCP and Unix socket each); a connection past it is
    /// answered `503` and closed.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, counted from the connection (or
    /// the end of the previous response); past it the connection is closed.
    pub header_timeout_secs: u64,
    /// Time one request may take from its headers to its answer (reading the body
    /// included); past it the answer is `503` and the connection closes.
    pub request_timeout_secs: u64,
}

impl Default for AdminConfig {
    fn default() -> AdminConfig {
        AdminConfig {
            enabled: true,
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 8025))),
            unix_socket: None,
            token: String::new(),
            max_connections: 64,
            header_timeout_secs: 10,
            request_timeout_secs: 120,
        }
    }
}
