//! What ingest's test binaries share: a configuration with the tests' defaults.

#![allow(dead_code)]

use std::net::SocketAddr;

use shared::config::{BrokerConfig, LogFormat, RuntimeConfig};

pub const TOKEN: &str = "ingest-test-token-0123";

/// ingest on `http_addr` against `amqp_url`: the test token, a 16 KiB body limit, the
/// form's default rate, no proxy in front, text logs and a short grace. A test
/// changes what it needs: `ingest::Config { max_body_bytes: 1024, ..config(…) }`.
pub fn config(amqp_url: &str, http_addr: SocketAddr) -> ingest::Config {
    ingest::Config {
        http_addr,
        ingest_token: shared::token::Tokens::parse(TOKEN).expect("token"),
        max_body_bytes: 16 * 1024,
        form_rate_per_minute: 10,
        form_client_ip_header: None,
        broker: BrokerConfig {
            amqp_url: amqp_url.into(),
        },
        runtime: RuntimeConfig {
            log_format: LogFormat::Text,
            shutdown_grace_seconds: 5,
            ..RuntimeConfig::default()
        },
    }
}
