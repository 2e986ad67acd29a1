//! The endpoints gateways report to: `GET /v1/dlr/kannel` (Kannel's `dlr-url`, signed
//! per reply), `POST /v1/dlr/jasmin` (Jasmin's `dlr-url`, signed the same way, a form
//! body) and `POST /v1/dlr` (the aggregator, with `SMS_HTTP_TOKEN`). An authentic,
//! well-formed report is answered `200` whatever it says (to Jasmin: `ACK/Jasmin`, the
//! only answer that stops its thrower); a forged one `401`; a malformed one `400`; a
//! database that cannot record it `503` (the gateway retries).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::{FormRejection, JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use super::{Outcome, SigningKeys, Status, record, reply_from_hex};

/// A report body is a few short fields (Jasmin's: a dozen, with up to 20 characters of
/// the receipt's `text`).
const MAX_BODY: usize = 4 * 1024;

/// What Jasmin's DLR thrower waits for; any other answer is thrown again.
pub const JASMIN_ACK: &str = "ACK/Jasmin";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReportLabels {
    source: &'static str,
    status: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    source: &'static str,
    reason: &'static str,
}

/// Reports taken, by source, status and what they did; and requests refused.
#[derive(Clone)]
pub struct ReportMetrics {
    reports: Family<ReportLabels, Counter>,
    refused: Family<RefusedLabels, Counter>,
}

