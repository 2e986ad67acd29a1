//! Outbound SMS (SPEC §4.3): one reply to one number through the transport chosen by
//! `SMS_GATEWAY`. Each transport says what its answers mean ([`SendFailure`]) and
//! whether an attempt with an unknown outcome may be repeated ([`AfterUnknown`]):
//! the JSON aggregator deduplicates by `Idempotency-Key`, Kannel and Jasmin cannot.

mod http;
mod jasmin;
mod kannel;

use std::time::Duration;

use anyhow::Context as _;
use secrecy::SecretString;
use shared::phone::PhoneNumber;
use uuid::Uuid;

use crate::config::{GatewayKind, ReportConfig, SmsConfig};
use crate::failure::SendFailure;
use crate::ledger::AfterUnknown;
use crate::report::DlrCallback;

pub use http::HttpGateway;
pub use jasmin::JasminGateway;
pub use kannel::KannelGateway;

/// One reply, ready to go.
#[derive(Debug, Clone)]
pub struct Sms {
    pub to: PhoneNumber,
    pub text: String,
    /// The inbound message this answers (`reply_to` for the aggregator).
    pub reply_to: String,
    /// The same for every attempt at this reply, so the gateway sends it once.
    pub idempotency_key: String,
}

/// Namespace of idempotency keys: a UUIDv5 of the ledger key, so the header is a fixed,
/// header-safe shape whatever characters the gateway's message id carried.
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x6d65_7465_722d_7265_706c_792d_6b65_7931);

/// The `Idempotency-Key` of the reply to inbound message `message_id`.
pub fn idempotency_key(message_id: &str) -> String {
    Uuid::new_v5(
        &IDEMPOTENCY_NAMESPACE,
        format!("reply:{message_id}").as_bytes(),
    )
    .to_string()
}

/// What Kannel's `sendsms` and Jasmin's `/send` both take: a URL, a user's
/// credentials, the sender, where to report each reply's fate, and a client.
#[derive(Clone)]
struct UserLink {
    client: reqwest::Client,
    url: reqwest::Url,
    user: String,
    password: SecretString,
    /// `SMS_SENDER`; when unset, the gateway user's default sender applies.
    from: Option<String>,
    /// Where the gateway reports each reply's fate (`DLR_BASE_URL` + `DLR_SECRET`);
    /// `None`: no reports asked for.
    reports: Option<DlrCallback>,
}

impl std::fmt::Debug for UserLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserLink")
            .field("url", &self.url.as_str())
            .field("user", &self.user)
            .field("from", &self.from)
            .field("reports", &self.reports.is_some())
            .finish_non_exhaustive()
    }
}

impl UserLink {
    fn new(
        url: reqwest::Url,
        user: String,
        password: SecretString,
        from: Option<String>,
        reports: Option<DlrCallback>,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            // A fresh connection per SMS: a kept-alive one that the gateway closed
            // meanwhile could fail mid-request and read as "unknown", never resent.
            .pool_max_idle_per_host(0)
            // Certificates checked as on every link (shared::tls).
            .tls_backend_preconfigured(shared::tls::client_config()?)
            .build()?;
        Ok(UserLink {
            client,
            url,
            user,
            password,
            from,
            reports,
        })
    }
}

/// The configured transport.
#[derive(Debug, Clone)]
pub enum SmsGateway {
    Log,
    Http(HttpGateway),
    Kannel(KannelGateway),
    Jasmin(JasminGateway),
}

