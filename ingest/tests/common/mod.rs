//! ingest as the bot and cabinet tests run it: in-process on port 0 against a test's
//! own vhost, with the secrets of every way in set.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use shared::config::{BrokerConfig, LogFormat, RuntimeConfig};
use shared::events::{Event, ReadingAccepted, ReadingRejected, RejectReason, SmsReceived};
use shared::testing::{Broker, Service, Taken, TestEnv};
use shared::token::Tokens;

pub const INGEST_TOKEN: &str = "ingest-test-token-0123";
/// The gateways' token, as the SMS and form tests name it.
pub const TOKEN: &str = INGEST_TOKEN;
pub const TELEGRAM_SECRET: &str = "telegram-secret_0123456789";
/// The secret being rotated out: accepted beside the new one.
pub const TELEGRAM_OLD_SECRET: &str = "telegram-old-secret-4567";
pub const MAX_SECRET: &str = "max-secret-0123456789";
pub const CABINET_TOKEN: &str = "cabinet-token-0123456789";

/// ingest's configuration with every way in open: the test token, a 16 KiB body
/// limit, the form's default rate, no proxy in front, text logs and a short grace. A
/// test changes what it needs: `ingest::Config { http_addr, max_body_bytes: 1024, ..config(…) }`.
pub fn config(amqp_url: &str) -> ingest::Config {
    ingest::Config {
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        ingest_token: Tokens::parse(INGEST_TOKEN).expect("token"),
        max_body_bytes: 16 * 1024,
        form_rate_per_minute: 10,
        form_client_ip_header: None,
        channels: ingest::ChannelTokens {
            telegram_webhook_secret: Some(
                Tokens::parse_webhook_secrets(&format!("{TELEGRAM_SECRET},{TELEGRAM_OLD_SECRET}"))
                    .expect("secrets"),
            ),
            max_webhook_secret: Some(Tokens::parse_webhook_secrets(MAX_SECRET).expect("secret")),
            cabinet_token: Some(Tokens::parse(CABINET_TOKEN).expect("token")),
        },
        broker: BrokerConfig {
            amqp_url: amqp_url.to_owned().into(),
        },
        runtime: RuntimeConfig {
            log_format: LogFormat::Text,
            shutdown_grace_seconds: 5,
            ..RuntimeConfig::default()
        },
    }
}

/// ingest with `config`, ready.
pub async fn spawn(config: ingest::Config) -> Service {
    let app = Service::spawn(
        "ingest",
        move |http_addr| ingest::Config {
            http_addr,
            ..config
        },
        ingest::run,
    )
    .await;
    app.ready().await;
    app
}

/// Every message in the validator's queue now (ingest answered only after the
/// broker's confirm, so what it published is there).
pub async fn taken(env: &TestEnv) -> Vec<Taken> {
    let broker = Broker::connect(env).await;
    let mut all = Vec::new();
    while let Some(msg) = broker.take("validator").await {
        all.push(msg);
    }
    broker.close().await;
    all
}

/// The validator's decision on `sms`, as a test plays the validator: accepted for
/// account 1000001 in `period` with `values`.
pub fn accepted(sms: &SmsReceived, period: &str, values: Vec<u64>) -> Event {
    Event::ReadingAccepted(ReadingAccepted {
        reading_id: uuid::Uuid::new_v4(),
        message_id: sms.message_id.clone(),
        account: "1000001".into(),
        meter: "M-1".into(),
        period: period.parse().expect("period"),
        values,
        received_at: sms.received_at,
        channel: sms.channel,
        email: None,
        supersedes: None,
        from: Some(sms.from.clone()),
        chat: sms.chat.clone(),
    })
}

/// The validator's refusal of `sms` for account 1000001.
pub fn rejected(sms: &SmsReceived, reason: RejectReason, reply: &str) -> Event {
    Event::ReadingRejected(ReadingRejected {
        message_id: sms.message_id.clone(),
        from: sms.from.clone(),
        account: Some("1000001".into()),
        reason,
        reply: Some(reply.to_owned()),
        received_at: sms.received_at,
        channel: sms.channel,
        chat: sms.chat.clone(),
    })
}
