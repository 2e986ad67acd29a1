//! The export endpoints. The period comes from the path and is checked before any
//! database work (a bad one is `400` with a JSON reason); the body is the report's
//! chunk stream. The response starts only once the first chunk (or an error) is
//! there, so a database that is down is a clean `503`, not a `200` with a cut body.
//! A failure after that aborts the transfer: a truncated download must not look
//! like a complete file.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono_tz::Tz;
use futures::StreamExt;
use shared::events::Period;
use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc};

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
    #[error("{0}")]
    BadPeriod(String),
    #[error("the database is not reachable now")]
    Unavailable,
    #[error("too many exports are being streamed; try again shortly")]
    Busy,
    #[error("the account registry (validator.registry_meters) is not available")]
    RegistryMissing,
    #[error("the export failed")]
    Internal,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match self {
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
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
        }
        resp
    }
}

impl From<ExportError> for ApiError {
    fn from(e: ExportError) -> Self {
        match &e {
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
    State(state): State<ExportState>,
    file: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let period = period_of_file(&segment(file)?)?;
    stream(state, Report::Readings, period).await
}

async fn missing_csv(
    State(state): State<ExportState>,
    period: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let period = parse_period(&segment(period)?)?;
    stream(state, Report::Missing, period).await
}

async fn stream(state: ExportState, report: Report, period: Period) -> Result<Response, ApiError> {
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
    let zone = state.zone;
    // The producer owns its connection and its slot; it stops when the client goes
    // away (the channel closes). A connection left in the middle of a result set is
    // closed rather than returned to the pool to drain the rest.
    tokio::spawn(async move {
        let _slot = slot;
        let mut conn = conn;
        match super::produce(&mut conn, report, period, zone, tx.clone()).await {
            Ok(_) => {}
            Err(ExportError::ReaderGone) => conn.close_on_drop(),
            Err(e) => {
                conn.close_on_drop();
                tracing::error!(error = %e, report = report.name(), %period, "export stream failed");
                let _ = tx.send(Err(e)).await;
            }
        }
    });
    let first = match rx.recv().await {
        Some(Ok(bytes)) => bytes,
        Some(Err(e)) => return Err(e.into()),
        None => return Err(ApiError::Internal),
    };
    let rest =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
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