impl SmsGateway {
    /// Builds the transport, checking that its variables are set.
    pub fn from_config(
        config: &SmsConfig,
        reports: &ReportConfig,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        Ok(match config.sms_gateway {
            GatewayKind::Log => SmsGateway::Log,
            GatewayKind::Http => SmsGateway::Http(HttpGateway::new(
                config
                    .sms_http_url
                    .clone()
                    .context("SMS_GATEWAY=http needs SMS_HTTP_URL")?,
                config
                    .sms_http_token
                    .clone()
                    .context("SMS_GATEWAY=http needs SMS_HTTP_TOKEN")?,
                config
                    .sms_sender
                    .clone()
                    .context("SMS_GATEWAY=http needs SMS_SENDER (the `from` of replies)")?,
                timeout,
            )?),
            GatewayKind::Kannel => SmsGateway::Kannel(KannelGateway::new(UserLink::new(
                config
                    .kannel_sendsms_url
                    .clone()
                    .context("SMS_GATEWAY=kannel needs KANNEL_SENDSMS_URL")?,
                config
                    .kannel_user
                    .clone()
                    .context("SMS_GATEWAY=kannel needs KANNEL_USER")?,
                config
                    .kannel_password
                    .clone()
                    .context("SMS_GATEWAY=kannel needs KANNEL_PASSWORD")?,
                config.sms_sender.clone(),
                dlr_callback(reports, "Kannel"),
                timeout,
            )?)),
            GatewayKind::Jasmin => SmsGateway::Jasmin(JasminGateway::new(UserLink::new(
                config
                    .jasmin_send_url
                    .clone()
                    .context("SMS_GATEWAY=jasmin needs JASMIN_SEND_URL")?,
                config
                    .jasmin_user
                    .clone()
                    .context("SMS_GATEWAY=jasmin needs JASMIN_USER")?,
                config
                    .jasmin_password
                    .clone()
                    .context("SMS_GATEWAY=jasmin needs JASMIN_PASSWORD")?,
                config.sms_sender.clone(),
                dlr_callback(reports, "Jasmin"),
                timeout,
            )?)?),
        })
    }

    /// Whether the gateway is asked for delivery reports.
    pub fn reports(&self) -> bool {
        match self {
            SmsGateway::Log => false,
            // The aggregator reports by itself to `POST /v1/dlr`.
            SmsGateway::Http(_) => true,
            SmsGateway::Kannel(g) => g.reports(),
            SmsGateway::Jasmin(g) => g.reports(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            SmsGateway::Log => GatewayKind::Log.as_str(),
            SmsGateway::Http(_) => GatewayKind::Http.as_str(),
            SmsGateway::Kannel(_) => GatewayKind::Kannel.as_str(),
            SmsGateway::Jasmin(_) => GatewayKind::Jasmin.as_str(),
        }
    }

    /// Whether an attempt that may have reached the gateway can be repeated.
    pub fn after_unknown(&self) -> AfterUnknown {
        match self {
            // Writing a log line has no unknown outcome; resending costs nothing.
            SmsGateway::Log | SmsGateway::Http(_) => AfterUnknown::Resend,
            // No idempotency key in sendsms or /send: a second request is a second SMS.
            SmsGateway::Kannel(_) | SmsGateway::Jasmin(_) => AfterUnknown::GiveUp,
        }
    }

    pub async fn send(&self, sms: &Sms) -> Result<(), SendFailure> {
        match self {
            SmsGateway::Log => {
                tracing::info!(
                    to = %sms.to.masked(),
                    reply_to = %sms.reply_to,
                    text = %sms.text,
                    "SMS reply (SMS_GATEWAY=log, not sent)"
                );
                Ok(())
            }
            SmsGateway::Http(g) => g.send(sms).await,
            SmsGateway::Kannel(g) => g.send(sms).await,
            SmsGateway::Jasmin(g) => g.send(sms).await,
        }
    }
}

/// The gateway's report callback, when both `DLR_BASE_URL` and `DLR_SECRET` are set.
fn dlr_callback(reports: &ReportConfig, gateway: &str) -> Option<DlrCallback> {
    match (&reports.dlr_base_url, &reports.dlr_secret) {
        (Some(base), Some(keys)) => Some(DlrCallback::new(base.clone(), keys.clone())),
        (Some(_), None) | (None, Some(_)) => {
            tracing::warn!(
                gateway,
                "delivery reports need both DLR_BASE_URL and DLR_SECRET; the gateway is not asked for them"
            );
            None
        }
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_stable_and_distinct() {
        assert_eq!(idempotency_key("gw-1"), idempotency_key("gw-1"));
        assert_ne!(idempotency_key("gw-1"), idempotency_key("gw-2"));
        assert!(
            idempotency_key("сообщение №1")
                .parse::<reqwest::header::HeaderValue>()
                .is_ok()
        );
    }
}
