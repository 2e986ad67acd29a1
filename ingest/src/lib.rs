//! ingest: takes inbound SMS from the gateways (an aggregator's JSON webhook, or
//! Kannel's `get-url`) and publishes each as `sms.received`. It answers `202` only
//! after the broker confirmed the message as persisted; when the broker cannot take
//! it, `503` with `Retry-After`, so the gateway retries and nothing is lost. Ingest
//! keeps no state of its own: duplicates are settled downstream by `message_id`.

mod sms;

use std::net::SocketAddr;

use secrecy::SecretString;
use shared::config::{BrokerConfig, RuntimeConfig, secret};
use shared::service::Service;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use sms::IngestMetrics;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Where the HTTP API listens.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Bearer token the gateways present (`Authorization: Bearer …`, or `token=` for Kannel).
    #[arg(long, env = "INGEST_TOKEN", hide_env_values = true, value_parser = non_empty_secret)]
    pub ingest_token: SecretString,

    /// Largest request body accepted, in bytes; larger is `413`.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 16 * 1024,
          value_parser = clap::value_parser!(u32).range(256..=1_048_576))]
    pub max_body_bytes: u32,

    #[command(flatten)]
    pub broker: BrokerConfig,

    #[command(flatten)]
    pub runtime: RuntimeConfig,
}

fn non_empty_secret(s: &str) -> Result<SecretString, String> {
    if s.trim().len() < 8 {
        return Err("must be at least 8 characters".into());
    }
    secret(s).map_err(|e| e.to_string())
}

/// Runs ingest until `shutdown` on the service skeleton ([`shared::service`]): the
/// publisher outlives the HTTP server, so requests being drained still publish.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut service = Service::new("ingest", "ingest", &config.runtime);
    let publisher = service.publisher(&config.broker, "ingest");
    let metrics = IngestMetrics::register(service.registry());
    service.routes(sms::router(sms::AppState::new(&config, publisher, metrics)));
    service.run(listener, shutdown).await
}
