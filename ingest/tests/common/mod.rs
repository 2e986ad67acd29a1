//! ingest as the bot and cabinet tests run it: in-process on port 0 against a test's
//! own vhost, with the secrets of every way in set.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use shared::config::{BrokerConfig, LogFormat, RuntimeConfig};
use shared::testing::{Broker, Service, Taken, TestEnv};
use shared::token::Tokens;

pub const INGEST_TOKEN: &str = "ingest-test-token-0123";
pub const TELEGRAM_SECRET: &str = "telegram-secret_0123456789";
/// The secret being rotated out: accepted beside the new one.
pub const TELEGRAM_OLD_SECRET: &str = "telegram-old-secret-4567";
pub const MAX_SECRET: &str = "max-secret-0123456789";
pub const CABINET_TOKEN: &str = "cabinet-token-0123456789";

/// ingest's configuration with every way in open.
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
