//! The inbound SMS endpoints: `POST /v1/sms` (JSON webhook) and `GET /v1/sms/kannel`
//! (Kannel's sms-service `get-url`). Both end in one `sms.received` publish.
//!
//! The gateway's `received_at` is believed unless it lies more than
//! [`MAX_CLOCK_AHEAD`] in the future (SPEC §4.1): a gateway with a wrong clock must not
//! open a future period, so the time of receipt stands instead (logged and counted).
//! A late one stands: an SMS sent on the 25th and delivered after midnight still
//! counts for its period.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use chrono::{DateTime, FixedOffset, TimeDelta, TimeZone, Timelike, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use shared::broker::{PublishError, Publisher};
use shared::events::{Channel, Event, SmsReceived};
use shared::phone::{self, PhoneNumber};
use shared::token::{self, Tokens};
use tracing::Instrument;

use crate::Config;

/// Namespace of the message ids ingest derives when the gateway sends none.
const DERIVED_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6d65_7465_722d_7265_6164_696e_6773_2d31);
const MAX_MESSAGE_ID_LEN: usize = 128;
/// How far ahead of our clock a gateway's `received_at` may be (its clock and ours
/// drift a little); beyond it the time of receipt stands.
pub const MAX_CLOCK_AHEAD: TimeDelta = TimeDelta::minutes(5);

#[derive(Clone)]
pub struct AppState {
    tokens: Arc<Tokens>,
    publisher: Publisher,
    metrics: IngestMetrics,
    max_body: usize,
}

impl AppState {
    pub fn new(config: &Config, publisher: Publisher, metrics: IngestMetrics) -> Self {
        AppState {
            tokens: Arc::new(config.ingest_token.clone()),
            publisher,
            metrics,
            max_body: config.max_body_bytes as usize,
        }
    }
}

impl AppState {
    /// Whether `presented` is the gateways' token (`INGEST_TOKEN`).
    pub(crate) fn max_body(&self) -> usize {
        self.max_body
    }

    /// Counts a request by endpoint and the status it was answered with.
    pub(crate) fn count(&self, endpoint: &'static str, status: StatusCode) {
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                endpoint,
                status: status.as_u16(),
            })
            .inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    status: u16,
}

/// Requests by endpoint and status, time to the broker's confirm, and the gateway
/// times replaced because they lay in the future.
#[derive(Clone)]
pub struct IngestMetrics {
    requests: Family<RequestLabels, Counter>,
    publish_seconds: Histogram,
    received_at_replaced: Counter,
}

impl IngestMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let publish_seconds = Histogram::new(shared::metrics::latency_buckets());
        registry.register(
            "requests",
            "Inbound SMS requests by endpoint and HTTP status (202 = received)",
            requests.clone(),
        );
        registry.register(
            "publish_seconds",
            "Time from request to the broker's publisher confirm",
            publish_seconds.clone(),
        );
        let received_at_replaced = Counter::default();
        registry.register(
            "received_at_replaced",
            "Messages whose received_at lay more than 5 minutes ahead of the clock; the time of receipt was stamped instead",
            received_at_replaced.clone(),
        );
        IngestMetrics {
            requests,
            publish_seconds,
            received_at_replaced,
        }
    }
}

pub fn router(state: AppState) -> Router {
    let limit = state.max_body;
    Router::new()
        .route("/v1/sms", post(post_sms))
        .route("/v1/sms/kannel", get(kannel_sms))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// An API error: a status and a JSON body `{"error": code, "message": text}`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("missing or invalid token")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("request body over {0} bytes")]
    TooLarge(usize),
    #[error("the broker cannot take the message now: {0}")]
    Unavailable(#[from] PublishError),
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::TooLarge(_) => "too_large",
            ApiError::Unavailable(_) => "unavailable",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({"error": self.code(), "message": self.to_string()}));
        let mut resp = (self.status(), body).into_response();
        match self {
            ApiError::Unavailable(_) => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            ApiError::Unauthorized => {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        resp
    }
}

/// The JSON body of `POST /v1/sms`. Unknown fields are ignored: gateways add their own.
#[derive(Debug, Deserialize)]
struct InboundSms {
    message_id: Option<String>,
    from: String,
    to: String,
    text: String,
    received_at: Option<DateTime<FixedOffset>>,
}

/// Checks the presented token against every configured one (`shared::token`), and
/// notes which one matched — by fingerprint — on the request's span, so a rotation's
/// progress shows which gateways still use the old token.
pub(crate) fn authorized(state: &AppState, presented: Option<&str>) -> Result<(), ApiError> {
    let fingerprint = presented
        .and_then(|t| state.tokens.verify(t))
        .ok_or(ApiError::Unauthorized)?;
    tracing::Span::current().record("auth.token", fingerprint.as_str());
    Ok(())
}

async fn post_sms(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let span = request_span("POST /v1/sms", &headers);
    let result = async {
        authorized(&state, token::bearer(&headers))?;
        let body = body.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(state.max_body)
            } else {
                ApiError::BadRequest(r.body_text())
            }
        })?;
        let inbound: InboundSms = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
        let event = received(
            &state,
            inbound.message_id,
            &inbound.from,
            &inbound.to,
            inbound.text,
            inbound.received_at,
        )?;
        publish(&state, event).await
    }
    .instrument(span)
    .await;
    respond(&state, "sms", result, true)
}

