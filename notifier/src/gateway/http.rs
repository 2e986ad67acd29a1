//! An SMS aggregator's JSON API (SPEC §4.3, `SMS_GATEWAY=http`):
//! `POST $SMS_HTTP_URL {"to", "from", "text", "reply_to"}` with a bearer token and an
//! `Idempotency-Key`, so a resend after a lost answer is the same SMS, not a second one.

use std::time::Duration;

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};

use super::Sms;
use crate::failure::{SendFailure, excerpt, from_reqwest};
use crate::ledger::AfterUnknown;

#[derive(Clone)]
pub struct HttpGateway {
    client: reqwest::Client,
    url: reqwest::Url,
    token: SecretString,
    /// `SMS_SENDER`: the `from` residents see.
    from: String,
}

impl std::fmt::Debug for HttpGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpGateway")
            .field("url", &self.url.as_str())
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl HttpGateway {
    pub fn new(
        url: reqwest::Url,
        token: SecretString,
        from: String,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            // Certificates checked as on every link (shared::tls).
            .tls_backend_preconfigured(shared::tls::client_config()?)
            .build()?;
        Ok(HttpGateway {
            client,
            url,
            token,
            from,
        })
    }

    pub async fn send(&self, sms: &Sms) -> Result<(), SendFailure> {
        let response = self
            .client
            .post(self.url.clone())
            .bearer_auth(self.token.expose_secret())
            .header("Idempotency-Key", &sms.idempotency_key)
            .json(&serde_json::json!({
                "to": sms.to.as_str(),
                "from": self.from,
                "text": sms.text,
                "reply_to": sms.reply_to,
            }))
            .send()
            .await
            .map_err(|e| from_reqwest(e, AfterUnknown::Resend))?;
        let status = response.status();
        if status.is_success() || status == StatusCode::CONFLICT {
            return Ok(());
        }
        let retry_after = shared::retry_after::parse(response.headers(), chrono::Utc::now());
        let body = shared::peer::error_body(response).await;
        Err(classify(status, &body).not_before(retry_after))
    }
}

/// What a failed answer means. (`409`, taken as success above, is the aggregator
/// saying it already has a request with this key: the SMS is theirs, as after a `2xx`
/// — the convention of the billing push too, SPEC §4.5.)
fn classify(status: StatusCode, body: &str) -> SendFailure {
    let what = || anyhow::anyhow!("SMS gateway answered {status}: {}", excerpt(body));
    match status {
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => SendFailure::retry(what()),
        s if s.is_server_error() => SendFailure::retry(what()),
        _ => SendFailure::refused(what()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::FailureKind;

    #[test]
    fn answers_split_into_retry_and_refused() {
        for code in [500, 502, 503, 504, 429, 408] {
            let s = StatusCode::from_u16(code).expect("status");
            assert_eq!(classify(s, "").kind, FailureKind::Transient, "{code}");
        }
        for code in [400, 401, 403, 404, 422] {
            let s = StatusCode::from_u16(code).expect("status");
            assert_eq!(classify(s, "").kind, FailureKind::Permanent, "{code}");
        }
    }
}
