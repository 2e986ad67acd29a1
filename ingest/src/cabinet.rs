//! The retailer's personal cabinet and mobile app (SPEC §4.9): `POST /v1/readings`
//! with a bearer token of `CABINET_TOKEN`. The cabinet has authenticated the resident,
//! so there is no grammar to follow: the values come per zone, day then night.
//!
//! - **Checks**: the web form's own (`form::Reading`: an account of digits, one to
//!   three readings, an address that looks like one); the rest is the validator's.
//! - **Text**: the canonical SMS text `<account> <t1> [<t2> [<t3>]] [<e-mail>]`, which
//!   the grammar reads exactly, so the validator decides it on its one path and the
//!   audit shows what was decided (docs/design.md, "The personal cabinet").
//! - **Ids**: `from` is `cabinet:<resident_id>` (the per-sender limit is the
//!   resident's); the message id is `cabinet-<UUIDv5 of resident and request id>`,
//!   so the cabinet's retry of a request is one message, and two residents' requests
//!   numbered alike are two.
//! - **Answer**: `200` with the decision when it comes within [`decisions::WAIT`],
//!   else `202` with the message id (the decision then follows by e-mail, if one was
//!   given). A repeat of a request already decided gets `202`: the validator
//!   announces a decision once.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use chrono::Utc;
use serde::Deserialize;
use shared::events::{Channel, SmsReceived};
use shared::token::{self, Tokens};
use tracing::Instrument;

use crate::decisions::{self, Decision, Decisions};
use crate::form::Reading;
use crate::sms::{self, ApiError, AppState, request_span};

/// The `to` of a cabinet's message.
pub const RECIPIENT: &str = "cabinet";
/// Longest `request_id` and `resident_id` taken.
const MAX_ID_LEN: usize = 128;
/// Namespace of the cabinet's message ids.
const ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6d65_7465_722d_6361_6269_6e65_742d_6964);

#[derive(Clone)]
pub struct CabinetState {
    app: AppState,
    decisions: Decisions,
    tokens: Option<Arc<Tokens>>,
}

impl CabinetState {
    pub fn new(app: AppState, decisions: Decisions, tokens: Option<Tokens>) -> CabinetState {
        CabinetState {
            app,
            decisions,
            tokens: tokens.map(Arc::new),
        }
    }
}

pub fn router(state: CabinetState) -> Router {
    let limit = state.app.max_body();
    Router::new()
        .route("/v1/readings", post(post_reading))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// The body of `POST /v1/readings`. Unknown fields are ignored.
#[derive(Debug, Deserialize)]
struct CabinetReading {
    request_id: String,
    resident_id: String,
    account: String,
    values: Vec<u64>,
    email: Option<String>,
}

async fn post_reading(
    State(state): State<CabinetState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let span = request_span("POST /v1/readings", &headers);
    let response = answer(&state, &headers, body).instrument(span).await;
    state.app.count("cabinet", response.status());
    response
}

async fn answer(
    state: &CabinetState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(tokens) = &state.tokens else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "error": "not_configured",
                "message": "CABINET_TOKEN is not set: the cabinet's endpoint is off",
            })),
        )
            .into_response();
    };
    let Some(fingerprint) = token::bearer(headers).and_then(|t| tokens.verify(t)) else {
        return ApiError::Unauthorized.into_response();
    };
    tracing::Span::current().record("auth.token", fingerprint.as_str());
    let sms = match body
        .map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(state.app.max_body())
            } else {
                ApiError::BadRequest(r.body_text())
            }
        })
        .and_then(|body| received(&body))
    {
        Ok(sms) => sms,
        Err(e) => {
            tracing::info!(status = e.status().as_u16(), reason = %e, "cabinet reading refused");
            return e.into_response();
        }
    };
    // Subscribed before the publish, so a quick decision is not missed.
    let rx = state.decisions.subscribe();
    let message_id = match sms::publish(&state.app, sms).await {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    match Decisions::wait(rx, &message_id, decisions::WAIT).await {
        Some(decision) => (StatusCode::OK, Json(decided(&message_id, decision))).into_response(),
        None => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({"message_id": message_id})),
        )
            .into_response(),
    }
}