/// The token of a gateway that calls with its token in the URL (`token=`, Kannel's
/// `get-url`, Jasmin's connector), or else in an `Authorization: Bearer` header.
pub(crate) fn presented_token<'a>(
    params: &'a HashMap<String, String>,
    headers: &'a HeaderMap,
) -> Option<&'a str> {
    params
        .get("token")
        .map(String::as_str)
        .or_else(|| token::bearer(headers))
}

/// Kannel's `get-url` parameters: `token=…&id=%I&from=%p&to=%P&ts=%T&text=%a`.
async fn kannel_sms(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let span = request_span("GET /v1/sms/kannel", &headers);
    let result = async {
        let Query(params) = query.map_err(|r| ApiError::BadRequest(r.body_text()))?;
        authorized(&state, presented_token(&params, &headers))?;
        let field = |name: &str| params.get(name).map(String::as_str).unwrap_or("");
        let received_at = match params.get("ts").map(|s| s.trim()).filter(|s| !s.is_empty()) {
            None => None,
            Some(ts) => {
                let secs: i64 = ts.parse().map_err(|_| {
                    ApiError::BadRequest(format!(
                        "ts `{}` is not a Unix time",
                        ts.chars().take(20).collect::<String>()
                    ))
                })?;
                Some(
                    Utc.timestamp_opt(secs, 0)
                        .single()
                        .ok_or_else(|| ApiError::BadRequest("ts out of range".into()))?
                        .fixed_offset(),
                )
            }
        };
        let id = params
            .get("id")
            .filter(|s| !s.trim().is_empty())
            .map(|id| format!("kannel-{}", id.trim()));
        let text = field("text").to_owned();
        if text.len() > state.max_body {
            return Err(ApiError::TooLarge(state.max_body));
        }
        let event = received(&state, id, field("from"), field("to"), text, received_at)?;
        publish(&state, event).await
    }
    .instrument(span)
    .await;
    respond(&state, "kannel", result, false)
}

pub(crate) fn request_span(route: &'static str, headers: &HeaderMap) -> tracing::Span {
    let span = tracing::info_span!(
        "request",
        otel.name = route,
        otel.kind = "server",
        http.route = route,
        messaging.message.id = tracing::field::Empty,
        auth.token = tracing::field::Empty,
    );
    if let Some(tp) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        shared::tracecontext::set_parent_from_traceparent(&span, tp);
    }
    span
}

/// When the message counts as received: what the gateway said, unless that lies
/// more than [`MAX_CLOCK_AHEAD`] ahead of `now`; without one, `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Receipt {
    Given(DateTime<FixedOffset>),
    Stamped(DateTime<FixedOffset>),
    /// The gateway's time lay in the future; `now` stands instead.
    Replaced {
        given: DateTime<FixedOffset>,
        now: DateTime<FixedOffset>,
    },
}

impl Receipt {
    fn of(given: Option<DateTime<FixedOffset>>, now: DateTime<FixedOffset>) -> Receipt {
        match given {
            None => Receipt::Stamped(now),
            Some(given) if given > now + MAX_CLOCK_AHEAD => Receipt::Replaced { given, now },
            Some(given) => Receipt::Given(given),
        }
    }

    fn at(self) -> DateTime<FixedOffset> {
        match self {
            Receipt::Given(at) | Receipt::Stamped(at) | Receipt::Replaced { now: at, .. } => at,
        }
    }
}

/// Builds the event from what a gateway sent, normalising and checking it.
pub(crate) fn received(
    state: &AppState,
    message_id: Option<String>,
    from: &str,
    to: &str,
    text: String,
    received_at: Option<DateTime<FixedOffset>>,
) -> Result<SmsReceived, ApiError> {
    let from = PhoneNumber::parse(from).map_err(|e| ApiError::BadRequest(format!("from: {e}")))?;
    let to = phone::service_address(to).map_err(|e| ApiError::BadRequest(format!("to: {e}")))?;
    let message_id = match message_id.map(|m| m.trim().to_owned()) {
        Some(id) if id.is_empty() => {
            return Err(ApiError::BadRequest("message_id is empty".into()));
        }
        Some(id) if id.chars().count() > MAX_MESSAGE_ID_LEN || id.chars().any(char::is_control) => {
            return Err(ApiError::BadRequest(format!(
                "message_id must be 1–{MAX_MESSAGE_ID_LEN} printable characters"
            )));
        }
        Some(id) => Some(id),
        None => None,
    };
    let now = Utc::now().fixed_offset();
    // The id comes from what the gateway sent, so its retries (same wrong clock and
    // all) are still one message.
    let message_id = message_id.unwrap_or_else(|| derived_id(&from, &to, &text, received_at, now));
    let received_at = receipt(state, received_at, &message_id);
    Ok(SmsReceived {
        message_id,
        from: from.as_str().to_owned(),
        to,
        text,
        received_at,
        channel: Channel::Sms,
        chat: None,
        contact: None,
    })
}

