//! Tern's admin listener: the HTTP API, the web queue viewer, `/metrics` and the health
//! endpoints (docs/ADMIN.md).
//!
//! Shape: one axum router ([`router`]) over one shared [`AdminState`]. The state holds
//! handles only (the spool, the queue's command channel, the event log, the watchdog, the
//! binary's [`Control`]); no handler holds a lock across an `.await`, and the API never
//! changes the spool except through the `Spool` methods and queue commands the rest of
//! Tern uses, so an administrator's action is subject to the same invariants as the
//! queue's own moves.
//!
//! Security: the listener binds 127.0.0.1:8025 by default (and optionally a Unix socket,
//! mode 0600). Every path under `/api/` and `/metrics` needs `Authorization: Bearer
//! <token>` ([`auth`]); without it the answer is 401. `/healthz` and `/readyz` answer
//! without a token (a supervisor's probe has none) and reveal nothing but the state.
//! The viewer's static files need no token either; the page asks for the token and sends
//! it with every API call.
//!
//! Bounds: request bodies are limited to [`MAX_BODY`]; list endpoints page with a
//! limit of at most [`MAX_PAGE`] entries.

#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod cluster;
mod config;
pub mod control;
pub mod dest;
mod error;
mod health;
mod metrics;
pub mod overview;
pub mod queue;
pub mod reports;
mod server;
pub mod spool;
pub mod state;
pub mod summary;
pub mod track;
mod viewer;

pub use config::AdminConfig;
pub use error::{AdminError, ApiError};
pub use server::{AdminServer, router};
pub use state::{
    AdminState, AdoptRun, Control, ControlError, ControlFuture, DmarcRun, NextHopOf, TlsRun,
};

/// Largest request body the API reads, octets.
pub const MAX_BODY: usize = 1024 * 1024;
/// Largest page a list endpoint returns.
pub const MAX_PAGE: usize = 1000;
