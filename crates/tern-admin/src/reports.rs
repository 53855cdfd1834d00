//! DMARC aggregate reports over the API: `POST /dmarc-reports/send` closes the open
//! report period and queues every report due now, instead of waiting for the end of the
//! UTC day (docs/REPORTS.md, `tern dmarc-reports send`). It goes through the binary's
//! [`crate::Control`], which owns the report task; the run answers when every report is
//! queued (bounded by the DNS checks' own timeouts). `POST /tls-reports/send` does the
//! same for the SMTP TLS reports (RFC 8460; docs/TLS.md, `tern tls-reports send`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::ErrorBody;
use crate::error::ApiError;
use crate::state::{AdminState, ControlError, DmarcRun, TlsRun};

/// The report endpoints.
pub fn routes() -> OpenApiRouter<Arc<AdminState>> {
    OpenApiRouter::new()
        .routes(routes!(send))
        .routes(routes!(send_tls))
}

/// Sends the DMARC aggregate reports now: the open period ends at this second (the next
/// one begins there, so nothing is reported twice), and a report per policy domain is
/// queued to each authorised `mailto:` address. 409 when the reports are off.
#[utoipa::path(
    post,
    path = "/dmarc-reports/send",
    tag = "server",
    responses(
        (status = 200, description = "The run ended", body = DmarcRun),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 409, description = "DMARC aggregate reports are off", body = ErrorBody),
        (status = 503, description = "The report task has stopped (the server is stopping)", body = ErrorBody),
    )
)]
async fn send(State(state): State<Arc<AdminState>>) -> Result<Json<DmarcRun>, ApiError> {
    match state.control.send_dmarc_reports().await {
        Ok(run) => Ok(Json(run)),
        Err(ControlError::Refused(problems)) => Err(ApiError::Refused(problems)),
        Err(ControlError::Unavailable(m)) => Err(ApiError::Unavailable(m)),
        Err(ControlError::Off(m) | ControlError::Conflict(m)) => Err(ApiError::Conflict(m)),
    }
}

/// Sends the SMTP TLS reports now (RFC 8460): the open period ends at this second (the
/// next one begins there), and a report per policy domain goes to each address of the
/// domain's `_smtp._tls` record (`mailto:` queued, `https:` POSTed). 409 when sending is
/// off.
#[utoipa::path(
    post,
    path = "/tls-reports/send",
    tag = "server",
    responses(
        (status = 200, description = "The run ended", body = TlsRun),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 409, description = "TLS reports are off", body = ErrorBody),
        (status = 503, description = "The report task has stopped (the server is stopping)", body = ErrorBody),
    )
)]
async fn send_tls(State(state): State<Arc<AdminState>>) -> Result<Json<TlsRun>, ApiError> {
    match state.control.send_tls_reports().await {
        Ok(run) => Ok(Json(run)),
        Err(ControlError::Refused(problems)) => Err(ApiError::Refused(problems)),
        Err(ControlError::Unavailable(m)) => Err(ApiError::Unavailable(m)),
        Err(ControlError::Off(m) | ControlError::Conflict(m)) => Err(ApiError::Conflict(m)),
    }
}