/// The checked request as `sms.received` on the `cabinet` channel.
fn received(body: &[u8]) -> Result<SmsReceived, ApiError> {
    let request: CabinetReading = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    let request_id = id_field("request_id", &request.request_id)?;
    let resident_id = id_field("resident_id", &request.resident_id)?;
    let values: Vec<String> = request.values.iter().map(u64::to_string).collect();
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    let reading = Reading::parse(
        &request.account,
        &values,
        request.email.as_deref().unwrap_or(""),
    )
    .map_err(ApiError::BadRequest)?;
    let key = format!("{resident_id}\n{request_id}");
    Ok(SmsReceived {
        message_id: format!(
            "cabinet-{}",
            uuid::Uuid::new_v5(&ID_NAMESPACE, key.as_bytes())
        ),
        from: format!("cabinet:{resident_id}"),
        to: RECIPIENT.to_owned(),
        text: reading.text(),
        received_at: Utc::now().fixed_offset(),
        channel: Channel::Cabinet,
        chat: None,
        contact: None,
    })
}

/// An id the cabinet gives: 1–128 characters, no spaces or control characters (it
/// goes into `from` and the audit).
fn id_field<'a>(name: &str, value: &'a str) -> Result<&'a str, ApiError> {
    if value.is_empty()
        || value.chars().count() > MAX_ID_LEN
        || value.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ApiError::BadRequest(format!(
            "{name} must be 1–{MAX_ID_LEN} characters without spaces"
        )));
    }
    Ok(value)
}

/// The decision as the cabinet reads it: `reason` and `reply` as the validator gave
/// them (the reply quotes only what was sent, SPEC §3), `period` for an accepted one.
fn decided(message_id: &str, decision: Decision) -> serde_json::Value {
    match decision {
        Decision::Accepted { period, .. } => serde_json::json!({
            "message_id": message_id,
            "decision": "accepted",
            "reason": null,
            "reply": null,
            "period": period,
        }),
        Decision::Rejected { reason, reply } => serde_json::json!({
            "message_id": message_id,
            "decision": "rejected",
            "reason": reason.as_str(),
            "reply": reply,
            "period": null,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&v).expect("json")
    }

    #[test]
    fn values_per_zone_become_the_canonical_text_of_the_cabinet_channel() {
        let sms = received(&body(serde_json::json!({
            "request_id": "r-1", "resident_id": "u-77", "account": "0001000001",
            "values": [45100, 12100], "email": "ivan@mail.ru"
        })))
        .expect("valid");
        assert_eq!(sms.text, "0001000001 45100 12100 ivan@mail.ru");
        assert_eq!(sms.from, "cabinet:u-77");
        assert_eq!(sms.to, "cabinet");
        assert_eq!(sms.channel, Channel::Cabinet);
        assert!(sms.message_id.starts_with("cabinet-"), "{}", sms.message_id);
    }

    #[test]
    fn one_request_is_one_message_and_two_residents_are_two() {
        let id = |resident: &str, request: &str| {
            received(&body(serde_json::json!({
                "request_id": request, "resident_id": resident, "account": "1000001",
                "values": [1], "email": null
            })))
            .expect("valid")
            .message_id
        };
        assert_eq!(id("a", "1"), id("a", "1"));
        assert_ne!(id("a", "1"), id("b", "1"));
        assert_ne!(id("a", "1"), id("a", "2"));
    }

    #[test]
    fn what_cannot_be_a_reading_is_refused_with_the_reason() {
        for bad in [
            serde_json::json!({"request_id": "r", "resident_id": "u", "account": "1000001", "values": []}),
            serde_json::json!({"request_id": "r", "resident_id": "u", "account": "1000001", "values": [1, 2, 3, 4]}),
            serde_json::json!({"request_id": "r", "resident_id": "u", "account": "10a", "values": [1]}),
            serde_json::json!({"request_id": "r", "resident_id": "u", "account": "1000001", "values": [-1]}),
            serde_json::json!({"request_id": "r", "resident_id": "u", "account": "1000001", "values": [1], "email": "no-at"}),
            serde_json::json!({"request_id": "", "resident_id": "u", "account": "1000001", "values": [1]}),
            serde_json::json!({"request_id": "r", "resident_id": "a b", "account": "1000001", "values": [1]}),
            serde_json::json!({"resident_id": "u", "account": "1000001", "values": [1]}),
        ] {
            assert!(
                matches!(received(&body(bad.clone())), Err(ApiError::BadRequest(_))),
                "{bad}"
            );
        }
    }
}
