//! ingest: takes inbound SMS from the gateways (an aggregator's JSON webhook,
//! Kannel's `get-url`, or Jasmin's HTTP MO) and publishes each as `sms.received`. It answers `202` only
//! after the broker confirmed the message as persisted; when the broker cannot take
//! it, `503` with `Retry-After`, so the gateway retries and nothing is lost. Ingest
//! keeps no state of its own: duplicates are settled downstream by `message_id`.
//! It also serves the residents' public web form (`form`, SPEC §4.9) and the
//! retailer's personal cabinet (`cabinet`), which learn the validator's decisions from
//! their own auto-delete queue (`decisions`), and the Telegram and MAX bots' webhooks
//! (`bots`), whose messages are answered in their chats by the notifier.

mod bots;
mod cabinet;
pub mod decisions;
pub mod form;
mod jasmin;
mod sms;

use std::net::SocketAddr;

use shared::config::{BrokerConfig, RuntimeConfig};
use shared::service::Service;
use shared::token::Tokens;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use sms::IngestMetrics;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Where the HTTP API listens.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Bearer tokens the gateways present (`Authorization: Bearer …`, or `token=` for
    /// Kannel): one or more, comma-separated (several during a rotation), each at
    /// least 16 characters.
    #[arg(long, env = "INGEST_TOKEN", hide_env_values = true,
          value_parser = shared::token::parse_tokens)]
    pub ingest_token: Tokens,

    /// Largest request body accepted, in bytes; larger is `413`.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 16 * 1024,
          value_parser = clap::value_parser!(u32).range(256..=1_048_576))]
    pub max_body_bytes: u32,

    /// Posts of the resident web form (`POST /form`) one client address may make a
    /// minute (a token bucket per address, in each replica: N replicas allow N times).
    #[arg(long, env = "FORM_RATE_PER_MINUTE", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub form_rate_per_minute: u32,

    /// A header set by the trusted reverse proxy in front of ingest that holds the
    /// client's address (e.g. `X-Forwarded-For`; its last entry counts). Setting it
    /// also trusts the proxy's `X-Forwarded-Proto` (the form's cookie is `Secure`
    /// over HTTPS). Unset: the TCP peer's address, and no proxy is trusted.
    #[arg(long, env = "FORM_CLIENT_IP_HEADER", value_parser = shared::client::parse_header_name)]
    pub form_client_ip_header: Option<axum::http::HeaderName>,

    #[command(flatten)]
    pub channels: ChannelTokens,

    #[command(flatten)]
    pub broker: BrokerConfig,

    #[command(flatten)]
    pub runtime: RuntimeConfig,
}

/// The secrets of the ways in that are not an SMS gateway (SPEC §4.9). Each is a list
/// (a rotation keeps the old one beside the new), each token at least 16 characters;
/// unset, that way in is off and answers `503` saying so.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ChannelTokens {
    /// Secrets Telegram sends in `X-Telegram-Bot-Api-Secret-Token` (the `secret_token`
    /// of `setWebhook`): only `A-Z a-z 0-9 _ -`, at most 256 characters.
    #[arg(long, env = "TELEGRAM_WEBHOOK_SECRET", hide_env_values = true,
          value_parser = shared::token::parse_webhook_secrets)]
    pub telegram_webhook_secret: Option<Tokens>,

    /// Secrets MAX sends in `X-Max-Bot-Api-Secret` (the `secret` of
    /// `POST /subscriptions`): only `A-Z a-z 0-9 _ -`, at most 256 characters.
    #[arg(long, env = "MAX_WEBHOOK_SECRET", hide_env_values = true,
          value_parser = shared::token::parse_webhook_secrets)]
    pub max_webhook_secret: Option<Tokens>,

    /// Bearer tokens of the personal cabinet's `POST /v1/readings`.
    #[arg(long, env = "CABINET_TOKEN", hide_env_values = true,
          value_parser = shared::token::parse_tokens)]
    pub cabinet_token: Option<Tokens>,
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
    let state = sms::AppState::new(&config, publisher, metrics);
    service.routes(jasmin::router(state.clone()));
    let decisions = decisions::Decisions::default();
    {
        let decisions = decisions.clone();
        let url = config.broker.url().to_owned();
        service.task("form-decisions", move |stop| decisions.follow(url, stop));
    }
    service.routes(form::router(form::FormState::new(
        state.clone(),
        decisions.clone(),
        config.form_rate_per_minute,
        config.form_client_ip_header.clone(),
    )));
    service.routes(cabinet::router(cabinet::CabinetState::new(
        state.clone(),
        decisions,
        config.channels.cabinet_token.clone(),
    )));
    let bot_metrics = bots::BotMetrics::register(service.registry());
    service.routes(bots::router(bots::BotState::new(
        state.clone(),
        config.channels.telegram_webhook_secret.clone(),
        config.channels.max_webhook_secret.clone(),
        bot_metrics,
    )));
    service.routes(sms::router(state));
    service.run(listener, shutdown).await
}
