//! The inbound SMS endpoints: `POST /v1/sms` (JSON webhook) and `GET /v1/sms/kannel`
//! (Kannel's sms-service `get-url`). Both end in one `sms.received` publish.

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
use chrono::{DateTime, FixedOffset, TimeZone, Timelike, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use shared::broker::{PublishError, Publisher};
use shared::events::{Channel, Event, SmsReceived};
use shared::phone::{self, PhoneNumber};
use subtle::ConstantTimeEq;
use tracing::Instrument;

use crate::Config;

/// Namespace of the message ids ingest derives when the gateway sends none.
const DERIVED_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6d65_7465_722d_7265_6164_696e_6773_2d31);
const MAX_MESSAGE_ID_LEN: usize = 128;

#[derive(Clone)]
pub struct AppState {
    token: Arc<SecretString>,
    publisher: Publisher,
    metrics: IngestMetrics,
    max_body: usize,
}

impl AppState {
    pub fn new(config: &Config, publisher: Publisher, metrics: IngestMetrics) -> Self {
        AppState {
            token: Arc::new(config.ingest_token.clone()),
            publisher,
            metrics,
            max_body: config.max_body_bytes as usize,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    status: u16,
}

/// Requests by endpoint and status, and time to the broker's confirm.
#[derive(Clone)]
pub struct IngestMetrics {
    requests: Family<RequestLabels, Counter>,
    publish_seconds: Histogram,
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
        IngestMetrics {
            requests,
            publish_seconds,
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
enum ApiError {
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
    fn status(&self) -> StatusCode {
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

fn token_matches(expected: &SecretString, presented: &str) -> bool {
    let expected = expected.expose_secret().as_bytes();
    // Lengths leak through timing anyway in most comparisons; ct_eq on equal-length
    // slices keeps the content comparison constant-time.
    expected.len() == presented.len() && bool::from(expected.ct_eq(presented.as_bytes()))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

async fn post_sms(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let span = request_span("POST /v1/sms", &headers);
    let result = async {
        if !bearer(&headers).is_some_and(|t| token_matches(&state.token, t)) {
            return Err(ApiError::Unauthorized);
        }
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

/// Kannel's `get-url` parameters: `token=…&id=%I&from=%p&to=%P&ts=%T&text=%a`.
async fn kannel_sms(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let span = request_span("GET /v1/sms/kannel", &headers);
    let result = async {
        let Query(params) = query.map_err(|r| ApiError::BadRequest(r.body_text()))?;
        let presented = params
            .get("token")
            .map(String::as_str)
            .or_else(|| bearer(&headers));
        if !presented.is_some_and(|t| token_matches(&state.token, t)) {
            return Err(ApiError::Unauthorized);
        }
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
        let event = received(id, field("from"), field("to"), text, received_at)?;
        publish(&state, event).await
    }
    .instrument(span)
    .await;
    respond(&state, "kannel", result, false)
}

fn request_span(route: &'static str, headers: &HeaderMap) -> tracing::Span {
    let span = tracing::info_span!(
        "request",
        otel.name = route,
        otel.kind = "server",
        http.route = route,
        messaging.message.id = tracing::field::Empty,
    );
    if let Some(tp) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        shared::tracecontext::set_parent_from_traceparent(&span, tp);
    }
    span
}

/// Builds the event from what a gateway sent, normalising and checking it.
fn received(
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
    let message_id = message_id.unwrap_or_else(|| derived_id(&from, &to, &text, received_at, now));
    Ok(SmsReceived {
        message_id,
        from: from.as_str().to_owned(),
        to,
        text,
        received_at: received_at.unwrap_or(now),
        channel: Channel::Sms,
    })
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

async fn publish(state: &AppState, sms: SmsReceived) -> Result<String, ApiError> {
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
    fn bearer_parsing_and_token_check() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret-token"),
        );
        assert_eq!(bearer(&h), Some("s3cret-token"));
        let token = SecretString::from("s3cret-token".to_owned());
        assert!(token_matches(&token, "s3cret-token"));
        assert!(!token_matches(&token, "s3cret-tokeN"));
        assert!(!token_matches(&token, ""));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
    }
}
