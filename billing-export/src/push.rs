//! The billing client: `POST $BILLING_URL/readings` with the event body exactly as
//! received and `Idempotency-Key: <reading_id>`, so billing can recognise a reading
//! it already has. Each answer is sorted here, once, into what it means (SPEC §4.5):
//! delivered, retry later, or never succeeds ([`PushOutcome`]); the stored state, the
//! metric's label and the consumer's outcome are read off that verdict unchanged.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use shared::consumer::HandlerError;
use uuid::Uuid;

use crate::metrics::PushResult;
use crate::store::Delivery;

/// One attempt may take this long, connection included; billing being slow is then
/// a retry with back-off, not a consumer stuck on one message.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What one POST came to.
#[derive(Debug)]
pub enum PushOutcome {
    /// 2xx: billing took the reading.
    Delivered(StatusCode),
    /// 409: billing already had this idempotency key; as good as delivered.
    Conflict,
    /// 5xx, 408, 429, a timeout or no connection: billing cannot take it now; or 401,
    /// 403: billing refuses our credentials, which are fixed (rotated) on our side
    /// while the readings wait, never lost (see [`PushFailure::credentials_refused`]).
    Retry(PushFailure),
    /// Any other answer (4xx, 3xx): billing refuses the reading as sent.
    Refused(PushFailure),
}

/// Why a push did not deliver: billing's answer, or the transport's error as the
/// source.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}")]
pub struct PushFailure {
    /// Billing's status, if it answered.
    pub status: Option<StatusCode>,
    /// When billing said it can take the reading (`Retry-After` on 408, 429, 503).
    pub retry_after: Option<Duration>,
    /// What billing answered (with an excerpt of its body), or what failed.
    what: String,
    /// The transport's error, when billing did not answer; shared, as one failure is
    /// the verdict of every copy of the reading in a batch.
    #[source]
    transport: Option<Arc<reqwest::Error>>,
}

impl PushOutcome {
    /// The state stored for the reading.
    pub fn delivery(&self) -> Delivery {
        match self {
            PushOutcome::Delivered(_) => Delivery::Delivered,
            PushOutcome::Conflict => Delivery::Conflict,
            PushOutcome::Retry(_) => Delivery::Pending,
            PushOutcome::Refused(_) => Delivery::Rejected,
        }
    }

    /// Billing's status, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            PushOutcome::Delivered(status) => Some(*status),
            PushOutcome::Conflict => Some(StatusCode::CONFLICT),
            PushOutcome::Retry(f) | PushOutcome::Refused(f) => f.status,
        }
    }

    /// The failure, if the push did not deliver.
    pub fn failure(&self) -> Option<&PushFailure> {
        match self {
            PushOutcome::Delivered(_) | PushOutcome::Conflict => None,
            PushOutcome::Retry(f) | PushOutcome::Refused(f) => Some(f),
        }
    }

    /// The `result` label of `billing_pushes_total`.
    pub fn result(&self) -> PushResult {
        match self {
            PushOutcome::Delivered(_) => PushResult::Delivered,
            PushOutcome::Conflict => PushResult::Conflict,
            PushOutcome::Retry(_) => PushResult::Retried,
            PushOutcome::Refused(_) => PushResult::DeadLettered,
        }
    }

    /// What the consumer does with the message (once the outcome is stored).
    pub fn verdict(&self) -> Result<(), HandlerError> {
        match self {
            PushOutcome::Delivered(_) | PushOutcome::Conflict => Ok(()),
            PushOutcome::Retry(f) => Err(match f.retry_after {
                Some(after) => HandlerError::RetryAfter {
                    after,
                    error: anyhow::Error::new(f.clone()),
                },
                None => HandlerError::Transient(anyhow::Error::new(f.clone())),
            }),
            PushOutcome::Refused(f) => Err(HandlerError::Permanent(anyhow::Error::new(f.clone()))),
        }
    }
}

