//! The messenger bots' webhooks (SPEC §4.9): `POST /v1/bots/telegram` and
//! `POST /v1/bots/max`. Each update becomes, at most, one `sms.received` on the
//! platform's channel, with the chat it came from, for the validator to decide like an
//! SMS and the notifier to answer in the chat (docs/design.md, "Chat channels").
//!
//! What each answer makes the platform do decides the answers. Both retry anything
//! but a success for hours (MAX unsubscribes the bot after 8 hours of failures), so:
//! - the secret header (`X-Telegram-Bot-Api-Secret-Token`, `X-Max-Bot-Api-Secret`) is
//!   checked in constant time against its token list before the body is read: `401`;
//!   the list unset: `503` saying so (the platform keeps the updates until it is set);
//! - a body that is no update at all (not JSON, no `update_id` / `update_type`): `400`
//!   with the reason — the platform never sends one;
//! - an update the bot does not use (another type, a group, a bot's message): `200`,
//!   counted `unused`;
//! - the platform's update with a message we cannot read: `200`, counted `unreadable`
//!   and logged with its id — a retry could never read it either;
//! - a message: `200` only after the broker's confirm; `503` + `Retry-After` while
//!   the broker cannot take it, and the platform's retry brings it again (the same
//!   message id, so it is decided once).
//!
//! A `200` has an empty body: Telegram would execute a JSON answer naming a `method`.

mod max;
mod telegram;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, FixedOffset};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use shared::events::{Channel, SharedContact, SmsReceived};
use shared::phone::PhoneNumber;
use shared::token::Tokens;
use tracing::Instrument;

use crate::sms::{self, AppState, request_span};

/// Largest update body read (after the secret matched). A Telegram update that quotes
/// a 4,096-character message is past `MAX_BODY_BYTES`; a `413` would be retried for
/// hours, so the limit here is far above any update.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// Longest message id kept as the platform made it; a longer one is hashed.
const MAX_ID_LEN: usize = 128;
/// Namespace of hashed message ids.
const ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6d65_7465_722d_626f_7473_2d69_6473_2d31);

/// The platform a webhook belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Platform {
    Telegram,
    Max,
}

impl Platform {
    fn channel(self) -> Channel {
        match self {
            Platform::Telegram => Channel::Telegram,
            Platform::Max => Channel::Max,
        }
    }

    /// The header the platform puts the registered secret in.
    fn secret_header(self) -> &'static str {
        match self {
            Platform::Telegram => "x-telegram-bot-api-secret-token",
            Platform::Max => "x-max-bot-api-secret",
        }
    }

    /// The setting that holds the accepted secrets.
    fn setting(self) -> &'static str {
        match self {
            Platform::Telegram => "TELEGRAM_WEBHOOK_SECRET",
            Platform::Max => "MAX_WEBHOOK_SECRET",
        }
    }

    fn read(self, body: &[u8]) -> Result<Update, NotRead> {
        match self {
            Platform::Telegram => telegram::read(body),
            Platform::Max => max::read(body),
        }
    }
}

/// A message a resident sent in a bot's private chat.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChatMessage {
    channel: Channel,
    /// The platform's id of the message: its retries carry the same.
    message_id: String,
    /// The platform's user id of the sender.
    user: String,
    chat: String,
    text: String,
    contact: Option<SharedContact>,
    /// When the platform says it was sent (or edited).
    sent_at: Option<DateTime<FixedOffset>>,
}

/// What an update asks of ingest.
#[derive(Debug)]
pub(crate) enum Update {
    /// A message in a private chat: published.
    Message(ChatMessage),
    /// An update the bot does not use; why, for the log.
    Unused(&'static str),
}

/// A body that did not read as a message.
#[derive(Debug)]
pub(crate) enum NotRead {
    /// Not an update of the platform at all: `400` with the reason.
    NotAnUpdate(String),
    /// The platform's update, with content that does not read: `200`, logged.
    Unreadable { update: String, error: String },
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpdateLabels {
    platform: &'static str,
    /// `published`, `unused`, `unreadable`.
    outcome: &'static str,
}

/// Updates by platform and what became of them.
#[derive(Clone)]
pub struct BotMetrics {
    updates: Family<UpdateLabels, Counter>,
}

impl BotMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let updates = Family::<UpdateLabels, Counter>::default();
        registry.register(
            "bot_updates",
            "Bot webhook updates with a valid secret, by platform and outcome (published, unused: a type, chat or sender the bot does not answer, unreadable: the platform's update we could not read)",
            updates.clone(),
        );
        BotMetrics { updates }
    }

