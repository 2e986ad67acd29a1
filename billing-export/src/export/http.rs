//! The export endpoints. They hold every account's readings (SPEC §4.5), so each
//! request first needs a bearer token of `EXPORT_TOKEN` (`401` without one, `503`
//! while the setting is missing), and each download is logged with its period, row
//! count and the token's fingerprint (never the token). The period comes from the
//! path and is checked before any database work (a bad one is `400` with a JSON
//! reason); the body is the report's chunk stream. The response starts only once
//! the first chunk (or an error) is there, so a database that is down is a clean
//! `503`, not a `200` with a cut body. A failure after that — the export running
//! past `EXPORT_TIMEOUT_SECONDS` included — aborts the transfer: a truncated
//! download must not look like a complete file.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono_tz::Tz;
use futures::StreamExt;
use shared::events::Period;
use shared::token::{self, Tokens};
use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{CHUNKS_IN_FLIGHT, Chunk, ExportError, Report};
use crate::metrics::BillingMetrics;

#[derive(Clone)]
pub struct ExportState {
    pub pool: PgPool,
    pub zone: Tz,
    pub metrics: BillingMetrics,
    /// Exports streaming at once. Each holds a database connection for as long as
    /// the client reads; the limit keeps connections free for the consumer.
    pub slots: Arc<Semaphore>,
    /// The tokens that may download (`EXPORT_TOKEN`); `None`: not configured, so
    /// every export is `503`.
    pub tokens: Option<Arc<Tokens>>,
    /// Longest one export may take, query and transfer together.
    pub timeout: Duration,
}

/// How long a request waits for a free export slot before `503`.
const SLOT_WAIT: Duration = Duration::from_secs(5);

pub fn router(state: ExportState) -> Router {
    Router::new()
        .route("/v1/exports/{file}", get(readings_csv))
        .route("/v1/exports/{period}/missing.csv", get(missing_csv))
        .with_state(state)
}

#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error(
        "EXPORT_TOKEN is not set: the exports hold personal data and are served only \
         with one of its bearer tokens"
    )]
    NotConfigured,
    #[error("a bearer token of EXPORT_TOKEN is required (Authorization: Bearer …)")]
    Unauthorized,
    #[error("{0}")]
    BadPeriod(String),
    #[error("the database is not reachable now")]
    Unavailable,
    #[error("too many exports are being streamed; try again shortly")]
    Busy,
    #[error("the account registry (validator.registry_meters) is not available")]
    RegistryMissing,
    #[error(
        "the export took longer than EXPORT_TIMEOUT_SECONDS ({0} s); try again when the database is less busy"
    )]
    TimedOut(u64),
    #[error("the export failed")]
    Internal,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match self {
            ApiError::NotConfigured => (StatusCode::SERVICE_UNAVAILABLE, "not_configured"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::TimedOut(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            ApiError::BadPeriod(_) => (StatusCode::BAD_REQUEST, "bad_period"),
            ApiError::Unavailable | ApiError::RegistryMissing | ApiError::Busy => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        // The message is ours, never the database's text.
        let mut resp = (
            status,
            Json(serde_json::json!({"error": code, "message": self.to_string()})),
        )
            .into_response();
        match self {
            // Waiting does not set a missing setting: no Retry-After.
            ApiError::NotConfigured => {}
            ApiError::Unauthorized => {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
            }
            _ => {}
        }
        resp
    }
}

impl From<ExportError> for ApiError {
    fn from(e: ExportError) -> Self {
        match &e {
            ExportError::TimedOut(limit) => ApiError::TimedOut(limit.as_secs()),
            ExportError::Database(db)
                if db.as_database_error().and_then(|d| d.code()).as_deref() == Some("42P01") =>
            {
                tracing::error!(error = %e, "registry view missing: has the validator migrated?");
                ApiError::RegistryMissing
            }
            ExportError::Database(db) if shared::db::is_connection_problem(db) => {
                tracing::warn!(error = %e, "export: database not reachable");
                ApiError::Unavailable
            }
            _ => {
                tracing::error!(error = %e, "export failed");
                ApiError::Internal
            }
        }
    }
}

/// Who downloads: the fingerprint of the `EXPORT_TOKEN` token presented. Extracted
/// before anything else, so a request without a token learns nothing, not even
/// whether its period is well-formed.
struct Downloader {
    token: String,
}

impl FromRequestParts<ExportState> for Downloader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ExportState,
    ) -> Result<Self, Self::Rejection> {
        let tokens = state.tokens.as_deref().ok_or(ApiError::NotConfigured)?;
        match token::bearer(&parts.headers).and_then(|t| tokens.verify(t)) {
            Some(token) => Ok(Downloader { token }),
            None => {
                tracing::info!(
                    path = parts.uri.path(),
                    "export refused: no valid EXPORT_TOKEN bearer"
                );
                Err(ApiError::Unauthorized)
            }
        }
    }
}

/// `{YYYY-MM}.csv` → the period.
fn period_of_file(file: &str) -> Result<Period, ApiError> {
    let stem = file
        .strip_suffix(".csv")
        .ok_or_else(|| ApiError::BadPeriod("expected /v1/exports/YYYY-MM.csv".into()))?;
    parse_period(stem)
}

fn parse_period(s: &str) -> Result<Period, ApiError> {
    s.parse()
        .map_err(|e: shared::events::PeriodError| ApiError::BadPeriod(e.to_string()))
}

