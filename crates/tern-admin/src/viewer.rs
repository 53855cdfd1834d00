//! The web queue viewer: static files compiled into the binary (no build step), served
//! at the admin address without a token; the page asks for the token and sends it with
//! each API call. An unknown path under `/api/` is a JSON 401 without the token and a
//! JSON 404 with it, never the page.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::auth;
use crate::error::ApiError;
use crate::state::AdminState;

/// `(path, content type, content)` of every file of the viewer.
const FILES: &[(&str, &str, &str)] = &[(
    "/",
    "text/html; charset=utf-8",
    include_str!("../web/index.html"),
)];

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
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}