    fn count(&self, platform: Platform, outcome: &'static str) {
        self.updates
            .get_or_create(&UpdateLabels {
                platform: platform.channel().as_str(),
                outcome,
            })
            .inc();
    }
}

#[derive(Clone)]
pub struct BotState {
    app: AppState,
    telegram: Option<Arc<Tokens>>,
    max: Option<Arc<Tokens>>,
    metrics: BotMetrics,
}

impl BotState {
    pub fn new(
        app: AppState,
        telegram: Option<Tokens>,
        max: Option<Tokens>,
        metrics: BotMetrics,
    ) -> BotState {
        BotState {
            app,
            telegram: telegram.map(Arc::new),
            max: max.map(Arc::new),
            metrics,
        }
    }

    fn secrets(&self, platform: Platform) -> Option<&Tokens> {
        match platform {
            Platform::Telegram => self.telegram.as_deref(),
            Platform::Max => self.max.as_deref(),
        }
    }
}

pub fn router(state: BotState) -> Router {
    Router::new()
        .route("/v1/bots/telegram", post(telegram_webhook))
        .route("/v1/bots/max", post(max_webhook))
        .with_state(state)
}

async fn telegram_webhook(
    State(state): State<BotState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let span = request_span("POST /v1/bots/telegram", &headers);
    webhook(&state, Platform::Telegram, &headers, body)
        .instrument(span)
        .await
}

async fn max_webhook(State(state): State<BotState>, headers: HeaderMap, body: Body) -> Response {
    let span = request_span("POST /v1/bots/max", &headers);
    webhook(&state, Platform::Max, &headers, body)
        .instrument(span)
        .await
}

async fn webhook(
    state: &BotState,
    platform: Platform,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let response = answer(state, platform, headers, body).await;
    state
        .app
        .count(platform.channel().as_str(), response.status());
    response
}

async fn answer(state: &BotState, platform: Platform, headers: &HeaderMap, body: Body) -> Response {
    let Some(secrets) = state.secrets(platform) else {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_configured",
            &format!(
                "{} is not set: this bot's webhook is off",
                platform.setting()
            ),
        );
    };
    let presented = headers
        .get(platform.secret_header())
        .and_then(|v| v.to_str().ok());
    let Some(fingerprint) = presented.and_then(|p| secrets.verify(p)) else {
        tracing::info!(
            platform = platform.channel().as_str(),
            "bot webhook without its secret: 401"
        );
        return refusal(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            &format!("missing or wrong {}", platform.secret_header()),
        );
    };
    tracing::Span::current().record("auth.token", fingerprint.as_str());
    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(body) => body,
        Err(e) => {
            return if e.into_inner().is::<http_body_util::LengthLimitError>() {
                refusal(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    &format!("an update is at most {BODY_LIMIT} bytes"),
                )
            } else {
                // The body broke off (the HTTP layer answers one past its deadline
                // `408`, whatever this says).
                refusal(StatusCode::BAD_REQUEST, "bad_request", "the body broke off")
            };
        }
    };
    let message = match platform.read(&body) {
        Ok(Update::Message(message)) => message,
        Ok(Update::Unused(why)) => {
            state.metrics.count(platform, "unused");
            tracing::debug!(
                platform = platform.channel().as_str(),
                why,
                "bot update not used"
            );
            return StatusCode::OK.into_response();
        }
        Err(NotRead::Unreadable { update, error }) => {
            state.metrics.count(platform, "unreadable");
            tracing::warn!(
                platform = platform.channel().as_str(), update = %update, error = %error,
                "the platform's update does not read; answered 200 so that it is not retried for hours"
            );
            return StatusCode::OK.into_response();
        }
        Err(NotRead::NotAnUpdate(reason)) => {
            return refusal(StatusCode::BAD_REQUEST, "bad_request", &reason);
        }
    };
    let event = message.event(&state.app);
    match sms::publish(&state.app, event).await {
        Ok(_) => {
            state.metrics.count(platform, "published");
            StatusCode::OK.into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// A refusal with a JSON reason, as ingest's other endpoints answer.
fn refusal(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"error": code, "message": message})),
    )
        .into_response()
}