impl ReportMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = ReportMetrics {
            reports: Family::default(),
            refused: Family::default(),
        };
        registry.register(
            "delivery_reports",
            "Delivery reports by source (kannel, jasmin, http), status (delivered, failed, progress) and outcome \
             (recorded, early, duplicate, conflicting, progress, unknown_reply)",
            m.reports.clone(),
        );
        registry.register(
            "delivery_reports_refused",
            "Report requests refused, by source and reason (unauthorized, malformed, not_configured, database)",
            m.refused.clone(),
        );
        m
    }

    fn report(&self, source: &'static str, status: Status, outcome: Outcome) {
        self.reports
            .get_or_create(&ReportLabels {
                source,
                status: status.as_str(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    fn refused(&self, source: &'static str, reason: &'static str) {
        self.refused
            .get_or_create(&RefusedLabels { source, reason })
            .inc();
    }
}

/// What the report endpoints need.
#[derive(Clone)]
pub struct ReportState {
    pub pool: PgPool,
    /// `DLR_SECRET`; without it Kannel's reports are refused (none were asked for).
    pub keys: Option<SigningKeys>,
    /// `SMS_HTTP_TOKEN`: the aggregator reports with the token we send with.
    pub aggregator_token: Option<Arc<SecretString>>,
    pub metrics: ReportMetrics,
}

pub fn router(state: ReportState) -> Router {
    Router::new()
        .route("/v1/dlr/kannel", get(kannel_report))
        .route("/v1/dlr/jasmin", post(jasmin_report))
        .route("/v1/dlr", post(aggregator_report))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Why a report request was refused.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("delivery reports from this gateway are not configured")]
    NotConfigured,
    #[error("missing or invalid credentials")]
    Unauthorized,
    #[error("{0}")]
    Malformed(String),
    #[error("cannot record the report now")]
    Database(#[source] sqlx::Error),
}

impl Refused {
    fn reason(&self) -> &'static str {
        match self {
            Refused::NotConfigured => "not_configured",
            Refused::Unauthorized => "unauthorized",
            Refused::Malformed(_) => "malformed",
            Refused::Database(_) => "database",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Refused::NotConfigured => StatusCode::NOT_FOUND,
            Refused::Unauthorized => StatusCode::UNAUTHORIZED,
            Refused::Malformed(_) => StatusCode::BAD_REQUEST,
            Refused::Database(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({"error": self.reason(), "message": self.to_string()}));
        let mut response = (self.status(), body).into_response();
        if matches!(self, Refused::Database(_)) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

/// `GET /v1/dlr/kannel?reply=<hex>&sig=<hex>&status=<code>`.
async fn kannel_report(
    State(state): State<ReportState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    const SOURCE: &str = "kannel";
    let result = async {
        let keys = state.keys.as_ref().ok_or(Refused::NotConfigured)?;
        let Query(params) = query.map_err(|r| Refused::Malformed(r.body_text()))?;
        let field = |name: &str| params.get(name).map(String::as_str).unwrap_or("");
        let message_id = reply_from_hex(field("reply"))
            .filter(|id| !id.is_empty())
            .ok_or_else(|| Refused::Malformed("reply is not a hex-encoded message id".into()))?;
        if !keys.verify(&message_id, field("sig")) {
            return Err(Refused::Unauthorized);
        }
        let code: u32 = field("status")
            .trim()
            .parse()
            .map_err(|_| Refused::Malformed("status is not a Kannel DLR code".into()))?;
        let status = Status::from_kannel(code)
            .ok_or_else(|| Refused::Malformed(format!("unknown Kannel DLR code {code}")))?;
        Ok((message_id, status, format!("kannel {code}")))
    }
    .await;
    settle(&state, SOURCE, result).await
}

/// `POST /v1/dlr/jasmin?reply=<hex>&sig=<hex>`, the form Jasmin 0.11.1's DLR thrower
/// posts (`jasmin/routing/throwers.py`): `id` (Jasmin's message id), `level` (1 or 2),
/// `message_status`, `connector`; at level 2 also `id_smsc`, `sub`, `dlvrd`, `subdate`,
/// `donedate`, `err`, `text`. Answered `ACK/Jasmin` once recorded.
async fn jasmin_report(
    State(state): State<ReportState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    const SOURCE: &str = "jasmin";
    let result = async {
        let keys = state.keys.as_ref().ok_or(Refused::NotConfigured)?;
        let Query(params) = query.map_err(|r| Refused::Malformed(r.body_text()))?;
        let param = |name: &str| params.get(name).map(String::as_str).unwrap_or("");
        let message_id = reply_from_hex(param("reply"))
            .filter(|id| !id.is_empty())
            .ok_or_else(|| Refused::Malformed("reply is not a hex-encoded message id".into()))?;
        if !keys.verify(&message_id, param("sig")) {
            return Err(Refused::Unauthorized);
        }
        let Form(fields) = form.map_err(|r| Refused::Malformed(r.body_text()))?;
        let field = |name: &str| fields.get(name).map(|v| v.trim()).unwrap_or("");
        let message_status = field("message_status");
        let status = Status::from_jasmin(message_status).ok_or_else(|| {
            Refused::Malformed(format!(
                "message_status {:?} is not a Jasmin DLR status",
                crate::failure::excerpt(message_status)
            ))
        })?;
        let mut detail = format!("jasmin {message_status}");
        if !field("err").is_empty() {
            detail.push_str(&format!(" err:{}", field("err")));
        }
        if !field("id").is_empty() {
            detail.push_str(&format!(" id:{}", field("id")));
        }
        Ok((message_id, status, detail))
    }
    .await;
    let response = settle(&state, SOURCE, result).await;
    if response.status() == StatusCode::OK {
        // The outcome is counted and logged; Jasmin only reads the acknowledgement.
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            JASMIN_ACK,
        )
            .into_response();
    }
    response
}

/// The aggregator's report body.
#[derive(Debug, Deserialize)]
struct AggregatorReport {
    reply_to: String,
    status: String,
}

/// `POST /v1/dlr {"reply_to": message_id, "status": "delivered"|"failed"}`.
async fn aggregator_report(
    State(state): State<ReportState>,
    headers: HeaderMap,
    body: Result<Json<AggregatorReport>, JsonRejection>,
) -> Response {
    const SOURCE: &str = "http";
    let result = async {
        let expected = state
            .aggregator_token
            .as_ref()
            .ok_or(Refused::NotConfigured)?;
        let presented = shared::token::bearer(&headers).unwrap_or("");
        let expected = expected.expose_secret().as_bytes();
        let same =
            expected.len() == presented.len() && bool::from(expected.ct_eq(presented.as_bytes()));
        if !same {
            return Err(Refused::Unauthorized);
        }
        let Json(report) = body.map_err(|r| Refused::Malformed(r.body_text()))?;
        let message_id = report.reply_to.trim().to_owned();
        if message_id.is_empty() {
            return Err(Refused::Malformed("reply_to is empty".into()));
        }
        let status = Status::from_aggregator(&report.status).ok_or_else(|| {
            Refused::Malformed("status must be \"delivered\" or \"failed\"".into())
        })?;
        Ok((message_id, status, format!("http {}", status.as_str())))
    }
    .await;
    settle(&state, SOURCE, result).await
}

/// Records an authentic report and answers; counts refusals.
async fn settle(
    state: &ReportState,
    source: &'static str,
    parsed: Result<(String, Status, String), Refused>,
) -> Response {
    let result = match parsed {
        Ok((message_id, status, detail)) => {
            match record(&state.pool, &message_id, status, &detail).await {
                Ok(outcome) => {
                    state.metrics.report(source, status, outcome);
                    log(source, &message_id, status, outcome);
                    Ok(outcome)
                }
                Err(e) => Err(Refused::Database(e)),
            }
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(outcome) => (
            StatusCode::OK,
            Json(serde_json::json!({"outcome": outcome.as_str()})),
        )
            .into_response(),
        Err(refused) => {
            state.metrics.refused(source, refused.reason());
            match &refused {
                Refused::Database(e) => {
                    tracing::warn!(source, error = %e, "cannot record a delivery report; the gateway retries")
                }
                other => tracing::info!(source, reason = %other, "delivery report refused"),
            }
            refused.into_response()
        }
    }
}

fn log(source: &str, message_id: &str, status: Status, outcome: Outcome) {
    match (status, outcome) {
        (Status::Failed, Outcome::Recorded | Outcome::Early) => {
            tracing::warn!(source, message_id, "reply not delivered (not re-sent)")
        }
        (_, Outcome::Conflicting | Outcome::UnknownReply | Outcome::Early) => tracing::info!(
            source,
            message_id,
            status = status.as_str(),
            outcome = outcome.as_str(),
            "unusual delivery report"
        ),
        _ => tracing::debug!(
            source,
            message_id,
            status = status.as_str(),
            outcome = outcome.as_str(),
            "delivery report"
        ),
    }
}
