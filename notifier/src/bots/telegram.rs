//! Telegram's `sendMessage` (core.telegram.org/bots/api#sendmessage):
//! `POST $TELEGRAM_API_URL/bot<token>/sendMessage` `{"chat_id", "text",
//! "reply_markup"?}`, answered `{"ok":true,"result":Message}` or
//! `{"ok":false,"error_code","description","parameters":{"retry_after"}}`.

use std::time::Duration;

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{
    Answered, CONTACT_BUTTON, ChatAnswer, answered, chat_number, endpoint, http_client, verdict,
};
use crate::failure::{SendFailure, excerpt};

#[derive(Clone)]
pub struct TelegramClient {
    client: reqwest::Client,
    /// `…/bot<token>/sendMessage`: it holds the token, so it is never printed.
    send_url: reqwest::Url,
}

impl std::fmt::Debug for TelegramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramClient")
            .field("api", &self.send_url.origin().ascii_serialization())
            .finish_non_exhaustive()
    }
}

/// Telegram's error object (the fields read).
#[derive(Debug, Default, Deserialize)]
struct TelegramError {
    description: Option<String>,
    parameters: Option<ResponseParameters>,
}

#[derive(Debug, Default, Deserialize)]
struct ResponseParameters {
    /// Seconds to wait before the request may be repeated (flood control).
    retry_after: Option<u64>,
}

impl TelegramClient {
    pub fn new(api: reqwest::Url, token: &SecretString, timeout: Duration) -> anyhow::Result<Self> {
        let bot = format!("bot{}", token.expose_secret());
        Ok(TelegramClient {
            client: http_client(timeout)?,
            send_url: endpoint(&api, &[&bot, "sendMessage"])?,
        })
    }

    pub async fn send(&self, answer: &ChatAnswer) -> Result<Answered, SendFailure> {
        let mut body = serde_json::json!({
            "chat_id": chat_number(&answer.chat)?,
            "text": answer.text,
        });
        if answer.share_contact {
            // A reply keyboard: the button sends the resident's own contact, and the
            // keyboard goes away once pressed.
            body["reply_markup"] = serde_json::json!({
                "keyboard": [[{"text": CONTACT_BUTTON, "request_contact": true}]],
                "one_time_keyboard": true,
                "resize_keyboard": true,
            });
        }
        answered(
            self.client.post(self.send_url.clone()).json(&body),
            classify,
        )
        .await
    }
}

/// What a refusal means, by status and Telegram's error object.
fn classify(
    status: StatusCode,
    body: &str,
    header_wait: Option<Duration>,
) -> Result<Answered, SendFailure> {
    let error: TelegramError = serde_json::from_str(body).unwrap_or_default();
    let words = error.description.clone().unwrap_or_else(|| excerpt(body));
    // Flood control says how long in its `parameters`; a header is the fall-back.
    let wait = error
        .parameters
        .and_then(|p| p.retry_after)
        .map(Duration::from_secs)
        .or(header_wait);
    verdict("Telegram", status, words, wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::FailureKind;

    fn status(code: u16) -> StatusCode {
        StatusCode::from_u16(code).expect("status")
    }

    #[test]
    fn flood_control_waits_what_telegram_asks() {
        let body = r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 17","parameters":{"retry_after":17}}"#;
        let failure = classify(status(429), body, None).expect_err("retry");
        assert_eq!(failure.kind, FailureKind::Transient);
        assert_eq!(failure.retry_after, Some(Duration::from_secs(17)));
        assert!(failure.to_string().contains("retry after 17"), "{failure}");
        // Without the parameter, the header; a wait past an hour is cut to one.
        let failure = classify(status(429), "{}", Some(Duration::from_secs(3))).expect_err("retry");
        assert_eq!(failure.retry_after, Some(Duration::from_secs(3)));
        let body = r#"{"ok":false,"error_code":429,"parameters":{"retry_after":999999}}"#;
        let failure = classify(status(429), body, None).expect_err("retry");
        assert_eq!(failure.retry_after, Some(shared::retry_after::MAX));
    }

    #[test]
    fn a_blocked_bot_is_settled_with_telegrams_words() {
        let body = r#"{"ok":false,"error_code":403,"description":"Forbidden: bot was blocked by the user"}"#;
        assert_eq!(
            classify(status(403), body, None).expect("settled"),
            Answered::Blocked("Forbidden: bot was blocked by the user".into())
        );
    }

    #[test]
    fn server_errors_are_retried_other_refusals_are_final() {
        for code in [500, 502, 503, 504, 408] {
            let failure = classify(status(code), "", None).expect_err("retry");
            assert_eq!(failure.kind, FailureKind::Transient, "{code}");
        }
        let body = r#"{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}"#;
        let failure = classify(status(400), body, None).expect_err("refused");
        assert_eq!(failure.kind, FailureKind::Permanent);
        assert!(failure.to_string().contains("chat not found"), "{failure}");
        for code in [401, 404] {
            let failure = classify(status(code), "not json", None).expect_err("refused");
            assert_eq!(failure.kind, FailureKind::Permanent, "{code}");
        }
    }
}