/// A path segment that is not even text (invalid UTF-8 after percent-decoding) is a
/// bad period like any other: `400` with the JSON reason, not axum's plain-text one.
fn segment(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(s)| s)
        .map_err(|r| ApiError::BadPeriod(r.body_text()))
}

async fn readings_csv(
    who: Downloader,
    State(state): State<ExportState>,
    file: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let period = period_of_file(&segment(file)?)?;
    stream(state, Report::Readings, period, who).await
}

async fn missing_csv(
    who: Downloader,
    State(state): State<ExportState>,
    period: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let period = parse_period(&segment(period)?)?;
    stream(state, Report::Missing, period, who).await
}

async fn stream(
    state: ExportState,
    report: Report,
    period: Period,
    who: Downloader,
) -> Result<Response, ApiError> {
    let slot = tokio::time::timeout(SLOT_WAIT, state.slots.clone().acquire_owned())
        .await
        .map_err(|_| ApiError::Busy)?
        .map_err(|_| ApiError::Busy)?;
    let conn = state
        .pool
        .acquire()
        .await
        .map_err(|e| ApiError::from(ExportError::Database(e)))?;
    let (tx, mut rx) = mpsc::channel::<Chunk>(CHUNKS_IN_FLIGHT);
    // How the producer ended: the body ends cleanly only on `Ok`.
    let (ended_tx, ended) = oneshot::channel::<Result<u64, ExportError>>();
    let zone = state.zone;
    let limit = state.timeout;
    // The producer owns its connection and its slot; it stops when the client goes
    // away (the channel closes) or the time is up. A connection left in the middle
    // of a result set is closed rather than returned to the pool to drain the rest.
    tokio::spawn(async move {
        let _slot = slot;
        let mut conn = conn;
        let produced = produce_within(&mut conn, report, period, zone, tx, limit).await;
        let name = report.name();
        match &produced {
            Ok(rows) => {
                tracing::info!(report = name, %period, rows, token = %who.token, "export downloaded");
                // The connection goes back to the pool, which the consumer shares:
                // without the export's statement_timeout, or not at all.
                let reset = sqlx::query("RESET statement_timeout")
                    .execute(&mut *conn)
                    .await;
                if reset.is_err() {
                    conn.close_on_drop();
                }
            }
            Err(ExportError::ReaderGone) => {
                conn.close_on_drop();
                tracing::info!(report = name, %period, token = %who.token, "export abandoned by the client");
            }
            Err(e) => {
                conn.close_on_drop();
                tracing::error!(error = %e, report = name, %period, token = %who.token, "export stream failed");
            }
        }
        let _ = ended_tx.send(produced);
    });
    let first = match rx.recv().await {
        Some(Ok(bytes)) => bytes,
        Some(Err(e)) => return Err(e.into()),
        // No chunk at all (a complete report has at least its header): how it ended.
        None => {
            return Err(match ended.await {
                Ok(Err(e)) => e.into(),
                _ => ApiError::Internal,
            });
        }
    };
    let rest = futures::stream::unfold(Some((rx, ended)), |open| async move {
        let (mut rx, ended) = open?;
        match rx.recv().await {
            Some(chunk) => Some((chunk, Some((rx, ended)))),
            None => match ended.await {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some((Err(e), None)),
                Err(_) => Some((Err(ExportError::Data("the export stopped".into())), None)),
            },
        }
    });
    let body =
        Body::from_stream(futures::stream::once(async { Ok::<_, ExportError>(first) }).chain(rest));
    state.metrics.export_served(report.name());
    let disposition = format!("attachment; filename=\"{}\"", report.file_name(period));
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// [`super::produce`] within `limit`: PostgreSQL's `statement_timeout` cancels a
/// statement that runs (or waits for a lock) too long, and the same limit over the
/// whole transfer ends one whose client reads too slowly.
async fn produce_within(
    conn: &mut sqlx::PgConnection,
    report: Report,
    period: Period,
    zone: Tz,
    out: mpsc::Sender<Chunk>,
    limit: Duration,
) -> Result<u64, ExportError> {
    let millis = limit.as_millis().to_string();
    sqlx::query("SELECT set_config('statement_timeout', $1, false)")
        .bind(millis)
        .execute(&mut *conn)
        .await?;
    match tokio::time::timeout(limit, super::produce(conn, report, period, zone, out)).await {
        Ok(Err(ExportError::Database(e)))
            if e.as_database_error().and_then(|d| d.code()).as_deref() == Some(QUERY_CANCELED) =>
        {
            Err(ExportError::TimedOut(limit))
        }
        Ok(produced) => produced,
        Err(_) => Err(ExportError::TimedOut(limit)),
    }
}

/// SQLSTATE `query_canceled`: what `statement_timeout` raises.
const QUERY_CANCELED: &str = "57014";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_parse_to_periods() {
        assert_eq!(
            period_of_file("2026-11.csv")
                .map(|p| p.to_string())
                .ok()
                .as_deref(),
            Some("2026-11")
        );
        for bad in [
            "2026-11",
            "2026-13.csv",
            "2026-1.csv",
            "26-11.csv",
            "2026-11.CSV",
            "x.csv",
            ".csv",
            "2026-11.csv.csv",
        ] {
            assert!(period_of_file(bad).is_err(), "{bad}");
        }
    }
}
