//! The web queue viewer: static files compiled into the binary (no build step), served
//! at the admin address without a token; the page asks for the token and sends it with
//! each API call. An unknown path under `/api/` is a JSON 401 without the token and a
//! JSON 404 with it, never the page.
//!
//! Every file is served with a strict Content-Security-Policy ([`CSP`]): scripts, styles
//! and API calls only from this origin, no inline script or style, no frames, no form
//! posts elsewhere, no plugins. The script builds the page with `textContent` only, so
//! hostile message headers and addresses cannot become markup; the policy is the second
//! wall if that ever slips.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::auth;
use crate::error::ApiError;
use crate::state::AdminState;

/// `(path, content type, content)` of every file of the viewer.
const FILES: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../web/index.html"),
    ),
    (
        "/viewer.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/viewer.js"),
    ),
    (
        "/viewer.css",
        "text/css; charset=utf-8",
        include_str!("../web/viewer.css"),
    ),
];

/// The Content-Security-Policy of every viewer file.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

pub async fn serve(State(state): State<Arc<AdminState>>, headers: HeaderMap, uri: Uri) -> Response {
    let path = uri.path();
    if path.starts_with("/api/") {
        // Without the token, every API path is 401: which endpoints exist is not told.
        let given = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
        if !auth::authorized(given, &state.token) {
            return ApiError::Unauthorized.into_response();
        }
        return ApiError::NotFound(format!("no endpoint {path}")).into_response();
    }
    let want = if path == "/index.html" { "/" } else { path };
    match FILES.iter().find(|(p, _, _)| *p == want) {
        Some((_, ctype, body)) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, *ctype),
                (header::CACHE_CONTROL, "no-cache"),
                (header::CONTENT_SECURITY_POLICY, CSP),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::X_FRAME_OPTIONS, "DENY"),
                (header::REFERRER_POLICY, "no-referrer"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_listed_once_and_the_page_loads_only_listed_files() {
        let page = FILES[0].2;
        for (path, _, _) in &FILES[1..] {
            assert!(
                page.contains(&format!("\"{path}\"")),
                "{path} not used by the page"
            );
        }
        // No external resource, no inline script or style (the CSP forbids them).
        for bad in [
            "http://", "https://", "<script>", "style=", "onclick", "<style",
        ] {
            assert!(!page.contains(bad), "index.html contains {bad:?}");
        }
        let mut paths: Vec<_> = FILES.iter().map(|f| f.0).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), FILES.len());
    }

    #[test]
    fn the_script_never_inserts_markup() {
        let js = FILES
            .iter()
            .find(|f| f.0 == "/viewer.js")
            .map(|f| f.2)
            .unwrap_or("");
        for bad in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!js.contains(bad), "viewer.js uses {bad}");
        }
    }

    #[test]
    fn the_policy_allows_nothing_from_elsewhere() {
        assert!(CSP.starts_with("default-src 'none'"));
        assert!(!CSP.contains("unsafe"));
        assert!(!CSP.contains('*'));
    }
}