/// When a message counts as received: the time its gateway or platform gave, unless
/// that lies more than [`MAX_CLOCK_AHEAD`] ahead of the clock (then the time of
/// receipt, logged and counted); without one, now.
pub(crate) fn receipt(
    state: &AppState,
    given: Option<DateTime<FixedOffset>>,
    message_id: &str,
) -> DateTime<FixedOffset> {
    let receipt = Receipt::of(given, Utc::now().fixed_offset());
    if let Receipt::Replaced { given, now } = receipt {
        state.metrics.received_at_replaced.inc();
        tracing::warn!(
            %message_id, received_at = %given.to_rfc3339(), now = %now.to_rfc3339(),
            "received_at is more than 5 minutes ahead of the clock (the sender's clock?); \
             the time of receipt stands instead"
        );
    }
    receipt.at()
}

/// A stable id for a gateway that sends none, so its retries are one message: the
/// sender, recipient, text and time of receipt — or, without a time, the minute the
/// request arrived (a retry within that minute is recognised; documented trade-off).
fn derived_id(
    from: &PhoneNumber,
    to: &str,
    text: &str,
    received_at: Option<DateTime<FixedOffset>>,
    now: DateTime<FixedOffset>,
) -> String {
    let when = match received_at {
        Some(at) => at.to_utc().to_rfc3339(),
        None => now
            .to_utc()
            .with_second(0)
            .unwrap_or(now.to_utc())
            .format("%Y-%m-%dT%H:%M")
            .to_string(),
    };
    let key = format!("{from}\n{to}\n{text}\n{when}");
    format!(
        "sms-{}",
        uuid::Uuid::new_v5(&DERIVED_ID_NAMESPACE, key.as_bytes())
    )
}

pub(crate) async fn publish(state: &AppState, sms: SmsReceived) -> Result<String, ApiError> {
    let message_id = sms.message_id.clone();
    tracing::Span::current().record("messaging.message.id", message_id.as_str());
    let started = std::time::Instant::now();
    let span = tracing::info_span!(
        "publish",
        otel.name = "sms.received publish",
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "publish",
        messaging.destination.name = shared::events::SMS_RECEIVED,
        messaging.message.id = message_id.as_str(),
    );
    let result = state
        .publisher
        .publish(&Event::SmsReceived(sms))
        .instrument(span)
        .await;
    state
        .metrics
        .publish_seconds
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(()) => Ok(message_id),
        Err(e) => {
            tracing::warn!(error = %e, message_id = %message_id, "publish failed; answering 503");
            Err(ApiError::Unavailable(e))
        }
    }
}

fn respond(
    state: &AppState,
    endpoint: &'static str,
    result: Result<String, ApiError>,
    json_body: bool,
) -> Response {
    let response = match result {
        Ok(id) if json_body => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({"message_id": id})),
        )
            .into_response(),
        Ok(_) => StatusCode::ACCEPTED.into_response(),
        Err(e) => {
            if !matches!(e, ApiError::Unavailable(_)) {
                tracing::info!(status = e.status().as_u16(), reason = %e, endpoint, "request refused");
            }
            e.into_response()
        }
    };
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            endpoint,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let from = PhoneNumber::parse("+79001234567").expect("phone");
        let at = DateTime::parse_from_rfc3339("2026-11-20T10:00:00+05:00").ok();
        let now = Utc::now().fixed_offset();
        let a = derived_id(&from, "7377", "1 2", at, now);
        assert_eq!(a, derived_id(&from, "7377", "1 2", at, now));
        assert_ne!(a, derived_id(&from, "7377", "1 3", at, now));
        assert!(a.starts_with("sms-"));
    }

    #[test]
    fn a_received_at_more_than_five_minutes_ahead_is_replaced() {
        let now = DateTime::parse_from_rfc3339("2026-11-25T23:58:00+05:00").expect("now");
        let at = |minutes: i64| now + TimeDelta::minutes(minutes);
        assert_eq!(Receipt::of(None, now), Receipt::Stamped(now));
        // A little drift stands, up to the bound itself.
        assert_eq!(Receipt::of(Some(at(4)), now), Receipt::Given(at(4)));
        assert_eq!(Receipt::of(Some(at(5)), now), Receipt::Given(at(5)));
        // Beyond it (here: into the next day, the 26th, outside the window) the
        // time of receipt stands.
        let beyond = at(5) + TimeDelta::seconds(1);
        assert_eq!(
            Receipt::of(Some(beyond), now),
            Receipt::Replaced { given: beyond, now }
        );
        assert_eq!(Receipt::of(Some(beyond), now).at(), now);
        assert_eq!(Receipt::of(Some(at(60 * 24 * 365)), now).at(), now);
        // A late one stands, however late.
        assert_eq!(
            Receipt::of(Some(at(-2 * 24 * 60)), now).at(),
            at(-2 * 24 * 60)
        );
    }
}