impl ChatMessage {
    /// The message as `sms.received` (SPEC §4.2, §4.9): `from` is
    /// `<platform>:<user id>`, `to` the platform, and the time the platform gave
    /// stands under the same rule as a gateway's.
    fn event(self, app: &AppState) -> SmsReceived {
        let received_at = sms::receipt(app, self.sent_at, &self.message_id);
        let platform = self.channel.as_str();
        SmsReceived {
            from: format!("{platform}:{}", self.user),
            to: platform.to_owned(),
            message_id: self.message_id,
            text: self.text,
            received_at,
            channel: self.channel,
            chat: Some(self.chat),
            contact: self.contact,
        }
    }
}

/// A message id as the platform's ids make it, or — past [`MAX_ID_LEN`] or with a
/// space or control character (no platform sends one, but the id is theirs) — its
/// prefix and a UUIDv5 of the whole, which is as stable.
fn bounded_id(id: String) -> String {
    if id.chars().count() <= MAX_ID_LEN && !id.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return id;
    }
    let prefix = id.split('-').next().unwrap_or("bot");
    format!(
        "{prefix}-{}",
        uuid::Uuid::new_v5(&ID_NAMESPACE, id.as_bytes())
    )
}

/// The number of a shared contact, in E.164 — only when it is the sender's own and a
/// valid number. Platforms write numbers without `+` (`79001234567`, `380…`).
fn own_phone(raw: &str, own: bool) -> Option<String> {
    if !own {
        return None;
    }
    let raw = raw.trim();
    PhoneNumber::parse(raw)
        .or_else(|e| {
            if raw.starts_with('+') {
                Err(e)
            } else {
                PhoneNumber::parse(&format!("+{raw}"))
            }
        })
        .ok()
        .map(|p| p.as_str().to_owned())
}

/// A platform's Unix time (`per_second` 1: seconds, 1000: milliseconds).
fn unix_time(value: i64, per_second: i64) -> Option<DateTime<FixedOffset>> {
    let millis = value.checked_mul(1000 / per_second.clamp(1, 1000))?;
    DateTime::from_timestamp_millis(millis).map(|t| t.fixed_offset())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_kept_unless_too_long_or_odd() {
        assert_eq!(bounded_id("max-mid.1".into()), "max-mid.1");
        let long = format!("max-{}", "x".repeat(200));
        let hashed = bounded_id(long.clone());
        assert!(
            hashed.starts_with("max-") && hashed.len() < MAX_ID_LEN,
            "{hashed}"
        );
        assert_eq!(hashed, bounded_id(long), "stable");
        assert_ne!(bounded_id("max-a b".into()), "max-a b");
    }

    #[test]
    fn a_contacts_number_counts_only_when_it_is_the_senders_own() {
        assert_eq!(
            own_phone("79001234567", true).as_deref(),
            Some("+79001234567")
        );
        assert_eq!(
            own_phone("+7 900 123-45-67", true).as_deref(),
            Some("+79001234567")
        );
        assert_eq!(
            own_phone("380501234567", true).as_deref(),
            Some("+380501234567")
        );
        assert_eq!(own_phone("79001234567", false), None);
        assert_eq!(own_phone("12", true), None);
    }

    #[test]
    fn unix_times_in_seconds_and_milliseconds() {
        let s = unix_time(1_795_000_000, 1).expect("time");
        assert_eq!(Some(s), unix_time(1_795_000_000_000, 1000));
        assert_eq!(unix_time(i64::MAX, 1), None);
    }
}