impl PushFailure {
    /// Billing refused our credentials (401, 403): `BILLING_TOKEN` is wrong or being
    /// rotated. Retried like 5xx, but an operator must act: alerted on.
    pub fn credentials_refused(&self) -> bool {
        matches!(
            self.status,
            Some(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
        )
    }

    /// The failure with its causes, for the `last_error` column.
    pub fn detail(&self) -> String {
        format!("{:#}", anyhow::Error::new(self.clone()))
    }
}

/// Posts readings to billing.
#[derive(Clone)]
pub struct Billing {
    client: reqwest::Client,
    endpoint: Url,
    /// Built once; marked sensitive so it never shows in a debug print of a request.
    authorization: HeaderValue,
}

impl Billing {
    pub fn new(base: &Url, token: &SecretString) -> anyhow::Result<Self> {
        // `$BILLING_URL/readings` literally: `Url::join` would drop the base's last
        // path segment (`…/api/meter` + `readings` → `…/api/readings`).
        let endpoint = Url::parse(&format!("{}/readings", base.as_str().trim_end_matches('/')))?;
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {}", token.expose_secret().trim())).map_err(
                |_| anyhow::anyhow!("BILLING_TOKEN contains characters not allowed in a header"),
            )?;
        authorization.set_sensitive(true);
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            // A redirected POST turns into a GET: a redirect is a configuration
            // problem to see, not to follow.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("billing-export/", env!("CARGO_PKG_VERSION")))
            // Certificates checked as on every link (shared::tls).
            .tls_backend_preconfigured(shared::tls::client_config()?)
            .build()?;
        Ok(Billing {
            client,
            endpoint,
            authorization,
        })
    }

    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// Posts one reading. `body` is the `reading.accepted` JSON as received.
    pub async fn post(&self, reading_id: Uuid, body: &[u8]) -> PushOutcome {
        let mut request = self
            .client
            .post(self.endpoint.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("Idempotency-Key", reading_id.to_string());
        // The SMS's trace continues into billing, if billing traces too.
        if let Some(traceparent) = shared::tracecontext::current_traceparent() {
            request = request.header("traceparent", traceparent);
        }
        let sent = request.body(body.to_vec()).send().await;
        let response = match sent {
            Ok(r) => r,
            // Timeouts, refused connections, resets, TLS failures: all "not now".
            // Nothing in a send error says billing refused the reading itself.
            Err(e) => {
                return PushOutcome::Retry(PushFailure {
                    status: None,
                    retry_after: None,
                    what: "billing did not answer".to_owned(),
                    transport: Some(Arc::new(e.without_url())),
                });
            }
        };
        let status = response.status();
        if status.is_success() {
            return PushOutcome::Delivered(status);
        }
        if status == StatusCode::CONFLICT {
            return PushOutcome::Conflict;
        }
        let retry_after = shared::retry_after::parse(response.headers(), chrono::Utc::now());
        // Billing's own words help whoever reads the dead letter or the log — read up
        // to a limit, so a huge or endless error body costs nothing.
        let detail = shared::peer::error_body(response).await;
        let failure = PushFailure {
            status: Some(status),
            retry_after,
            what: format!("billing answered {status}: {}", excerpt(&detail)),
            transport: None,
        };
        if retry_later(status) {
            PushOutcome::Retry(failure)
        } else {
            PushOutcome::Refused(PushFailure {
                retry_after: None,
                ..failure
            })
        }
    }
}

/// Answers that mean "not now": 5xx, and the two 4xx whose definition is exactly that
/// (408 Request Timeout, 429 Too Many Requests): dead-lettering readings because
/// billing throttled us would turn a busy hour into manual work. And 401/403 (SPEC
/// §4.5): billing refusing our credentials is fixed on our side (a rotated token), not
/// in the reading, so the readings wait for the fix rather than for a re-drive.
fn retry_later(status: StatusCode) -> bool {
    status.is_server_error()
        || matches!(
            status,
            StatusCode::REQUEST_TIMEOUT
                | StatusCode::TOO_MANY_REQUESTS
                | StatusCode::UNAUTHORIZED
                | StatusCode::FORBIDDEN
        )
}

fn excerpt(s: &str) -> String {
    let s = s.trim();
    let mut out: String = s.chars().take(300).collect();
    if s.chars().count() > 300 {
        out.push('…');
    }
    if out.is_empty() {
        out.push_str("(empty body)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_appends_readings_to_the_base_path() {
        let token = SecretString::from("t0ken-t0ken".to_owned());
        for (base, want) in [
            (
                "https://billing.example.com/api/meter",
                "https://billing.example.com/api/meter/readings",
            ),
            (
                "https://billing.example.com/api/meter/",
                "https://billing.example.com/api/meter/readings",
            ),
            ("http://127.0.0.1:9000", "http://127.0.0.1:9000/readings"),
        ] {
            let billing = Billing::new(&Url::parse(base).expect("url"), &token).expect("client");
            assert_eq!(billing.endpoint().as_str(), want);
        }
    }

    #[test]
    fn status_classes() {
        for s in [500, 502, 503, 504, 408, 429, 401, 403] {
            assert!(retry_later(StatusCode::from_u16(s).expect("status")), "{s}");
        }
        for s in [400, 404, 410, 422, 301] {
            assert!(
                !retry_later(StatusCode::from_u16(s).expect("status")),
                "{s}"
            );
        }
    }
}
