//! The admin listener of a running server: it writes its address and a private token
//! into the data directory, answers the health endpoints without a token, refuses every
//! API path without the right one (401 with `WWW-Authenticate`), and serves an OpenAPI
//! document that lists its endpoints.

use crate::common::Setup;
use crate::common::admin::Admin;

#[test]
fn admin_api_auth_health_and_openapi() {
    let tern = Setup::new().start();
    let admin = Admin::of(&tern);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(tern.data_dir.join("admin.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the token file is private");

    let health = admin.get_with_auth("/healthz", None);
    assert_eq!(health.status, 200, "{health:?}");
    let ready = admin.get_with_auth("/readyz", None);
    assert_eq!(ready.status, 200, "{ready:?}");
    let r = ready.json();
    assert_eq!(r["ready"], true);
    assert_eq!(r["listeners_up"], true);
    assert_eq!(r["spool_writable"], true);

    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic dXNlcjpwYXNz"),
        Some("Bearer"),
    ] {
        for path in ["/api/v1/status", "/api/v1/openapi.json", "/api/v1/nothing"] {
            let a = admin.get_with_auth(path, auth);
            assert_eq!(a.status, 401, "{path} with {auth:?}: {a:?}");
            assert_eq!(a.json()["error"]["code"], "unauthorized");
        }
    }

    let status = admin.get("/api/v1/status");
    assert_eq!(status.status, 200, "{status:?}");
    let s = status.json();
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["listeners_up"], true);

    let missing = admin.get("/api/v1/nothing");
    assert_eq!(missing.status, 404, "{missing:?}");
    assert_eq!(missing.json()["error"]["code"], "not_found");

    let doc = admin.get("/api/v1/openapi.json").json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    assert!(doc["paths"]["/api/v1/status"]["get"].is_object(), "{doc}");
    assert!(
        doc["components"]["securitySchemes"]["bearer"].is_object(),
        "{doc}"
    );

    let page = admin.get_with_auth("/", None);
    assert_eq!(page.status, 200);
    assert!(
        page.content_type
            .unwrap_or_default()
            .starts_with("text/html")
    );
}

/// One HTTP/1.1 request over a Unix socket, the answer as text (the connection is closed
/// by the server after it: `Connection: close`).
fn unix_request(path: &std::path::Path, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn admin_api_on_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    let tern = Setup::new()
        .admin(&format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\nunix_socket = {:?}\n",
            sock.display().to_string()
        ))
        .start();
    let admin = Admin::of(&tern);
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let meta = std::fs::metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "the socket is private"
    );

    let health = unix_request(
        &sock,
        "GET /healthz HTTP/1.1\r\nHost: tern\r\nConnection: close\r\n\r\n",
    );
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let refused = unix_request(
        &sock,
        "GET /api/v1/status HTTP/1.1\r\nHost: tern\r\nConnection: close\r\n\r\n",
    );
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let status = unix_request(
        &sock,
        &format!(
            "GET /api/v1/status HTTP/1.1\r\nHost: tern\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            admin.token
        ),
    );
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(status.contains("\"listeners_up\":true"), "{status}");
}
