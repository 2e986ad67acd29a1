//! MAX's `POST /messages` (dev.max.ru/docs-api/methods/POST/messages):
//! `POST $MAX_API_URL/messages?chat_id=…` with `Authorization: <token>` (no scheme)
//! and `{"text", "attachments"?}`, answered `{"message":Message}` or, on an error,
//! `{"code","message"}`. MAX's `429` carries no wait of its own in the body: a
//! `Retry-After` header is honoured when present, else the consumer's retry schedule
//! applies.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::AUTHORIZATION;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{
    Answered, CONTACT_BUTTON, ChatAnswer, answered, chat_number, endpoint, http_client, verdict,
};
use crate::failure::{SendFailure, excerpt};

#[derive(Clone)]
pub struct MaxClient {
    client: reqwest::Client,
    messages_url: reqwest::Url,
    token: SecretString,
}

impl std::fmt::Debug for MaxClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaxClient")
            .field("messages_url", &self.messages_url.as_str())
            .finish_non_exhaustive()
    }
}

/// MAX's error object.
#[derive(Debug, Default, Deserialize)]
struct MaxError {
    code: Option<String>,
    message: Option<String>,
}

impl MaxClient {
    pub fn new(api: reqwest::Url, token: SecretString, timeout: Duration) -> anyhow::Result<Self> {
        Ok(MaxClient {
            client: http_client(timeout)?,
            messages_url: endpoint(&api, &["messages"])?,
            token,
        })
    }

    pub async fn send(&self, answer: &ChatAnswer) -> Result<Answered, SendFailure> {
        let chat = chat_number(&answer.chat)?;
        let mut body = serde_json::json!({"text": answer.text});
        if answer.share_contact {
            // An inline keyboard of one `request_contact` button: pressing it sends the
            // resident's own contact back as an attachment.
            body["attachments"] = serde_json::json!([{
                "type": "inline_keyboard",
                "payload": {"buttons": [[{"type": "request_contact", "text": CONTACT_BUTTON}]]},
            }]);
        }
        let mut url = self.messages_url.clone();
        url.query_pairs_mut()
            .append_pair("chat_id", &chat.to_string());
        let request = self
            .client
            .post(url)
            .header(AUTHORIZATION, self.token.expose_secret())
            .json(&body);
        answered(request, classify).await
    }
}

/// What a refusal means, by status and MAX's error object.
fn classify(
    status: StatusCode,
    body: &str,
    header_wait: Option<Duration>,
) -> Result<Answered, SendFailure> {
    let error: MaxError = serde_json::from_str(body).unwrap_or_default();
    let words = match (&error.code, &error.message) {
        (Some(code), Some(message)) if !message.is_empty() => format!("{code}: {message}"),
        (Some(code), _) => code.clone(),
        (None, Some(message)) => message.clone(),
        (None, None) => excerpt(body),
    };
    verdict("MAX", status, words, header_wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::FailureKind;

    fn status(code: u16) -> StatusCode {
        StatusCode::from_u16(code).expect("status")
    }

    #[test]
    fn too_many_requests_is_retried_after_the_header_if_any() {
        let body = r#"{"code":"too.many.requests","message":"Too many requests"}"#;
        let failure = classify(status(429), body, Some(Duration::from_secs(2))).expect_err("retry");
        assert_eq!(failure.kind, FailureKind::Transient);
        assert_eq!(failure.retry_after, Some(Duration::from_secs(2)));
        assert!(
            failure.to_string().contains("too.many.requests"),
            "{failure}"
        );
        let failure = classify(status(429), body, None).expect_err("retry");
        assert_eq!(failure.retry_after, None);
    }

    #[test]
    fn forbidden_is_settled_as_blocked() {
        let body = r#"{"code":"chat.denied","message":"dialog.suspended"}"#;
        assert_eq!(
            classify(status(403), body, None).expect("settled"),
            Answered::Blocked("chat.denied: dialog.suspended".into())
        );
    }

    #[test]
    fn a_wrong_token_or_request_is_refused_server_errors_retried() {
        let body = r#"{"code":"verify.token","message":"Invalid access_token"}"#;
        let failure = classify(status(401), body, None).expect_err("refused");
        assert_eq!(failure.kind, FailureKind::Permanent);
        assert!(failure.to_string().contains("verify.token"), "{failure}");
        for code in [400, 404] {
            assert_eq!(
                classify(status(code), "", None).expect_err("refused").kind,
                FailureKind::Permanent
            );
        }
        for code in [500, 502, 503] {
            assert_eq!(
                classify(status(code), "", None).expect_err("retry").kind,
                FailureKind::Transient
            );
        }
    }
}
