//! Errors of the admin listener: [`AdminError`] when it starts, [`ApiError`] as the JSON
//! answer of a request.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Why the admin listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The TCP address could not be bound.
    #[error("binding the admin listener {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// The system's error.
        source: std::io::Error,
    },
    /// The Unix socket could not be created.
    #[error("creating the admin socket {path}: {source}")]
    Socket {
        /// The configured path.
        path: std::path::PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// The token file could not be read or written.
    #[error("admin token {path}: {source}")]
    Token {
        /// `<data_dir>/admin.token`.
        path: std::path::PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// Neither a TCP address nor a Unix socket is configured.
    #[error("admin listener enabled with neither admin.listen nor admin.unix_socket")]
    NoAddress,
}

/// A request's failure, answered as `{"error": {"code": ..., "message": ...}}` with the
/// matching HTTP status. `code` is stable (scripts may match on it); `message` is for
/// people.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: no or wrong bearer token.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// 400: a parameter or body that does not parse or is out of range.
    #[error("{0}")]
    BadRequest(String),
    /// 404: no such message, destination or path.
    #[error("{0}")]
    NotFound(String),
    /// 409: the action does not apply in the object's current state.
    #[error("{0}")]
    Conflict(String),
    /// 503: the part of Tern the request needs is not running (e.g. delivery is off).
    #[error("{0}")]
    Unavailable(String),
    /// 500: a spool or system error.
    #[error("{0}")]
    Internal(String),
    /// 502 (`bad_gateway`): another node, reached through the cluster proxy, did not
    /// answer, could not prove it knows the token, or answered too much.
    #[error("{0}")]
    BadGateway(String),
    /// 400 (`bad_request`): a configuration file was refused; its problems, one per
    /// entry, are also in the body as `error.problems`.
    #[error("the configuration was refused: {}", .0.join("; "))]
    Refused(Vec<String>),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) | ApiError::Refused(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::BadRequest(_) | ApiError::Refused(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
            ApiError::BadGateway(_) => "bad_gateway",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({
            "error": { "code": self.code(), "message": self.to_string() }
        });
        if let ApiError::Refused(problems) = &self {
            body["error"]["problems"] = serde_json::json!(problems);
        }
        let mut resp = (self.status(), Json(body)).into_response();
        if matches!(self, ApiError::Unauthorized) {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"tern\""),
            );
        }
        resp
    }
}
